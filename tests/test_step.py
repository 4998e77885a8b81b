"""The CUDA-graph path's optimisers, checked on the CPU.

A graphed run (`runtime.cuda_graph`) cannot capture a learning rate that the host changes each epoch, so its
Adam is capturable with the learning rate a tensor on the device that the schedule fills in place
(`optimizers.make_optimizer`, `optimizers.set_optimizer_form` after a resume). Fused Adam takes that form on the
CPU too, so here the graph's optimisers run under the eager step: they must train as the plain ones (to fp32
tolerance), across the schedule's decay and across resumes from one kind of checkpoint into the other. The graph
itself needs CUDA (tests/test_cuda.py).
"""

from __future__ import annotations

import pytest
import torch

from p2p import checkpoint, step
from p2p.lifecycle import RunRequest, StopTraining
from p2p.packing import train_together
from p2p.trainer import train
from tests.helpers import facades_config
from tests.test_cuda import FP32, LossTracker

# 2 epochs, the second with a decayed learning rate; every trick the graph can hold (not the image pool).
TWO_EPOCHS = {"optim.epochs": 1, "optim.decay_epochs": 1, "data.max_images": 3, "runtime.deterministic": False,
              "tricks.label_smoothing": [0.8, 1.0], "tricks.label_flip": 0.3, "tricks.instance_noise": 0.1}


@pytest.fixture
def graph_optimisers(monkeypatch):
    """Runs built from here on get the graph path's optimisers (capturable, device-tensor learning rate) and
    run the step eagerly; returns a switch back to the plain path."""
    def on(flag: bool) -> None:
        monkeypatch.setattr(step, "use_cuda_graph", lambda cfg, device: flag)
        monkeypatch.setattr(step, "make_stepper", lambda parts, graphed: step.EagerStepper(parts))
    on(True)
    return on


def weights(run_dir):
    saved = checkpoint.load(run_dir / checkpoint.CHECKPOINT)
    return {**{f"G.{k}": v for k, v in saved["generator"].items()},
            **{f"D.{k}": v for k, v in saved["discriminator"].items()}}


def assert_close(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], rtol: float = FP32) -> None:
    """To fp32 tolerance: capturable Adam computes its bias corrections in float32 tensors, the plain one in the
    host's doubles (measured: 2e-7 of each tensor's largest value after 2 epochs); a schedule that did not reach
    the tensor would be off by ~1e-2."""
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=rtol, atol=rtol * float(b[key].abs().max()), msg=key)


def assert_trains_as_the_plain_run(cfg, graphed, graph_losses: LossTracker, graph_optimisers, folder):
    """The run of `cfg` on the plain path (eager step, plain optimisers) and `graphed` agree, epoch by epoch on
    the losses and at the end on the weights, to fp32 tolerance; returns the plain run."""
    graph_optimisers(False)
    plain_losses = LossTracker()
    plain = train(cfg, tracker=plain_losses, run_dir=folder, progress=False)
    assert len(plain_losses.losses) == len(graph_losses.losses) == cfg.optim.total_epochs
    for plain_epoch, graph_epoch in zip(plain_losses.losses, graph_losses.losses):
        assert graph_epoch == pytest.approx(plain_epoch, rel=FP32)
    assert_close(weights(plain.run_dir), weights(graphed.run_dir))
    return plain


def test_capturable_optimisers_with_a_tensor_learning_rate_train_as_the_plain_ones(tiny_overrides, tmp_path,
                                                                                    graph_optimisers):
    cfg = facades_config({**tiny_overrides, **TWO_EPOCHS})
    graph_losses = LossTracker()
    graphed = train(cfg, tracker=graph_losses, run_dir=tmp_path / "graphed", progress=False)
    saved = checkpoint.load(graphed.run_dir / checkpoint.CHECKPOINT)
    group = saved["opt_G"]["param_groups"][0]
    assert group["capturable"] and isinstance(group["lr"], torch.Tensor)  # the graph's form really ran
    plain = assert_trains_as_the_plain_run(cfg, graphed, graph_losses, graph_optimisers, tmp_path / "plain")
    # the schedule filled the tensor with the rate it gives the number (after the last epoch: 0, from 2e-4)
    plain_lr = checkpoint.load(plain.run_dir / checkpoint.CHECKPOINT)["opt_G"]["param_groups"][0]["lr"]
    assert float(group["lr"]) == pytest.approx(plain_lr, abs=1e-9) and plain_lr < cfg.optim.lr


@pytest.mark.parametrize("first,then", [(True, False), (False, True)], ids=["graphed-then-eager", "eager-then-graphed"])
def test_a_checkpoint_resumes_into_the_other_optimiser_form(tiny_overrides, tmp_path, graph_optimisers, first, then):
    """A sweep resumed with another `runtime.cuda_graph` (or on another device) continues the same run."""
    cfg = facades_config({**tiny_overrides, **TWO_EPOCHS})
    graph_optimisers(False)
    whole = train(cfg, run_dir=tmp_path / "whole", progress=False)

    def stop(epoch, metrics):
        raise StopTraining("stopped after epoch 1")

    graph_optimisers(first)
    with pytest.raises(StopTraining):
        train(cfg, run_dir=tmp_path / "cut", progress=False, on_epoch=stop)
    graph_optimisers(then)
    resumed = train(cfg, run_dir=tmp_path / "cut", resume=True, progress=False)
    assert_close(weights(whole.run_dir), weights(resumed.run_dir))
    group = checkpoint.load(resumed.run_dir / checkpoint.CHECKPOINT)["opt_G"]["param_groups"][0]
    assert group["capturable"] is then and isinstance(group["lr"], torch.Tensor) is then



class GraphsOnTheCpu(step.CudaGraphs):
    """`CudaGraphs`' contract kept on the CPU: a warm-up runs the step; a capture records it without running it,
    as a CUDA graph's capture does, and each replay runs it on what the static buffers and tensors hold then."""

    def __init__(self):
        self.warm_ups = self.captures = self.replays = 0

    def warm_up(self, run_step, device):
        self.warm_ups += 1
        run_step()

    def capture(self, run_step, generators):
        self.captures += 1

        def replay():
            self.replays += 1
            run_step()
        return replay


def test_the_graph_stepper_captures_once_and_trains_as_the_eager_step(tiny_overrides, tmp_path, graph_optimisers,
                                                                       monkeypatch):
    """`CudaGraphStepper`'s bookkeeping, the graph stood in for: 3 epochs of batches 3, 3, 1. The first 3 full
    batches warm up, the 4th is captured and replayed, the later full ones replayed: one capture for the whole run
    (the rate, the noise std and the loss sums are tensors the graph reads); the short batches run eagerly. Each
    batch is copied into the static buffers and each step's noise std into its tensor before the replay, so the
    run trains as the eager step (to fp32 tolerance: the capturable optimiser)."""
    graphs = GraphsOnTheCpu()
    monkeypatch.setattr(step, "make_stepper", lambda parts, graphed: step.CudaGraphStepper(parts, graphs))
    cfg = facades_config({**tiny_overrides, **TWO_EPOCHS, "optim.epochs": 2, "optim.batch_size": 3,
                          "data.max_images": 7})
    graph_losses = LossTracker()
    graphed = train(cfg, tracker=graph_losses, run_dir=tmp_path / "graphed", progress=False)
    assert (graphs.warm_ups, graphs.captures, graphs.replays) == (3, 1, 3)
    assert_trains_as_the_plain_run(cfg, graphed, graph_losses, graph_optimisers, tmp_path / "plain")


def test_packed_graph_steppers_train_as_their_solo_runs(tiny_overrides, tmp_path, graph_optimisers, monkeypatch):
    """Two seeds packed in one process, the graph stood in for as above: each run's stepper replays its own run's
    step (a stepper or capture crossing runs would train one seed on the other's state), so each ends
    bit-identical to its solo run through the same stepper. (The CPU runs each replay before the next, so what
    streams would race on, buffers shared between pack-mates, is for tests/test_cuda.py.)"""
    monkeypatch.setattr(step, "make_stepper", lambda parts, graphed: step.CudaGraphStepper(parts, GraphsOnTheCpu()))
    configs = [facades_config({**tiny_overrides, **TWO_EPOCHS, "data.max_images": 5, "seed": seed}) for seed in (0, 1)]
    solo = [train(cfg, run_dir=tmp_path / f"solo{seed}", progress=False) for seed, cfg in enumerate(configs)]
    packed = train_together([RunRequest(cfg, None, tmp_path / f"packed{seed}") for seed, cfg in enumerate(configs)],
                            progress=False)
    for alone, together in zip(solo, packed):
        a, b = weights(alone.run_dir), weights(together.run_dir)
        assert all(torch.equal(a[key], b[key]) for key in a), f"{together.run_dir.name} differs from its solo run"
    assert not torch.equal(*(weights(run.run_dir)["G.model.model.0.weight"] for run in packed))

"""The GPU path: the training step as one CUDA graph (`runtime.cuda_graph`), compiled networks
(`runtime.compile`) and packed trials on CUDA streams, each checked against the plain eager step.

The CUDA tests run where a CUDA device is present and are skipped elsewhere with "no CUDA device";
the refusals at the end run everywhere. Tolerances: fp32 graph vs eager agree to 1e-5 relative (the
same kernels on the same numbers; capturable Adam keeps its step count and bias corrections on the
device, a few ulps from the eager optimiser's host arithmetic); bf16 + compile to 5e-2 on the losses
(fused kernels round differently at bf16's 8-bit mantissa).
"""

from __future__ import annotations

import pytest
import torch

from p2p import checkpoint, step
from p2p.errors import UserError
from p2p.lifecycle import RunRequest, StopTraining, TrainResult
from p2p.packing import train_together
from p2p.tracking_protocol import NullTracker
from p2p.trainer import train
from tests.helpers import facades_config

NO_CUDA = "no CUDA device"
cuda_only = pytest.mark.skipif(not torch.cuda.is_available(), reason=NO_CUDA)

# Long enough that most steps are replays: 8 images x 2 epochs = 16 steps, the first WARMUP_STEPS eager.
ON_CUDA = {"runtime.device": "cuda", "data.max_images": 8, "runtime.deterministic": True}
TRICKS = {"tricks.label_smoothing": [0.8, 1.0], "tricks.label_flip": 0.3, "tricks.instance_noise": 0.1}
FP32 = 1e-5


class LossTracker(NullTracker):
    def __init__(self):
        super().__init__()
        self.losses: list[dict[str, float]] = []

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        super().log_metrics(metrics, step)
        self.losses.append({k: v for k, v in metrics.items() if k.startswith("train/loss")})


def run(overrides: dict, folder) -> tuple[TrainResult, list[dict[str, float]], dict[str, torch.Tensor]]:
    tracker = LossTracker()
    result = train(facades_config(overrides), tracker=tracker, run_dir=folder, progress=False)
    return result, tracker.losses, checkpoint.load(result.run_dir / checkpoint.GENERATOR)["generator"]


def assert_close(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], rtol: float) -> None:
    for key in a:
        if a[key].is_floating_point():
            torch.testing.assert_close(a[key], b[key], rtol=rtol, atol=rtol * a[key].abs().max().item(), msg=key)
        else:
            assert torch.equal(a[key], b[key]), key


def assert_losses_close(a: list[dict[str, float]], b: list[dict[str, float]], rtol: float) -> None:
    assert len(a) == len(b) and a
    for epoch_a, epoch_b in zip(a, b):
        assert epoch_a.keys() == epoch_b.keys()
        for key in epoch_a:
            assert epoch_b[key] == pytest.approx(epoch_a[key], rel=rtol, abs=rtol), key


@cuda_only
@pytest.mark.parametrize("tricks", [{}, TRICKS], ids=["plain", "tricks"])
def test_graph_trains_as_the_eager_step(tiny_overrides, tmp_path, tricks):
    """Every random draw (dropout, smoothing, flips, noise) comes from the run's own device streams, so the
    replayed graph draws what the eager step draws: same losses and weights to fp32 tolerance."""
    base = {**tiny_overrides, **ON_CUDA, **tricks}
    _, eager_losses, eager = run({**base, "runtime.cuda_graph": False}, tmp_path / "eager")
    _, graph_losses, graphed = run({**base, "runtime.cuda_graph": True}, tmp_path / "graph")
    assert_losses_close(eager_losses, graph_losses, FP32)
    assert_close(eager, graphed, FP32)


@cuda_only
def test_graph_run_is_deterministic(tiny_overrides, tmp_path):
    base = {**tiny_overrides, **ON_CUDA, **TRICKS, "runtime.cuda_graph": True}
    _, _, a = run(base, tmp_path / "a")
    _, _, b = run(base, tmp_path / "b")
    assert all(torch.equal(a[k], b[k]) for k in a)


@cuda_only
def test_graph_run_resumes_exactly(tiny_overrides, tmp_path):
    """A graphed run stopped after epoch 1 and resumed (a fresh capture, the checkpoint's learning rates
    made device tensors again) ends where an uninterrupted one does."""
    base = {**tiny_overrides, **ON_CUDA, **TRICKS, "runtime.cuda_graph": True}
    _, _, whole = run(base, tmp_path / "whole")
    cfg = facades_config(base)

    def stop(epoch, metrics):
        raise StopTraining("stopped after epoch 1")

    with pytest.raises(StopTraining):
        train(cfg, run_dir=tmp_path / "cut", progress=False, on_epoch=stop)
    resumed = train(cfg, run_dir=tmp_path / "cut", resume=True, progress=False)
    assert_close(whole, checkpoint.load(resumed.run_dir / checkpoint.GENERATOR)["generator"], FP32)


@cuda_only
@pytest.mark.parametrize("graph", [False, True], ids=["compile", "compile+graph"])
def test_compile_runs_and_matches_eager(tiny_overrides, tmp_path, graph):
    """runtime.compile on CUDA: no crash (the old reduce-overhead mode overwrote G's output when the
    compiled D ran again), and the losses of eager bf16 within bf16 tolerance."""
    base = {**tiny_overrides, **ON_CUDA, "runtime.deterministic": False, "runtime.precision": "bf16"}
    _, eager_losses, _ = run({**base, "runtime.cuda_graph": False}, tmp_path / "eager")
    _, compiled_losses, _ = run({**base, "runtime.compile": True, "runtime.cuda_graph": graph}, tmp_path / "compiled")
    assert_losses_close(eager_losses, compiled_losses, 5e-2)


@cuda_only
@pytest.mark.parametrize("graph", [False, True], ids=["eager", "graph"])
def test_packed_runs_on_streams_train_as_their_solo_runs(tiny_overrides, tmp_path, graph):
    """Packed trials on CUDA streams: each seed's weights are its solo run's (fp32 tolerance)."""
    overrides = [{**tiny_overrides, **ON_CUDA, **TRICKS, "runtime.cuda_graph": graph, "seed": s} for s in (0, 1)]
    solo = [run(o, tmp_path / f"solo{i}")[2] for i, o in enumerate(overrides)]
    outcomes = train_together([RunRequest(facades_config(o), NullTracker(), tmp_path / f"packed{i}")
                               for i, o in enumerate(overrides)], progress=False)
    for alone, outcome in zip(solo, outcomes):
        assert isinstance(outcome, TrainResult), outcome
        assert_close(alone, checkpoint.load(outcome.run_dir / checkpoint.GENERATOR)["generator"], FP32)


# ---------------------------------------------------------------- everywhere: what the graph refuses


def test_graph_true_without_cuda_is_a_user_error(tiny_overrides):
    cfg = facades_config({**tiny_overrides, "runtime.cuda_graph": True})
    with pytest.raises(UserError, match=r"^runtime.cuda_graph: true, but a CUDA graph needs a CUDA device"):
        step.use_cuda_graph(cfg, torch.device("cpu"))


def test_graph_true_with_an_image_pool_is_a_user_error(tiny_overrides):
    cfg = facades_config({**tiny_overrides, "runtime.cuda_graph": True, "tricks.image_pool": 4})
    with pytest.raises(UserError, match=r"tricks.image_pool > 0: the image pool chooses on the host"):
        step.use_cuda_graph(cfg, torch.device("cuda"))


def test_graph_auto_is_off_on_the_cpu_and_until_verified_on_a_gpu(tiny_overrides, capsys, monkeypatch):
    cfg = facades_config(tiny_overrides)
    assert cfg.runtime.cuda_graph == "auto"
    assert step.use_cuda_graph(cfg, torch.device("cpu")) is False
    monkeypatch.setattr(step, "_said", set())
    verified = step.GRAPH_VERIFIED_ON_GPU
    assert step.use_cuda_graph(cfg, torch.device("cuda")) is verified
    assert step.use_cuda_graph(cfg, torch.device("cuda")) is verified
    said = capsys.readouterr().err
    assert said.count("runtime.cuda_graph auto: the step runs eagerly") == (0 if verified else 1)  # said once
    pooled = facades_config({**tiny_overrides, "tricks.image_pool": 4})
    assert step.use_cuda_graph(pooled, torch.device("cuda")) is False
    assert "tricks.image_pool > 0" in capsys.readouterr().err


def test_cuda_graph_setting_is_validated(tiny_overrides):
    with pytest.raises(UserError, match="runtime.cuda_graph"):
        facades_config({**tiny_overrides, "runtime.cuda_graph": "sometimes"})

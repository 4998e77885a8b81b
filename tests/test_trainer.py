"""Training end to end on tiny real data: exact resume, NaN handling, and the MLflow contract."""

import os
import subprocess
import sys
import threading
import zipfile

import pytest
import torch

from p2p import checkpoint, losses
from p2p.errors import UserError
from p2p.lifecycle import StopTraining
from p2p.step import TrainingFault
from p2p.tracking import MlflowTracker, client
from p2p.tracking_protocol import NullTracker
from p2p.trainer import train
from tests.helpers import facades_config

TRICKS = {"tricks.label_smoothing": [0.8, 1.0], "tricks.label_flip": 0.2, "tricks.instance_noise": 0.1,
          "tricks.image_pool": 2, "runtime.deterministic": True, "data.max_images": 3}


def weights(path):
    state = torch.load(path, map_location="cpu", weights_only=True)
    return state["generator"], state.get("discriminator")


def test_checkpoints_carry_no_crc_and_load_back_exactly(tmp_path):
    """p2p's archives skip the CRC32 (most of a checkpoint's write time), which is safe only while torch.load
    never checks one: a byte flipped in a CRC-carrying archive loads silently. If torch starts checking, the
    flipped file raises here, and a CRC-less file would no longer load: both asserts fail."""
    tensors = {"w": torch.randn(1000, generator=torch.Generator().manual_seed(0)), "step": torch.tensor(7)}
    path = tmp_path / "c.pt"
    checkpoint.save_atomic(tensors, path)
    assert {info.CRC for info in zipfile.ZipFile(path).infolist()} == {0}
    loaded = checkpoint.load_plain(path, "test file")
    assert all(torch.equal(loaded[k], tensors[k]) for k in tensors)

    torch.save(tensors, tmp_path / "crc.pt")  # torch's default: with CRC32s
    data = bytearray((tmp_path / "crc.pt").read_bytes())
    at = data.index(tensors["w"].numpy().tobytes()[:64]) + 100
    data[at] ^= 0xFF
    (tmp_path / "flipped.pt").write_bytes(bytes(data))
    flipped = torch.load(tmp_path / "flipped.pt", weights_only=True)["w"]
    assert int((flipped != tensors["w"]).sum()) == 1  # loaded as it is: the CRC protected nothing


@pytest.mark.slow
def test_resumed_run_is_bit_identical_to_an_uninterrupted_one(mlflow_uri, tiny_overrides, tmp_path):
    cfg = facades_config({**tiny_overrides, **TRICKS, "optim.epochs": 1, "optim.decay_epochs": 2})
    whole = train(cfg, tracker=MlflowTracker(), run_dir=tmp_path / "whole", progress=False)

    def stop_after_first(epoch, metrics):
        if epoch == 1:
            raise StopTraining("simulated kill after epoch 1")

    with pytest.raises(StopTraining):
        train(cfg, tracker=MlflowTracker(), run_dir=tmp_path / "split", progress=False, on_epoch=stop_after_first)
    first_id = torch.load(tmp_path / "split" / checkpoint.CHECKPOINT, weights_only=True)["run_id"]
    assert client().get_run(first_id).info.status == "KILLED"
    resumed = train(cfg, tracker=MlflowTracker(), run_dir=tmp_path / "split", resume=True, progress=False)
    assert resumed.run_id == first_id  # the same MLflow run continues
    assert client().get_run(first_id).info.status == "FINISHED"

    g_whole, _ = weights(whole.run_dir / checkpoint.GENERATOR)
    g_split, _ = weights(resumed.run_dir / checkpoint.GENERATOR)
    _, d_whole = weights(whole.run_dir / checkpoint.CHECKPOINT)
    _, d_split = weights(resumed.run_dir / checkpoint.CHECKPOINT)
    for name in g_whole:
        assert torch.equal(g_whole[name], g_split[name]), name
    for name in d_whole:
        assert torch.equal(d_whole[name], d_split[name]), name
    assert whole.scores == resumed.scores
    # and the run really trained: weights moved away from their initial values
    init = facades_config({**tiny_overrides, **TRICKS})
    torch.manual_seed(init.seed)
    from p2p.models import create_generator
    g0 = create_generator(init).state_dict()
    assert any(not torch.equal(g0[k], g_whole[k]) for k in g0 if g0[k].is_floating_point())


def test_deterministic_reruns_are_identical_and_seeds_differ(mlflow_uri, tiny_overrides, tmp_path):
    cfg = facades_config({**tiny_overrides, "runtime.deterministic": True, "optim.decay_epochs": 0})
    a = weights(train(cfg, run_dir=tmp_path / "a", progress=False).run_dir / checkpoint.GENERATOR)[0]
    b = weights(train(cfg, run_dir=tmp_path / "b", progress=False).run_dir / checkpoint.GENERATOR)[0]
    assert all(torch.equal(a[k], b[k]) for k in a)
    other = facades_config({**tiny_overrides, "runtime.deterministic": True, "optim.decay_epochs": 0, "seed": 1})
    c = weights(train(other, run_dir=tmp_path / "c", progress=False).run_dir / checkpoint.GENERATOR)[0]
    assert any(not torch.equal(a[k], c[k]) for k in a if a[k].is_floating_point())


def test_a_run_needs_no_store(tiny_overrides, tmp_path, monkeypatch):
    """The default tracker records in memory only: no MLflow store is opened or created."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    tracker = NullTracker()
    result = train(facades_config(tiny_overrides), tracker=tracker, run_dir=tmp_path / "run", progress=False)
    assert not (tmp_path / "mlflow.db").exists()
    assert tracker.status == "FINISHED" and tracker.run_id == result.run_id
    assert sorted(tracker.metrics["train/lr"]) == [1, 2] and set(result.scores) <= set(tracker.metrics)
    assert {"config.yaml", "samples/epoch_002.png", "generator.pt"} <= set(tracker.artifacts)


def test_the_next_epoch_trains_while_a_checkpoint_is_written_and_its_metrics_follow_it(tiny_overrides, tmp_path,
                                                                                         monkeypatch):
    """Epoch 1's write is held until epoch 2 has fed the networks a batch: a trainer that waited for the write
    would never get there (the write gives up after 60 s, and this fails). Each epoch's metrics are logged only
    once its checkpoint is on disk (what a resume relies on), and the run ends with the last one written."""
    from p2p import epoch as epoch_pass  # its to_device is counted below

    cfg = facades_config({**tiny_overrides, "data.max_images": 2, "optim.epochs": 2, "optim.decay_epochs": 1})  # 3 x 2
    batches, second_epoch = [], threading.Event()

    def counting(*args):
        batches.append(1)
        if len(batches) > 2:  # a batch of epoch 2
            second_epoch.set()
        return to_device(*args)

    def held_write(state, run_dir, epoch, saved_epoch):
        if epoch == 1:
            assert second_epoch.wait(timeout=60), "epoch 2 did not start while epoch 1's checkpoint was written"
        write(state, run_dir, epoch, saved_epoch)

    class OnDiskFirst(NullTracker):
        def log_metrics(self, metrics, step):
            assert checkpoint.load(tmp_path / "run" / checkpoint.CHECKPOINT)["epoch"] == step  # landed before
            super().log_metrics(metrics, step)

    to_device, write = epoch_pass.to_device, checkpoint.write_checkpoint
    monkeypatch.setattr(epoch_pass, "to_device", counting)
    monkeypatch.setattr(checkpoint, "write_checkpoint", held_write)
    tracker = OnDiskFirst()
    result = train(cfg, tracker=tracker, run_dir=tmp_path / "run", progress=False)
    assert sorted(tracker.metrics["train/lr"]) == [1, 2, 3] and result.epochs == 3
    assert checkpoint.load(result.run_dir / checkpoint.CHECKPOINT)["finished"]
    assert sorted(p.name for p in result.run_dir.iterdir()) == ["checkpoint.pt", "generator.pt", "samples"]


def test_stale_temporary_files_of_dead_writers_are_removed(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    stale, live = tmp_path / f".checkpoint.pt.{dead}.tmp", tmp_path / f".checkpoint.pt.{os.getpid()}.tmp"
    for path in (stale, live, tmp_path / "checkpoint.pt"):
        path.write_bytes(b"x")
    assert checkpoint.remove_stale_temporaries(tmp_path) == [stale]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([live.name, "checkpoint.pt"])


@pytest.mark.slow
def test_resume_accepts_a_checkpoint_from_before_a_config_key_existed(tiny_overrides, tmp_path):
    """A sweep started before a config key was added resumes while the key has its default value."""
    cfg = facades_config({**tiny_overrides, "optim.epochs": 1, "optim.decay_epochs": 1})

    def stop(epoch, metrics):
        raise StopTraining("stopped after epoch 1")

    with pytest.raises(StopTraining):
        train(cfg, run_dir=tmp_path / "old", progress=False, on_epoch=stop)
    path = tmp_path / "old" / checkpoint.CHECKPOINT
    state = torch.load(path, weights_only=True)
    del state["config"]["data"]["square_halves"], state["config"]["model"]["generator"]["dropout_at"]  # not yet keys
    checkpoint.save_atomic(state, path)

    changed = facades_config({**tiny_overrides, "optim.epochs": 1, "optim.decay_epochs": 1, "data.square_halves": False})
    with pytest.raises(UserError, match="config key 'data.square_halves' was True .the default: the checkpoint predates "
                                        "the key. and is now False"):
        train(changed, run_dir=tmp_path / "old", resume=True, progress=False)
    resumed = train(cfg, run_dir=tmp_path / "old", resume=True, progress=False)
    assert resumed.epochs == 2 and set(resumed.scores) == {"eval/ssim", "eval/psnr", "eval/l1"}
    assert torch.load(path, weights_only=True)["finished"]


@pytest.mark.slow
def test_run_lands_in_mlflow_with_the_contract_names(mlflow_uri, tiny_overrides, tmp_path):
    cfg = facades_config({**tiny_overrides, "name": "tiny", "experiment": "tiny-exp"})
    result = train(cfg, tracker=MlflowTracker(), run_dir=tmp_path / "run", progress=False, tags={"p2p.scale": "cpu"})
    run = client().get_run(result.run_id)
    assert run.info.status == "FINISHED" and run.info.run_name == "tiny"
    assert client().get_experiment(run.info.experiment_id).name == "tiny-exp"
    params = run.data.params
    assert params["model.discriminator.patch"] == "16"
    assert params["loss.gan"] == "vanilla" and params["loss.conditional"] == "true"
    assert params["data.direction"] == "BtoA" and params["optim.lr"] == "0.0002"
    assert run.data.tags["p2p.scale"] == "cpu"
    for key in ("loss_D_real", "loss_D_fake", "loss_G_GAN", "loss_G_L1", "lr", "img_per_s"):
        history = client().get_metric_history(result.run_id, f"train/{key}")
        assert [m.step for m in history] == [1, 2], key
    lrs = [m.value for m in client().get_metric_history(result.run_id, "train/lr")]
    assert lrs == [pytest.approx(2e-4), pytest.approx(1e-4)]  # 1 constant epoch, then decay
    for key in ("eval/ssim", "eval/psnr", "eval/l1"):
        assert key in run.data.metrics
    assert set(result.scores) == {"eval/ssim", "eval/psnr", "eval/l1"}
    top = {a.path for a in client().list_artifacts(result.run_id)}
    assert {"config.yaml", "samples", "generator.pt"} <= top
    samples = [a.path for a in client().list_artifacts(result.run_id, "samples")]
    assert samples == ["samples/epoch_002.png"]
    logged = client().download_artifacts(result.run_id, "config.yaml", str(tmp_path))
    from p2p.config import load_config
    assert load_config(logged) == cfg  # the resolved config reproduces the run


@pytest.mark.slow
def test_l1_only_trains_no_discriminator(mlflow_uri, tiny_overrides, tmp_path):
    cfg = facades_config({**tiny_overrides, "loss.gan": "none", "optim.decay_epochs": 0})
    result = train(cfg, tracker=MlflowTracker(), run_dir=tmp_path / "l1", progress=False)
    metrics = client().get_run(result.run_id).data.metrics
    assert "train/loss_G_L1" in metrics and "train/loss_D_real" not in metrics
    assert torch.load(result.run_dir / checkpoint.CHECKPOINT, weights_only=True)["discriminator"] is None


@pytest.mark.slow
def test_non_finite_loss_stops_the_run_and_keeps_the_last_checkpoint(mlflow_uri, tiny_overrides, tmp_path,
                                                                      monkeypatch):
    cfg = facades_config({**tiny_overrides, "optim.epochs": 2, "optim.decay_epochs": 0})
    calls = {"n": 0}
    real_l1 = losses.l1_loss

    def poisoned(fake, target):
        calls["n"] += 1
        loss = real_l1(fake, target)
        return loss * float("nan") if calls["n"] > 5 else loss  # epoch 2 (4 images per epoch)

    monkeypatch.setattr(losses, "l1_loss", poisoned)
    with pytest.raises(TrainingFault, match="non-finite loss .*train/loss_G_L1.* in epoch 2"):
        train(cfg, tracker=MlflowTracker(), run_dir=tmp_path / "nan", progress=False)
    state = torch.load(tmp_path / "nan" / checkpoint.CHECKPOINT, weights_only=True)
    assert state["epoch"] == 1  # epoch 1's work is kept
    run = client().get_run(state["run_id"])
    assert run.info.status == "FAILED"
    assert "non-finite loss" in run.data.tags["p2p.failure"]


@pytest.mark.slow
def test_resume_refuses_a_changed_config(mlflow_uri, tiny_overrides, tmp_path):
    cfg = facades_config({**tiny_overrides, "optim.decay_epochs": 0})
    train(cfg, tracker=MlflowTracker(), run_dir=tmp_path / "r", progress=False)
    changed = facades_config({**tiny_overrides, "optim.decay_epochs": 0, "loss.l1": 10})
    with pytest.raises(UserError, match="cannot resume, config key 'loss.l1' was 100.0 and is now 10.0"):
        train(changed, tracker=MlflowTracker(), run_dir=tmp_path / "r", resume=True, progress=False)
    # resuming a finished run is a no-op that returns its scores
    again = train(cfg, tracker=MlflowTracker(), run_dir=tmp_path / "r", resume=True, progress=False)
    assert set(again.scores) == {"eval/ssim", "eval/psnr", "eval/l1"}
    assert MlflowTracker.of(again.run_id).status() == "FINISHED"


@pytest.mark.slow
def test_colorization_trains_end_to_end(mlflow_uri, tiny_overrides, tmp_path):
    cfg = facades_config({**tiny_overrides, "data.task": "colorization", "optim.decay_epochs": 0})
    result = train(cfg, tracker=MlflowTracker(), run_dir=tmp_path / "color", progress=False)
    assert set(result.scores) == {"eval/ssim", "eval/psnr", "eval/l1"}
    g = weights(result.run_dir / checkpoint.GENERATOR)[0]
    assert g["model.model.0.weight"].shape[1] == 1  # a one-channel (grayscale) input

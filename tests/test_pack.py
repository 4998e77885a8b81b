"""Packed trials: several runs trained together in one process, a step of each in turn
(`p2p.packing.train_together`, `p2p sweep --pack K`), each exactly as it would train alone."""

from __future__ import annotations

import subprocess

import pytest
import torch

from p2p import checkpoint
from p2p.lifecycle import RunRequest, StopTraining, TrainResult
from p2p.packing import train_together
from p2p.sweep import study as studies
from p2p.sweep.spec import grid, load_spec
from p2p.tracking_protocol import NullTracker
from p2p.trainer import train
from tests.helpers import OK_CELLS, check_completed_once, facades_config, kill_mid_trial, start, sweep_command, sweep_env
from tests.helpers import write_sweep_spec as write_spec

# Three trials a sweep could pack: two seeds of one cell with every random trick on, and another cell.
PACKED = [
    {"seed": 0, "tricks.label_smoothing": [0.8, 1.0], "tricks.label_flip": 0.3, "tricks.instance_noise": 0.1},
    {"seed": 1, "tricks.label_smoothing": [0.8, 1.0], "tricks.label_flip": 0.3, "tricks.instance_noise": 0.1},
    {"seed": 0, "model.discriminator.patch": 1, "loss.gan": "lsgan"},
]


def generator_weights(result: TrainResult) -> dict[str, torch.Tensor]:
    return checkpoint.load(result.run_dir / checkpoint.GENERATOR)["generator"]


class MetricsTracker(NullTracker):
    """Keeps what a run logs, to compare a packed run's epochs with its solo run's."""

    def __init__(self):
        super().__init__()
        self.logged: list[dict[str, float]] = []

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        self.logged.append({k: v for k, v in metrics.items() if k.startswith(("train/loss", "eval/"))})


class BrokenTracker(MetricsTracker):
    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        raise RuntimeError("the store broke")


@pytest.mark.slow
def test_packed_runs_train_bit_identical_to_their_solo_runs(tiny_overrides, tmp_path):
    # fp32 on the CPU: the same ops on the same numbers, so equality is exact (no tolerance needed).
    configs = [facades_config({**tiny_overrides, "runtime.deterministic": True, **o}) for o in PACKED]
    solo = []
    for i, cfg in enumerate(configs):
        tracker = MetricsTracker()
        solo.append((train(cfg, tracker=tracker, run_dir=tmp_path / f"solo{i}", progress=False), tracker.logged))
    trackers = [MetricsTracker() for _ in configs]
    packed = train_together([RunRequest(cfg, tracker, tmp_path / f"packed{i}")
                             for i, (cfg, tracker) in enumerate(zip(configs, trackers))], progress=False)
    for i, ((alone, logged), together, tracker) in enumerate(zip(solo, packed, trackers)):
        assert isinstance(together, TrainResult), together
        a, b = generator_weights(alone), generator_weights(together)
        assert a.keys() == b.keys()
        assert all(torch.equal(a[k], b[k]) for k in a), f"trial {i}: weights differ from its solo run"
        assert tracker.logged == logged, f"trial {i}: losses or scores differ from its solo run"
        assert together.scores == alone.scores
    # the trials really differ from each other (a pack that trained one run three times would pass the above)
    assert not torch.equal(*(next(iter(generator_weights(r).values())) for r in packed[:2]))


@pytest.mark.slow
def test_a_trial_that_stops_or_fails_ends_alone_and_its_pack_mates_go_on(tiny_overrides, tmp_path):
    cfg = facades_config({**tiny_overrides, "runtime.deterministic": True})
    alone = train(cfg, run_dir=tmp_path / "alone", progress=False)

    def prune(epoch, metrics):
        raise StopTraining(f"pruned after epoch {epoch}")

    outcomes = train_together([RunRequest(cfg, BrokenTracker(), tmp_path / "broken"),
                               RunRequest(cfg, NullTracker(), tmp_path / "pruned", on_epoch=prune),
                               RunRequest(cfg, NullTracker(), tmp_path / "fine")], progress=False)
    broken, pruned, fine = outcomes
    assert isinstance(broken, RuntimeError) and "the store broke" in str(broken)
    assert isinstance(pruned, StopTraining) and pruned.reason == "pruned after epoch 1"
    assert isinstance(fine, TrainResult) and fine.epochs == 2
    a, b = generator_weights(alone), generator_weights(fine)
    assert all(torch.equal(a[k], b[k]) for k in a)
    # the pruned run kept its first epoch's checkpoint (resumable like any other)
    assert checkpoint.load(tmp_path / "pruned" / checkpoint.CHECKPOINT)["epoch"] == 1


@pytest.mark.slow
def test_a_packed_sweep_survives_a_kill_and_matches_the_unpacked_one(tmp_path, data_root):
    """`--pack 2` on one worker: killed mid-trial and run again, every (cell, seed) finishes once, a NaN cell fails
    alone, and each trial's scores are those of the same sweep run with `--pack 1`."""
    import mlflow

    cells = {**OK_CELLS, "nan": {"loss.l1": 1.0e39}}
    results = {}
    for pack in (2, 1):
        folder = tmp_path / f"pack{pack}"
        folder.mkdir()
        spec_path = write_spec(folder, "packed", cells, seeds=1)
        storage, tracking_uri = f"sqlite:///{folder / 'optuna.db'}", f"sqlite:///{folder / 'mlflow.db'}"
        cmd, env = sweep_command(spec_path, storage, workers=1) + ["--pack", str(pack)], sweep_env(tracking_uri)
        killed = None
        if pack == 2:
            killed = kill_mid_trial(start(cmd, folder, env, folder / "first.log"), spec_path, storage, set(OK_CELLS),
                                    folder / "first.log")
        proc = subprocess.run(cmd, cwd=folder, env=env, capture_output=True, text=True, timeout=240)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        if killed is not None:
            check_completed_once(spec_path, storage, tracking_uri, killed, OK_CELLS, seeds=1)
        spec = load_spec(spec_path)
        states = studies.key_states(studies.load(studies.open_storage(storage), spec, "cpu"), grid(spec, "cpu"))
        assert states[studies.TrialKey("nan", 0)].state == "failed"
        assert "non-finite loss" in states[studies.TrialKey("nan", 0)].reason
        client = mlflow.MlflowClient(tracking_uri)
        runs = client.search_runs([client.get_experiment_by_name("packed").experiment_id],
                                  "attributes.status = 'FINISHED' and tags.`p2p.cell` != ''")
        results[pack] = {(r.data.tags["p2p.cell"], r.data.tags["p2p.seed"]):
                         ({k: v for k, v in r.data.metrics.items() if k.startswith(("eval/", "train/loss"))},
                          {k: v for k, v in r.data.params.items() if not k.startswith("runtime.")})
                         for r in runs}
    assert set(results[2]) == set(results[1]) == {(cell, "0") for cell in OK_CELLS}
    assert results[2] == results[1]


def test_workers_per_gpu_and_pack_defaults(monkeypatch):
    """Auto: one worker per core on a CPU; on CUDA --per-gpu per GPU (auto: AUTO_PER_GPU), the cores shared among
    them; never more workers than trials. --pack auto is AUTO_PACK for the device (docs/speed.md, "Status")."""
    from p2p.sweep import driver

    monkeypatch.setattr(driver.os, "cpu_count", lambda: 16)
    monkeypatch.setattr(driver, "_gpu_count", lambda: 0)
    assert driver.resolve_workers(0, 100) == (16, 1) and driver.resolve_workers(0, 3) == (3, 5)
    assert driver.resolve_workers(0, 100, per_gpu=4) == (16, 1)  # no GPU: per-GPU has no say
    monkeypatch.setattr(driver, "_gpu_count", lambda: 2)
    assert driver.resolve_workers(0, 100) == (2 * driver.AUTO_PER_GPU, 16 // (2 * driver.AUTO_PER_GPU))
    assert driver.resolve_workers(0, 100, per_gpu=4) == (8, 2)
    assert driver.resolve_workers(0, 5, per_gpu=4) == (5, 3)
    assert driver.resolve_workers(3, 100, per_gpu=4) == (3, 5)  # --workers overrides
    monkeypatch.setattr(driver, "cuda_present", lambda: True)
    assert driver.resolve_pack(0) == driver.AUTO_PACK["cuda"] == 1 and driver.resolve_pack(3) == 3
    monkeypatch.setattr(driver, "cuda_present", lambda: False)
    assert driver.resolve_pack(0) == driver.AUTO_PACK["cpu"] == 1


def test_per_gpu_is_checked(tmp_path):
    from p2p.cli import main

    path = write_spec(tmp_path, "flags", dict(OK_CELLS))
    assert main(["sweep", str(path), "--per-gpu", "0", "--dry-run"]) == 2

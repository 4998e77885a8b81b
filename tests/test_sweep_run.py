"""A real sweep end to end on local files: two workers, a NaN cell and an invalid cell, a worker
SIGKILLed mid-trial, and the same command again, which resumes the killed trial from its checkpoint."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from p2p import tracking
from p2p.sweep import study as studies
from p2p.sweep.spec import grid, load_spec, run_dir
from tests.conftest import DATA_ROOT, ROOT, TINY

EPOCHS = 4
# Small enough to be quick, long enough (several epochs of ~0.3 s) to be killed mid-trial.
SETTINGS = {**{k: v for k, v in TINY.items() if k != "model.discriminator.patch"}, "data.max_images": 16,
            "data.crop_size": 64, "data.load_size": 72, "optim.epochs": EPOCHS, "optim.decay_epochs": 0,
            "eval.max_images": 4}
OK_CELLS = {"a": {}, "lsgan": {"loss.gan": "lsgan"}}


def write_spec(folder: Path, name: str, cells: dict, seeds: int = 2) -> Path:
    path = folder / f"{name}.yaml"
    body = {"name": name, "base": str(ROOT / "experiments" / "facades.yaml"), "cells": cells, "seeds": seeds,
            "objective": {"metric": "eval/ssim"},
            "scales": {"cpu": {"set": {**SETTINGS, "runtime.out_dir": str(folder / "runs")}}}}
    path.write_text(yaml.safe_dump(body, sort_keys=False))
    return path


def sweep_command(spec: Path, storage: str, workers: int) -> list[str]:
    return [sys.executable, "-m", "p2p", "sweep", str(spec), "--scale", "cpu", "--workers", str(workers),
            "--storage", storage, "--heartbeat", "1", "--no-progress"]


def sweep_env(tracking_uri: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "P2P_SWEEP_STORAGE")}
    return {**env, "P2P_DATA_ROOT": str(DATA_ROOT), "MLFLOW_TRACKING_URI": tracking_uri}


def start(cmd: list[str], cwd: Path, env: dict, log: Path) -> subprocess.Popen:
    """A sweep in its own process group, so that SIGKILL takes the command and its workers at once."""
    return subprocess.Popen(cmd, cwd=cwd, env=env, stdout=open(log, "w"), stderr=subprocess.STDOUT,
                            start_new_session=True)


def kill_mid_trial(proc: subprocess.Popen, spec_path: Path, storage: str, cells: set[str], log: Path,
                   out_dir: Path | None = None, timeout: float = 120) -> dict:
    """SIGKILL the sweep once one of its trials (one with a checkpoint in `out_dir`) has epochs still to go."""
    spec = load_spec(spec_path)
    out_dir = out_dir or spec_path.parent / "runs"
    store = studies.open_storage(storage)
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        assert proc.poll() is None, log.read_text()
        try:
            study = studies.load(store, spec, "cpu")
        except KeyError:  # not created yet
            time.sleep(0.2)
            continue
        for trial in study.get_trials(deepcopy=False, states=(studies.TrialState.RUNNING,)):
            epoch = trial.user_attrs.get(studies.EPOCH, 0)
            cell, seed = trial.user_attrs.get(studies.CELL), trial.user_attrs.get(studies.SEED)
            folder = run_dir(out_dir, spec.name, "cpu", str(cell), int(seed or 0))
            if cell in cells and 1 <= epoch <= EPOCHS - 2 and (folder / "checkpoint.pt").is_file():
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                state = torch.load(folder / "checkpoint.pt", map_location="cpu", weights_only=True)
                assert store.get_trial(trial._trial_id).state == studies.TrialState.RUNNING  # killed mid-trial
                return {"number": trial.number, "cell": cell, "seed": seed, "run_id": state["run_id"],
                        "epoch": state["epoch"]}
        time.sleep(0.05)
    pytest.fail(f"no trial reached a checkpoint in {timeout} s:\n{log.read_text()}")


def check_completed_once(spec_path: Path, storage: str, tracking_uri: str, killed: dict, ok_cells, seeds=2,
                         out_dirs: list[Path] | None = None) -> list:
    """Every ok (cell, seed) is COMPLETE in exactly one trial and has exactly one FINISHED child run.

    The killed trial resumed its MLflow run from its checkpoint; with several `out_dirs` (machines
    with their own disks) it may instead have started again elsewhere, its old run marked KILLED.
    """
    spec = load_spec(spec_path)
    study = studies.load(studies.open_storage(storage), spec, "cpu")
    trials = study.get_trials()
    complete = [studies.key_of(t) for t in trials if t.state == studies.TrialState.COMPLETE]
    expected = sorted(f"{c} seed{s}" for c in ok_cells for s in range(seeds))
    assert sorted(k.label for k in complete) == expected
    assert not studies.has_unfinished(study)

    runs = tracking.find_tagged_runs(spec.name, {"p2p.sweep": spec.name, "p2p.scale": "cpu"}, uri=tracking_uri)
    parents = [r for r in runs if r.data.tags.get("p2p.role") == "sweep"]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    children = tracking.child_runs(parents[0].info.run_id, spec.name, uri=tracking_uri)
    assert len(children) == len(runs) - 1  # every trial's run hangs under the sweep's parent run
    assert not [r for r in children if r.info.status == "RUNNING"]
    finished = sorted(f"{r.data.tags['p2p.cell']} seed{r.data.tags['p2p.seed']}" for r in children
                      if r.info.status == "FINISHED")
    assert finished == expected
    for run in children:
        if run.info.status == "FINISHED":
            assert "eval/ssim" in run.data.metrics and run.data.params["optim.epochs"] == str(EPOCHS)
            assert "p2p.failure" not in run.data.tags

    # The killed trial: failed as stale, re-queued, and finished by resuming the same MLflow run.
    mine = [t for t in trials if studies.key_of(t) is not None
            and (studies.key_of(t).cell, studies.key_of(t).seed) == (killed["cell"], killed["seed"])]
    assert [t.state.name for t in mine] == ["FAIL", "COMPLETE"]
    assert studies.FAILURE not in mine[0].user_attrs  # no reason: its worker vanished
    final_run = mine[1].user_attrs[studies.RUN_ID]
    if out_dirs is None or final_run == killed["run_id"]:
        assert final_run == killed["run_id"]
    else:
        assert tracking.RunTracker(killed["run_id"], tracking_uri).status() == "KILLED"
    history = tracking.client(tracking_uri).get_metric_history(final_run, "train/lr")
    assert sorted({m.step for m in history}) == list(range(1, EPOCHS + 1))
    return children


@pytest.mark.slow
def test_two_local_workers_survive_a_kill_and_a_rerun_finishes_every_trial_once(tmp_path, data_root):
    cells = {**OK_CELLS, "nan": {"loss.l1": 1.0e39}, "huge": {"model.discriminator.patch": 286}}
    spec_path = write_spec(tmp_path, "local", cells, seeds=1)
    storage, tracking_uri = f"sqlite:///{tmp_path / 'optuna.db'}", f"sqlite:///{tmp_path / 'mlflow.db'}"
    cmd, env = sweep_command(spec_path, storage, workers=2), sweep_env(tracking_uri)

    killed = kill_mid_trial(start(cmd, tmp_path, env, tmp_path / "first.log"), spec_path, storage, set(OK_CELLS),
                            tmp_path / "first.log")
    assert killed["epoch"] >= 1
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout + proc.stderr

    children = check_completed_once(spec_path, storage, tracking_uri, killed, OK_CELLS, seeds=1)
    # The failing cells: failed with their reasons, in Optuna and on their MLflow runs, and the sweep went on.
    spec = load_spec(spec_path)
    states = studies.key_states(studies.load(studies.open_storage(storage), spec, "cpu"), grid(spec, "cpu"))
    nan, huge = states[studies.TrialKey("nan", 0)], states[studies.TrialKey("huge", 0)]
    assert nan.state == "failed" and "non-finite loss" in nan.reason
    assert huge.state == "failed" and "at least 128 for a 286x286 discriminator" in huge.reason
    failed = {r.data.tags["p2p.cell"]: r for r in children if r.info.status == "FAILED"}
    assert set(failed) == {"nan", "huge"}
    assert "non-finite loss" in failed["nan"].data.tags["p2p.failure"]
    assert "286x286" in failed["huge"].data.tags["p2p.failure"]
    assert "failed trials (run again with --retry-failed" in proc.stdout
    assert f"done    {killed['cell']} seed{killed['seed']}" in proc.stdout

"""Real SIGTERM and SIGINT during `p2p train` and a sweep worker: the last finished epoch's checkpoint is
kept, the MLflow run is KILLED with the signal as its `p2p.failure`, and resuming continues that run."""

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

from p2p import checkpoint, tracking
from p2p.sweep import study as studies
from p2p.sweep.spec import load_spec, run_dir
from tests.helpers import DATA_ROOT, ROOT, TINY, sets

FACADES = str(ROOT / "experiments" / "facades.yaml")
EPOCHS = 40  # ~0.1 s each at TINY: long enough to be stopped mid-run, short enough to finish after


def env_for(uri: str) -> dict:
    return {**os.environ, "MLFLOW_TRACKING_URI": uri, "P2P_DATA_ROOT": str(DATA_ROOT)}


def wait_for(check, timeout: float, what: str, proc: subprocess.Popen | None = None, log: Path | None = None):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        found = check()
        if found:
            return found
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"exited ({proc.returncode}) before {what}:\n{log.read_text() if log else ''}")
        time.sleep(0.02)
    pytest.fail(f"no {what} in {timeout} s:\n{log.read_text() if log else ''}")


def first_checkpoint(folder: Path):
    """The run folder once its first checkpoint is on disk."""
    found = list(folder.glob(f"*/{checkpoint.CHECKPOINT}"))
    return found[0].parent if found else None


def steps(run_id: str, uri: str, key: str = "train/lr") -> list[int]:
    return sorted(m.step for m in tracking.client(uri).get_metric_history(run_id, key))


def check_stopped(folder: Path, uri: str, name: str) -> dict:
    """The run is KILLED with the signal's name; its checkpoint of a finished epoch is whole; no temp file is left."""
    state = checkpoint.load(folder / checkpoint.CHECKPOINT)
    assert 1 <= state["epoch"] < EPOCHS and not state["finished"]
    assert not list(folder.glob(".*.tmp"))
    run = tracking.client(uri).get_run(state["run_id"])
    assert run.info.status == "KILLED"
    assert run.data.tags[tracking.FAILURE_TAG] == f"stopped by {name}"
    logged = steps(state["run_id"], uri)
    # every finished epoch up to the checkpoint's was logged, or (stopped between the two) is in the checkpoint
    assert logged == list(range(1, state["epoch"] + 1)) or logged == list(range(1, state["epoch"]))
    return state


def check_resumed(run_id: str, uri: str) -> None:
    run = tracking.client(uri).get_run(run_id)
    assert run.info.status == "FINISHED" and tracking.FAILURE_TAG not in run.data.tags
    assert steps(run_id, uri) == list(range(1, EPOCHS + 1))  # each epoch once: none lost, none twice
    assert "eval/ssim" in run.data.metrics


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_stops_train_with_its_checkpoint_and_resume_continues_the_run(tmp_path, data_root, sig):
    uri, out = f"sqlite:///{tmp_path / 'mlflow.db'}", tmp_path / "runs"
    settings = {**TINY, "optim.epochs": EPOCHS, "optim.decay_epochs": 0, "runtime.out_dir": str(out)}
    cmd = [sys.executable, "-m", "p2p", "train", FACADES, *sets(settings), "--no-progress"]
    log = tmp_path / "train.log"
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env_for(uri), stdout=subprocess.DEVNULL, stderr=open(log, "w"))
    folder = wait_for(lambda: first_checkpoint(out / "facades"), 180, "checkpoint", proc, log)
    os.kill(proc.pid, sig)
    assert proc.wait(timeout=60) == 128 + sig
    name = signal.Signals(sig).name
    assert log.read_text().strip().splitlines() == [f"p2p: stopped by {name}"]
    state = check_stopped(folder, uri, name)

    if sig == signal.SIGTERM:  # and --resume finishes the same run
        done = subprocess.run(cmd + ["--resume", str(folder)], cwd=tmp_path, env=env_for(uri), capture_output=True,
                              text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        assert done.stdout.startswith(f"run {state['run_id']} finished")
        check_resumed(state["run_id"], uri)


def write_spec(folder: Path) -> Path:
    path = folder / "sig.yaml"
    settings = {**TINY, "optim.epochs": EPOCHS, "optim.decay_epochs": 0, "runtime.out_dir": str(folder / "runs")}
    path.write_text(yaml.safe_dump({"name": "sig", "base": FACADES, "cells": {"a": {}}, "seeds": 1,
                                    "objective": {"metric": "eval/ssim"}, "scales": {"cpu": {"set": settings}}}))
    return path


def sweep(spec: Path, tmp_path: Path) -> list[str]:
    return [sys.executable, "-m", "p2p", "sweep", str(spec), "--scale", "cpu", "--workers", "1", "--storage",
            f"sqlite:///{tmp_path / 'optuna.db'}", "--heartbeat", "1", "--no-progress"]


def running_trial(spec: Path, tmp_path: Path):
    """(the trial, its worker's pid) once the trial has a checkpoint."""
    storage = studies.open_storage(f"sqlite:///{tmp_path / 'optuna.db'}")
    folder = run_dir(tmp_path / "runs", "sig", "cpu", "a", 0)

    def check():
        try:
            study = studies.load(storage, load_spec(spec), "cpu")
        except KeyError:
            return None
        for trial in study.get_trials(deepcopy=False, states=(studies.TrialState.RUNNING,)):
            worker = trial.user_attrs.get(studies.WORKER)
            if worker and (folder / checkpoint.CHECKPOINT).is_file():
                return trial, int(worker.rsplit(":", 1)[1])
        return None

    return check, storage, folder


@pytest.mark.slow
@pytest.mark.parametrize("how", ["SIGTERM to the worker", "Ctrl-C to the sweep", "Slurm's USR2 to the worker"])
def test_a_signal_stops_a_sweep_worker_and_the_same_command_resumes_its_trial(tmp_path, data_root, how):
    uri, spec = f"sqlite:///{tmp_path / 'mlflow.db'}", write_spec(tmp_path)
    log = tmp_path / "sweep.log"
    proc = subprocess.Popen(sweep(spec, tmp_path), cwd=tmp_path, env=env_for(uri), stdout=subprocess.DEVNULL,
                            stderr=open(log, "w"), start_new_session=True)
    check, storage, folder = running_trial(spec, tmp_path)
    trial, worker = wait_for(check, 240, "trial with a checkpoint", proc, log)
    if how != "Ctrl-C to the sweep":
        # Slurm's warning before a time limit or a preemption (`--signal=USR2@120` under p2p sweep --slurm) stops
        # the worker exactly as SIGTERM does: checkpoint kept, trial queued again, resumed by the next command.
        os.kill(worker, signal.SIGTERM if how == "SIGTERM to the worker" else signal.SIGUSR2)
        name, expected = "SIGTERM", 1  # the sweep command sees its worker gone: "not finished, run it again"
    else:  # a terminal's Ctrl-C reaches the command and its worker at once; the command then SIGTERMs the worker
        os.killpg(proc.pid, signal.SIGINT)
        name, expected = "SIGINT", 128 + signal.SIGINT
    assert proc.wait(timeout=120) == expected, log.read_text()
    err = log.read_text()
    assert "Traceback" not in err, err
    if expected == 130:
        assert err.strip().splitlines()[-1] == "p2p: stopped by SIGINT"
    else:
        assert "run the same command again to resume it" in err
    assert storage.get_trial(studies.trial_id(trial)).state == studies.TrialState.WAITING  # queued again at once
    state = check_stopped(folder, uri, name)

    again = subprocess.run(sweep(spec, tmp_path), cwd=tmp_path, env=env_for(uri), capture_output=True, text=True,
                           timeout=300)
    assert again.returncode == 0, again.stdout + again.stderr
    final = storage.get_trial(studies.trial_id(trial))
    assert final.state == studies.TrialState.COMPLETE
    assert final.user_attrs[studies.RUN_ID] == state["run_id"]  # the same MLflow run, continued
    check_resumed(state["run_id"], uri)
    assert torch.load(folder / checkpoint.CHECKPOINT, weights_only=True)["finished"]

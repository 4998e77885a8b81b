"""What the tests share: where the shared data is, tiny settings, and helpers that run sweeps and servers.

Fixtures are in conftest.py; everything a test imports comes from here (tests never import each other).
"""

from __future__ import annotations

import calendar
import contextlib
import glob
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator

import pytest
import torch
import yaml

from p2p import checkpoint, tracking
from p2p.config import to_dict
from p2p.sweep import study as studies
from p2p.sweep.spec import load_spec, run_dir
from p2p.tracking_protocol import RunStatus

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("P2P_SHARED", ROOT.parent / "shared"))
DATA_ROOT = SHARED / "data"
WEIGHTS_DIR = SHARED / "weights"
FACADES = ROOT / "experiments" / "facades.yaml"

# The one reason a test may be skipped: the lab's shared data beside the project is not there (a user's
# checkout). `.ci/run` fails if any test was skipped for it: CI always has ../shared.
SHARED_ABSENT = "shared data absent"


def shared_present() -> bool:
    return (DATA_ROOT / "facades" / "train").is_dir() and (WEIGHTS_DIR / "vgg16-features-imagenet.pth").is_file()


def shared_absent_reason() -> str:
    return (f"{SHARED_ABSENT}: no facades and ImageNet weights in {SHARED} (the lab's ../shared beside the project, "
            "or set P2P_SHARED)")


# Tiny but real: 32x32 crops of 4 facades, a 16x16 PatchGAN, narrow nets; on the CPU even where a GPU is
# present (`runtime.device: auto` would pick it): the goldens and the packed-vs-solo checks are CPU numbers.
TINY = {
    "data.root": str(DATA_ROOT), "data.max_images": 4, "data.crop_size": 32, "data.load_size": 36,
    "model.generator.ngf": 8, "model.discriminator.ndf": 8, "model.discriminator.patch": 16,
    "optim.epochs": 1, "optim.decay_epochs": 1, "eval.metrics": ["ssim", "psnr", "l1"], "eval.max_images": 4,
    "eval.samples": 2, "runtime.threads": 1, "runtime.device": "cpu",
}

# A real but tiny FCN scorer: 64x64, 120 train photos, 2 epochs (~20 s), clearly above the majority class.
TINY_FCN_SIZE = 64
TINY_FCN_FIT = {"epochs": 2, "max_images": 120, "width": 256, "lr": 2e-4, "head_lr": 2e-3}


def facades_config(overrides: dict | None = None):
    from p2p.config import load_config

    return load_config(FACADES, {**(overrides or {})})


def sets(overrides: dict) -> list[str]:
    """--set KEY=VALUE for each override (JSON is YAML, so lists and strings keep their types)."""
    return [arg for key, value in overrides.items() for arg in ("--set", f"{key}={json.dumps(value)}")]


def one_error_line(err: str, *names: str, secret: str | None = None) -> str:
    """The one line a user error prints (no traceback), naming each of `names` and never `secret`."""
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("p2p: error: ") and "Traceback" not in err, err
    for name in names:
        assert name in lines[0], (name, lines[0])
    if secret is not None:
        assert secret not in lines[0]
    return lines[0]


# ---------------------------------------------------------------- sweeps in subprocesses


SWEEP_EPOCHS = 4
# Small enough to be quick, long enough (several epochs of ~0.3 s) to be killed mid-trial.
SWEEP_SETTINGS = {**{k: v for k, v in TINY.items() if k != "model.discriminator.patch"}, "data.max_images": 16,
            "data.crop_size": 64, "data.load_size": 72, "optim.epochs": SWEEP_EPOCHS, "optim.decay_epochs": 0,
            "eval.max_images": 4}
OK_CELLS = {"a": {}, "lsgan": {"loss.gan": "lsgan"}}


def write_sweep_spec(folder: Path, name: str, cells: dict, seeds: int = 2) -> Path:
    path = folder / f"{name}.yaml"
    body = {"name": name, "base": str(ROOT / "experiments" / "facades.yaml"), "cells": cells, "seeds": seeds,
            "objective": {"metric": "eval/ssim"},
            "scales": {"cpu": {"set": {**SWEEP_SETTINGS, "runtime.out_dir": str(folder / "runs")}}}}
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
                   out_dir: Path | None = None, timeout: float = 120, min_seed: int = 0) -> dict:
    """SIGKILL the sweep once one of its trials (one with a checkpoint in `out_dir`, of a seed >= `min_seed`)
    has epochs still to go."""
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
            if cell in cells and int(seed or 0) >= min_seed and 1 <= epoch <= SWEEP_EPOCHS - 2 \
                    and (folder / "checkpoint.pt").is_file():
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                state = torch.load(folder / "checkpoint.pt", map_location="cpu", weights_only=True)
                assert store.get_trial(studies.trial_id(trial)).state == studies.TrialState.RUNNING  # killed mid-trial
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
    trials = studies.records(study)
    complete = [t.key for t in trials if t.state == studies.COMPLETE]
    expected = sorted(f"{c} seed{s}" for c in ok_cells for s in range(seeds))
    assert sorted(k.label for k in complete) == expected
    assert not studies.has_unfinished(study)

    runs = tracking.find_tagged_runs(spec.name, {"p2p.sweep": spec.name, "p2p.scale": "cpu"}, uri=tracking_uri)
    parents = [r for r in runs if r.tags.get("p2p.role") == "sweep"]
    assert len(parents) == 1 and parents[0].status == RunStatus.FINISHED
    children = tracking.child_runs(parents[0].run_id, spec.name, uri=tracking_uri)
    assert len(children) == len(runs) - 1  # every trial's run hangs under the sweep's parent run
    assert not [r for r in children if r.status == RunStatus.RUNNING]
    finished = sorted(f"{r.tags['p2p.cell']} seed{r.tags['p2p.seed']}" for r in children if r.status == RunStatus.FINISHED)
    assert finished == expected
    for run in children:
        if run.status == RunStatus.FINISHED:
            assert "eval/ssim" in run.metrics and run.params["optim.epochs"] == str(SWEEP_EPOCHS)
            assert "p2p.failure" not in run.tags

    # The killed trial: failed as stale, re-queued, and finished by resuming the same MLflow run.
    mine = [t for t in trials if t.key is not None and (t.key.cell, t.key.seed) == (killed["cell"], killed["seed"])]
    assert [t.state for t in mine] == [studies.FAILED, studies.COMPLETE]
    assert mine[0].failure is None  # no reason: its worker vanished
    final_run = mine[1].run_id
    if out_dirs is None or final_run == killed["run_id"]:
        assert final_run == killed["run_id"]
    else:
        assert tracking.run_record(killed["run_id"], tracking_uri).status == RunStatus.KILLED
    history = tracking.metric_points(final_run, "train/lr", tracking_uri)
    assert sorted({m.step for m in history}) == list(range(1, SWEEP_EPOCHS + 1))
    return children


# ---------------------------------------------------------------- a sweep in MLflow, with known numbers

SEEDS = (0, 1, 2)
# FCN IoU per cell and seed at the last epoch (3). 286x286 seed 1 failed.
IOU = {"1x1": (0.10, 0.12, 0.11), "16x16": (0.20, 0.20, 0.24), "70x70": (0.22, 0.25, 0.23),
       "286x286": (0.15, None, 0.14)}
# ... and at the intermediate epochs 1 and 2 (eval.every 1, on eval.every_max_images = 20 images).
EARLY = {"16x16": {1: (0.08, 0.10, 0.10), 2: (0.13, 0.10, 0.12)},  # below 1x1, mixed, then above
         "70x70": {1: (0.14, 0.10, 0.13), 2: (0.20, 0.23, 0.21)}}  # mixed, then above from epoch 2
PARAMS = {"eval.every": 1, "eval.every_max_images": 20, "eval.max_images": "null", "optim.epochs": 2,
          "optim.decay_epochs": 1}
MACHINE = "AMD EPYC 7B13, 2 cores, AVX2"
COMMIT_1, COMMIT_2 = "a" * 40, "b" * 40
MIN = 60_000
T0 = calendar.timegm((2026, 1, 5, 9, 0, 0)) * 1000  # the first sitting
T1 = T0 + 24 * 60 * MIN  # the sweep resumed the next day


def iou(cell, seed, epoch):
    return EARLY.get(cell, {}).get(epoch, IOU[cell])[seed]


def scores(value):
    return {"eval/fcn_iou": value, "eval/fcn_pixel_acc": 0.3 + value, "eval/fcn_class_acc": 0.1 + value,
            "eval/lpips": 0.5 - value, "eval/ssim": 0.2 + value / 10, "eval/psnr": 12 + value,
            "eval/l1": 0.4 - value / 10}


def fake_run(parent, cell, seed, start, stamps, end, commit, generator=None, failure=None):
    """One trial's run with its own times: epoch e's metrics logged at stamps[e - 1] (ms)."""
    c = tracking.client()
    tags = {"p2p.sweep": "patchsize", "p2p.cell": cell, "p2p.seed": str(seed), "p2p.scale": "paper",
            "p2p.git_commit": commit, "p2p.machine": MACHINE, tracking.PARENT_TAG: parent.run_id}
    run = c.create_run(tracking.experiment_id("patchsize"), start_time=start, tags=tags, run_name=f"{cell} seed{seed}")
    tracker = tracking.MlflowTracker.of(run.info.run_id)
    tracker.log_params(PARAMS)
    for epoch, stamp in enumerate(stamps, 1):
        c.log_metric(tracker.run_id, "train/lr", 2e-4, timestamp=stamp, step=epoch)
        tracker.log_metrics({"train/loss_D_real": 0.7 - 0.1 * epoch + 0.01 * seed, "train/loss_D_fake": 0.6,
                             "train/loss_G_GAN": 0.8 + 0.05 * epoch, "train/loss_G_L1": 0.4 / epoch}, step=epoch)
        if failure is None:
            tracker.log_metrics(scores(iou(cell, seed, epoch)), step=epoch)
    if generator is not None:
        tracker.log_artifact(generator)
    if failure is not None:
        tracker.set_tags({tracking.FAILURE_TAG: failure})
    c.set_terminated(tracker.run_id, RunStatus.FAILED if failure else RunStatus.FINISHED, end_time=end)


def make_sweep(tiny_overrides, tmp_path, with_generators=True):
    """A patchsize sweep at the paper scale (3 seeds) as the sweep engine leaves it, with known numbers.

    Sitting 1 runs seeds 0 and 1 two at a time (10 min each, 40 min) and starts 70x70 seed 2,
    which is killed after its first epoch; the next day the sweep is resumed: 70x70 seed 2
    continues (same run), 1x1, 16x16 and 286x286 seed 2 run (20 min). Wall time: 43 + 20 min.
    """
    parent = tracking.MlflowTracker()
    parent.start("patchsize", "patchsize-paper", tags={"p2p.sweep": "patchsize", "p2p.scale": "paper", "p2p.role": "sweep",
                                                       "p2p.set": "optim.epochs=2 eval.every=1"})
    generator = None
    if with_generators:
        from p2p.models import create_generator

        cfg = facades_config({**tiny_overrides, "data.crop_size": 32, "data.load_size": 32})
        generator = tmp_path / "generator.pt"
        checkpoint.save_atomic({"format": checkpoint.FORMAT, "config": to_dict(cfg),
                                "generator": create_generator(cfg).state_dict()}, generator)

    def normal(cell, seed, start, commit):
        fake_run(parent, cell, seed, start, [start + 3 * MIN, start + 6 * MIN, start + 9 * MIN], start + 10 * MIN,
                 commit, generator)

    slots = [[("1x1", 0), ("16x16", 0)], [("70x70", 0), ("286x286", 0)], [("1x1", 1), ("16x16", 1)],
             [("70x70", 1)]]
    for k, slot in enumerate(slots):
        for cell, seed in slot:
            normal(cell, seed, T0 + 10 * k * MIN, COMMIT_1)
    fake_run(parent, "286x286", 1, T0 + 30 * MIN, [T0 + 33 * MIN], T0 + 35 * MIN, COMMIT_1,
             failure="non-finite loss (train/loss_G_GAN) in epoch 2 by step 17")
    fake_run(parent, "70x70", 2, T0 + 40 * MIN, [T0 + 43 * MIN, T1 + 3 * MIN, T1 + 6 * MIN], T1 + 7 * MIN, COMMIT_1,
             generator)
    normal("1x1", 2, T1, COMMIT_2)
    normal("16x16", 2, T1 + 7 * MIN, COMMIT_2)
    normal("286x286", 2, T1 + 10 * MIN, COMMIT_2)
    return parent


# ---------------------------------------------------------------- servers


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def postgres_bin() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb")) or list(filter(None, [shutil.which("initdb")]))
    if not found:
        pytest.fail("PostgreSQL is not installed (Debian: apt-get install postgresql; .ci/run installs it)")
    return Path(found[-1]).parent


def wait_until(check, timeout: float, what: str, log: Path | None = None) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if check():
            return
        time.sleep(0.3)
    pytest.fail(f"{what} did not start in {timeout} s" + (f":\n{log.read_text()[-3000:]}" if log else ""))


@contextlib.contextmanager
def postgres_server(prefix: str, password: str | None = None, settings: tuple[str, ...] = ()) -> Iterator[str]:
    """A throwaway PostgreSQL on a free port of 127.0.0.1, user p2p, databases `optuna` and `mlflow`; yields its
    base URL. With `password` it checks passwords (scram-sha-256), else it trusts every login; `settings` are
    more `-c name=value` server settings."""
    bin_dir = postgres_bin()
    folder = Path(tempfile.mkdtemp(prefix=prefix))
    as_user = {}
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root
        owner = pwd.getpwnam("postgres")
        os.chown(folder, owner.pw_uid, owner.pw_gid)
        as_user = {"user": owner.pw_uid, "group": owner.pw_gid, "extra_groups": []}
    auth, env = ["-A", "trust"], dict(os.environ)
    if password is not None:
        pwfile = folder / "pw"
        pwfile.write_text(password + "\n")
        if as_user:
            os.chown(pwfile, as_user["user"], as_user["group"])
        auth, env["PGPASSWORD"] = ["-A", "scram-sha-256", "--pwfile", pwfile], password
    subprocess.run([bin_dir / "initdb", "-D", folder / "data", *auth, "-U", "p2p", "--no-sync", "-E", "UTF8"],
                   check=True, capture_output=True, cwd=folder, **as_user)
    port, log = free_port(), folder / "server.log"
    options = [arg for setting in ("fsync=off", *settings) for arg in ("-c", setting)]
    server = subprocess.Popen([bin_dir / "postgres", "-D", folder / "data", "-p", str(port), "-h", "127.0.0.1",
                               "-k", folder, *options], stdout=open(log, "w"), stderr=subprocess.STDOUT,
                              cwd=folder, **as_user)
    try:
        ready = [bin_dir / "pg_isready", "-q", "-h", "127.0.0.1", "-p", str(port)]
        wait_until(lambda: subprocess.run(ready).returncode == 0, 30, "PostgreSQL", log)
        for db in ("optuna", "mlflow"):
            subprocess.run([bin_dir / "createdb", "-h", "127.0.0.1", "-p", str(port), "-U", "p2p", db], check=True,
                           env=env)
        user = "p2p" if password is None else f"p2p:{password}"
        yield f"postgresql+psycopg2://{user}@127.0.0.1:{port}"
    finally:
        server.send_signal(signal.SIGINT)  # "fast" shutdown: disconnects clients instead of waiting for them
        server.wait(timeout=60)
        shutil.rmtree(folder, ignore_errors=True)



"""`p2p sweep --slurm`: the refusals, the sbatch script and `--status` (fast tier, no cluster), then tiny sweeps
submitted to a real one-node Slurm started by tests/slurm_cluster.py (slow tier): two array tasks finish every
(cell, seed) once on a journal storage; a task cancelled mid-trial on PostgreSQL, the command run again, still once.

The real-Slurm tests are skipped only where the cluster cannot start, with the reason (SLURM_ABSENT);
`.ci/run` fails on that skip, as it does on the shared data's.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from p2p import tracking
from p2p.cli import main
from p2p.sweep import study as studies
from p2p.sweep.slurm import time_minutes
from p2p.sweep.spec import TrialKey, load_spec, run_dir
from p2p.tracking_protocol import RunStatus
from tests.helpers import OK_CELLS, SWEEP_EPOCHS, free_port, one_error_line, postgres_server, write_sweep_spec
from tests.slurm_cluster import SlurmUnavailable, slurm_cluster

SLURM_ABSENT = "Slurm cannot start"  # the skip reason's start: .ci/run fails on it


# ---------------------------------------------------------------- no cluster needed


@pytest.fixture
def login(tmp_path, monkeypatch):
    """A login node's checkout (the current folder) under tmp_path/shared; tmp_path/local is one node's own disk."""
    shared = tmp_path / "shared"
    (shared / "checkout").mkdir(parents=True)
    (tmp_path / "local").mkdir()
    monkeypatch.chdir(shared / "checkout")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{free_port()}")  # a server (down: checked last)
    monkeypatch.setenv("P2P_CACHE_DIR", str(shared / "cache"))
    monkeypatch.delenv("P2P_SWEEP_STORAGE", raising=False)
    spec = write_sweep_spec(shared, "cluster", OK_CELLS, seeds=1)
    return spec, shared


def submit_args(spec: Path, storage: str, *more: str) -> list[str]:
    return ["sweep", str(spec), "--slurm", "--scale", "cpu", "--storage", storage, "--no-progress", *more]


@pytest.mark.parametrize("case, names", [
    ("sqlite storage", ["--storage sqlite:", "not safe from many nodes", "journal:///"]),
    ("sqlite mlflow", ["MLFLOW_TRACKING_URI sqlite:", "not safe from many nodes", "MLflow server"]),
    ("out_dir", ["runtime.out_dir", "/local/runs", "--shared-root"]),
    ("fcn cache", ["$P2P_CACHE_DIR", "/local/cache", "FCN scorer"]),
    ("journal", ["the journal storage", "/local/sweep.log"]),
    ("unreachable storage", ["--storage postgresql", "p2p:***@127.0.0.1", "cannot open the Optuna storage"]),
    ("unreachable mlflow", ["MLFLOW_TRACKING_URI http://127.0.0.1", "cannot reach the MLflow tracking store"]),
])
def test_refused_before_anything_is_submitted(login, tmp_path, monkeypatch, capsys, case, names):
    spec, shared = login
    storage, more = f"journal://{shared / 'sweep.log'}", []
    if case == "sqlite storage":
        storage = f"sqlite:///{shared / 'optuna.db'}"
    elif case == "sqlite mlflow":
        monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{shared / 'mlflow.db'}")
    elif case == "out_dir":
        more = ["--set", f"runtime.out_dir={tmp_path / 'local' / 'runs'}"]
    elif case == "fcn cache":
        monkeypatch.setenv("P2P_CACHE_DIR", str(tmp_path / "local" / "cache"))
        more = ["--set", 'eval.metrics=["ssim", "fcn"]']
    elif case == "journal":
        storage = f"journal://{tmp_path / 'local' / 'sweep.log'}"
    elif case == "unreachable storage":
        storage = f"postgresql://p2p:secret@127.0.0.1:{free_port()}/optuna"
    assert main(submit_args(spec, storage, "--shared-root", str(shared), *more)) == 2
    one_error_line(capsys.readouterr().err, *names, secret="secret")
    assert not (shared / "runs" / "sweeps").exists()  # nothing submitted, no log folder made
    assert not (shared / "sweep.log").exists() or case == "unreachable mlflow"


def test_out_dir_on_a_shared_root_passes_the_path_checks(login, capsys):
    """The same sweep, its paths all under --shared-root: past every path check, stopped only by the MLflow server
    that is down (the last check), so the rule does not refuse what it should let through."""
    spec, shared = login
    assert main(submit_args(spec, f"journal://{shared / 'sweep.log'}", "--shared-root", str(shared))) == 2
    one_error_line(capsys.readouterr().err, "cannot reach the MLflow tracking store")


def test_dry_run_prints_the_sbatch_script_with_the_array_and_resources(login, capsys):
    spec, shared = login
    args = submit_args(spec, "postgresql://p2p@db/optuna", "--dry-run", "--tasks", "3", "--gpus-per-task", "2",
                       "--per-gpu", "2", "--cpus-per-task", "8", "--partition", "gpu", "--time", "1-2:30",
                       "--slurm-option", "account=lab")
    assert main(args) == 0
    out = capsys.readouterr().out
    lines = set(out.splitlines())
    for flag in ("--array=0-2%3", "--gpus-per-task=2", "--cpus-per-task=8", "--partition=gpu", "--time=1590",
                 "--account=lab", "--signal=USR2@120", "--job-name=p2p-cluster-cpu"):
        assert f"#SBATCH {flag}" in lines, (flag, out)
    assert "-m submitit.core._submit" in out
    # 2 GPUs x 2 workers per GPU share the task's 8 CPUs: 2 threads each
    assert "# each task runs 4 worker(s):" in out and "--threads 2 --pack 1" in out and "--worker" in out


def test_time_limits_in_slurm_forms_and_durations():
    assert [time_minutes(v) for v in ("90m", "4h", "900s", "30", "30:30", "1:00:00", "2-0", "1-2:30:30")] == \
        [90, 240, 15, 30, 31, 60, 2880, 1591]


def test_slurm_flags_need_slurm(login, capsys):
    spec, _ = login
    assert main(["sweep", str(spec), "--tasks", "2"]) == 2
    one_error_line(capsys.readouterr().err, "--tasks", "only with --slurm")


def test_status_reads_the_journal_study(login, capsys):
    """Per cell: done / running / failed / queued, and the running trial's heartbeat, from the study alone."""
    spec_path, shared = login
    url = f"journal://{shared / 'sweep.log'}"
    spec = load_spec(spec_path)
    storage = studies.open_storage(url, heartbeat_s=5)
    study = studies.create_or_load(storage, spec, "cpu", [])
    keys = [TrialKey(c, s) for c in ("a", "lsgan") for s in (0, 1)]
    studies.enqueue_grid(study, keys)
    done = studies.claim_waiting(study, storage)
    done.complete(0.5, "run0", 3.0)
    running = studies.claim_waiting(study, storage)
    running.reached_epoch(2)
    failed = studies.claim_waiting(study, storage)
    failed.fail("non-finite loss")
    assert main(["sweep", str(spec_path), "--status", "--storage", url, "--scale", "cpu"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("sweep cluster (cpu): 1 done, 1 running, 1 failed, 1 queued")
    assert out[2].split() == ["a", "1", "1", "0", "0"]
    assert out[3].split() == ["lsgan", "0", "0", "1", "1"]
    assert out[5].split()[:5] == ["a", "seed1", "epoch", "2", "worker"] and "last heartbeat" in out[5]


# ---------------------------------------------------------------- a real one-node Slurm


@pytest.fixture(scope="module")
def cluster():
    try:
        with slurm_cluster() as started:
            yield started
    except SlurmUnavailable as exc:
        pytest.skip(f"{SLURM_ABSENT}: {exc}")


@pytest.fixture(scope="module")
def database():
    """PostgreSQL for the MLflow store of both tests (a database server, as a cluster's) and one Optuna study."""
    with postgres_server("p2p-slurm-pg-", settings=("synchronous_commit=off", "full_page_writes=off")) as url:
        yield url


def slurm_env(cluster, database: str) -> dict:
    from tests.helpers import DATA_ROOT

    env = {k: v for k, v in cluster.env.items() if k not in ("P2P_SWEEP_STORAGE",)}
    return {**env, "P2P_DATA_ROOT": str(DATA_ROOT), "MLFLOW_TRACKING_URI": f"{database}/mlflow"}


def sweep_cmd(spec: Path, storage: str, *more: str) -> list[str]:
    return [sys.executable, "-m", "p2p", "sweep", str(spec), "--slurm", "--scale", "cpu", "--storage", storage,
            "--heartbeat", "1", "--no-progress", "--time", "10", *more]


def check_once(spec_path: Path, storage: str, tracking_uri: str, keys: list[str]) -> dict:
    """Every (cell, seed) COMPLETE in exactly one trial and FINISHED in exactly one MLflow run; nothing left running."""
    spec = load_spec(spec_path)
    trials = studies.records(studies.load(studies.open_storage(storage), spec, "cpu"))
    assert sorted(t.key.label for t in trials if t.state == studies.COMPLETE) == keys
    assert not [t for t in trials if t.state in (studies.RUNNING, studies.WAITING)]
    runs = tracking.find_tagged_runs(spec.name, {"p2p.sweep": spec.name, "p2p.scale": "cpu"}, uri=tracking_uri)
    children = [r for r in runs if r.tags.get("p2p.role") != "sweep"]
    assert not [r for r in runs if r.status == RunStatus.RUNNING]
    finished = {f"{r.tags['p2p.cell']} seed{r.tags['p2p.seed']}": r for r in children if r.status == RunStatus.FINISHED}
    assert sorted(finished) == keys and len([r for r in children if r.status == RunStatus.FINISHED]) == len(keys)
    return finished


@pytest.mark.slow
def test_two_array_tasks_finish_every_trial_once_on_a_journal_storage(cluster, database, data_root, tmp_path):
    spec = write_sweep_spec(tmp_path, "slurm-journal", OK_CELLS, seeds=1)
    storage = f"journal://{tmp_path / 'sweep.log'}"
    env = slurm_env(cluster, database)
    quick = ["--set", "optim.epochs=1", "--set", "data.max_images=4"]  # no trial is cut short here: keep them short
    done = subprocess.run(sweep_cmd(spec, storage, "--tasks", "2", "--wait", *quick), cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr + cluster.logs()
    assert "submitted Slurm job" in done.stdout and "--status" in done.stdout
    check_once(spec, storage, env["MLFLOW_TRACKING_URI"], ["a seed0", "lsgan seed0"])
    logs = sorted((tmp_path / "runs" / "sweeps" / "slurm-journal" / "cpu" / "slurm").glob("*_log.out"))
    assert len({p.name.split("_")[1] for p in logs}) == 2  # two array tasks ran
    status = subprocess.run([sys.executable, "-m", "p2p", "sweep", str(spec), "--status", "--storage", storage,
                             "--scale", "cpu"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert status.returncode == 0 and "2 done, 0 running, 0 failed, 0 queued" in status.stdout, status.stderr


@pytest.mark.slow
def test_a_cancelled_task_costs_no_trial_twice_on_postgresql(cluster, database, data_root, tmp_path):
    """scancel one array task mid-trial: its worker puts the trial back (checkpoint kept), the same command
    submitted again adds workers; every (cell, seed) finishes once, the cancelled one in its own MLflow run."""
    spec_path = write_sweep_spec(tmp_path, "slurm-cancel", OK_CELLS, seeds=1)
    storage = f"{database}/optuna"
    env = slurm_env(cluster, database)
    first = subprocess.run(sweep_cmd(spec_path, storage, "--tasks", "2"), cwd=tmp_path, env=env, capture_output=True,
                           text=True, timeout=300)
    assert first.returncode == 0, first.stdout + first.stderr
    spec = load_spec(spec_path)
    store = studies.open_storage(storage)
    end, victim = time.monotonic() + 240, None
    while victim is None:
        assert time.monotonic() < end, cluster.logs()
        try:
            study = studies.load(store, spec, "cpu")
        except KeyError:
            time.sleep(0.3)
            continue
        for trial in studies.records(study):
            folder = run_dir(tmp_path / "runs", spec.name, "cpu", trial.key.cell, trial.key.seed)
            if trial.state == studies.RUNNING and 1 <= trial.epoch <= SWEEP_EPOCHS - 2 \
                    and (folder / "checkpoint.pt").is_file():
                victim = trial
                break
        time.sleep(0.1)
    task = array_task_of(victim.worker)
    cancelled_at = time.monotonic()
    cluster.run("scancel", task)
    again = subprocess.run(sweep_cmd(spec_path, storage, "--tasks", "1", "--wait"), cwd=tmp_path, env=env,
                           capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stdout + again.stderr + cluster.logs()
    cluster.wait_empty(60)
    runs = check_once(spec_path, storage, env["MLFLOW_TRACKING_URI"], ["a seed0", "lsgan seed0"])
    trials = studies.records(studies.load(store, spec, "cpu"))
    mine = [t for t in trials if t.key == victim.key]
    assert [t.state for t in mine] == [studies.COMPLETE] and mine[0].number == victim.number  # back in the queue
    final = runs[victim.key.label]
    assert final.run_id == mine[0].run_id
    steps = [m.step for m in tracking.metric_points(final.run_id, "train/lr", env["MLFLOW_TRACKING_URI"])]
    assert sorted(set(steps)) == list(range(1, SWEEP_EPOCHS + 1))  # one run, every epoch
    print(f"\ncancelled task {task} at epoch {victim.epoch} of {victim.key.label}; trials redone: "
          f"{len(mine) - 1}; epochs logged twice: {len(steps) - len(set(steps))}; "
          f"cancel to sweep end: {time.monotonic() - cancelled_at:.0f} s")


def array_task_of(worker: str) -> str:
    """The Slurm array task (12_1) a worker (host:pid) runs in: its SLURM_ARRAY_* variables (one node: /proc)."""
    pid = int(worker.rsplit(":", 1)[1])
    env = dict(item.split("=", 1) for item in Path(f"/proc/{pid}/environ").read_text().split("\0") if "=" in item)
    return f"{env['SLURM_ARRAY_JOB_ID']}_{env['SLURM_ARRAY_TASK_ID']}"

"""`p2p sweep SPEC --slurm`: the sweep's workers submitted to a Slurm cluster as one job array (submitit).

Each array task runs ordinary sweep workers (`p2p sweep SPEC --worker`, what the sweep command starts on one
machine) against the study on a storage every node reaches: they claim trials, beat, resume checkpoints and
record outcomes exactly as they do locally, so a task that dies has its trial taken over after three
heartbeats, and a resubmission of the same command adds workers to the same study. This command prepares the
study on the login node, submits, prints the job id, the logs and the command that follows the sweep, and
returns (or, with --wait, follows the trials until the array ends).

Before anything is submitted, what cannot work across nodes is refused with one line: a sqlite study or
MLflow store (not safe from many nodes on a network filesystem), a path a node may not see (the rule:
`runtime.out_dir`, the FCN scorer cache and a journal storage must lie under the folder the command runs
in, which the tasks start in and whose .venv they run, or under a `--shared-root`), and a storage or
tracking store this login node cannot reach.
"""

from __future__ import annotations

import math
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from p2p.errors import UserError
from p2p.sweep.driver import Plan, SweepOptions, default_storage_url, resolve_pack
from p2p.sweep.spec import SweepJob

LOG_FOLDER = "slurm"  # under <runtime.out_dir>/sweeps/<sweep>/<scale>/
DEFAULT_TIME = "4h"
SIGNAL_DELAY_S = 120  # Slurm's USR2 this long before the time limit: the workers stop and save (an epoch's checkpoint)
STOP_WAIT_S = 90  # how long a task waits for its stopping workers to put their trials back


@dataclass(frozen=True)
class SlurmOptions:
    tasks: int = 0  # array tasks; 0: one per (pack of) trial(s) not finished
    partition: str | None = None
    gpus_per_task: int = 0
    cpus_per_task: int = 1
    time: str = DEFAULT_TIME  # per task: 90m, 4h, 2.5h, or Slurm's [D-]HH:MM:SS
    options: tuple[str, ...] = ()  # more sbatch options, KEY=VALUE (account=lab, qos=high, constraint=a100)
    shared_roots: tuple[str, ...] = ()  # folders every node mounts, besides the one the command runs in
    wait: bool = False


# ---------------------------------------------------------------- what a node can see and reach


def time_minutes(value: str) -> int:
    """--time as whole minutes: a duration (90m, 4h, 2.5h, 900s) or Slurm's own forms (MM, MM:SS, HH:MM:SS, D-HH,
    D-HH:MM, D-HH:MM:SS)."""
    from p2p.sweep.rounds import parse_duration

    text = value.strip()
    if re.fullmatch(r"\d+-\d+(:\d+){0,2}", text):
        days, rest = text.split("-", 1)
        hours, minutes, seconds = ([int(p) for p in rest.split(":")] + [0, 0])[:3]
        total = int(days) * 1440 + hours * 60 + minutes + seconds / 60
    elif re.fullmatch(r"\d+(:\d+){0,2}", text):
        parts = [int(p) for p in text.split(":")]
        hours, minutes, seconds = ([0] * (3 - len(parts)) + parts) if len(parts) == 3 else (0, *parts, 0)[:3] \
            if len(parts) == 2 else (0, parts[0], 0)
        total = hours * 60 + minutes + seconds / 60
    else:
        total = parse_duration(value, "--time") / 60
    return max(1, math.ceil(total))


def shared_roots(options: SlurmOptions) -> list[Path]:
    return [Path.cwd().resolve(), *(Path(r).expanduser().resolve() for r in options.shared_roots)]


def check_shared(path: str | Path, setting: str, roots: list[Path]) -> None:
    """`path` (relative ones: from the current folder) lies under a folder every node sees, else one line naming `setting`."""
    resolved = Path(path).expanduser().resolve()
    if not any(resolved.is_relative_to(root) for root in roots):
        raise UserError(f"--slurm: {setting} is {resolved}, which the cluster's nodes may not see: it must lie under "
                        f"the folder this command runs in or a --shared-root ({', '.join(map(str, roots))})")


def check_cluster_safe(plan: Plan, storage_url: str, options: SlurmOptions) -> None:
    """Everything that would break only once the tasks start, refused now (one line, exit 2), cheapest first."""
    from p2p import tracking
    from p2p.cache import CACHE_ENV, cache_root
    from p2p.sweep import study as studies

    if storage_url.startswith("sqlite:"):
        raise UserError(f"--storage {studies.redact(storage_url)}: a sqlite study is not safe from many nodes; use "
                        "--storage postgresql://USER:PASSWORD@HOST/DB, or journal:///shared/path/sweep.log on a "
                        "filesystem every node mounts")
    uri = tracking.tracking_uri()
    if uri.startswith(("sqlite:", "file:")) or "://" not in uri:
        raise UserError(f"{tracking.store_name(uri)}: a {'sqlite' if uri.startswith('sqlite:') else 'file'} MLflow "
                        "store is not safe from many nodes; set MLFLOW_TRACKING_URI to an MLflow server "
                        "(http://LOGIN-NODE:5000) or a database server (docs/sweeps.md, \"Run on a Slurm cluster\")")
    roots = shared_roots(options)
    journal = studies.journal_path(storage_url)
    if journal is not None:
        check_shared(journal, "the journal storage", roots)
    for cell, cfg in plan.configs.items():
        check_shared(cfg.runtime.out_dir, f"runtime.out_dir (cell {cell})", roots)
        if "fcn" in cfg.eval.metrics:
            setting = ("eval.cache_dir" if cfg.eval.cache_dir else
                       f"${CACHE_ENV}" if os.environ.get(CACHE_ENV) else "the FCN scorer cache (.cache/p2p)")
            check_shared(cache_root(cfg.eval.cache_dir), f"{setting} (cell {cell}, where the FCN scorer is cached)",
                         roots)
    studies.check_storage(storage_url)
    tracking.check_store(uri)


# ---------------------------------------------------------------- the job array


def worker_command(spec_path: str | Path, job: SweepJob, name: str | None) -> list[str]:
    """What each worker process of a task runs: the sweep's ordinary worker (as the sweep command starts it)."""
    cmd = [sys.executable, "-m", "p2p", "sweep", str(Path(spec_path).resolve()), "--worker", "--scale", job.scale,
           "--storage", job.storage_url, "--heartbeat", str(job.heartbeat_s), "--threads", str(job.threads),
           "--pack", str(job.pack), "--no-progress"]
    if name:
        cmd += ["--name", name]
    for override in job.overrides:
        cmd += ["--set", override]
    return cmd


class SweepTask:
    """One array task: `workers` sweep workers (one per GPU of the task times --per-gpu, else one), run to the end.

    Slurm's USR2 before the time limit reaches every process of the task: the workers stop as on SIGTERM (their
    trials back in the queue, checkpoints kept), and submitit, through `checkpoint`, requeues the task, which
    then joins the study again. A scancel's SIGTERM also reaches every process: the workers stop the same way.
    """

    def __init__(self, command: list[str], workers: int, gpus: int):
        self.command, self.workers, self.gpus = command, workers, gpus
        self._procs: list[subprocess.Popen] = []

    def __call__(self) -> int:
        visible = [d for d in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if d]
        for index in range(self.workers):
            env = dict(os.environ)
            if self.gpus > 1 and len(visible) > 1:
                env["CUDA_VISIBLE_DEVICES"] = visible[index % len(visible)]  # the workers dealt round the task's GPUs
            proc = subprocess.Popen(self.command, stdin=subprocess.PIPE, text=True, env=env)
            proc.stdin.write("go\n")
            proc.stdin.close()
            self._procs.append(proc)
        while any(p.poll() is None for p in self._procs):
            time.sleep(1)  # not wait(): submitit's signal handler polls these too
        codes = [p.returncode for p in self._procs]
        bad = [c for c in codes if c != 0]
        if bad:
            raise RuntimeError(f"sweep worker(s) exited with {bad} (their trials are back in the queue or failed; "
                               "the log above says why)")
        return 0

    def checkpoint(self):
        """Preempted or near the time limit (USR2): let the workers put their trials back, then be requeued."""
        import submitit

        for proc in self._procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        end = time.monotonic() + STOP_WAIT_S
        while any(p.poll() is None for p in self._procs) and time.monotonic() < end:
            time.sleep(0.5)
        return submitit.helpers.DelayedSubmission(SweepTask(self.command, self.workers, self.gpus))


def sbatch_parameters(plan: Plan, options: SlurmOptions) -> dict:
    """submitit's SlurmExecutor parameters (its names for sbatch's options)."""
    extra = {}
    for item in options.options:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UserError(f"--slurm-option {item}: expected KEY=VALUE (an sbatch option without its --, e.g. "
                            "account=lab)")
        extra[key.strip().lstrip("-")] = value
    params = {"job_name": f"p2p-{plan.spec.name}-{plan.scale}", "time": time_minutes(options.time),
              "cpus_per_task": options.cpus_per_task, "signal_delay_s": SIGNAL_DELAY_S}
    if options.partition:
        params["partition"] = options.partition
    if options.gpus_per_task:
        params["gpus_per_task"] = options.gpus_per_task
    if extra:
        params["additional_parameters"] = extra
    return params


def log_folder(plan: Plan) -> Path:
    out_dir = Path(next(iter(plan.configs.values())).runtime.out_dir)
    return (out_dir / "sweeps" / plan.spec.name / plan.scale / LOG_FOLDER).resolve()


def task_count(plan: Plan, options: SlurmOptions, sweep: SweepOptions, left: int) -> int:
    if options.tasks < 0:
        raise UserError(f"--tasks {options.tasks}: expected a count of array tasks >= 1 (or 0: one per trial left)")
    pack = resolve_pack(sweep.pack)
    return options.tasks or max(1, math.ceil(left / (pack * workers_per_task(options, sweep))))


def workers_per_task(options: SlurmOptions, sweep: SweepOptions) -> int:
    return max(1, options.gpus_per_task) * (sweep.per_gpu or 1) if options.gpus_per_task else 1


def make_job(plan: Plan, sweep: SweepOptions, options: SlurmOptions) -> SweepJob:
    """The workers' job: threads are the task's CPUs shared among its worker processes."""
    if options.cpus_per_task < 1 or options.gpus_per_task < 0:
        raise UserError("--cpus-per-task must be >= 1 and --gpus-per-task >= 0")
    threads = max(1, options.cpus_per_task // workers_per_task(options, sweep))
    return SweepJob(plan.spec, plan.scale, sweep.storage or default_storage_url(), tuple(sweep.overrides),
                    sweep.heartbeat_s, threads, False, resolve_pack(sweep.pack))


def sbatch_script(plan: Plan, sweep: SweepOptions, options: SlurmOptions, tasks: int) -> str:
    """The script submitit would hand to sbatch (its own renderer), for --dry-run."""
    from submitit.slurm.slurm import _make_sbatch_string

    folder = log_folder(plan)
    command = " ".join([shlex.quote(sys.executable), "-u -m submitit.core._submit", shlex.quote(str(folder))])
    return _make_sbatch_string(command=command, folder=folder, map_count=tasks if tasks > 1 else None,
                               **sbatch_parameters(plan, options))


def status_command(spec_path: str | Path, sweep: SweepOptions, scale: str) -> str:
    cmd = ["p2p", "sweep", str(spec_path), "--status", "--scale", scale]
    if sweep.storage:
        cmd += ["--storage", sweep.storage]
    if sweep.name:
        cmd += ["--name", sweep.name]
    return shlex.join(cmd)


def run_slurm(spec_path: str | Path, sweep: SweepOptions, options: SlurmOptions, dry_run: bool = False) -> int:
    """`p2p sweep SPEC --slurm`: the plan (scale auto: paper when the tasks get GPUs, as the login node may have
    none), then the checks and the submission."""
    from p2p.sweep.driver import make_plan
    from p2p.sweep.spec import load_spec

    scale = sweep.scale if sweep.scale != "auto" else "paper" if options.gpus_per_task else "cpu"
    spec = load_spec(spec_path, sweep.name)
    plan = make_plan(spec, scale, list(sweep.overrides))
    return submit_sweep(spec_path, plan, sweep, options, dry_run)


def submit_sweep(spec_path: str | Path, plan: Plan, sweep: SweepOptions, options: SlurmOptions,
                 dry_run: bool = False) -> int:
    """Check, prepare the study, submit the array; follow it with --wait. Returns the exit status."""
    from p2p.sweep import study as studies

    job = make_job(plan, sweep, options)
    if dry_run:
        tasks = task_count(plan, options, sweep, plan.trial_count)
        print(sbatch_script(plan, sweep, options, tasks))
        print(f"# each task runs {workers_per_task(options, sweep)} worker(s): "
              f"{shlex.join(worker_command(spec_path, job, sweep.name))}")
        return 0
    check_cluster_safe(plan, job.storage_url, options)
    from p2p.sweep.driver import _prepare  # the sweep command's own preparation (tests/test_sweep.py calls it too)

    study = _prepare(plan, job, sweep.retry_failed)
    left = sum(1 for t in studies.records(study) if not t.finished) if plan.spec.search is None else plan.trial_count
    if left == 0 and plan.spec.search is None:
        print(f"p2p: sweep {plan.spec.name} ({plan.scale}): every trial has finished; nothing to submit",
              file=sys.stderr)
        from p2p.sweep.driver import summary

        print(summary(plan, study))
        return 0
    tasks = task_count(plan, options, sweep, left)
    array_id = submit(spec_path, plan, sweep, options, job, tasks)
    folder = log_folder(plan)
    print(f"p2p: submitted Slurm job {array_id}: {tasks} task{'s' if tasks > 1 else ''} x "
          f"{workers_per_task(options, sweep)} worker(s) on sweep {plan.spec.name} ({plan.scale}), "
          f"{left} trial(s) to run; storage {studies.redact(job.storage_url)}")
    print(f"  logs:   {folder}/{array_id}_<task>_0_log.out (and .err)")
    print(f"  follow: {status_command(spec_path, sweep, plan.scale)}")
    print(f"  cancel: scancel {array_id}   (trials go back to the queue; the same command resubmits)")
    if not options.wait:
        return 0
    return follow(plan, study, array_id, sweep.progress)


def submit(spec_path: str | Path, plan: Plan, sweep: SweepOptions, options: SlurmOptions, job: SweepJob,
           tasks: int) -> str:
    import submitit

    try:
        executor = submitit.SlurmExecutor(folder=log_folder(plan))
    except RuntimeError as exc:  # no srun here
        raise UserError(f"--slurm: {exc} (run the command on the cluster's login node)") from None
    executor.update_parameters(**sbatch_parameters(plan, options))
    task = SweepTask(worker_command(spec_path, job, sweep.name), workers_per_task(options, sweep),
                     options.gpus_per_task)
    try:
        with executor.batch():
            jobs = [executor.submit(task) for _ in range(tasks)]
    except (submitit.core.utils.FailedJobError, subprocess.CalledProcessError, OSError) as exc:
        raise UserError(f"--slurm: sbatch refused the job array ({str(exc).strip().splitlines()[-1][:300]})") from None
    return jobs[0].job_id.split("_")[0]


# ---------------------------------------------------------------- --wait


class _ArrayTasks:
    """The array, seen as a process for the driver's progress loop: running while squeue lists any of its tasks
    (squeue, not sacct: many clusters and the test cluster keep no accounting)."""

    def __init__(self, array_id: str):
        self.array_id, self.returncode = array_id, None

    def poll(self) -> int | None:
        done = subprocess.run(["squeue", "--noheader", "--array", "--jobs", self.array_id, "--format=%i"],
                              capture_output=True, text=True, timeout=60)
        if done.returncode == 0 and not done.stdout.strip():
            self.returncode = 0
        return self.returncode


def follow(plan: Plan, study, array_id: str, progress: bool) -> int:
    """The driver's progress bar and trial lines until the array leaves the queue, then its summary."""
    from p2p.sweep.driver import finish, watch

    tasks = _ArrayTasks(array_id)
    watch(plan, study, [tasks], progress)
    return finish(plan, study, [tasks.returncode])

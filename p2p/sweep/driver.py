"""`p2p sweep SPEC`: prepare the study, start the workers, show progress, print what was found.

The same command runs, resumes, and joins a sweep: on another machine pointed at the same
storage (`--storage postgresql://...`) and tracking server (`MLFLOW_TRACKING_URI`) it adds
its workers to the sweep already under way.
"""

from __future__ import annotations

import math
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from p2p import contract
from p2p.config import RunConfig
from p2p.errors import UserError
from p2p.sweep import study as studies
from p2p.sweep.claims import FindingsReader
from p2p.sweep.progress import Progress
from p2p.sweep.spec import SweepJob, SweepSpec, TrialKey, check_cli_overrides, grid, load_spec, trial_config
from p2p.sweep.study import TrialRecord

POLL_S = 3.0  # seconds between looks at the study (a finished trial's line appears within this)
STORAGE_ENV, DEFAULT_STUDY_DB = "P2P_SWEEP_STORAGE", "optuna.db"  # the study's default sqlite file


@dataclass(frozen=True)
class SweepOptions:
    scale: str = "auto"  # cpu | paper | auto (paper where CUDA is present)
    workers: int = 0  # 0: auto
    pack: int = 0  # trials per worker process (0: auto, see resolve_pack)
    per_gpu: int = 0  # worker processes per GPU when --workers is auto (0: auto, see AUTO_PER_GPU)
    storage: str | None = None  # None: $P2P_SWEEP_STORAGE, else sqlite optuna.db here
    overrides: tuple[str, ...] = ()
    name: str | None = None
    retry_failed: bool = False
    heartbeat_s: int = 10
    progress: bool = True


@dataclass(frozen=True)
class Plan:
    """A sweep resolved for one scale: its trials and each cell's run config (or why it is invalid)."""

    spec: SweepSpec
    scale: str
    keys: list[TrialKey]  # grid trials; empty for a search
    configs: dict[str, RunConfig]  # cell -> config at the first seed (search: "base")
    invalid: dict[str, str]  # cell -> reason

    @property
    def trial_count(self) -> int:
        return self.spec.search.trials if self.spec.search is not None else len(self.keys)

    def epochs(self, cell: str) -> int:
        cfg = self.configs.get(cell) or next(iter(self.configs.values()))
        return cfg.optim.total_epochs


def default_storage_url() -> str:
    """`$P2P_SWEEP_STORAGE`, else the sqlite file `optuna.db` in the current folder (the project root)."""
    return os.environ.get(STORAGE_ENV) or "sqlite:///" + str(Path(DEFAULT_STUDY_DB).resolve())


def cuda_present() -> bool:
    """CUDA without paying for `import torch` on machines that plainly have no NVIDIA device."""
    if not (Path("/dev/nvidiactl").exists() or shutil.which("nvidia-smi")):
        return False
    import torch  # lazy: torch, only to count the GPUs

    return torch.cuda.is_available()


def resolve_scale(scale: str) -> str:
    return ("paper" if cuda_present() else "cpu") if scale == "auto" else scale


# Worker processes per GPU with --workers auto. At 7ba57ae four training processes on one H200 gave 4.1x
# the throughput of one (docs/speed.md), but this per-GPU count has not yet run on a GPU in this repository:
# until it has, auto keeps one process per GPU and `--per-gpu 4` is the user's choice.
AUTO_PER_GPU = 1


def resolve_workers(workers: int, trials: int, per_gpu: int = 0) -> tuple[int, int]:
    """(workers, threads per worker). Auto: `per_gpu` per GPU (0: AUTO_PER_GPU), the machine's cores shared
    among them; on a CPU one per core with one thread each (on the 2-core CPU, two 1-thread workers train far
    faster than one 2-thread one: docs/sweeps.md). Never more workers than trials."""
    cores = os.cpu_count() or 1
    if workers <= 0:
        gpus = _gpu_count()
        workers = gpus * (per_gpu if per_gpu > 0 else AUTO_PER_GPU) if gpus else cores
        workers = max(1, min(workers, trials))
    return workers, max(1, cores // workers)


# Trials packed into one worker process by `--pack auto`. On the 2-core CPU packing was measured not to pay
# (`make bench`, the sweep view: two 1-thread processes beat one process stepping two trials in turn). On CUDA
# packs of trials on parallel streams should fill the card (docs/speed.md), but this path has not yet run on a
# GPU: until it has, auto keeps one trial per process there too.
AUTO_PACK = {"cpu": 1, "cuda": 1}


def resolve_pack(pack: int) -> int:
    """`--pack`: a count >= 1, or 0 for auto (AUTO_PACK for the device the workers train on)."""
    if pack > 0:
        return pack
    return AUTO_PACK["cuda" if cuda_present() else "cpu"]


def _gpu_count() -> int:
    if not cuda_present():
        return 0
    import torch  # lazy: torch, only to count the GPUs

    return torch.cuda.device_count()


def make_plan(spec: SweepSpec, scale: str, overrides: list[str]) -> Plan:
    """Resolve every cell's config now, so a typo stops the sweep before any worker starts."""
    check_cli_overrides(spec, overrides)
    configs, invalid = {}, {}
    seed = spec.seeds_for(scale)[0]
    cells = [(c.name, c.overrides) for c in spec.cells] or [("base", {})]
    for name, cell_overrides in cells:
        try:
            configs[name] = trial_config(spec, scale, cell_overrides, seed, overrides)
        except UserError as exc:
            invalid[name] = str(exc)
    if not configs:  # nothing would run: the spec or --set is wrong, not one cell
        raise UserError(next(iter(invalid.values())))
    if spec.search is not None:
        low = {p.key: (p.choices[0] if p.choices is not None else (int(p.low) if p.integer else p.low))
               for p in spec.search.params}
        trial_config(spec, scale, low, seed, overrides)  # the searched keys exist and take these values
    metric_source = contract.score(spec.objective).metric
    for name, cfg in configs.items():
        if metric_source not in cfg.eval.metrics:
            raise UserError(f"{spec.path}: key 'objective.metric' is {spec.objective}, which needs '{metric_source}' "
                            f"in eval.metrics (cell {name} has {list(cfg.eval.metrics)})")
    keys = grid(spec, scale) if spec.search is None else []
    return Plan(spec, scale, keys, configs, invalid)


# ---------------------------------------------------------------- the command


def run_sweep(spec_path: str | Path, options: SweepOptions, dry_run: bool = False,
              findings: FindingsReader | None = None) -> int:
    """Run (or resume) every trial of the spec; `findings` gives the dry run its verdicts so far."""
    spec = load_spec(spec_path, options.name)
    plan = make_plan(spec, resolve_scale(options.scale), list(options.overrides))
    if dry_run:
        print(describe(plan, options, findings))
        return 0
    return run_trials(spec_path, plan, options)


def describe(plan: Plan, options: SweepOptions, findings: FindingsReader | None) -> str:
    """The dry run's table of trials, the verdicts so far (when `findings` can read them) and the time estimate."""
    from p2p.sweep.estimate import describe_plan  # lazy: torch, which the dry run's timing needs

    pack = resolve_pack(options.pack)
    workers, threads = resolve_workers(options.workers, math.ceil(plan.trial_count / pack), options.per_gpu)
    url = options.storage or default_storage_url()
    lines = findings_so_far(findings, plan) if plan.spec.search is None else []
    return describe_plan(plan, studies.find(url, plan.spec, plan.scale), url, workers, threads, pack, lines)


def findings_so_far(findings: FindingsReader | None, plan: Plan) -> list[str]:
    if findings is None:
        return []
    try:
        return list(findings(plan.spec, plan.scale).lines)
    except Exception as exc:  # an unreachable store must not stop a dry run
        return [f"  findings so far: cannot read the tracking store ({type(exc).__name__}: {exc})"[:300]]


def run_trials(spec_path: str | Path, plan: Plan, options: SweepOptions) -> int:
    """Start the workers on the plan's trials (those not yet finished), show progress, print the summary."""
    spec, scale, overrides = plan.spec, plan.scale, list(options.overrides)
    pack = resolve_pack(options.pack)
    workers, threads = resolve_workers(options.workers, math.ceil(plan.trial_count / pack), options.per_gpu)
    url = options.storage or default_storage_url()
    job = SweepJob(spec, scale, url, tuple(overrides), options.heartbeat_s, threads, options.progress, pack)
    # MLflow prints a link per finished run when it talks to a server: dozens of lines in a sweep.
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    # Workers start first and import torch while this process prepares the study; they
    # wait for "go" on their stdin (and leave quietly if it closes without one).
    procs = [_start_worker(spec_path, job, options.name, i, workers) for i in range(workers)]
    try:
        from p2p import tracking  # lazy: MLflow, only where the sweep logs its parent run

        # Both stores answer before any trial starts: a fault is one line naming its URL (the workers are
        # still waiting for "go", and leave quietly).
        studies.check_storage(url)
        tracking.check_store()
        study = _prepare(plan, job, options.retry_failed)
        _print_invalid(plan)
        for proc in procs:
            proc.stdin.write("go\n")
            proc.stdin.close()
        print(f"p2p: sweep {spec.name} ({scale}): {plan.trial_count} trials, {workers} worker"
              f"{'s' if workers > 1 else ''} x {threads} thread{'s' if threads > 1 else ''}"
              + (f", {pack} trials packed in each" if pack > 1 else "") + "; storage "
              f"{studies.redact(url)}", file=sys.stderr, flush=True)
        watch(plan, study, procs, options.progress)
    except BaseException:
        _stop(procs)
        raise
    return finish(plan, study, [p.returncode for p in procs])


def _start_worker(spec_path: str | Path, job: SweepJob, name: str | None, index: int, count: int) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "p2p", "sweep", str(spec_path), "--worker", "--scale", job.scale,
           "--storage", job.storage_url, "--heartbeat", str(job.heartbeat_s), "--threads", str(job.threads),
           "--pack", str(job.pack)]
    if name:
        cmd += ["--name", name]
    if not job.progress:
        cmd += ["--no-progress"]
    for override in job.overrides:
        cmd += ["--set", override]
    env = dict(os.environ)
    gpus = _gpu_count() if count > 1 else 0
    if gpus > 1:
        env["CUDA_VISIBLE_DEVICES"] = str(index % gpus)  # the workers dealt round the GPUs
    return subprocess.Popen(cmd, stdin=subprocess.PIPE, text=True, env=env)


def _prepare(plan: Plan, job: SweepJob, retry_failed: bool):
    """Create or load the study and queue the trials it lacks (the workers find or start the MLflow parent run)."""

    with studies.storage_lock(job.storage_url, studies.study_name(plan.spec.name, plan.scale)):
        storage = studies.open_storage(job.storage_url, job.heartbeat_s)
        study = studies.create_or_load(storage, plan.spec, plan.scale, list(job.overrides))
        studies.recover_stale(study, storage)
        if plan.spec.search is None:
            studies.enqueue_grid(study, plan.keys, retry_failed)
    return study


def _print_invalid(plan: Plan) -> None:
    for cell, reason in plan.invalid.items():
        print(f"p2p: warning: cell {cell} is invalid and its trials will be marked failed: {reason}",
              file=sys.stderr)


def _stop(procs: list[subprocess.Popen]) -> None:
    """Ask workers to stop (they put their trial back in the queue), then make sure they have."""
    for proc in procs:
        if proc.poll() is None:
            if proc.stdin and not proc.stdin.closed:
                proc.stdin.close()  # a worker still waiting for "go" exits on end of input
            proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# ---------------------------------------------------------------- progress


def watch(plan: Plan, study, procs: list[subprocess.Popen], progress: bool) -> None:
    """One bar over all epochs of all trials (every worker's, on every machine) and a line per finished trial."""


    total = sum(plan.epochs(k.cell) for k in plan.keys) or plan.trial_count * plan.epochs("base")
    trials = studies.records(study)
    seen = {t.number for t in trials if t.finished}
    pending: set[int] = set()
    # smoothing=0: the rate over the whole sweep, as epochs arrive in bursts from parallel workers
    bar = tqdm(total=total, initial=_epochs_done(plan, trials), unit="epoch", desc=f"{plan.spec.name} ({plan.scale})",
               disable=not progress, dynamic_ncols=True, smoothing=0)
    try:
        while True:
            running = [p for p in procs if p.poll() is None]
            trials = studies.records(study)
            retried = studies.retried_numbers(trials)
            for trial in trials:
                if trial.finished and trial.number not in seen:
                    if running and trial.state == studies.FAILED and trial.number not in (retried | pending):
                        pending.add(trial.number)  # its copy may be queued a moment after it failed: look again
                        continue
                    seen.add(trial.number)
                    line = _trial_line(plan, trial, trial.number in retried)
                    bar.write(line) if progress else print(line, flush=True)
            bar.update(_epochs_done(plan, trials) - bar.n)
            if not running:
                return
            time.sleep(POLL_S)
    finally:
        bar.close()


def _epochs_done(plan: Plan, trials: list) -> int:

    if plan.spec.search is None:
        done = 0
        for key, state in studies.key_states(trials, plan.keys).items():
            full = plan.epochs(key.cell)
            if state.state.settled:
                done += full
            elif state.trial is not None:
                done += min(full, state.trial.epoch)
        return done
    full = plan.epochs("base")
    return sum(full if t.finished else t.epoch for t in trials)


def _trial_line(plan: Plan, trial: TrialRecord, retried: bool = False) -> str:

    label = trial.label
    if trial.state == studies.COMPLETE:
        return (f"  done    {label:28s} {plan.spec.objective} {trial.value:.4f}"
                + (f"  ({_duration(trial.seconds)})" if trial.seconds else ""))
    if trial.state == studies.PRUNED:
        return f"  pruned  {label:28s} {trial.failure or ''}"
    reason = studies.failure_reason(trial).splitlines()[0][:200]
    if retried:  # a dead worker's trial, queued again: it resumes from its last checkpoint
        epoch = trial.epoch
        return f"  requeued {label:27s} {reason}; runs again" + (f" from epoch {epoch}" if epoch else "")
    return f"  failed  {label:28s} {reason}"


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(round(seconds)), 60)
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


# ---------------------------------------------------------------- the end


def finish(plan: Plan, study, codes: list[int | None]) -> int:
    from p2p import tracking  # lazy: MLflow, only where the sweep logs its parent run

    print(summary(plan, study))
    left = studies.has_unfinished(study) if plan.spec.search is not None else any(
        not s.state.settled for s in studies.key_states(study, plan.keys).values())
    parent = studies.parent_run(study)
    if parent:
        print(f"MLflow: experiment '{plan.spec.name}' in {tracking.tracking_uri()}, parent run {parent}")
    if left:
        if parent:
            tracking.MlflowTracker.of(parent).kill("unfinished: run the sweep command again to resume")
        if 2 in codes:  # a worker found a mistake in the spec or config (its one-line error is above)
            return 2
        crashed = [c for c in codes if c not in (0, None)]
        print(f"p2p: the sweep is not finished ({len(crashed)} worker(s) exited with an error); "
              "run the same command again to resume it", file=sys.stderr)
        return 1
    if parent:
        tracking.MlflowTracker.of(parent).finish()
    return 0


def summary(plan: Plan, study) -> str:
    """Per cell: finished seeds, mean and spread of the objective, failures with their reasons."""

    spec = plan.spec
    lines = [f"sweep {spec.name} ({plan.scale}): {spec.objective} ({spec.direction})"]
    failures = []
    if spec.search is None:
        states = studies.key_states(study, plan.keys)
        lines.append(f"  {'cell':28s} {'seeds':>7s}  {'mean':>8s}  {'sd':>7s}  values")
        for cell in spec.cells:
            cell_states = [state for key, state in states.items() if key.cell == cell.name]
            values = [s.trial.value for s in cell_states if s.state == Progress.DONE and s.trial.value is not None]
            mean = f"{statistics.fmean(values):.4f}" if values else "-"
            sd = f"{statistics.stdev(values):.4f}" if len(values) > 1 else "-"
            shown = " ".join(f"{v:.4f}" for v in values)
            lines.append(f"  {cell.name:28s} {len(values):>3d} / {len(cell_states):<2d} {mean:>8s}  {sd:>7s}  {shown}")
            failures += [f"{s.key.label}: {s.reason.splitlines()[0][:300]}" for s in cell_states if s.state == Progress.FAILED]
    else:
        trials = studies.records(study)
        complete = [t for t in trials if t.state == studies.COMPLETE]
        best = sorted(complete, key=lambda t: t.value, reverse=spec.direction == "maximize")[:5]
        lines.append(f"  {len(complete)} trials complete; best:")
        for t in best:
            params = ", ".join(f"{k}={_short(v)}" for k, v in t.params.items())
            lines.append(f"  {t.key.cell if t.key else t.number!s:8s} {t.value:.4f}  {params}")
        failures = [f"t{t.number:03d}: {t.failure.splitlines()[0][:300]}"
                    for t in trials if t.state == studies.FAILED and t.failure is not None]
    if failures:
        lines.append("  failed trials (run again with --retry-failed to retry them):")
        lines += [f"    {f}" for f in failures]
    return "\n".join(lines)


def _short(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) and math.isfinite(value) else str(value)

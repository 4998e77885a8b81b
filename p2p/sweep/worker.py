"""A sweep worker: claim trials, train them (resuming their checkpoints), record the outcomes, repeat.

Runs in its own process (`p2p sweep SPEC --worker`, started by the sweep command) until no
trial is queued or running. It claims up to `--pack` trials at a time and trains them together
in this process (`p2p.packing.train_together`: each exactly as it would train alone). Every trial
ends in exactly one of: COMPLETE with the objective, PRUNED (search), FAIL with its reason (as a
trial attr and as its MLflow run's failure tag, p2p.contract.Tag.FAILURE), or back in the queue
when the worker is interrupted.
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import signal
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from p2p import checkpoint, contract, signals, tracking
from p2p.contract import Tag
from p2p.errors import UserError
from p2p.lifecycle import RunRequest, StopTraining
from p2p.packing import train_together
from p2p.step import TrainingFault
from p2p.sweep import study as studies
from p2p.sweep.spec import SweepJob, TrialKey, run_dir, trial_config
from p2p.tracking_protocol import RunStatus


def run_worker(job: SweepJob) -> int:
    """Work through the sweep's trials; returns when none is left to run or wait for."""
    storage = studies.open_storage(job.storage_url, job.heartbeat_s, check_schema=False)
    study = studies.load(storage, job.spec, job.scale)
    join_sweep(job, study)
    idle_poll = min(2.0, float(job.heartbeat_s))
    while True:
        trials: list[studies.ClaimedTrial] = []
        try:
            with signals.held():  # a stop waits for the storage's writes (cut in half, they would keep its lock)
                studies.recover_stale(study, storage)
                while len(trials) < job.pack:
                    trial = (studies.next_search_trial(study, storage, job.spec.search.trials)
                             if job.spec.search is not None else studies.claim_waiting(study, storage))
                    if trial is None:
                        break
                    trials.append(trial)
                if not trials and not studies.has_unfinished(study):
                    return 0
            if not trials:
                time.sleep(idle_poll)  # others are running the last trials; one may die and come back
                continue
            with contextlib.ExitStack() as beating:
                for trial in trials:
                    beating.enter_context(studies.heartbeat(storage, trial))
                run_trials(job, study, trials)
        except KeyboardInterrupt:  # Ctrl-C or SIGTERM: their runs are KILLED with the reason, the trials queued again
            for trial in trials:
                studies.release(storage, trial)
            raise


def join_sweep(job: SweepJob, study: studies.Study) -> None:
    """Before the first trial: the sweep's MLflow parent run and the FCN scorers its cells share.

    Under the storage's lock, so that of all the workers on all machines exactly one creates
    the tracking store's tables (a fresh sqlite store races) and the parent run; a missing FCN
    scorer is fitted by one worker while the others wait for it (a file lock in `ensure_fcn_scorer`).
    """
    spec = job.spec
    with studies.storage_lock(job.storage_url, studies.study_name(spec.name, job.scale)):
        tracking.ensure_store()
        parent = tracking.find_or_start_run(contract.sweep_experiment(spec.name),
                                            contract.parent_run_name(spec.name, job.scale),
                                            {Tag.SWEEP: spec.name, Tag.SCALE: job.scale, Tag.ROLE: contract.ROLE_SWEEP})
        if studies.parent_run(study) != parent.run_id:
            studies.set_parent_run(study, parent.run_id)
            parent.set_tags({Tag.OBJECTIVE: spec.objective, Tag.DIRECTION: spec.direction, Tag.KIND: spec.kind,
                             Tag.FACTOR: spec.description[:4000], Tag.CELLS: ",".join(c.name for c in spec.cells),
                             Tag.SET: " ".join(job.overrides)})
            parent.log_text(spec.path.read_text(), contract.SPEC_ARTIFACT)
    ensure_fcn_scorers(job)


def ensure_fcn_scorers(job: SweepJob) -> None:
    """Every cell that scores FCN uses the one cached scorer for its dataset and size (fitted here if missing)."""
    from p2p.metrics.fcn_fit import fcn_skip_reason, scorer_for_run

    spec, ready = job.spec, set()
    cells = [(c.name, c.overrides) for c in spec.cells] or [("search", {})]
    for name, overrides in cells:
        try:
            cfg = trial_config(spec, job.scale, overrides, spec.seeds_for(job.scale)[0], list(job.overrides))
        except UserError:
            continue  # an invalid cell: its trials fail with the reason
        if "fcn" not in cfg.eval.metrics:
            continue
        reason = fcn_skip_reason(cfg.data)
        if reason is not None and contract.score(spec.objective).metric == "fcn":
            raise UserError(f"{spec.path}: key 'objective.metric' is {spec.objective}, but cell {name} "
                            f"cannot be FCN-scored: {reason}")
        key = (cfg.data.dataset, cfg.data.crop_size, cfg.eval.cache_dir)
        if reason is None and key not in ready:
            scorer_for_run(cfg, progress=job.progress)
            ready.add(key)


@dataclass
class Claimed:
    """A trial ready to train: its run request, and how to record that it failed."""

    trial: studies.ClaimedTrial
    request: RunRequest
    fail: Callable[[str], None]
    started: float


def run_trials(job: SweepJob, study: studies.Study, trials: list[studies.ClaimedTrial]) -> None:
    """Train the claimed trials together and record how each ended. A stop signal (p2p.signals) may end the
    training at any moment, but waits for the storage writes before and after it, which are never cut in half."""
    claimed = [c for c in (claim(job, study, trial) for trial in trials) if c is not None]
    if not claimed:
        return
    outcomes = train_together([c.request for c in claimed], progress=False)
    for c, outcome in zip(claimed, outcomes):
        if isinstance(outcome, StopTraining):
            with signals.held():
                c.trial.prune(outcome.reason)
        elif isinstance(outcome, (TrainingFault, UserError)):
            c.fail(str(outcome))
        elif isinstance(outcome, Exception):  # a bug or a broken environment: record it, keep the sweep going
            traceback.print_exception(outcome, file=sys.stderr)
            c.fail(f"{type(outcome).__name__}: {outcome}")
        else:
            with signals.held():
                _record_result(job.spec, c.trial, outcome, c.started)


def claim(job: SweepJob, study: studies.Study, trial: studies.ClaimedTrial) -> Claimed | None:
    """The trial's config, folder, tags and epoch callback; None when it failed already (its config is invalid)."""
    spec, started = job.spec, time.time()
    with signals.held():
        cell, seed = _identity(job, trial)
        parent = studies.parent_run(study)
    experiment = contract.sweep_experiment(spec.name)
    tags = {Tag.SWEEP: spec.name, Tag.SCALE: job.scale, Tag.CELL: cell, Tag.SEED: seed}
    run_name = contract.trial_run_name(cell, seed)

    def fail(reason: str) -> None:
        with signals.held():
            _record_failed_run(experiment, run_name, {**tags, Tag.TRIAL: trial.number}, parent, reason, started)
            trial.fail(reason)

    try:
        with signals.held():
            overrides = _trial_overrides(job, trial, cell)
        cfg = trial_config(spec, job.scale, overrides, seed, list(job.overrides), job.threads)
    except UserError as exc:
        fail(str(exc))
        return None
    folder = run_dir(cfg.runtime.out_dir, spec.name, job.scale, cell, seed)
    with signals.held():
        _prepare_run_dir(folder, experiment, tags)
    share_cores = bool(job.threads) and cfg.runtime.threads == job.threads  # the thread count is the worker's to set

    def on_epoch(epoch: int, metrics: dict[str, float]) -> None:
        value = metrics.get(spec.objective) if spec.search is not None else None  # a search's pruner reads it
        if trial.reached_epoch(epoch, value):
            raise StopTraining(f"pruned after epoch {epoch}: {spec.objective} {value:.4f} is below "
                               f"the median of earlier trials at this epoch")
        if share_cores:  # the last trials of a sweep take over the cores that finished workers left idle
            import torch

            torch.set_num_threads(cores_per_local_worker(study))

    request = RunRequest(cfg, tracking.MlflowTracker(), folder, resume=True, experiment=experiment,
                         tags={**tags, Tag.TRIAL: str(trial.number)}, parent_run_id=parent, on_epoch=on_epoch,
                         run_name=run_name)
    return Claimed(trial, request, fail, started)


def _record_result(spec, trial: studies.ClaimedTrial, result, started: float) -> None:
    run = tracking.MlflowTracker.of(result.run_id)
    run.set_tags({Tag.TRIAL: trial.number})  # the attempt that finished
    seconds = time.time() - started
    value = result.scores.get(spec.objective)
    if value is None or not math.isfinite(value):
        reason = (f"the objective {spec.objective} was not scored (scores: {', '.join(sorted(result.scores)) or 'none'}); "
                  f"check eval.metrics")
        run.set_tags({Tag.FAILURE: reason})
        trial.fail(reason, result.run_id, seconds)
        return
    trial.complete(value, result.run_id, seconds)


def cores_per_local_worker(study: studies.Study) -> int:
    """This machine's cores split among the worker processes running trials on it now (each may hold a pack)."""
    host = studies.worker_name().split(":", 1)[0] + ":"
    workers = studies.running_workers(study)
    return max(1, (os.cpu_count() or 1) // max(1, len({w for w in workers if w.startswith(host)})))


def _identity(job: SweepJob, trial: studies.ClaimedTrial) -> tuple[str, int]:
    """(cell, seed): from the queued trial; a new search trial is named after its number."""
    key = trial.key
    if key is None:
        key = TrialKey(f"t{trial.number:03d}", job.spec.seeds_for(job.scale)[0])
        trial.name(key)
    return key.cell, key.seed


def _trial_overrides(job: SweepJob, trial: studies.ClaimedTrial, cell: str) -> dict[str, Any]:
    spec = job.spec
    if spec.search is None:
        if cell not in {c.name for c in spec.cells}:
            raise UserError(f"{spec.path}: cell {cell!r} is queued but no longer in the spec")
        return dict(spec.cell(cell).overrides)
    return trial.suggest(spec.search.params)


def _prepare_run_dir(folder: Path, experiment: str, tags: dict[str, Any]) -> None:
    """Make the trial's folder safe to resume from.

    No checkpoint: any RUNNING MLflow run of this (cell, seed) belongs to a worker that died
    before its first epoch ended; it is marked KILLED and the trial starts afresh. A checkpoint
    whose run is not in this tracking store (a new store, another server) is moved aside.
    """
    path = folder / checkpoint.CHECKPOINT
    if not path.is_file():
        for run in tracking.find_tagged_runs(experiment, tags, statuses=[RunStatus.RUNNING]):
            tracking.MlflowTracker.of(run.run_id).kill("its sweep worker stopped before the first checkpoint; "
                                                       "the trial started again from scratch")
        return
    run_id = checkpoint.load(path).get("run_id")
    if run_id and not tracking.run_exists(run_id):
        aside = folder.with_name(f"{folder.name}.orphaned-{int(time.time())}")
        print(f"p2p: {path}: its MLflow run {run_id} is not in {tracking.tracking_uri()}; "
              f"moved to {aside.name} and starting the trial again", file=sys.stderr)
        shutil.move(str(folder), str(aside))


def _record_failed_run(experiment: str, run_name: str, tags: dict[str, Any], parent: str | None, reason: str,
                       started: float) -> None:
    """Every failed trial has an MLflow run with the reason: the trainer's, or a new one if it never began."""
    key_tags = {k: v for k, v in tags.items() if k != Tag.TRIAL}
    for run in tracking.find_tagged_runs(experiment, key_tags, statuses=[RunStatus.FAILED]):
        if (run.end_time or 0) >= started * 1000 - 1000:
            return
    tracker = tracking.MlflowTracker()
    tracker.start(experiment, run_name, tags=tags, parent_run_id=parent)
    tracker.fail(reason)


def worker_main(spec_path: str, scale: str, storage_url: str, overrides: list[str], name: str | None,
                heartbeat_s: int, threads: int, progress: bool, pack: int = 1) -> int:
    """Entry of a worker process started by the sweep command: wait for its "go", then work."""
    from p2p.sweep.spec import load_spec

    # SIGTERM (how the sweep command stops its workers) and SIGINT raise p2p.signals.Stopped, set up by
    # p2p.cli.main: the trainer marks the run KILLED with the signal's name, run_worker puts the trial back.
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:  # called other than through p2p.cli.main
        signals.install()
    # Slurm's warning before a time limit or a preemption (USR2 under `p2p sweep --slurm`): stop as on SIGTERM.
    signal.signal(signal.SIGUSR2, lambda signum, frame: signal.raise_signal(signal.SIGTERM))
    if sys.stdin.readline().strip() != "go":
        return 0  # the sweep command stopped before the study was ready
    job = SweepJob(load_spec(spec_path, name), scale, storage_url, tuple(overrides), heartbeat_s, threads, progress,
                   pack)
    return run_worker(job)

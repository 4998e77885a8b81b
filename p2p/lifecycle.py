"""One run's course around its training loop, the same for a run alone (p2p.trainer) and for packed runs
(p2p.packing): its state built or resumed and its tracked run started or resumed; each epoch's steps, scores
and checkpoint, written in the background while the next epoch trains, its metrics logged once it has landed;
and how it ends: finished with its generator exported, or stopped (an early stop, a fault, a stop signal, a
store gone down), marked so on its tracked run with the reason, its last good checkpoint kept.
"""

from __future__ import annotations

import contextlib
import sys
import time
import traceback
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import torch
from tqdm import tqdm

from p2p import checkpoint, contract, runtime, scoring, signals
from p2p.config import RunConfig, dump_yaml, flatten, to_dict
from p2p.contract import Tag
from p2p.epoch import train_epoch
from p2p.errors import TrainingFault, UserError
from p2p.names import inside
from p2p.resume import log_unlogged_epoch, resumable_checkpoint
from p2p.tracking_protocol import NullTracker, RunStatus, Tracker, TrackingError
from p2p.training_state import TrainingState


class StopTraining(Exception):
    """Raised by an `on_epoch` callback to end a run early (e.g. an Optuna prune)."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass
class TrainResult:
    run_id: str
    run_dir: Path
    epochs: int
    scores: dict[str, float] = field(default_factory=dict)


@dataclass
class RunRequest:
    """One run to train: its config, where it is recorded (a NullTracker when None) and saved, and how."""

    cfg: RunConfig
    tracker: Tracker | None = None
    run_dir: Path | None = None  # holds the checkpoint; None: runtime.out_dir/name/<run id>
    resume: bool = False  # continue the checkpoint in run_dir (the same tracked run, the same streams)
    experiment: str | None = None
    tags: dict[str, str] | None = None
    parent_run_id: str | None = None
    on_epoch: Callable[[int, dict[str, float]], None] | None = None
    run_name: str | None = None


@dataclass
class SavedEpoch:
    """An epoch whose checkpoint is being written, and the metrics to log once it has landed."""

    epoch: int
    metrics: dict[str, float]
    written: Future


class Run:
    """One run: its request, state and folder, and how it ended (`outcome`: its result, or what stopped it)."""

    def __init__(self, request: RunRequest, device: torch.device, progress: bool):
        self.request, self.device, self.progress = request, device, progress
        self.tracker = request.tracker if request.tracker is not None else NullTracker()
        self.run_dir = request.run_dir
        self.state: TrainingState | None = None
        self.outcome: TrainResult | Exception | None = None
        self.trained, self.was = False, RunStatus.RUNNING
        self.writer = checkpoint.BackgroundWriter()
        self.in_flight: SavedEpoch | None = None  # the epoch whose checkpoint is being written

    @property
    def live(self) -> bool:
        return self.outcome is None

    @property
    def training(self) -> bool:
        return self.live and self.state.epoch < self.state.total_epochs

    def start(self) -> None:
        """Build the state (from the checkpoint when resuming), then start or resume the tracked run."""
        cfg, request, tracker = self.request.cfg, self.request, self.tracker
        saved = resumable_checkpoint(cfg, request.run_dir) if request.resume and request.run_dir is not None else None
        self.state = state = TrainingState(cfg, self.device, with_data=saved is None or not saved["finished"],
                                           progress=self.progress)
        if saved is not None:
            state.load_state_dict(saved)
        if saved is None:
            tracker.start(request.experiment or cfg.experiment, request.run_name or cfg.name,
                          params=flatten(to_dict(cfg)),
                          tags={Tag.SCALE: contract.CUSTOM_SCALE, Tag.MACHINE: runtime.machine(),
                                Tag.PRECISION: runtime.resolve_precision(cfg.runtime.precision, self.device),
                                **(request.tags or {})},
                          parent_run_id=request.parent_run_id)
            tracker.log_text(dump_yaml(cfg), contract.CONFIG_ARTIFACT)
        else:  # the run the checkpoint belongs to, and the epoch its stop may have left unlogged
            self.was = tracker.resume(saved["run_id"])
            if self.was != RunStatus.FINISHED:
                log_unlogged_epoch(tracker, saved)
        state.run_id = tracker.run_id
        self.run_dir = self.run_dir or inside(cfg.runtime.out_dir, Path(cfg.runtime.out_dir) / cfg.name / tracker.run_id, "name")
        self.run_dir.mkdir(parents=True, exist_ok=True)
        checkpoint.remove_stale_temporaries(self.run_dir)  # a killed writer's half-written file

    def epoch(self, bar: tqdm) -> Iterator[None]:
        """One epoch, a training step per `next()`; then its scores, and its checkpoint sent to be written while
        the next epoch trains (the metrics follow once it has landed: `settle`)."""
        state = self.state
        metrics = yield from train_epoch(state, bar)
        if state.scoring_due():
            started = time.perf_counter()
            metrics |= scoring.score(state, self.tracker, self.run_dir) | {contract.EVAL_S: time.perf_counter() - started}
        self.settle(wait=True)  # one checkpoint in flight at a time
        write = self.writer.submit(checkpoint.write_checkpoint, state.snapshot(metrics), self.run_dir, state.epoch,
                                   state.saved_epoch)
        self.in_flight = SavedEpoch(state.epoch, metrics, write)
        self.trained = True

    def settle(self, wait: bool) -> None:
        """Once the checkpoint in flight has landed (`wait`: wait for it): its epoch is the one to resume from, then
        its metrics are logged and the run's callback told. The checkpoint first: an epoch whose metrics could
        not be logged (a stop, a store that went down) is logged when the run resumes. A write that failed (a
        full disk) raises its CheckpointError here."""
        saved = self.in_flight
        if saved is None or not (wait or saved.written.done()):
            return
        self.in_flight = None
        saved.written.result()
        self.state.saved_epoch = saved.epoch
        self.tracker.log_metrics(saved.metrics, step=saved.epoch)
        if self.request.on_epoch is not None:
            with signals.held():  # a sweep's callback writes to its storage: not to be cut in half
                self.request.on_epoch(saved.epoch, saved.metrics)

    def land(self, log: bool) -> None:
        """A run that stops: the checkpoint in flight lands first (a finished epoch is kept), and its metrics are
        logged where `log` (a fault) and the store takes them, else when the run resumes."""
        saved, self.in_flight = self.in_flight, None
        if saved is None or saved.written.exception() is not None:  # a failed write: what stopped the run comes first
            return
        self.state.saved_epoch = saved.epoch
        if log:
            with contextlib.suppress(TrackingError):
                self.tracker.log_metrics(saved.metrics, step=saved.epoch)

    def finish(self) -> None:
        """The last checkpoint landed, the generator exported (unless a finished run's is already there), the
        tracked run finished."""
        if not self.live:
            return
        self.settle(wait=True)
        if self.trained or not (self.run_dir / contract.GENERATOR_FILE).is_file():
            checkpoint.export_generator(self.run_dir, self.state.cfg, self.state.G)
            self.tracker.log_artifact(self.run_dir / contract.GENERATOR_FILE)
        if self.was != RunStatus.FINISHED:
            self.tracker.finish()
        self.outcome = TrainResult(self.tracker.run_id, self.run_dir, self.state.epoch, self.state.scores())

    @contextlib.contextmanager
    def guard(self) -> Iterator[None]:
        """What stops this run ends it alone, marked so with the reason (KILLED: an early stop; FAILED: a fault),
        and becomes its outcome; a store that went down is left as it is, and the outcome says which checkpoint
        is kept. A stop signal is marked on this run and goes on up: it stops every run."""
        try:
            yield
        except StopTraining as stop:
            self.land(log=True)
            end_run(self.tracker, "kill", stop.reason)
            self.outcome = stop
        except KeyboardInterrupt as stop:
            self.land(log=False)
            end_run(self.tracker, "kill", signals.reason(stop))
            self.outcome = RuntimeError("stopped")
            raise
        except TrackingError as exc:  # nothing more can be recorded there; the checkpoint is kept
            self.land(log=False)
            saved = self.state.saved_epoch if self.state is not None else 0
            self.outcome = TrackingError(f"{exc}; {checkpoint.kept(self.run_dir, saved, 'once the store answers')}")
        except (TrainingFault, UserError) as fault:
            self.land(log=True)
            end_run(self.tracker, "fail", str(fault))
            self.outcome = fault
        except Exception as exc:
            self.land(log=True)
            end_run(self.tracker, "fail", f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=5)}")
            self.outcome = exc


def end_run(tracker: Tracker, how: str, reason: str) -> None:
    """Mark the run KILLED or FAILED with the reason; a store that fails now must not hide the reason itself."""
    if tracker.run_id is None:
        return
    try:
        tracker.kill(reason) if how == "kill" else tracker.fail(reason)
    except TrackingError as exc:
        print(f"p2p: warning: {exc}", file=sys.stderr)


def progress_bar(runs: list[Run], progress: bool) -> tqdm:
    """One bar over the images the started runs have still to train (a run resumed is counted from its epoch)."""
    started = [run for run in runs if run.live]
    return tqdm(total=sum(r.state.total_epochs * r.state.images for r in started),
                initial=sum(r.state.epoch * r.state.images for r in started), unit="img",
                desc=" + ".join(r.state.cfg.name for r in started[:3]), disable=not (progress and started),
                dynamic_ncols=True, smoothing=0.1)

"""The training loop: one D step then one G step per batch, top to bottom.

Read `train()` first: it is one run, and `train_together()` the loop itself, which also trains several
runs in one process, a step of each in turn (packed trials: `p2p sweep --pack`), each exactly as it
would train alone. `TrainingState` holds everything the next epoch depends on (networks, optimisers,
schedules, image pool, data order, random streams, the epoch reached); its `state_dict()` is the
checkpoint written after every epoch, and `load_state_dict()` is how a run resumes, or completes when
its process died after the last epoch was saved. The step itself is `p2p.step.train_step`.
"""

from __future__ import annotations

import contextlib
import sys
import time
import traceback
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Generator, Iterator

import torch
import torch.nn as nn
from tqdm import tqdm

from p2p import checkpoint, contract, data, losses, runtime, signals, step, streams
from p2p.config import RunConfig, dump_yaml, flatten, to_dict
from p2p.contract import D_FAKE, D_REAL, G_L1, Tag
from p2p.errors import UserError
from p2p.models import create_discriminator, create_generator
from p2p.models.layers import set_dropout_generator
from p2p.names import inside
from p2p.optimizers import make_optimizer, make_schedule, set_optimizer_form
from p2p.step import LossSums, TrainingFault
from p2p.tracker import FINISHED, RUNNING, NullTracker, Tracker, TrackingError

__all__ = ["train", "train_together", "RunRequest", "TrainResult", "TrainingState", "TrainingFault", "StopTraining"]


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


def train(cfg: RunConfig, *, tracker: Tracker | None = None, run_dir: Path | None = None, resume: bool = False,
          experiment: str | None = None, tags: dict[str, str] | None = None, parent_run_id: str | None = None,
          progress: bool = True, on_epoch: Callable[[int, dict[str, float]], None] | None = None,
          run_name: str | None = None) -> TrainResult:
    """Train, resume or complete one run (see `RunRequest`); what stopped it is raised."""
    (outcome,) = train_together([RunRequest(cfg, tracker, run_dir, resume, experiment, tags, parent_run_id, on_epoch,
                                            run_name)], progress=progress)
    if isinstance(outcome, BaseException):
        raise outcome
    return outcome


def train_together(requests: list[RunRequest], *, progress: bool = True) -> list[TrainResult | Exception]:
    """Train the requested runs in this process, a step of each in turn, and return how each ended: its
    result, or what stopped it (a non-finite loss, an early stop, a fault), recorded on its tracked run.

    Each run trains exactly as it would alone: its own state, random streams, optimisers, checkpoint
    and tracked run; on CUDA each runs on a stream of its own, so the GPU overlaps them. One that fails
    ends alone; a stop signal (SIGINT/SIGTERM) marks every unfinished one KILLED, all resumable.
    The runs share `runtime.*` settings (threads, determinism): the first request's are applied.
    """
    device = runtime.configure(requests[0].cfg.runtime, requests[0].cfg.seed)
    runs = [Run(request, device, progress, own_stream=len(requests) > 1) for request in requests]
    try:
        for run in runs:
            with run.guard():
                run.start()
        started = [run for run in runs if run.live]
        with tqdm(total=sum(r.state.total_epochs * r.state.images for r in started),
                  initial=sum(r.state.epoch * r.state.images for r in started), unit="img",
                  desc=" + ".join(r.state.cfg.name for r in started[:3]), disable=not (progress and started),
                  dynamic_ncols=True, smoothing=0.1) as bar:
            while training := [run for run in runs if run.training]:
                epochs = {run: run.epoch(bar) for run in training}  # each: a step per next(), then its epoch's end
                while epochs:
                    for run, steps in list(epochs.items()):
                        with run.guard(), run.on_its_stream():
                            if next(steps, _EPOCH_DONE) is _EPOCH_DONE:  # scored, its checkpoint on its way
                                del epochs[run]
                            run.settle(wait=False)  # the last epoch's checkpoint landed: log its metrics
                        if not run.live:
                            epochs.pop(run, None)
        for run in runs:
            with run.guard(), run.on_its_stream():
                run.finish()
    except KeyboardInterrupt as stop:  # Ctrl-C, or SIGINT/SIGTERM through p2p.signals: every open run KILLED
        for run in runs:
            if run.live:
                _end_run(run.tracker, "kill", signals.reason(stop))
        raise
    finally:
        for run in runs:  # a checkpoint still in flight lands, however the runs ended
            run.writer.close()
    return [run.outcome for run in runs]


_EPOCH_DONE = object()  # what next() gives once a run's epoch generator is exhausted


class Run:
    """One run inside `train_together`: its request, state and folder, and how it ended (`outcome`)."""

    def __init__(self, request: RunRequest, device: torch.device, progress: bool, own_stream: bool):
        self.request, self.device, self.progress = request, device, progress
        self.tracker = request.tracker if request.tracker is not None else NullTracker()
        self.run_dir = request.run_dir
        self.state: TrainingState | None = None
        self.outcome: TrainResult | Exception | None = None
        self.trained, self.was = False, RUNNING
        self.stream = torch.cuda.Stream(device) if own_stream and device.type == "cuda" else None
        self.writer = checkpoint.BackgroundWriter()
        self.in_flight: SavedEpoch | None = None  # the epoch whose checkpoint is being written

    @property
    def live(self) -> bool:
        return self.outcome is None

    @property
    def training(self) -> bool:
        return self.live and self.state.epoch < self.state.total_epochs

    def on_its_stream(self) -> contextlib.AbstractContextManager:
        return torch.cuda.stream(self.stream) if self.stream is not None else contextlib.nullcontext()

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
            if self.was != FINISHED:
                log_unlogged_epoch(tracker, saved)
        state.run_id = tracker.run_id
        self.run_dir = self.run_dir or inside(cfg.runtime.out_dir, Path(cfg.runtime.out_dir) / cfg.name / tracker.run_id, "name")
        self.run_dir.mkdir(parents=True, exist_ok=True)
        checkpoint.remove_stale_temporaries(self.run_dir)  # a killed writer's half-written file
        if self.stream is not None:  # the stream starts after the weights were built and loaded on the default one
            self.stream.wait_stream(torch.cuda.current_stream(self.device))

    def epoch(self, bar: tqdm) -> Iterator[None]:
        """One epoch, a training step per `next()`; then its scores, and its checkpoint sent to be written while
        the next epoch trains (the metrics follow once it has landed: `settle`)."""
        state = self.state
        metrics = yield from train_epoch(state, bar)
        if state.scoring_due():
            started = time.perf_counter()
            metrics |= score(state, self.tracker, self.run_dir) | {contract.EVAL_S: time.perf_counter() - started}
        self.settle(wait=True)  # one checkpoint in flight at a time
        write = self.writer.submit(write_checkpoint, state.snapshot(metrics), self.run_dir, state.epoch,
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
            export_generator(self.run_dir, self.state.cfg, self.state.G)
            self.tracker.log_artifact(self.run_dir / contract.GENERATOR_FILE)
        if self.was != FINISHED:
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
            _end_run(self.tracker, "kill", stop.reason)
            self.outcome = stop
        except KeyboardInterrupt as stop:
            self.land(log=False)
            _end_run(self.tracker, "kill", signals.reason(stop))
            self.outcome = RuntimeError("stopped")
            raise
        except TrackingError as exc:  # nothing more can be recorded there; the checkpoint is kept
            self.land(log=False)
            saved = self.state.saved_epoch if self.state is not None else 0
            self.outcome = TrackingError(f"{exc}; {kept(self.run_dir, saved, 'once the store answers')}")
        except (TrainingFault, UserError) as fault:
            self.land(log=True)
            _end_run(self.tracker, "fail", str(fault))
            self.outcome = fault
        except Exception as exc:
            self.land(log=True)
            _end_run(self.tracker, "fail", f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=5)}")
            self.outcome = exc


@dataclass
class SavedEpoch:
    """An epoch whose checkpoint is being written, and the metrics to log once it has landed."""

    epoch: int
    metrics: dict[str, float]
    written: Future


# ---------------------------------------------------------------- the state of a run


class TrainingState:
    """Everything the next epoch depends on, built from the config in a fixed order (each consumer of
    randomness has its own stream: p2p.streams), and saved after every epoch as a checkpoint of tensors
    and plain values (format 2)."""

    def __init__(self, cfg: RunConfig, device: torch.device, with_data: bool = True, progress: bool = False):
        self.cfg, self.device = cfg, device
        # Data: decoded once; shuffling and jitter, and each trick, draw from their own stream.
        self.loader = data.load_train(cfg.data, cfg.optim.batch_size, seed=streams.stream_seed(cfg.seed, streams.DATA),
                                      progress=progress) if with_data else None
        self.tricks = streams.TrickStreams(cfg.seed, device)
        self.graphed = step.use_cuda_graph(cfg, device)  # the step as one CUDA graph (p2p.step)
        # Models, optimisers, schedules; `*_run` is what runs (compiled or not), the module holds the weights.
        fmt = torch.channels_last if cfg.runtime.channels_last else torch.contiguous_format
        self.G = create_generator(cfg).to(device, memory_format=fmt)
        self.D = create_discriminator(cfg).to(device, memory_format=fmt) if cfg.loss.gan != "none" else None
        self.G_run = runtime.compile_module(self.G, cfg.runtime, device)
        self.D_run = runtime.compile_module(self.D, cfg.runtime, device) if self.D is not None else None
        self.opt_G = make_optimizer(self.G, cfg, device, capturable=self.graphed)
        self.sched_G = make_schedule(self.opt_G, cfg)
        self.opt_D = make_optimizer(self.D, cfg, device, capturable=self.graphed) if self.D is not None else None
        self.sched_D = make_schedule(self.opt_D, cfg) if self.opt_D is not None else None
        self.pool = losses.ImagePool(cfg.tricks.image_pool)
        self.dropout = streams.generator(cfg.seed, streams.DROPOUT, device)  # G's dropout masks, a stream of its own
        set_dropout_generator(self.G, self.dropout)
        self.sums = LossSums(self.losses, device)
        self.stepper = step.make_stepper(step.StepParts(self.G_run, self.D_run, self.opt_G, self.opt_D,
                                                        step.StepSettings.of(cfg), self.pool, self.dropout,
                                                        self.tricks, self.sums, device), self.graphed)
        self.total_epochs = cfg.optim.total_epochs
        self.epoch = self.saved_epoch = 0  # epochs done; the newest one on disk (what a stop leaves to resume from)
        self.run_id: str | None = None
        self.metrics: dict[str, float] = {}  # the last epoch's

    @property
    def images(self) -> int:
        return len(self.loader.data) if self.loader is not None else 0

    @property
    def losses(self) -> tuple[contract.Loss, ...]:
        """The losses this run logs: D's (and G's adversarial one) only where there is a D."""
        return tuple(loss for loss in contract.LOSSES if self.D is not None or not loss.needs_discriminator)

    def scoring_due(self) -> bool:
        return self.cfg.eval.due(self.epoch, self.total_epochs)

    def scores(self) -> dict[str, float]:
        return {k: v for k, v in self.metrics.items() if k.startswith(contract.EVAL_PREFIX)}

    def state_dict(self) -> dict:
        nets = [("generator", self.G), ("opt_G", self.opt_G), ("sched_G", self.sched_G), ("discriminator", self.D),
                ("opt_D", self.opt_D), ("sched_D", self.sched_D)]
        return {"format": checkpoint.FORMAT, "config": to_dict(self.cfg), "run_id": self.run_id, "epoch": self.epoch,
                "finished": self.epoch == self.total_epochs,
                "metrics": {k: float(v) for k, v in self.metrics.items()},  # this epoch's, in case logging them fails
                **{name: part.state_dict() if part is not None else None for name, part in nets},
                "pool": self.pool.state_dict(), "loader": self.loader.state_dict(), "tricks": self.tricks.state_dict(),
                "dropout": self.dropout.get_state(), "rng": runtime.rng_state()}

    def load_state_dict(self, state: dict) -> None:
        self.G.load_state_dict(state["generator"])
        self.opt_G.load_state_dict(state["opt_G"])
        self.sched_G.load_state_dict(state["sched_G"])
        if self.D is not None:
            self.D.load_state_dict(state["discriminator"])
            self.opt_D.load_state_dict(state["opt_D"])
            self.sched_D.load_state_dict(state["sched_D"])
        self.pool.load_state_dict(state["pool"], self.device)
        if self.loader is not None:
            self.loader.load_state_dict(state["loader"])
        self.tricks.load_state_dict(state["tricks"])
        runtime.set_rng_state(state["rng"])
        # A checkpoint from before dropout had its own generator: G's dropout drew from torch's global one.
        self.dropout.set_state(state["dropout"] if "dropout" in state else runtime.global_rng_state(self.device))
        for opt, sched in ((self.opt_G, self.sched_G), (self.opt_D, self.sched_D)):
            if opt is not None:  # the checkpoint may come from a run of the other form (graphed or eager)
                set_optimizer_form(opt, sched, self.graphed, self.device)
        self.epoch = self.saved_epoch = state["epoch"]
        self.run_id, self.metrics = state["run_id"], dict(state.get("metrics") or {})

    def snapshot(self, metrics: dict[str, float]) -> dict:
        """The checkpoint of the epoch just done, with its metrics, copied off the live tensors (to the CPU): the
        next epoch trains while it is written (`write_checkpoint`)."""
        self.metrics = metrics
        return checkpoint.copied_to_cpu(self.state_dict())


def write_checkpoint(state: dict, run_dir: Path, epoch: int, saved_epoch: int) -> None:
    """Epoch `epoch`'s checkpoint written whole or not at all (on the run's writer thread); a full disk leaves the
    previous one (epoch `saved_epoch`) intact, the partial file removed, and says so."""
    try:
        checkpoint.save_atomic(state, run_dir / contract.CHECKPOINT_FILE)
    except OSError as exc:
        raise checkpoint.CheckpointError(
            f"{run_dir / contract.CHECKPOINT_FILE}: cannot write the checkpoint of epoch {epoch} "
            f"({exc.strerror or exc}); {kept(run_dir, saved_epoch, 'once there is room')}") from None


# ---------------------------------------------------------------- one epoch


def train_epoch(state: TrainingState, bar: tqdm) -> Generator[None, None, dict[str, float]]:
    """One pass over the data, yielding after each step (`p2p.step.train_step`, eager or replayed as one CUDA
    graph). Returns the epoch's mean losses, learning rate and throughput; the schedules then step."""
    cfg, device, steps = state.cfg, state.device, len(state.loader)
    state.G.train()
    if state.D is not None:
        state.D.train()
    state.sums.reset()
    noise_epochs = cfg.tricks.instance_noise_epochs or state.total_epochs
    started, seen = time.perf_counter(), 0
    for index, (real_in, real_out) in enumerate(state.loader.epoch()):
        real_in, real_out = _to_device(real_in, real_out, device, cfg)
        noise = losses.instance_noise_std(cfg.tricks.instance_noise, state.epoch + index / steps, noise_epochs)
        state.stepper(real_in, real_out, noise)
        seen += real_in.shape[0]
        bar.update(real_in.shape[0])
        if (index + 1) % cfg.runtime.log_every == 0:
            state.sums.check_finite(state.epoch, index)
        yield
    elapsed = time.perf_counter() - started
    state.sums.check_finite(state.epoch, steps - 1)
    metrics = state.sums.means(steps) | {contract.LR: float(state.opt_G.param_groups[0]["lr"]),
                                         contract.IMG_PER_S: seen / max(elapsed, 1e-9)}
    for schedule in (state.sched_G, state.sched_D):
        if schedule is not None:
            schedule.step()
    state.epoch += 1
    d_mean = (metrics[D_REAL.key] + metrics[D_FAKE.key]) / 2 if state.D is not None else None
    bar.set_postfix({G_L1.short: f"{metrics[G_L1.key]:.3f}", "D": "-" if d_mean is None else f"{d_mean:.3f}"})
    return metrics


def _to_device(a: torch.Tensor, b: torch.Tensor, device: torch.device, cfg: RunConfig):
    fmt = torch.channels_last if cfg.runtime.channels_last else torch.contiguous_format
    if device.type == "cuda":  # from pageable memory the copy first waits for the GPU's queue (the step before)
        a, b = a.pin_memory(), b.pin_memory()  # from pinned memory it is queued and the host runs ahead
    return (a.to(device, non_blocking=True, memory_format=fmt), b.to(device, non_blocking=True, memory_format=fmt))


def score(state: TrainingState, tracker: Tracker, run_dir: Path) -> dict[str, float]:
    """Scores at this epoch: on `eval.max_images` at the end, on `eval.every_max_images` (cheaper) before.

    Under a forked RNG: building and running the metric networks draws nothing from the training
    streams, so a run scored every epoch trains exactly as one scored only at the end.
    """
    from p2p import evaluate  # imported late: scoring pulls in the metric networks

    cfg, device, final = state.cfg, state.device, state.epoch == state.total_epochs
    max_images = cfg.eval.max_images if final or cfg.eval.every_max_images is None else cfg.eval.every_max_images
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        # Test-time dropout (eval.g_mode train) draws from torch's global generator, set to where the run's
        # dropout stream stands: the masks continue that stream, and the stream itself does not move.
        runtime.set_global_rng_state(device, state.dropout.get_state())
        set_dropout_generator(state.G, None)
        try:
            scores, grid = evaluate.evaluate_generator(state.G, cfg, device, max_images=max_images)
        finally:
            set_dropout_generator(state.G, state.dropout)
    if grid is not None:
        path = run_dir / contract.SAMPLES_DIR / contract.sample_name(state.epoch)
        evaluate.write_png(grid, path)
        tracker.log_artifact(path, contract.SAMPLES_DIR)
    return scores


# ---------------------------------------------------------------- how a run ends


def _end_run(tracker: Tracker, how: str, reason: str) -> None:
    """Mark the run KILLED or FAILED with the reason; a store that fails now must not hide the reason itself."""
    if tracker.run_id is None:
        return
    try:
        tracker.kill(reason) if how == "kill" else tracker.fail(reason)
    except TrackingError as exc:
        print(f"p2p: warning: {exc}", file=sys.stderr)


def kept(run_dir: Path | None, epoch: int, when: str) -> str:
    if epoch < 1 or run_dir is None:
        return "no epoch had been saved yet"
    return (f"the checkpoint of epoch {epoch} is kept in {run_dir}: continue with `p2p train CONFIG --resume "
            f"{run_dir}` {when}")


def log_unlogged_epoch(tracker: Tracker, saved: dict) -> None:
    """The checkpoint's epoch, logged if the run stopped between saving it and logging its metrics."""
    metrics = saved.get("metrics")
    if metrics and saved["epoch"] not in tracker.logged_steps(next(iter(metrics))):
        tracker.log_metrics(metrics, step=saved["epoch"])


# ---------------------------------------------------------------- files


def export_generator(run_dir: Path, cfg: RunConfig, G: nn.Module) -> Path:
    """The final generator with its config: what `p2p translate` and `p2p eval` read."""
    path = run_dir / contract.GENERATOR_FILE
    try:
        checkpoint.save_atomic({"format": checkpoint.FORMAT, "config": to_dict(cfg), "generator": G.state_dict()},
                               path)
    except OSError as exc:
        raise checkpoint.CheckpointError(f"{path}: cannot write the generator ({exc.strerror or exc}); the final "
                                         f"checkpoint is kept: --resume writes it once there is room") from None
    return path


def resumable_checkpoint(cfg: RunConfig, run_dir: Path) -> dict | None:
    """The checkpoint in `run_dir` if there is one, checked against `cfg`: what a run learns may not change
    between attempts (how and where it executes, `runtime.*` and `eval.every`, may). A key the checkpoint's
    config lacks (it predates the key) had the key's default value then."""
    path = run_dir / contract.CHECKPOINT_FILE
    if not path.is_file():
        return None
    state = checkpoint.load(path)
    saved, current = flatten(state["config"]), flatten(to_dict(cfg))
    defaults = flatten(to_dict(RunConfig()))
    for key in sorted(set(saved) | set(current)):
        if key.startswith("runtime.") or key in ("eval.every",):
            continue
        before = saved.get(key, defaults.get(key))
        if before != current.get(key):
            how = "" if key in saved else " (the default: the checkpoint predates the key)"
            raise UserError(f"{path}: cannot resume, config key '{key}' was {before!r}{how} "
                            f"and is now {current.get(key)!r}")
    return state


def find_resumable(out_dir: Path, name: str) -> Path | None:
    """Newest run folder of this config name whose checkpoint is not finished (or whose last epoch was saved
    but whose generator was not: a run stopped while ending)."""
    candidates = []
    for path in (out_dir / name).glob(f"*/{contract.CHECKPOINT_FILE}"):
        candidates.append((path.stat().st_mtime, path.parent))
    for _, folder in sorted(candidates, reverse=True):
        state = checkpoint.load(folder / contract.CHECKPOINT_FILE)
        if not state.get("finished") or not (folder / contract.GENERATOR_FILE).is_file():
            return folder
    return None

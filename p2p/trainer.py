"""The training loop: one D step then one G step per batch, top to bottom.

Read `train()` first: it is the whole run. `TrainingState` holds everything the next epoch
depends on (networks, optimisers, schedules, image pool, data order, random streams, the epoch
reached); its `state_dict()` is the checkpoint written after every epoch, and `load_state_dict()`
is how a run resumes, or completes when its process died after the last epoch was saved.
"""

from __future__ import annotations

import contextlib
import math
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import torch
import torch.nn as nn
from tqdm import tqdm

from p2p import checkpoint, contract, data, losses, runtime, signals, streams
from p2p.config import RunConfig, dump_yaml, flatten, to_dict
from p2p.contract import D_FAKE, D_REAL, G_GAN, G_L1, Tag
from p2p.errors import UserError
from p2p.models import create_discriminator, create_generator
from p2p.names import inside
from p2p.tracker import FINISHED, RUNNING, NullTracker, Tracker, TrackingError


class TrainingFault(RuntimeError):
    """The run could not go on (a non-finite loss); its last good checkpoint is kept."""


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


def lr_factor(epoch: int, epochs: int, decay_epochs: int) -> float:
    """Constant for `epochs`, then linear decay towards 0 over `decay_epochs` (the reference's rule)."""
    return 1.0 - max(0, epoch + 1 - epochs) / float(decay_epochs + 1)


def train(cfg: RunConfig, *, tracker: Tracker | None = None, run_dir: Path | None = None, resume: bool = False,
          experiment: str | None = None, tags: dict[str, str] | None = None, parent_run_id: str | None = None,
          progress: bool = True, on_epoch: Callable[[int, dict[str, float]], None] | None = None,
          run_name: str | None = None) -> TrainResult:
    """Train, resume or complete one run, recorded through `tracker` (default: a NullTracker, nowhere).

    `run_dir` holds the checkpoint; with `resume`, a checkpoint there is continued (the same tracked
    run, the same random streams), else a fresh run starts.
    """
    tracker = tracker if tracker is not None else NullTracker()
    device = runtime.configure(cfg.runtime, cfg.seed)
    saved = resumable_checkpoint(cfg, run_dir) if resume and run_dir is not None else None
    state = TrainingState(cfg, device, with_data=saved is None or not saved["finished"], progress=progress)
    if saved is not None:
        state.load_state_dict(saved)
    trained = False
    with recording_the_end(tracker, state) as where:  # a stop or a fault marks the run KILLED or FAILED, with why
        if saved is None:
            tracker.start(experiment or cfg.experiment, run_name or cfg.name, params=flatten(to_dict(cfg)),
                          tags={Tag.SCALE: contract.CUSTOM_SCALE, Tag.MACHINE: runtime.machine(), **(tags or {})},
                          parent_run_id=parent_run_id)
            tracker.log_text(dump_yaml(cfg), contract.CONFIG_ARTIFACT)
            was = RUNNING
        else:  # the run the checkpoint belongs to, and the epoch its stop may have left unlogged
            was = tracker.resume(saved["run_id"])
            if was != FINISHED:
                log_unlogged_epoch(tracker, saved)
        state.run_id = tracker.run_id
        run_dir = where.run_dir = run_dir or inside(cfg.runtime.out_dir, Path(cfg.runtime.out_dir) / cfg.name / tracker.run_id,
                                                    "name")
        run_dir.mkdir(parents=True, exist_ok=True)

        with tqdm(total=state.total_epochs * state.images, initial=state.epoch * state.images, unit="img",
                  desc=cfg.name, disable=not progress, dynamic_ncols=True, smoothing=0.1) as bar:
            while state.epoch < state.total_epochs:
                metrics = train_epoch(state, bar)
                if state.scoring_due():
                    started = time.perf_counter()
                    metrics |= score(state, tracker, run_dir) | {contract.EVAL_S: time.perf_counter() - started}
                # The checkpoint first, with the metrics: an epoch whose metrics could not be logged (a stop, a
                # store that went down) is logged when the run resumes.
                state.save(run_dir, metrics)
                tracker.log_metrics(metrics, step=state.epoch)
                if on_epoch is not None:
                    with signals.held():  # a sweep's callback writes to its storage: not to be cut in half
                        on_epoch(state.epoch, metrics)
                trained = True

        if trained or not (run_dir / contract.GENERATOR_FILE).is_file():
            export_generator(run_dir, cfg, state.G)
            tracker.log_artifact(run_dir / contract.GENERATOR_FILE)
        if was != FINISHED:
            tracker.finish()
    return TrainResult(tracker.run_id, run_dir, state.epoch, state.scores())


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
        self.tricks = streams.TrickStreams(cfg.seed)
        # Models, optimisers, schedules; `*_run` is what runs (compiled or not), the module holds the weights.
        fmt = torch.channels_last if cfg.runtime.channels_last else torch.contiguous_format
        self.G = create_generator(cfg).to(device, memory_format=fmt)
        self.D = create_discriminator(cfg).to(device, memory_format=fmt) if cfg.loss.gan != "none" else None
        self.G_run = runtime.compile_module(self.G, cfg.runtime, device)
        self.D_run = runtime.compile_module(self.D, cfg.runtime, device) if self.D is not None else None
        factor = lambda e: lr_factor(e, cfg.optim.epochs, cfg.optim.decay_epochs)  # noqa: E731
        self.opt_G = make_optimizer(self.G, cfg, device)
        self.sched_G = torch.optim.lr_scheduler.LambdaLR(self.opt_G, factor)
        self.opt_D = make_optimizer(self.D, cfg, device) if self.D is not None else None
        self.sched_D = torch.optim.lr_scheduler.LambdaLR(self.opt_D, factor) if self.opt_D is not None else None
        self.pool = losses.ImagePool(cfg.tricks.image_pool)
        torch.manual_seed(streams.stream_seed(cfg.seed, streams.DROPOUT))  # the global generator: G's dropout only
        self.total_epochs = cfg.optim.epochs + cfg.optim.decay_epochs
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
        every, done = self.cfg.eval.every, self.epoch
        return bool(every and done % every == 0) or done == self.total_epochs

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
                "rng": runtime.rng_state()}

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
        self.epoch = self.saved_epoch = state["epoch"]
        self.run_id, self.metrics = state["run_id"], dict(state.get("metrics") or {})

    def save(self, run_dir: Path, metrics: dict[str, float]) -> None:
        """The checkpoint of the epoch just done, written whole or not at all (a stop waits for it)."""
        self.metrics = metrics
        try:
            with signals.held():
                checkpoint.save_atomic(self.state_dict(), run_dir / contract.CHECKPOINT_FILE)
                self.saved_epoch = self.epoch
        except OSError as exc:  # a full disk: the previous checkpoint is intact, the partial file removed
            raise checkpoint.CheckpointError(
                f"{run_dir / contract.CHECKPOINT_FILE}: cannot write the checkpoint of epoch {self.epoch} "
                f"({exc.strerror or exc}); {kept(run_dir, self.saved_epoch, 'once there is room')}") from None


# ---------------------------------------------------------------- one epoch


class LossSums:
    """Each loss summed over an epoch's steps on the device (no host sync but `check_finite`)."""

    def __init__(self, names: tuple[contract.Loss, ...], device: torch.device):
        self.sums = {loss: torch.zeros((), device=device) for loss in names}

    def add(self, values: dict[contract.Loss, torch.Tensor]) -> None:
        for loss, value in values.items():
            if loss in self.sums:
                self.sums[loss] += value

    def check_finite(self, epoch: int, step: int) -> None:
        if not bool(torch.isfinite(torch.stack(list(self.sums.values()))).all()):
            bad = [loss.key for loss, v in self.sums.items() if not math.isfinite(float(v))]
            raise TrainingFault(f"non-finite loss ({', '.join(bad)}) in epoch {epoch + 1} by step {step + 1}")

    def means(self, steps: int) -> dict[str, float]:
        return {loss.key: float(v / steps) for loss, v in self.sums.items()}


def train_epoch(state: TrainingState, bar: tqdm) -> dict[str, float]:
    """One pass over the data, each batch generated once: D learns on a detached copy, G on the graph.
    Returns the epoch's mean losses, learning rate and throughput; the schedules then step."""
    cfg, device, steps = state.cfg, state.device, len(state.loader)
    state.G.train()
    if state.D is not None:
        state.D.train()
    sums = LossSums(state.losses, device)
    noise_epochs = cfg.tricks.instance_noise_epochs or state.total_epochs
    started, seen = time.perf_counter(), 0
    for step, (real_in, real_out) in enumerate(state.loader.epoch()):
        real_in, real_out = _to_device(real_in, real_out, device, cfg)
        noise = losses.instance_noise_std(cfg.tricks.instance_noise, state.epoch + step / steps, noise_epochs)
        with runtime.autocast(device, cfg.runtime.precision):
            fake_out = state.G_run(real_in)
        if state.D is not None:
            sums.add(discriminator_step(state.D_run, state.opt_D, real_in, real_out, fake_out.detach(), state.pool,
                                        noise, state.tricks, cfg, device))
        sums.add(generator_step(state.G_run, state.D_run, state.opt_G, real_in, real_out, fake_out, cfg, device))
        seen += real_in.shape[0]
        bar.update(real_in.shape[0])
        if (step + 1) % cfg.runtime.log_every == 0:
            sums.check_finite(state.epoch, step)
    elapsed = time.perf_counter() - started
    sums.check_finite(state.epoch, steps - 1)
    metrics = sums.means(steps) | {contract.LR: state.opt_G.param_groups[0]["lr"],
                                   contract.IMG_PER_S: seen / max(elapsed, 1e-9)}
    for schedule in (state.sched_G, state.sched_D):
        if schedule is not None:
            schedule.step()
    state.epoch += 1
    d_mean = (metrics[D_REAL.key] + metrics[D_FAKE.key]) / 2 if state.D is not None else None
    bar.set_postfix({G_L1.short: f"{metrics[G_L1.key]:.3f}", "D": "-" if d_mean is None else f"{d_mean:.3f}"})
    return metrics


def discriminator_step(D: nn.Module, opt_D: torch.optim.Optimizer, real_in: torch.Tensor, real_out: torch.Tensor,
                       fake_out: torch.Tensor, pool: losses.ImagePool, noise: float, tricks: streams.TrickStreams,
                       cfg: RunConfig, device: torch.device) -> dict[contract.Loss, torch.Tensor]:
    """One D update on a real and a (pooled, detached) fake pair; returns the two detached losses."""
    set_requires_grad(D, True)
    fake_out = pool.query(fake_out, tricks.pool)
    real_out = losses.add_instance_noise(real_out, noise, tricks.noise)
    fake_out = losses.add_instance_noise(fake_out, noise, tricks.noise)
    with runtime.autocast(device, cfg.runtime.precision):
        real_logits = D(_d_input(real_in, real_out, cfg)).float()
        fake_logits = D(_d_input(real_in, fake_out, cfg)).float()
    target = losses.real_targets(real_logits.shape, cfg.tricks.label_smoothing, tricks.smoothing, device)
    flipped = losses.flip_labels(cfg.tricks.label_flip, tricks.flip)
    loss_real, loss_fake = losses.discriminator_loss(real_logits, fake_logits, cfg.loss.gan, target, flipped)
    opt_D.zero_grad(set_to_none=True)
    (cfg.loss.d_scale * (loss_real + loss_fake)).backward()
    opt_D.step()
    return {D_REAL: loss_real.detach(), D_FAKE: loss_fake.detach()}


def generator_step(G: nn.Module, D: nn.Module | None, opt_G: torch.optim.Optimizer, real_in: torch.Tensor,
                   real_out: torch.Tensor, fake_out: torch.Tensor, cfg: RunConfig,
                   device: torch.device) -> dict[contract.Loss, torch.Tensor]:
    """One G update: fool D (non-saturating) plus the weighted L1 to the target."""
    loss_gan = torch.zeros((), device=device)
    if D is not None:
        set_requires_grad(D, False)  # G's step needs gradients through D, not for D's weights
        with runtime.autocast(device, cfg.runtime.precision):
            fake_logits = D(_d_input(real_in, fake_out, cfg)).float()
        loss_gan = losses.generator_gan_loss(fake_logits, cfg.loss.gan)
    loss_l1 = losses.l1_loss(fake_out.float(), real_out)
    opt_G.zero_grad(set_to_none=True)
    (loss_gan + cfg.loss.l1 * loss_l1).backward()
    opt_G.step()
    return {G_GAN: loss_gan.detach(), G_L1: loss_l1.detach()}


def set_requires_grad(net: nn.Module, flag: bool) -> None:
    for p in net.parameters():
        p.requires_grad_(flag)


def _d_input(real_in: torch.Tensor, out: torch.Tensor, cfg: RunConfig) -> torch.Tensor:
    return torch.cat([real_in, out.to(real_in.dtype)], 1) if cfg.loss.conditional else out


def _to_device(a: torch.Tensor, b: torch.Tensor, device: torch.device, cfg: RunConfig):
    fmt = torch.channels_last if cfg.runtime.channels_last else torch.contiguous_format
    return (a.to(device, non_blocking=True, memory_format=fmt), b.to(device, non_blocking=True, memory_format=fmt))


def make_optimizer(net: nn.Module, cfg: RunConfig, device: torch.device) -> torch.optim.Optimizer:
    # The fused kernel (one launch for all parameters) exists on CPU and CUDA; deterministic
    # mode keeps the plain for-each path, whose arithmetic order is fixed.
    fused = not cfg.runtime.deterministic
    return torch.optim.Adam(net.parameters(), lr=cfg.optim.lr, betas=(cfg.optim.beta1, cfg.optim.beta2),
                            fused=fused or None, foreach=None if fused else True)


def score(state: TrainingState, tracker: Tracker, run_dir: Path) -> dict[str, float]:
    """Scores at this epoch: on `eval.max_images` at the end, on `eval.every_max_images` (cheaper) before.

    Under a forked RNG: building and running the metric networks draws nothing from the training
    streams, so a run scored every epoch trains exactly as one scored only at the end.
    """
    from p2p import evaluate  # imported late: scoring pulls in the metric networks

    cfg, device, final = state.cfg, state.device, state.epoch == state.total_epochs
    max_images = cfg.eval.max_images if final or cfg.eval.every_max_images is None else cfg.eval.every_max_images
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        scores, grid = evaluate.evaluate_generator(state.G, cfg, device, max_images=max_images)
    if grid is not None:
        path = run_dir / contract.SAMPLES_DIR / contract.sample_name(state.epoch)
        evaluate.write_png(grid, path)
        tracker.log_artifact(path, contract.SAMPLES_DIR)
    return scores


# ---------------------------------------------------------------- how a run ends


@dataclass
class _Where:
    run_dir: Path | None = None


@contextlib.contextmanager
def recording_the_end(tracker: Tracker, state: TrainingState) -> Iterator[_Where]:
    """A run that stops or fails is marked so, with the reason (KILLED: a stop signal or an early stop; FAILED:
    a fault); a store that went down is left as it is, and the message says which checkpoint is kept."""
    where = _Where()
    try:
        yield where
    except StopTraining as stop:
        _end_run(tracker, "kill", stop.reason)
        raise
    except KeyboardInterrupt as stop:  # Ctrl-C, or SIGINT/SIGTERM through p2p.signals: KILLED, with which
        _end_run(tracker, "kill", signals.reason(stop))
        raise
    except TrackingError as exc:  # nothing more can be recorded there; the checkpoint is kept
        raise TrackingError(f"{exc}; {kept(where.run_dir, state.saved_epoch, 'once the store answers')}") from None
    except (TrainingFault, UserError) as fault:
        _end_run(tracker, "fail", str(fault))
        raise
    except Exception as exc:
        _end_run(tracker, "fail", f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=5)}")
        raise


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

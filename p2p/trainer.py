"""The training loop: one D step then one G step per batch, top to bottom.

Read `train()` first; everything else in this file is a helper it calls.
"""

from __future__ import annotations

import math
import os
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
import torch.nn as nn
from tqdm import tqdm

from p2p import checkpoint, data, losses, runtime, signals, streams
from p2p.config import RunConfig, dump_yaml, flatten, to_dict
from p2p.errors import UserError
from p2p.models import create_discriminator, create_generator
from p2p.tracking import RunTracker, TrackingError

LOSS_NAMES = ("loss_D_real", "loss_D_fake", "loss_G_GAN", "loss_G_L1")


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


def train(cfg: RunConfig, *, run_dir: Path | None = None, resume: bool = False, experiment: str | None = None,
          tags: dict[str, str] | None = None, parent_run_id: str | None = None, progress: bool = True,
          on_epoch: Callable[[int, dict[str, float]], None] | None = None,
          run_name: str | None = None) -> TrainResult:
    """Train (or resume) one tracked run.

    `run_dir` holds the checkpoint; with `resume`, a checkpoint there is continued
    (same MLflow run, same RNG streams), else a fresh run starts.
    """
    device = runtime.configure(cfg.runtime, cfg.seed)
    state = _load_resume_state(cfg, run_dir) if resume and run_dir is not None else None
    if state is not None and state["finished"]:
        return _complete_finished(cfg, run_dir, state)

    # Data: decoded once; shuffling and jitter, and each trick, draw from their own stream (p2p.streams).
    loader = data.load_train(cfg.data, cfg.optim.batch_size, seed=streams.stream_seed(cfg.seed, streams.DATA),
                             progress=progress)
    tricks = streams.TrickStreams(cfg.seed)

    # Models, optimisers, schedules.
    use_gan = cfg.loss.gan != "none"
    G = create_generator(cfg).to(device)
    D = create_discriminator(cfg).to(device) if use_gan else None
    if cfg.runtime.channels_last:
        G = G.to(memory_format=torch.channels_last)
        D = D.to(memory_format=torch.channels_last) if D is not None else None
    G_run = runtime.compile_module(G, cfg.runtime, device)  # what runs; G itself holds the weights
    D_run = runtime.compile_module(D, cfg.runtime, device) if D is not None else None
    opt_G = make_optimizer(G, cfg, device)
    opt_D = make_optimizer(D, cfg, device) if D is not None else None
    factor = lambda e: lr_factor(e, cfg.optim.epochs, cfg.optim.decay_epochs)  # noqa: E731
    sched_G = torch.optim.lr_scheduler.LambdaLR(opt_G, factor)
    sched_D = torch.optim.lr_scheduler.LambdaLR(opt_D, factor) if opt_D is not None else None
    pool = losses.ImagePool(cfg.tricks.image_pool)
    torch.manual_seed(streams.stream_seed(cfg.seed, streams.DROPOUT))  # the global generator: G's dropout only

    # The checkpoint's state, if resuming.
    start_epoch = 0
    if state is not None:
        G.load_state_dict(state["generator"])
        opt_G.load_state_dict(state["opt_G"])
        sched_G.load_state_dict(state["sched_G"])
        if D is not None:
            D.load_state_dict(state["discriminator"])
            opt_D.load_state_dict(state["opt_D"])
            sched_D.load_state_dict(state["sched_D"])
        pool.load_state_dict(state["pool"], device)
        loader.load_state_dict(state["loader"])
        tricks.load_state_dict(state["tricks"])
        runtime.set_rng_state(state["rng"])
        start_epoch = state["epoch"]

    total_epochs = cfg.optim.epochs + cfg.optim.decay_epochs
    steps_per_epoch = len(loader)
    noise_epochs = cfg.tricks.instance_noise_epochs or total_epochs
    scores: dict[str, float] = {}
    trace_startup = bool(os.environ.get("P2P_TRACE_STARTUP"))
    tracker: RunTracker | None = None
    bar = None
    saved_epoch = start_epoch  # the newest epoch on disk: what a stop or a fault leaves to resume from
    try:
        # Tracking: a new MLflow run, or the one the checkpoint belongs to (and the epoch its stop left unlogged).
        if state is not None:
            tracker = RunTracker.resume(state["run_id"])
            _log_unlogged_epoch(tracker, state)
        else:
            run_tags = {"p2p.scale": "custom", "p2p.machine": runtime.machine(), **(tags or {})}
            tracker = RunTracker.start(experiment or cfg.experiment, run_name or cfg.name,
                                       params=flatten(to_dict(cfg)), tags=run_tags, parent_run_id=parent_run_id)
            tracker.log_text(dump_yaml(cfg), "config.yaml")
        if run_dir is None:
            run_dir = Path(cfg.runtime.out_dir) / cfg.name / tracker.run_id
        run_dir.mkdir(parents=True, exist_ok=True)
        bar = tqdm(total=total_epochs * len(loader.data), initial=start_epoch * len(loader.data), unit="img",
                   desc=cfg.name, disable=not progress, dynamic_ncols=True, smoothing=0.1)

        for epoch in range(start_epoch, total_epochs):
            G.train()
            if D is not None:
                D.train()
            sums = torch.zeros(len(LOSS_NAMES), device=device)
            epoch_start, seen = time.perf_counter(), 0
            for step, (real_in, real_out) in enumerate(loader.epoch()):
                real_in, real_out = _to_device(real_in, real_out, device, cfg)
                progress_epochs = epoch + step / steps_per_epoch
                noise = losses.instance_noise_std(cfg.tricks.instance_noise, progress_epochs, noise_epochs)
                # Generate once; D learns on a detached copy, G on the graph.
                with runtime.autocast(device, cfg.runtime.precision):
                    fake_out = G_run(real_in)
                if D is not None:
                    loss_real, loss_fake = discriminator_step(D_run, opt_D, real_in, real_out, fake_out.detach(), pool,
                                                              noise, tricks, cfg, device)
                    sums[0] += loss_real
                    sums[1] += loss_fake
                loss_gan, loss_l1 = generator_step(G_run, D_run, opt_G, real_in, real_out, fake_out, cfg, device)
                sums[2] += loss_gan
                sums[3] += loss_l1
                seen += real_in.shape[0]
                bar.update(real_in.shape[0])
                if trace_startup:
                    trace_startup = runtime.trace_first_step()
                if (step + 1) % cfg.runtime.log_every == 0:
                    _check_finite(sums, epoch, step)
            elapsed = time.perf_counter() - epoch_start
            means = (sums / steps_per_epoch).tolist()
            _check_finite(sums, epoch, steps_per_epoch - 1)
            lr = opt_G.param_groups[0]["lr"]
            sched_G.step()
            if sched_D is not None:
                sched_D.step()
            metrics = {f"train/{name}": value for name, value in zip(LOSS_NAMES, means)
                       if D is not None or name.endswith("L1")}
            metrics |= {"train/lr": lr, "train/img_per_s": seen / max(elapsed, 1e-9)}
            bar.set_postfix(G_L1=f"{means[3]:.3f}", D=f"{(means[0] + means[1]) / 2:.3f}" if D is not None else "-")
            done = epoch + 1
            if (cfg.eval.every and done % cfg.eval.every == 0) or done == total_epochs:
                eval_start = time.perf_counter()
                scores = _evaluate(G, cfg, device, tracker, done, run_dir, final=done == total_epochs)
                metrics |= scores | {"train/eval_s": time.perf_counter() - eval_start}  # what scoring costs a run
            # The checkpoint first, with the metrics: an epoch whose metrics could not be logged (a stop, a
            # store that went down) is logged when the run resumes. A stop waits for the file to be whole.
            try:
                with signals.held():
                    save_checkpoint(run_dir, cfg, tracker.run_id, done, G, D, opt_G, opt_D, sched_G, sched_D, pool,
                                    loader, tricks, finished=done == total_epochs, metrics=metrics)
                    saved_epoch = done
            except OSError as exc:  # a full disk: the previous checkpoint is intact, the partial file removed
                raise checkpoint.CheckpointError(
                    f"{run_dir / checkpoint.CHECKPOINT}: cannot write the checkpoint of epoch {done} "
                    f"({exc.strerror or exc}); {_kept(run_dir, saved_epoch, 'once there is room')}") from None
            tracker.log_metrics(metrics, step=done)
            if on_epoch is not None:
                with signals.held():  # a sweep's callback writes to its storage: not to be cut in half
                    on_epoch(done, metrics)
        bar.close()
        export_generator(run_dir, cfg, G)
        tracker.log_artifact(run_dir / checkpoint.GENERATOR)
        tracker.finish()
        return TrainResult(tracker.run_id, run_dir, total_epochs, scores)
    except StopTraining as stop:
        _close(bar)
        _end_run(tracker, "kill", stop.reason)
        raise
    except KeyboardInterrupt as stop:  # Ctrl-C, or SIGINT/SIGTERM through p2p.signals: KILLED, with which
        _close(bar)
        _end_run(tracker, "kill", signals.reason(stop))
        raise
    except TrackingError as exc:  # the store is down: nothing more can be recorded there, the checkpoint is kept
        _close(bar)
        raise TrackingError(f"{exc}; {_kept(run_dir, saved_epoch, 'once the store answers')}") from None
    except (TrainingFault, UserError) as fault:
        _close(bar)
        _end_run(tracker, "fail", str(fault))
        raise
    except Exception as exc:
        _close(bar)
        _end_run(tracker, "fail", f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=5)}")
        raise


def _close(bar) -> None:
    if bar is not None:
        bar.close()


def _end_run(tracker: RunTracker | None, how: str, reason: str) -> None:
    """Mark the run KILLED or FAILED with the reason; a store that fails now must not hide the reason itself."""
    if tracker is None:
        return
    try:
        tracker.kill(reason) if how == "kill" else tracker.fail(reason)
    except TrackingError as exc:
        print(f"p2p: warning: {exc}", file=sys.stderr)


def _kept(run_dir: Path | None, epoch: int, when: str) -> str:
    if epoch < 1 or run_dir is None:
        return "no epoch had been saved yet"
    return (f"the checkpoint of epoch {epoch} is kept in {run_dir}: continue with `p2p train CONFIG --resume "
            f"{run_dir}` {when}")


def _log_unlogged_epoch(tracker: RunTracker, state: dict) -> None:
    """The checkpoint's epoch, logged if the run stopped between saving it and logging its metrics."""
    metrics = state.get("metrics")
    if metrics and state["epoch"] not in tracker.logged_steps(next(iter(metrics))):
        tracker.log_metrics(metrics, step=state["epoch"])


# ---------------------------------------------------------------- steps


def discriminator_step(D: nn.Module, opt_D: torch.optim.Optimizer, real_in: torch.Tensor, real_out: torch.Tensor,
                       fake_out: torch.Tensor, pool: losses.ImagePool, noise: float, tricks: streams.TrickStreams,
                       cfg: RunConfig, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
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
    return loss_real.detach(), loss_fake.detach()


def generator_step(G: nn.Module, D: nn.Module | None, opt_G: torch.optim.Optimizer, real_in: torch.Tensor,
                   real_out: torch.Tensor, fake_out: torch.Tensor, cfg: RunConfig,
                   device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
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
    return loss_gan.detach(), loss_l1.detach()


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


def _check_finite(sums: torch.Tensor, epoch: int, step: int) -> None:
    if not bool(torch.isfinite(sums).all()):
        bad = [name for name, v in zip(LOSS_NAMES, sums.tolist()) if not math.isfinite(v)]
        raise TrainingFault(f"non-finite loss ({', '.join('train/' + b for b in bad)}) "
                            f"in epoch {epoch + 1} by step {step + 1}")


# ---------------------------------------------------------------- evaluation


def _evaluate(G: nn.Module, cfg: RunConfig, device: torch.device, tracker: RunTracker, epoch: int,
              run_dir: Path, final: bool) -> dict[str, float]:
    """Scores at this epoch: on `eval.max_images` at the end, on `eval.every_max_images` (cheaper) before.

    Under a forked RNG: building and running the metric networks draws nothing from the training
    streams, so a run scored every epoch trains exactly as one scored only at the end.
    """
    from p2p import evaluate  # imported late: scoring pulls in the metric networks

    max_images = cfg.eval.max_images if final or cfg.eval.every_max_images is None else cfg.eval.every_max_images
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        scores, grid = evaluate.evaluate_generator(G, cfg, device, max_images=max_images)
    if grid is not None:
        path = run_dir / "samples" / f"epoch_{epoch:03d}.png"
        evaluate.write_png(grid, path)
        tracker.log_artifact(path, "samples")
    return scores


# ---------------------------------------------------------------- checkpoints


def save_checkpoint(run_dir: Path, cfg: RunConfig, run_id: str, epoch: int, G, D, opt_G, opt_D, sched_G, sched_D,
                    pool: losses.ImagePool, loader: data.TrainLoader, tricks: streams.TrickStreams,
                    finished: bool, metrics: dict[str, float] | None = None) -> None:
    state = {
        "format": checkpoint.FORMAT, "config": to_dict(cfg), "run_id": run_id, "epoch": epoch, "finished": finished,
        "metrics": {k: float(v) for k, v in (metrics or {}).items()},  # this epoch's, in case logging them fails
        "generator": G.state_dict(), "opt_G": opt_G.state_dict(), "sched_G": sched_G.state_dict(),
        "discriminator": D.state_dict() if D is not None else None,
        "opt_D": opt_D.state_dict() if opt_D is not None else None,
        "sched_D": sched_D.state_dict() if sched_D is not None else None,
        "pool": pool.state_dict(), "loader": loader.state_dict(), "tricks": tricks.state_dict(),
        "rng": runtime.rng_state(),
    }
    checkpoint.save_atomic(state, run_dir / checkpoint.CHECKPOINT)


def export_generator(run_dir: Path, cfg: RunConfig, G: nn.Module) -> Path:
    """The final generator with its config: what `p2p translate` and `p2p eval` read."""
    path = run_dir / checkpoint.GENERATOR
    try:
        checkpoint.save_atomic({"format": checkpoint.FORMAT, "config": to_dict(cfg), "generator": G.state_dict()},
                               path)
    except OSError as exc:
        raise checkpoint.CheckpointError(f"{path}: cannot write the generator ({exc.strerror or exc}); the final "
                                         f"checkpoint is kept: --resume writes it once there is room") from None
    return path


def _load_resume_state(cfg: RunConfig, run_dir: Path) -> dict | None:
    path = run_dir / checkpoint.CHECKPOINT
    if not path.is_file():
        return None
    state = checkpoint.load(path)
    saved, current = flatten(state["config"]), flatten(to_dict(cfg))
    defaults = flatten(to_dict(RunConfig()))  # a key newer than the checkpoint had its default value then
    for key in sorted(set(saved) | set(current)):
        if key.startswith("runtime.") or key in ("eval.every",):
            continue  # how and where a run executes may change between attempts; what it learns may not
        before = saved.get(key, defaults.get(key))
        if before != current.get(key):
            raise UserError(f"{path}: cannot resume, config key '{key}' was {before!r} "
                            f"and is now {current.get(key)!r}")
    return state


def _complete_finished(cfg: RunConfig, run_dir: Path, state: dict) -> TrainResult:
    """A run whose last epoch was saved but whose process died before it was marked done."""
    G = create_generator(cfg, init=False)
    G.load_state_dict(state["generator"])
    tracker = RunTracker(state["run_id"])
    finished = tracker.status() == "FINISHED"
    if not finished:
        tracker = RunTracker.resume(state["run_id"])  # drops the reason it stopped
        _log_unlogged_epoch(tracker, state)
    if not (run_dir / checkpoint.GENERATOR).is_file():
        export_generator(run_dir, cfg, G)
        tracker.log_artifact(run_dir / checkpoint.GENERATOR)
    latest = tracker.latest_metrics()
    if not finished:
        tracker.finish()
    scores = {k: v for k, v in latest.items() if k.startswith("eval/")}
    return TrainResult(tracker.run_id, run_dir, state["epoch"], scores)


def find_resumable(out_dir: Path, name: str) -> Path | None:
    """Newest run folder of this config name whose checkpoint is not finished (or whose last epoch was saved
    but whose generator was not: a run stopped while ending)."""
    candidates = []
    for path in (out_dir / name).glob(f"*/{checkpoint.CHECKPOINT}"):
        candidates.append((path.stat().st_mtime, path.parent))
    for _, folder in sorted(candidates, reverse=True):
        state = checkpoint.load(folder / checkpoint.CHECKPOINT)
        if not state.get("finished") or not (folder / checkpoint.GENERATOR).is_file():
            return folder
    return None

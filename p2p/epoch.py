"""One epoch of a run: a pass over its training data, a step per batch (`p2p.step`), yielding after each so
that packed runs can take turns (p2p.packing); then the epoch's mean losses, and the schedules' step."""

from __future__ import annotations

import time
from typing import Generator

import torch
from tqdm import tqdm

from p2p import contract, losses
from p2p.config import RunConfig
from p2p.contract import D_FAKE, D_REAL, G_L1
from p2p.training_state import TrainingState


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
        real_in, real_out = to_device(real_in, real_out, device, cfg)
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


def to_device(a: torch.Tensor, b: torch.Tensor, device: torch.device, cfg: RunConfig):
    fmt = torch.channels_last if cfg.runtime.channels_last else torch.contiguous_format
    if device.type == "cuda":  # from pageable memory the copy first waits for the GPU's queue (the step before)
        a, b = a.pin_memory(), b.pin_memory()  # from pinned memory it is queued and the host runs ahead
    return (a.to(device, non_blocking=True, memory_format=fmt), b.to(device, non_blocking=True, memory_format=fmt))

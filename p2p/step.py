"""One training step: the one the trainer runs, `p2p sweep --dry-run` times and `make bench` measures.

`train_step` is G's forward, one D update on a detached copy of G's output, then one G update through
D, its losses added to the run's sums on the device. A `Stepper` runs it: `EagerStepper` as written,
`CudaGraphStepper` (`runtime.cuda_graph`) captures it once, after a few eager warm-up steps, as one
CUDA graph that is replayed for every later batch: a batch-1 step is a few thousand small kernels,
bound by launches and Python, not by arithmetic. What the step draws at random comes from the run's
own generators on the device (p2p.streams), registered with the graph, so common random numbers hold.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import torch
import torch.nn as nn

from p2p import contract, losses, runtime, streams
from p2p.config import LossConfig, RunConfig, TricksConfig
from p2p.contract import D_FAKE, D_REAL, G_GAN, G_L1
from p2p.errors import TrainingFault, UserError

# Whether the graph path has passed its GPU checks (benchmarks/gpu_check.sh: tests/test_cuda.py on a real GPU).
# The one statement of that state: while it is False, `runtime.cuda_graph: auto` means eager (a path never run on
# a GPU is not a default), and the texts that mention it point here or to docs/speed.md's "Status".
GRAPH_VERIFIED_ON_GPU = False
WARMUP_STEPS = 3  # eager steps before the capture: allocations, cuDNN's choices, the optimisers' state
# Steps until a graphed stepper has captured its graph (the warm-up, then the step that captures and replays it):
# what a caller timing the step runs first, so that every step it times is a replay.
STEPS_TO_CAPTURE = WARMUP_STEPS + 1


class LossSums:
    """Each loss summed over an epoch's steps on the device (no host sync but `check_finite`). The tensors
    live as long as the run: a CUDA graph adds into them, so an epoch starts by zeroing them in place."""

    def __init__(self, names: tuple[contract.Loss, ...], device: torch.device):
        self.sums = {loss: torch.zeros((), device=device) for loss in names}

    def reset(self) -> None:
        for value in self.sums.values():
            value.zero_()

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


# ---------------------------------------------------------------- what a step works with


@dataclass(frozen=True)
class StepSettings:
    """The config a step reads: the losses, the tricks, the forward passes' precision."""

    loss: LossConfig
    tricks: TricksConfig
    precision: str

    @classmethod
    def of(cls, cfg: RunConfig) -> StepSettings:
        return cls(cfg.loss, cfg.tricks, cfg.runtime.precision)


@dataclass(frozen=True)
class StepParts:
    """What one step reads and updates: the networks as they run (compiled or not; no D: L1 alone), their
    optimisers, the settings, the image pool, the random streams the step draws from (G's dropout masks, the
    tricks') and the loss sums it adds into."""

    G: nn.Module
    D: nn.Module | None
    opt_G: torch.optim.Optimizer
    opt_D: torch.optim.Optimizer | None
    settings: StepSettings
    pool: losses.ImagePool
    dropout: torch.Generator
    tricks: streams.TrickStreams
    sums: LossSums
    device: torch.device

    def device_generators(self) -> tuple[torch.Generator, ...]:
        """The generators a step draws from on the device: G's dropout and the tricks' (a CUDA graph registers them)."""
        return (self.dropout, *self.tricks.on_device())


# ---------------------------------------------------------------- the step


def train_step(parts: StepParts, real_in: torch.Tensor, real_out: torch.Tensor, noise: float | torch.Tensor) -> None:
    """One step on a batch already on the device: D learns on a detached copy of G's output, G on the graph.
    `noise` is this step's instance-noise std (a number, or a tensor the CUDA graph reads)."""
    settings, device = parts.settings, parts.device
    with runtime.autocast(device, settings.precision):
        fake_out = parts.G(real_in)
    if parts.D is not None:
        parts.sums.add(discriminator_step(parts.D, parts.opt_D, real_in, real_out, fake_out.detach(), parts.pool,
                                          noise, parts.tricks, settings, device))
    parts.sums.add(generator_step(parts.G, parts.D, parts.opt_G, real_in, real_out, fake_out, settings, device))


def discriminator_step(D: nn.Module, opt_D: torch.optim.Optimizer, real_in: torch.Tensor, real_out: torch.Tensor,
                       fake_out: torch.Tensor, pool: losses.ImagePool, noise: float | torch.Tensor,
                       tricks: streams.TrickStreams, settings: StepSettings,
                       device: torch.device) -> dict[contract.Loss, torch.Tensor]:
    """One D update on a real and a (pooled, detached) fake pair; returns the two detached losses."""
    set_requires_grad(D, True)
    fake_out = pool.query(fake_out, tricks.pool)
    real_out = losses.add_instance_noise(real_out, noise, tricks.noise)
    fake_out = losses.add_instance_noise(fake_out, noise, tricks.noise)
    with runtime.autocast(device, settings.precision):
        real_logits = D(d_input(real_in, real_out, settings.loss)).float()
        fake_logits = D(d_input(real_in, fake_out, settings.loss)).float()
    target = losses.real_targets(real_logits.shape, settings.tricks.label_smoothing, tricks.smoothing, device)
    flipped = losses.flip_labels(settings.tricks.label_flip, tricks.flip)
    loss_real, loss_fake = losses.discriminator_loss(real_logits, fake_logits, settings.loss.gan, target, flipped)
    opt_D.zero_grad(set_to_none=True)
    (settings.loss.d_scale * (loss_real + loss_fake)).backward()
    opt_D.step()
    return {D_REAL: loss_real.detach(), D_FAKE: loss_fake.detach()}


def generator_step(G: nn.Module, D: nn.Module | None, opt_G: torch.optim.Optimizer, real_in: torch.Tensor,
                   real_out: torch.Tensor, fake_out: torch.Tensor, settings: StepSettings,
                   device: torch.device) -> dict[contract.Loss, torch.Tensor]:
    """One G update: fool D (non-saturating) plus the weighted L1 to the target."""
    loss_gan = torch.zeros((), device=device)
    if D is not None:
        set_requires_grad(D, False)  # G's step needs gradients through D, not for D's weights
        with runtime.autocast(device, settings.precision):
            fake_logits = D(d_input(real_in, fake_out, settings.loss)).float()
        loss_gan = losses.generator_gan_loss(fake_logits, settings.loss.gan)
    loss_l1 = losses.l1_loss(fake_out.float(), real_out)
    opt_G.zero_grad(set_to_none=True)
    (loss_gan + settings.loss.l1 * loss_l1).backward()
    opt_G.step()
    return {G_GAN: loss_gan.detach(), G_L1: loss_l1.detach()}


def set_requires_grad(net: nn.Module, flag: bool) -> None:
    for p in net.parameters():
        p.requires_grad_(flag)


def d_input(real_in: torch.Tensor, out: torch.Tensor, loss: LossConfig) -> torch.Tensor:
    return torch.cat([real_in, out.to(real_in.dtype)], 1) if loss.conditional else out


# ---------------------------------------------------------------- running it: eagerly or as one CUDA graph


class Stepper(Protocol):
    def __call__(self, real_in: torch.Tensor, real_out: torch.Tensor, noise: float) -> None: ...


class EagerStepper:
    """The step as written: every op launched from Python."""

    def __init__(self, parts: StepParts):
        self.parts = parts

    def __call__(self, real_in: torch.Tensor, real_out: torch.Tensor, noise: float) -> None:
        train_step(self.parts, real_in, real_out, noise)


class CudaGraphs:
    """How `CudaGraphStepper` runs its warm-up and capture on CUDA (a stand-in that runs them on the CPU checks the
    stepper's bookkeeping there: tests/test_step.py)."""

    def warm_up(self, step: Callable[[], None], device: torch.device) -> None:
        """One eager step on a side stream, as capture wants: its allocations and choices stay off the main one."""
        side, here = torch.cuda.Stream(device), torch.cuda.current_stream(device)
        side.wait_stream(here)
        with torch.cuda.stream(side):
            step()
        here.wait_stream(side)

    def capture(self, step: Callable[[], None], generators: tuple[torch.Generator, ...]) -> Callable[[], None]:
        """`step` captured as one CUDA graph (not run), the generators registered with it; returns its replay."""
        graph = torch.cuda.CUDAGraph()
        for generator in generators:
            graph.register_generator_state(generator)
        with torch.cuda.graph(graph):
            step()
        return graph.replay


CUDA_GRAPHS = CudaGraphs()


class CudaGraphStepper:
    """The step captured whole as one CUDA graph and replayed.

    The first `WARMUP_STEPS` batches train eagerly on a side stream (the optimisers create their state,
    cuDNN and torch.compile make their choices); the next batch is copied into static buffers, the step
    captured on them and replayed; every later batch is copied in and replayed. The learning rate is a
    tensor the graph reads (capturable Adam), the loss sums are tensors it adds into, and this step's
    instance-noise std is written into a tensor before each replay: nothing is captured again. A batch
    of another shape (a short last batch) runs eagerly.
    """

    def __init__(self, parts: StepParts, graphs: CudaGraphs = CUDA_GRAPHS):
        self.parts, self.graphs = parts, graphs
        self.replay: Callable[[], None] | None = None
        self.static: tuple[torch.Tensor, torch.Tensor] | None = None
        self.noise = torch.zeros((), device=parts.device)
        self.noisy = parts.settings.tricks.instance_noise > 0
        self.warmed = 0

    def __call__(self, real_in: torch.Tensor, real_out: torch.Tensor, noise: float) -> None:
        if self.static is None:
            self.static = (torch.empty_like(real_in), torch.empty_like(real_out))
        static_in, static_out = self.static
        if real_in.shape != static_in.shape or real_out.shape != static_out.shape:
            return train_step(self.parts, real_in, real_out, noise)
        static_in.copy_(real_in, non_blocking=True)
        static_out.copy_(real_out, non_blocking=True)
        self.noise.fill_(noise)
        if self.replay is None:
            if self.warmed < WARMUP_STEPS:
                self.graphs.warm_up(self._step, self.parts.device)
                self.warmed += 1
                return
            self.replay = self.graphs.capture(self._step, self.parts.device_generators())
        self.replay()

    def _step(self) -> None:
        train_step(self.parts, *self.static, self.noise if self.noisy else 0.0)


def graph_refusal(cfg: RunConfig, device: torch.device) -> str | None:
    """Why this config's step cannot be one CUDA graph here (None: it can)."""
    if device.type != "cuda":
        return f"a CUDA graph needs a CUDA device (this run is on the {device.type})"
    if cfg.tricks.image_pool > 0:
        return "tricks.image_pool > 0: the image pool chooses on the host which fakes D sees"
    return None


_said: set[str] = set()


def use_cuda_graph(cfg: RunConfig, device: torch.device) -> bool:
    """`runtime.cuda_graph`: true (an error where the config cannot be captured), false, or auto: on for CUDA
    wherever the config allows it where `GRAPH_VERIFIED_ON_GPU`; off on the CPU."""
    setting, refusal = cfg.runtime.cuda_graph, graph_refusal(cfg, device)
    if setting is True:
        if refusal is not None:
            raise UserError(f"runtime.cuda_graph: true, but {refusal} (use auto or false)")
        return True
    if setting is False or device.type != "cuda":
        return False
    why = refusal or (None if GRAPH_VERIFIED_ON_GPU else
                      "the graph path is built but not yet verified on a GPU (runtime.cuda_graph: true turns it on)")
    if why is not None:
        if why not in _said:  # once per process
            _said.add(why)
            print(f"p2p: runtime.cuda_graph auto: the step runs eagerly: {why}", file=sys.stderr)
        return False
    return True


def make_stepper(parts: StepParts, graphed: bool) -> Stepper:
    """The step as one CUDA graph where `graphed` (`use_cuda_graph`), else eager."""
    return CudaGraphStepper(parts) if graphed else EagerStepper(parts)

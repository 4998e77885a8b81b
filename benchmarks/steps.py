"""What `make bench` times: its settings, its variants and one training step of each, built in the process
that measures it. Shared by benchmarks.bench (one step at a time) and benchmarks.throughput (trials
together); both import this module, never each other, so the imports run one way.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FACADES = ROOT / "experiments" / "facades.yaml"

Step = Callable[[], None]


@dataclass(frozen=True)
class Setting:
    name: str
    scale: str  # experiments/scales/<scale>.yaml
    crop: int
    ngf: int


SETTINGS = (Setting("paper 256 batch 1", "paper", 256, 64), Setting("cpu scale 128", "cpu", 128, 32))

# variant -> (uses the trainer's step, precision, channels_last, compile, malloc tuning, the step as one CUDA graph)
_P2P = dict(tuned=True, precision="fp32", channels_last=False, compile=False, malloc=True, graph=False)
_GPU = _P2P | dict(precision="bf16", channels_last=True)  # what the GPU was measured fastest with, eagerly
_EVERYWHERE = {
    "baseline": dict(tuned=False, precision="fp32", channels_last=False, compile=False, malloc=False, graph=False),
    "p2p fp32": _P2P,
    "p2p bf16": _P2P | dict(precision="bf16"),
    # one tuning removed: what the allocator settings contribute
    "p2p fp32 without malloc tuning": _P2P | dict(malloc=False),
    # what did not help here before, re-measured
    "p2p fp32 + channels_last": _P2P | dict(channels_last=True),
    "p2p fp32 + compile": _P2P | dict(compile=True),
}
# CUDA only: a graph needs CUDA, and bf16 + channels_last is the GPU's eager setting (the CPU rows above
# already show channels_last not paying there). The step captured whole as one CUDA graph is
# runtime.cuda_graph: true; "compile + graph" puts the compiled networks inside that graph.
_CUDA = {
    "p2p fp32 graph": _P2P | dict(graph=True),
    "p2p bf16 channels_last": _GPU,
    "p2p bf16 channels_last graph": _GPU | dict(graph=True),
    "p2p bf16 channels_last compile": _GPU | dict(compile=True),
    "p2p bf16 channels_last compile + graph": _GPU | dict(compile=True, graph=True),
}
VARIANTS = _EVERYWHERE | _CUDA
CUDA_ONLY = frozenset(_CUDA)


def variant_overrides(variant: str, device: str) -> dict[str, object]:
    """The config keys a variant sets (the rest are the scale's)."""
    v = VARIANTS[variant]
    return {"runtime.precision": v["precision"], "runtime.channels_last": v["channels_last"],
            "runtime.compile": v["compile"], "runtime.malloc_tuning": v["malloc"], "runtime.device": device,
            "runtime.cuda_graph": v["graph"]}


def build_step(setting: Setting, variant: str, device_name: str, seed: int = 0, threads: int = 0) -> Step:
    """One training step of `variant` on fixed random images: p2p's own (`TrainingState.stepper`, what the
    trainer runs: p2p.step.train_step, eager or as one CUDA graph) or the reference's loop written out.
    `threads` 0 keeps the config's thread count."""
    import torch

    from p2p import runtime
    from p2p.config import load_config
    from p2p.models import create_discriminator, create_generator
    from p2p.step import set_requires_grad
    from p2p.training_state import TrainingState

    v = VARIANTS[variant]
    device = torch.device(device_name)
    overrides = variant_overrides(variant, device.type) | {"seed": seed} | ({"runtime.threads": threads} if threads else {})
    cfg = load_config(FACADES, overrides, scale=setting.scale)
    runtime.configure(cfg.runtime, cfg.seed)
    fmt = torch.channels_last if v["channels_last"] else torch.contiguous_format
    x = torch.rand(1, 3, setting.crop, setting.crop, device=device).mul(2).sub(1).to(memory_format=fmt)
    y = torch.rand(1, 3, setting.crop, setting.crop, device=device).mul(2).sub(1).to(memory_format=fmt)
    if v["tuned"]:
        state = TrainingState(cfg, device, with_data=False)

        def step() -> None:
            state.stepper(x, y, 0.0)
        return step

    G = create_generator(cfg).to(device, memory_format=fmt)
    D = create_discriminator(cfg).to(device, memory_format=fmt)
    opt_G = torch.optim.Adam(G.parameters(), lr=2e-4, betas=(0.5, 0.999))
    opt_D = torch.optim.Adam(D.parameters(), lr=2e-4, betas=(0.5, 0.999))
    bce, l1 = torch.nn.BCEWithLogitsLoss(), torch.nn.L1Loss()

    def reference_step() -> None:  # the reference's optimize_parameters(), written out
        fake = G(x)
        set_requires_grad(D, True)
        opt_D.zero_grad()
        pred_fake = D(torch.cat((x, fake.detach()), 1))
        pred_real = D(torch.cat((x, y), 1))
        loss_D = (bce(pred_fake, torch.zeros_like(pred_fake)) + bce(pred_real, torch.ones_like(pred_real))) * 0.5
        loss_D.backward()
        opt_D.step()
        set_requires_grad(D, False)
        opt_G.zero_grad()
        pred_fake = D(torch.cat((x, fake), 1))
        loss_G = bce(pred_fake, torch.ones_like(pred_fake)) + 100.0 * l1(fake, y)
        loss_G.backward()
        opt_G.step()
    return reference_step


def synchronizer(device_name: str) -> Step:
    """Waits for the device's queued work (CUDA runs asynchronously: a step's time is only known after it)."""
    import torch

    return torch.cuda.synchronize if device_name.startswith("cuda") else (lambda: None)


EAGER_WARMUP_STEPS = 3  # at most, untimed (compilation, the allocator, cuDNN's choices); fewer for a slow variant
# A graphed variant's untimed steps go past its capture (p2p.step.STEPS_TO_CAPTURE, which ends with the capture's
# own replay) by this many replays, as an eager variant's go past its first step: no timed step is a first run.
REPLAYS_BEFORE_TIMING = 1


def warm_up(step: Step, sync: Step, variant: str, budget_s: float) -> float:
    """Warm-up steps (compilation, the allocator, a graph's capture); fewer for a slow eager variant.
    A graphed variant always reaches its capture, and replays it before it is timed. Returns seconds."""
    from p2p.step import STEPS_TO_CAPTURE

    graph = VARIANTS[variant]["graph"]
    start = time.perf_counter()
    for _ in range(STEPS_TO_CAPTURE + REPLAYS_BEFORE_TIMING if graph else EAGER_WARMUP_STEPS):
        step()
        sync()
        if not graph and time.perf_counter() - start > budget_s / 3:
            break
    return time.perf_counter() - start

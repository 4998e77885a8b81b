"""Where and how tensors run: device, threads, determinism, precision."""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import os
import platform
import random
import sys

import numpy as np
import torch

from p2p.config import RuntimeConfig
from p2p.errors import UserError


def select_device(cfg: RuntimeConfig) -> torch.device:
    if cfg.device == "cuda" and not torch.cuda.is_available():
        raise UserError("runtime.device: 'cuda' was asked for but no CUDA device is available (use 'auto' or 'cpu')")
    if cfg.device == "cpu" or (cfg.device == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    return torch.device("cuda")


def configure(cfg: RuntimeConfig, seed: int) -> torch.device:
    """Apply threads, allocator, determinism and seeds; return the device to use."""
    device = select_device(cfg)
    if cfg.malloc_tuning:
        tune_malloc()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    if cfg.deterministic:
        # Bit-identical reruns: deterministic kernels only, no autotuning.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False
    elif device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    if cfg.precision == "bf16" and not native_bf16(device):
        print(f"p2p: warning: runtime.precision bf16 on a {device.type} without native bf16 runs many times "
              "slower than fp32 (use fp32 or auto)", file=sys.stderr)
    seed_everything(seed)
    return device


@functools.lru_cache(maxsize=None)
def machine() -> str:
    """What ran a run, for its machine tag: CPU model, cores, the SIMD level torch uses, and any GPU."""
    model = platform.processor() or platform.machine()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    text = f"{model}, {os.cpu_count()} cores, {torch.backends.cpu.get_cpu_capability()}"
    if torch.cuda.is_available():
        text += f", {torch.cuda.get_device_name(0)} x{torch.cuda.device_count()}"
    return text


def compile_module(net: torch.nn.Module, cfg: RuntimeConfig, device: torch.device) -> torch.nn.Module:
    """torch.compile when asked, in inductor's default mode on every device: fused kernels, no CUDA graphs of its
    own. Its "reduce-overhead" mode graphs each network apart and hands out outputs that its next replay
    overwrites (G's output is read after D ran twice: a crash); the whole step is one graph instead (p2p.step)."""
    if not cfg.compile:
        return net
    return torch.compile(net)


def tune_malloc() -> bool:
    """Raise glibc's mmap/trim thresholds so big activation buffers are reused, not re-faulted.

    By default glibc serves blocks over 128 KiB-32 MiB with fresh mmaps and returns
    them on free, so every step pays page faults for the same tensors again. Done with
    mallopt at run time (the MALLOC_*_ variables would need setting before Python starts).
    Returns whether it applied (glibc only).
    """
    if not sys.platform.startswith("linux"):
        return False
    name = ctypes.util.find_library("c")
    if not name:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD = -1, -2, -3
    ok = mallopt(M_MMAP_THRESHOLD, 1 << 30) and mallopt(M_TRIM_THRESHOLD, (1 << 31) - 1) and mallopt(M_TOP_PAD, 1 << 28)
    return bool(ok)


@functools.lru_cache(maxsize=None)
def _native_bf16(device_type: str) -> bool:
    if device_type == "cuda":
        return torch.cuda.is_bf16_supported()
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in checks)


def native_bf16(device: torch.device) -> bool:
    """Whether bf16 matmuls/convolutions run in hardware (on an AVX2-only CPU they are ~20-50x slower)."""
    return _native_bf16(device.type)


def resolve_precision(precision: str, device: torch.device) -> str:
    if precision == "auto":
        return "bf16" if native_bf16(device) else "fp32"
    return precision


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def autocast(device: torch.device, precision: str):
    """bf16 autocast for the forward passes, or nothing for fp32."""
    if resolve_precision(precision, device) == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def rng_state() -> dict:
    """The global generators' states as tensors and plain values (loadable with weights_only=True)."""
    version, internal, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"torch": torch.get_rng_state(), "python": [version, list(internal), gauss],
             "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                       "has_gauss": int(has_gauss), "cached_gaussian": float(cached)}}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def global_rng_state(device: torch.device) -> torch.Tensor:
    """The state of torch's global generator for `device` (the CPU's, or the current CUDA device's)."""
    return torch.cuda.get_rng_state(device) if device.type == "cuda" else torch.get_rng_state()


def set_global_rng_state(device: torch.device, state: torch.Tensor) -> None:
    if device.type == "cuda":
        torch.cuda.set_rng_state(state, device)
    else:
        torch.set_rng_state(state)

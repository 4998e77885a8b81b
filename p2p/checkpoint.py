"""Checkpoints: written atomically, so a kill mid-write leaves the previous one intact.

Every file holds tensors and plain Python values only (RNG states included), and is read
with `weights_only=True`: a file that would need unpickling is refused, never executed.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import torch

from p2p import contract
from p2p.errors import UserError

CHECKPOINT, GENERATOR = contract.CHECKPOINT_FILE, contract.GENERATOR_FILE
FORMAT = 2  # 2: tensors and plain values only, per-stream RNG states (p2p.streams)


class CheckpointError(UserError):
    """A checkpoint could not be written (a full disk): the previous one is kept, the run stops."""


def save_atomic(obj: Any, path: str | Path) -> None:
    """Write to a temporary file beside `path`, then rename it over `path`.

    A write that fails (a full disk: OSError ENOSPC) or is interrupted removes the temporary file
    and leaves the previous `path` as it was; the error is the caller's to report.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def load_plain(path: str | Path, what: str) -> Any:
    """`torch.load` with `weights_only=True`: a file that holds anything but tensors and plain values
    (what a pickle that runs code needs) is refused with one line naming it, and nothing in it runs."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        found = re.search(r"GLOBAL (\S+)", str(exc))
        if found:  # torch's restricted unpickler met an object it does not allow: it was never built
            raise UserError(f"{path}: refused: not a {what} of tensors and plain values (it holds a Python object, "
                            f"{found.group(1)}, that only unpickling could make, and p2p never unpickles)") from None
        raise UserError(f"{path}: not a readable {what} (damaged, or not a file p2p wrote: "
                        f"{type(exc).__name__})") from None


def load(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: checkpoint not found")
    state = load_plain(path, "p2p checkpoint")
    if not isinstance(state, dict) or "config" not in state or "generator" not in state:
        raise UserError(f"{path}: not a p2p checkpoint (expected the keys 'config' and 'generator')")
    if state.get("format") != FORMAT:
        raise UserError(f"{path}: checkpoint format {state.get('format', 1)}, this p2p reads format {FORMAT} "
                        "(train it again with this version)")
    return state

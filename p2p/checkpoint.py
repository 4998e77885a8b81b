"""Checkpoints: written atomically, so a kill mid-write leaves the previous one intact.

Every file holds tensors and plain Python values only (RNG states included), and is read
with `weights_only=True`: a file that would need unpickling is refused, never executed.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from p2p.errors import UserError

CHECKPOINT = "checkpoint.pt"
GENERATOR = "generator.pt"
FORMAT = 2  # 2: tensors and plain values only, per-stream RNG states (p2p.streams)


def save_atomic(obj: Any, path: str | Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def load(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: checkpoint not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise UserError(f"{path}: refused: not a p2p checkpoint of tensors and plain values "
                        f"(it would need unpickling, which p2p never does; {type(exc).__name__})") from None
    if not isinstance(state, dict) or "config" not in state or "generator" not in state:
        raise UserError(f"{path}: not a p2p checkpoint (expected the keys 'config' and 'generator')")
    if state.get("format") != FORMAT:
        raise UserError(f"{path}: checkpoint format {state.get('format', 1)}, this p2p reads format {FORMAT} "
                        "(train it again with this version)")
    return state

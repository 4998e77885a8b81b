"""Checkpoints: written atomically, so a kill mid-write leaves the previous one intact."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from p2p.errors import UserError

CHECKPOINT = "checkpoint.pt"
GENERATOR = "generator.pt"


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
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:
        raise UserError(f"{path}: not a readable p2p checkpoint ({type(exc).__name__})") from None
    if not isinstance(state, dict) or "config" not in state or "generator" not in state:
        raise UserError(f"{path}: not a p2p checkpoint (expected the keys 'config' and 'generator')")
    return state

"""The files a run writes, its checkpoint and its generator: written atomically, so a kill mid-write leaves the
previous one intact.

Every file holds tensors and plain Python values only (RNG states included), and is read
with `weights_only=True`: a file that would need unpickling is refused, never executed.
"""

from __future__ import annotations

import os
import re
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable

import torch
import torch.utils.serialization

from p2p import contract
from p2p.config import RunConfig, to_dict
from p2p.errors import UserError

CHECKPOINT, GENERATOR = contract.CHECKPOINT_FILE, contract.GENERATOR_FILE
FORMAT = 2  # 2: tensors and plain values only, per-stream RNG states (p2p.streams)


class CheckpointError(UserError):
    """A checkpoint could not be written (a full disk): the previous one is kept, the run stops."""


def save_atomic(obj: Any, path: str | Path) -> None:
    """Write to a temporary file beside `path`, then rename it over `path`.

    A write that fails (a full disk: OSError ENOSPC) or is interrupted removes the temporary file
    and leaves the previous `path` as it was; the error is the caller's to report.

    The archive's records carry no CRC32: `torch.load` never checks one (a flipped byte loads as it
    is: tests/test_trainer.py), and computing it is a quarter of writing a paper-scale checkpoint
    (686 MB to tmpfs on the 2-core CPU: 0.42 s with it, 0.32 s without), which a run writes every
    epoch. What protects a checkpoint is the rename: a file is whole or absent.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with torch.utils.serialization.config.patch({"save.compute_crc32": False}):
            torch.save(obj, tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def copied_to_cpu(obj: Any) -> Any:
    """`obj` with every tensor in it copied to the CPU (dicts, lists and tuples rebuilt): what a background write
    may serialise while training goes on changing the originals in place."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().to("cpu", copy=True)
    if isinstance(obj, dict):
        return {key: copied_to_cpu(value) for key, value in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(copied_to_cpu(value) for value in obj)
    return obj


class BackgroundWriter:
    """Checkpoints written on a thread of their own, one at a time, while the next epoch trains: on a GPU a
    paper-scale checkpoint (686 MB) takes about as long to write as an epoch (400 steps) takes to train.
    `close()` waits for what is in flight; so does the interpreter's exit (a stop signal lands it too)."""

    def __init__(self) -> None:
        self._pool: ThreadPoolExecutor | None = None

    def submit(self, write: Callable[..., None], *args: Any) -> Future:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="p2p-checkpoint")
        return self._pool.submit(write, *args)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None


def remove_stale_temporaries(folder: Path) -> list[Path]:
    """The temporary files `save_atomic` left in `folder` when its process was killed mid-write (nothing could
    remove them then): those whose writing process is gone. Returns what it removed."""
    removed = []
    for tmp in folder.glob(".*.tmp"):
        pid = tmp.name.rsplit(".", 2)[-2]
        if pid.isdigit() and not _alive(int(pid)):
            tmp.unlink(missing_ok=True)
            removed.append(tmp)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        pass
    return True


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


def write_checkpoint(state: dict, run_dir: Path, epoch: int, saved_epoch: int) -> None:
    """Epoch `epoch`'s checkpoint written whole or not at all (on the run's writer thread); a full disk leaves the
    previous one (epoch `saved_epoch`) intact, the partial file removed, and says so."""
    try:
        save_atomic(state, run_dir / contract.CHECKPOINT_FILE)
    except OSError as exc:
        raise CheckpointError(
            f"{run_dir / contract.CHECKPOINT_FILE}: cannot write the checkpoint of epoch {epoch} "
            f"({exc.strerror or exc}); {kept(run_dir, saved_epoch, 'once there is room')}") from None


def export_generator(run_dir: Path, cfg: RunConfig, G: torch.nn.Module) -> Path:
    """The final generator with its config: what `p2p translate` and `p2p eval` read."""
    path = run_dir / contract.GENERATOR_FILE
    try:
        save_atomic({"format": FORMAT, "config": to_dict(cfg), "generator": G.state_dict()}, path)
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot write the generator ({exc.strerror or exc}); the final "
                              f"checkpoint is kept: --resume writes it once there is room") from None
    return path


def kept(run_dir: Path | None, epoch: int, when: str) -> str:
    """What a stopped run leaves to resume from, and how (said where it stops)."""
    if epoch < 1 or run_dir is None:
        return "no epoch had been saved yet"
    return (f"the checkpoint of epoch {epoch} is kept in {run_dir}: continue with `p2p train CONFIG --resume "
            f"{run_dir}` {when}")

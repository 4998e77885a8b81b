"""A split's images decoded into one stack of uint8 pairs (`PairSet`): input channels, then the target's three,
each resized once; and giving the pages of a memory-mapped stack back to the kernel.

`data.direction` picks which half of an A|B file is the input; `data.task: colorization` makes the input the
grayscale of the photo (the target half, or the whole file with `data.layout: single`).
"""

from __future__ import annotations

import ctypes
import mmap
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from p2p import images
from p2p.config import DataConfig


@dataclass
class PairSet:
    """Input and target stacked on channels: (N, C_in + C_out, S, S) uint8, plus file names.

    `mapped`: `pairs` is a read-only memory map of the decoded-split file (never written to).
    """

    pairs: torch.Tensor
    names: list[str]
    in_channels: int
    mapped: bool = False

    def __len__(self) -> int:
        return self.pairs.shape[0]

    def split(self, pairs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return pairs[:, : self.in_channels], pairs[:, self.in_channels :]

    def release(self, index: int) -> None:
        """Hand image `index`'s pages of a mapped split back to the kernel once it has been copied: without
        this, every page an epoch touches counts in the process's resident memory until the split is unmapped."""
        if self.mapped:
            release_pages(self.pairs[index])


def decode_pairs(cfg: DataConfig, split: str, files: list[Path], size: int, progress: bool) -> PairSet:
    """The whole split decoded into memory."""
    in_channels = cfg.in_channels
    pairs = torch.empty((len(files), in_channels + 3, size, size), dtype=torch.uint8)
    with decode_bar(split, len(files), progress) as bar:
        decode_into(cfg, files, size, pairs, in_channels, bar)
    return PairSet(pairs, [p.name for p in files], in_channels)


def decode_bar(split: str, total: int, progress: bool):
    return tqdm(total=total, desc=f"decode {split}", unit="img", leave=False, disable=not progress)


def decode_into(cfg: DataConfig, files: list[Path], size: int, out: torch.Tensor, in_channels: int, bar) -> None:
    """`files` decoded into the first rows of `out`, one image at a time."""
    for j, path in enumerate(files):
        _decode_one(cfg, path, size, out[j], in_channels)
        bar.update(1)


def _decode_one(cfg: DataConfig, path: Path, size: int, out: torch.Tensor, in_channels: int) -> None:
    """One file into `out` (C, size, size): input channels first, then the target's three."""
    image = images.read_rgb(path)
    if cfg.task == "colorization":
        photo = image if cfg.layout == "single" else _target_half(image, path, cfg.direction, cfg.square_halves)
        photo = images.resize(photo, size)
        out[:in_channels] = images.to_grayscale(photo)
        out[in_channels:] = photo
    else:
        a, b = images.split_pair(image, path, cfg.square_halves)
        source, target = (a, b) if cfg.direction == "AtoB" else (b, a)
        out[:3] = images.resize(source, size)
        out[3:] = images.resize(target, size)


def _target_half(image: torch.Tensor, path: Path, direction: str, square: bool = True) -> torch.Tensor:
    a, b = images.split_pair(image, path, square)
    return b if direction == "AtoB" else a


# ---------------------------------------------------------------- giving mapped pages back

_MADV_DONTNEED = 4  # Linux: drop the pages from this process; a clean file page is read again on the next touch
# A page fault maps the page cache's pages around it too ("fault-around", 64 KiB by default, aligned), so pages of
# the neighbouring images become resident as well: released with the image, or a cold epoch leaves them behind.
FAULT_AROUND_BYTES = 64 << 10
_libc = None


def release_pages(view: torch.Tensor, margin: int = FAULT_AROUND_BYTES) -> None:
    """`madvise(MADV_DONTNEED)` over the pages a contiguous view of a read-only file mapping spans, `margin`
    bytes either side included (kept inside the view's storage).

    Only for clean pages of a private file mapping (what a memory-mapped `torch.load` makes of a file p2p never
    writes to): the kernel drops them from this process's resident set and keeps them in its page cache.
    Elsewhere than Linux, nothing happens (the pages are still reclaimable file pages, only counted).
    """
    global _libc
    if not sys.platform.startswith("linux") or view.numel() == 0:
        return
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
        _libc.madvise.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
    storage = view.untyped_storage()
    low, high = storage.data_ptr(), storage.data_ptr() + storage.nbytes()
    start = max(low, view.data_ptr() - margin)
    end = min(high, view.data_ptr() + view.numel() * view.element_size() + margin)
    first = start - start % mmap.PAGESIZE  # the mapping starts on a page, at or before the storage
    _libc.madvise(first, end - first, _MADV_DONTNEED)  # best effort: a failure only leaves pages resident

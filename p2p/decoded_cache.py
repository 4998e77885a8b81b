"""The decoded-split file: a split decoded once, kept in the cache folder for every later process.

Its name holds everything that shapes it (`cache_file`), so an edited dataset is decoded again. It is an
ordinary `torch.save` archive of tensors and plain values ({pairs, names, in_channels}), read with
`weights_only=True` (a file that would need unpickling is refused, never run) and memory-mapped, so a split
larger than memory trains with bounded resident memory. A missing file is written a chunk of images at a
time straight into its archive, so decoding holds one chunk in memory whatever the split's size.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import sys
import zipfile
from pathlib import Path

import torch

from p2p import checkpoint
from p2p.cache import cache_file
from p2p.config import DataConfig
from p2p.errors import UserError
from p2p.names import check_name
from p2p.pairs import PairSet, decode_bar, decode_into

DECODE_CHUNK_BYTES = 64 << 20  # decoded images held in memory at once while a split is written to its file


def file_for(cfg: DataConfig, folder: Path, files: list[Path], size: int) -> Path:
    """Where a decoded split is kept: named by everything that shapes it, each file's size and mtime included,
    so an edited dataset is decoded again."""
    stats = [(p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in files]
    key = json.dumps({"folder": str(folder.resolve()), "files": stats, "size": size, "task": cfg.task,
                      "layout": cfg.layout, "direction": cfg.direction, "version": 1,
                      **({} if cfg.square_halves else {"square_halves": False})})
    digest = hashlib.sha1(key.encode()).hexdigest()[:16]
    return cache_file("decoded", f"{check_name(cfg.dataset, 'data.dataset')}-{folder.name}-{size}-{digest}.pt",
                      "data.dataset")


def read(path: Path, memory_map: bool = True) -> PairSet | None:
    """A decoded split from the cache, or None (with one line saying why) for a damaged or foreign file,
    which is decoded again and replaced; a file that would need unpickling is refused, never run."""
    try:
        saved, mapped = _load_cache_file(path, memory_map)
        pairs, names, in_channels = saved["pairs"], list(saved["names"]), int(saved["in_channels"])
        if not (isinstance(pairs, torch.Tensor) and pairs.dtype == torch.uint8 and pairs.dim() == 4
                and pairs.shape[0] == len(names) and pairs.is_contiguous()):
            raise TypeError("not a stack of uint8 images")
        return PairSet(pairs, names, in_channels, mapped=mapped)
    except UserError as exc:
        print(f"p2p: warning: {exc}; decoding the split again", file=sys.stderr)
    except (TypeError, KeyError, ValueError):
        print(f"p2p: warning: {path}: not a decoded-data cache of this p2p; decoding the split again", file=sys.stderr)
    return None


def _load_cache_file(path: Path, memory_map: bool) -> tuple[dict, bool]:
    """(the file's dict, whether its tensors are memory-mapped). A file the mapped read refuses is read by
    `checkpoint.load_plain`, which names what is wrong with it (a pickle it refuses, a damaged archive)."""
    if memory_map:
        try:
            return torch.load(path, map_location="cpu", weights_only=True, mmap=True), True
        except Exception:
            pass
    return checkpoint.load_plain(path, "decoded-data cache"), False


def save(pairs: PairSet, path: Path) -> None:
    """A split decoded in memory, kept as the same file `decode_into_file` writes."""
    checkpoint.save_atomic({"pairs": pairs.pairs, "names": pairs.names, "in_channels": pairs.in_channels}, path)


def warn_unkept(cached: Path, exc: OSError) -> None:
    print(f"p2p: warning: {cached}: cannot keep the decoded split ({exc.strerror or exc}); "
          "decoding it again next time", file=sys.stderr)


# ---------------------------------------------------------------- the file, written in chunks


def decode_into_file(cfg: DataConfig, split: str, files: list[Path], size: int, path: Path, progress: bool) -> None:
    """Decode the split into `path` a chunk at a time, so memory holds one chunk whatever the split's size.

    The file is what `checkpoint.save_atomic` would write for the whole split held in memory: an archive is
    written with the space for the images left empty (`torch.serialization.skip_data`), then the images are
    written into that space. It is built beside `path` and renamed over it only when complete; an OSError
    (a full disk, found before decoding by reserving the space) removes it and is the caller's to report.
    """
    in_channels = cfg.in_channels
    shape = (len(files), in_channels + 3, size, size)
    per_image = (in_channels + 3) * size * size
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        offset = _write_empty_archive(tmp, shape, [p.name for p in files], in_channels)
        chunk = max(1, DECODE_CHUNK_BYTES // per_image)
        buffer = torch.empty((min(chunk, len(files)), *shape[1:]), dtype=torch.uint8)
        with open(tmp, "r+b") as out, decode_bar(split, len(files), progress) as bar:
            if hasattr(os, "posix_fallocate"):
                os.posix_fallocate(out.fileno(), offset, per_image * len(files))
            for start in range(0, len(files), chunk):
                part = files[start : start + chunk]
                decode_into(cfg, part, size, buffer, in_channels, bar)
                _pwrite_all(out.fileno(), buffer[: len(part)].numpy().data, offset + start * per_image)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _pwrite_all(fd: int, data: memoryview, offset: int) -> None:
    """All of `data` at `offset` (one pwrite may write less than asked)."""
    data = data.cast("B")
    while data:
        written = os.pwrite(fd, data, offset)
        data, offset = data[written:], offset + written


def _write_empty_archive(path: Path, shape: tuple[int, ...], names: list[str], in_channels: int) -> int:
    """A decoded-split archive whose image bytes are a hole to fill; returns the offset of those bytes.

    The placeholder tensor is backed by a sparse scratch file, so no memory of the split's size is asked for
    (a split larger than memory would not fit in an allocation)."""
    nbytes = math.prod(shape)
    scratch = path.with_name(path.name + ".scratch")
    try:
        with open(scratch, "wb") as f:
            f.truncate(nbytes)
        placeholder = torch.from_file(str(scratch), shared=False, size=nbytes, dtype=torch.uint8).view(shape)
        with torch.serialization.skip_data():
            torch.save({"pairs": placeholder, "names": names, "in_channels": in_channels}, path)
        del placeholder
    finally:
        scratch.unlink(missing_ok=True)
    return _record_offset(path, "data/0")


def _record_offset(path: Path, record: str) -> int:
    """Where an uncompressed record's bytes start in a zip archive: after its local header (30 bytes, then
    the name and the extra field, which torch uses to align the bytes)."""
    with zipfile.ZipFile(path) as archive:
        info = next((i for i in archive.infolist() if i.filename.split("/", 1)[-1] == record), None)
    if info is None or info.compress_type != zipfile.ZIP_STORED:  # not torch's layout: decode in memory instead
        raise OSError(f"{path}: no uncompressed record {record} in the archive torch wrote")
    with open(path, "rb") as f:
        f.seek(info.header_offset)
        header = f.read(30)
    name_length = int.from_bytes(header[26:28], "little")
    extra_length = int.from_bytes(header[28:30], "little")
    return info.header_offset + 30 + name_length + extra_length

"""Aligned-pair datasets, decoded and resized once, jittered per step.

A dataset folder holds `train/`, `test/` (and maybe `val/`) of images that put
A on the left half and B on the right half. `data.direction` picks which half
is the input. Every image is decoded once into uint8, already resized to
`load_size` (train) or `crop_size` (test), and the decoded split is kept on disk
for the next process; a step only crops and mirrors, with the same offsets for
input and target.

The decoded split lives in that file and is read memory-mapped, so a dataset
larger than memory trains with bounded resident memory: decoding writes a chunk
of images at a time straight into the file, and the training loader hands the
pages of each image it has copied back to the kernel (they stay in the page
cache, shared by every process reading the split). The file is an ordinary
`torch.save` archive of tensors and plain values, read with `weights_only=True`.
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import math
import mmap
import os
import sys
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch

from p2p import checkpoint
from p2p.cache import cache_file
from p2p.config import DataConfig, data_root
from p2p.errors import UserError
from p2p.names import check_name

# torchvision 0.29 marks its image codecs deprecated in favour of TorchCodec; they still are the
# project's codec of record (libjpeg/libpng, no FFmpeg needed), so the notice is silenced here.
warnings.filterwarnings("ignore", message="The image decoding and encoding capabilities of TorchVision",
                        category=DeprecationWarning)

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}
DECODE_CHUNK_BYTES = 64 << 20  # decoded images held in memory at once while a split is written to its file


def split_dir(cfg: DataConfig, split: str) -> Path:
    root = data_root(cfg)
    dataset = root / cfg.dataset
    if not dataset.is_dir():
        raise UserError(
            f"data.dataset: folder {dataset} not found (set data.root or P2P_DATA_ROOT to the folder holding "
            f"'{cfg.dataset}', or run `make data`)"
        )
    folder = dataset / split
    if not folder.is_dir():
        raise UserError(f"{folder}: split folder not found (expected {dataset}/{{train,test,val}})")
    return folder


def list_images(folder: Path) -> list[Path]:
    files = [p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()]
    # Natural order (2.jpg before 10.jpg) so "the first N images" means what a reader expects.
    return sorted(files, key=lambda p: (len(p.stem), p.stem) if p.stem.isdigit() else (10**9, p.stem))


def read_rgb(path: Path) -> torch.Tensor:
    """uint8 (3, H, W); an unreadable file is a user error naming it."""
    from torchvision.io import ImageReadMode, decode_image  # here: torchvision's import costs ~2 s

    try:
        return decode_image(str(path), mode=ImageReadMode.RGB)
    except Exception as exc:  # torchvision raises RuntimeError with varying texts
        raise UserError(f"{path}: cannot read image ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})") from None


def split_pair(image: torch.Tensor, path: Path, square: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """(A, B) from an aligned A|B image; with `square` (`data.square_halves`, the pix2pix releases) each half
    must be square, so a photo that is not a pair, or a pair stacked the other way, is not silently cut."""
    height, width = image.shape[-2:]
    if width % 2:
        raise UserError(f"{path}: width {width} is not two halves (expected an A|B pair of equal widths)")
    if square and width != 2 * height:
        raise UserError(f"{path}: {width}x{height} is not two square halves (expected an A|B pair of width "
                        f"2 x height = {2 * height}; set data.square_halves: false for a dataset whose halves "
                        "are not square)")
    half = width // 2
    return image[..., :half], image[..., half:]


def to_grayscale(rgb: torch.Tensor) -> torch.Tensor:
    import torchvision.transforms.v2.functional as TF

    return TF.rgb_to_grayscale(rgb, num_output_channels=1)


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


def load_pairs(cfg: DataConfig, split: str, size: int, max_images: int | None = None,
               progress: bool = False, memory_map: bool = True) -> PairSet:
    """A split resized to `size` x `size` (bicubic, as the reference), decoded once and kept in the cache
    folder (`$P2P_CACHE_DIR` or `.cache/p2p`, in `decoded/`) for the next process: every trial of a sweep
    reads the same tensors instead of decoding and resizing hundreds of JPEGs again.

    `memory_map` (the default) reads that file memory-mapped and decodes a missing one chunk by chunk
    straight into it; `False` holds the whole split in memory, as p2p did before (same values, same batches).
    A cache that cannot be written (a full disk) leaves the split decoded in memory, with one warning.
    """
    folder = split_dir(cfg, split)
    files = list_images(folder)
    if not files:
        raise UserError(f"{folder}: split '{split}' holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    if max_images is not None:
        files = files[:max_images]
    cached = decoded_cache_file(cfg, folder, files, size)
    if cached.is_file():
        saved = _read_cache(cached, memory_map)
        if saved is not None:
            return saved
    if memory_map:
        try:
            _decode_into_file(cfg, split, files, size, cached, progress)
        except OSError as exc:  # a full disk: the file only bounds memory and saves time; decode in memory
            _warn_unkept(cached, exc)
        else:
            saved = _read_cache(cached, memory_map)
            if saved is not None:
                return saved
    pairs = decode_pairs(cfg, split, files, size, progress)
    try:
        checkpoint.save_atomic({"pairs": pairs.pairs, "names": pairs.names, "in_channels": pairs.in_channels},
                               cached)
    except OSError as exc:
        _warn_unkept(cached, exc)
    return pairs


def _warn_unkept(cached: Path, exc: OSError) -> None:
    print(f"p2p: warning: {cached}: cannot keep the decoded split ({exc.strerror or exc}); "
          "decoding it again next time", file=sys.stderr)


def _read_cache(path: Path, memory_map: bool = True) -> PairSet | None:
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


def decoded_cache_file(cfg: DataConfig, folder: Path, files: list[Path], size: int) -> Path:
    """Where a decoded split is kept: named by everything that shapes it, each file's size and mtime included,
    so an edited dataset is decoded again."""
    stats = [(p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in files]
    key = json.dumps({"folder": str(folder.resolve()), "files": stats, "size": size, "task": cfg.task,
                      "layout": cfg.layout, "direction": cfg.direction, "version": 1,
                      **({} if cfg.square_halves else {"square_halves": False})})
    digest = hashlib.sha1(key.encode()).hexdigest()[:16]
    return cache_file("decoded", f"{check_name(cfg.dataset, 'data.dataset')}-{folder.name}-{size}-{digest}.pt",
                      "data.dataset")


def _channels(cfg: DataConfig) -> int:
    return 1 if cfg.task == "colorization" else 3


def decode_pairs(cfg: DataConfig, split: str, files: list[Path], size: int, progress: bool) -> PairSet:
    """The whole split decoded into memory."""
    in_channels = _channels(cfg)
    pairs = torch.empty((len(files), in_channels + 3, size, size), dtype=torch.uint8)
    with _decode_bar(split, len(files), progress) as bar:
        _decode_into(cfg, files, size, pairs, in_channels, bar)
    return PairSet(pairs, [p.name for p in files], in_channels)


def _decode_bar(split: str, total: int, progress: bool):
    from tqdm import tqdm

    return tqdm(total=total, desc=f"decode {split}", unit="img", leave=False, disable=not progress)


def _decode_into(cfg: DataConfig, files: list[Path], size: int, out: torch.Tensor, in_channels: int, bar) -> None:
    """`files` decoded into the first rows of `out`, one image at a time."""
    for j, path in enumerate(files):
        _decode_one(cfg, path, size, out[j], in_channels)
        bar.update(1)


def _decode_one(cfg: DataConfig, path: Path, size: int, out: torch.Tensor, in_channels: int) -> None:
    """One file into `out` (C, size, size): input channels first, then the target's three."""
    image = read_rgb(path)
    if cfg.task == "colorization":
        photo = image if cfg.layout == "single" else _target_half(image, path, cfg.direction, cfg.square_halves)
        photo = resize(photo, size)
        out[:in_channels] = to_grayscale(photo)
        out[in_channels:] = photo
    else:
        a, b = split_pair(image, path, cfg.square_halves)
        source, target = (a, b) if cfg.direction == "AtoB" else (b, a)
        out[:3] = resize(source, size)
        out[3:] = resize(target, size)


# ---------------------------------------------------------------- the decoded-split file, written in chunks


def _decode_into_file(cfg: DataConfig, split: str, files: list[Path], size: int, path: Path, progress: bool) -> None:
    """Decode the split into `path` a chunk at a time, so memory holds one chunk whatever the split's size.

    The file is what `checkpoint.save_atomic` would write for the whole split held in memory: an archive is
    written with the space for the images left empty (`torch.serialization.skip_data`), then the images are
    written into that space. It is built beside `path` and renamed over it only when complete; an OSError
    (a full disk, found before decoding by reserving the space) removes it and is the caller's to report.
    """
    in_channels = _channels(cfg)
    shape = (len(files), in_channels + 3, size, size)
    per_image = (in_channels + 3) * size * size
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        offset = _write_empty_archive(tmp, shape, [p.name for p in files], in_channels)
        chunk = max(1, DECODE_CHUNK_BYTES // per_image)
        buffer = torch.empty((min(chunk, len(files)), *shape[1:]), dtype=torch.uint8)
        with open(tmp, "r+b") as out, _decode_bar(split, len(files), progress) as bar:
            if hasattr(os, "posix_fallocate"):
                os.posix_fallocate(out.fileno(), offset, per_image * len(files))
            for start in range(0, len(files), chunk):
                part = files[start : start + chunk]
                _decode_into(cfg, part, size, buffer, in_channels, bar)
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


def _target_half(image: torch.Tensor, path: Path, direction: str, square: bool = True) -> torch.Tensor:
    a, b = split_pair(image, path, square)
    return b if direction == "AtoB" else a


def resize(image: torch.Tensor, size: int) -> torch.Tensor:
    import torchvision.transforms.v2.functional as TF

    return TF.resize(image, [size, size], interpolation=TF.InterpolationMode.BICUBIC, antialias=True)


def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] -> float [-1, 1]."""
    return images.float().div_(127.5).sub_(1.0)


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """float [-1, 1] -> uint8 [0, 255]."""
    return images.detach().float().add(1.0).mul(127.5).round().clamp(0, 255).to(torch.uint8)


class TrainLoader:
    """Shuffled mini-batches with random crop and mirror, from a seeded generator.

    Its whole state is the generator's state, so a checkpoint can restore it and a
    resumed run sees exactly the batches an uninterrupted one would.
    """

    def __init__(self, data: PairSet, crop_size: int, batch_size: int, flip: bool, seed: int):
        self.data = data
        self.crop_size = crop_size
        self.batch_size = batch_size
        self.flip = flip
        self.generator = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return (len(self.data) + self.batch_size - 1) // self.batch_size

    def epoch(self):
        """Yields (input, target) float batches in [-1, 1] for one pass over the data."""
        n, load = len(self.data), self.data.pairs.shape[-1]
        order = torch.randperm(n, generator=self.generator)
        span = load - self.crop_size + 1
        for start in range(0, n, self.batch_size):
            idx = order[start : start + self.batch_size]
            tops = torch.randint(0, span, (len(idx),), generator=self.generator)
            lefts = torch.randint(0, span, (len(idx),), generator=self.generator)
            mirror = torch.rand(len(idx), generator=self.generator) < 0.5
            crops = []
            for j, i in enumerate(idx.tolist()):
                top, left = int(tops[j]), int(lefts[j])
                crop = self.data.pairs[i, :, top : top + self.crop_size, left : left + self.crop_size]
                if self.flip and bool(mirror[j]):
                    crop = crop.flip(-1)
                crops.append(crop)
            batch = to_float(torch.stack(crops))
            for i in idx.tolist():  # copied: a mapped split's pages go back to the kernel (bounded memory)
                self.data.release(i)
            yield self.data.split(batch)

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])


def load_train(cfg: DataConfig, batch_size: int, seed: int, progress: bool = False) -> TrainLoader:
    data = load_pairs(cfg, "train", cfg.load_size, cfg.max_images, progress=progress)
    return TrainLoader(data, cfg.crop_size, batch_size, cfg.flip, seed)


def load_eval(cfg: DataConfig, split: str, max_images: int | None = None, progress: bool = False) -> PairSet:
    """Evaluation images: resized straight to crop_size, no jitter (as the reference's test mode)."""
    return load_pairs(cfg, split, cfg.crop_size, max_images, progress=progress)

"""Aligned-pair datasets, decoded and resized once, jittered per step.

A dataset folder holds `train/`, `test/` (and maybe `val/`) of images that put
A on the left half and B on the right half. `data.direction` picks which half
is the input. Every image is decoded once into a uint8 tensor kept in memory,
already resized to `load_size` (train) or `crop_size` (test), and the decoded
split is kept on disk for the next process; a step only crops and mirrors, with
the same offsets for input and target.
"""

from __future__ import annotations

import hashlib
import json
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from p2p import checkpoint
from p2p.cache import cache_root
from p2p.config import DataConfig, data_root
from p2p.errors import UserError

# torchvision 0.29 marks its image codecs deprecated in favour of TorchCodec; they still are the
# project's codec of record (libjpeg/libpng, no FFmpeg needed), so the notice is silenced here.
warnings.filterwarnings("ignore", message="The image decoding and encoding capabilities of TorchVision",
                        category=DeprecationWarning)

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}


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
    """Input and target stacked on channels: (N, C_in + C_out, S, S) uint8, plus file names."""

    pairs: torch.Tensor
    names: list[str]
    in_channels: int

    def __len__(self) -> int:
        return self.pairs.shape[0]

    def split(self, pairs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return pairs[:, : self.in_channels], pairs[:, self.in_channels :]


def load_pairs(cfg: DataConfig, split: str, size: int, max_images: int | None = None,
               progress: bool = False) -> PairSet:
    """A split resized to `size` x `size` (bicubic, as the reference), decoded once and kept in the cache
    folder (`$P2P_CACHE_DIR` or `.cache/p2p`, in `decoded/`) for the next process: every trial of a sweep
    reads the same tensors instead of decoding and resizing hundreds of JPEGs again."""
    folder = split_dir(cfg, split)
    files = list_images(folder)
    if not files:
        raise UserError(f"{folder}: split '{split}' holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    if max_images is not None:
        files = files[:max_images]
    cached = decoded_cache_file(cfg, folder, files, size)
    if cached.is_file():
        saved = _read_cache(cached)
        if saved is not None:
            return saved
    pairs = decode_pairs(cfg, split, files, size, progress)
    try:
        checkpoint.save_atomic({"pairs": pairs.pairs, "names": pairs.names, "in_channels": pairs.in_channels},
                               cached)
    except OSError as exc:  # a full disk: the cache only saves time, the run goes on without it
        print(f"p2p: warning: {cached}: cannot keep the decoded split ({exc.strerror or exc}); "
              "decoding it again next time", file=sys.stderr)
    return pairs


def _read_cache(path: Path) -> PairSet | None:
    """A decoded split from the cache, or None (with one line saying why) for a damaged or foreign file,
    which is decoded again and replaced; a file that would need unpickling is refused, never run."""
    try:
        saved = checkpoint.load_plain(path, "decoded-data cache")
        return PairSet(saved["pairs"], saved["names"], saved["in_channels"])
    except UserError as exc:
        print(f"p2p: warning: {exc}; decoding the split again", file=sys.stderr)
    except (TypeError, KeyError):
        print(f"p2p: warning: {path}: not a decoded-data cache of this p2p; decoding the split again", file=sys.stderr)
    return None


def decoded_cache_file(cfg: DataConfig, folder: Path, files: list[Path], size: int) -> Path:
    """Where a decoded split is kept: named by everything that shapes it, each file's size and mtime included,
    so an edited dataset is decoded again."""
    stats = [(p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in files]
    key = json.dumps({"folder": str(folder.resolve()), "files": stats, "size": size, "task": cfg.task,
                      "layout": cfg.layout, "direction": cfg.direction, "version": 1,
                      **({} if cfg.square_halves else {"square_halves": False})})
    digest = hashlib.sha1(key.encode()).hexdigest()[:16]
    return cache_root() / "decoded" / f"{cfg.dataset}-{folder.name}-{size}-{digest}.pt"


def decode_pairs(cfg: DataConfig, split: str, files: list[Path], size: int, progress: bool) -> PairSet:
    in_channels = 1 if cfg.task == "colorization" else 3
    pairs = torch.empty((len(files), in_channels + 3, size, size), dtype=torch.uint8)
    iterator = files
    if progress:
        from tqdm import tqdm

        iterator = tqdm(files, desc=f"decode {split}", unit="img", leave=False)
    for i, path in enumerate(iterator):
        image = read_rgb(path)
        if cfg.task == "colorization":
            photo = image if cfg.layout == "single" else _target_half(image, path, cfg.direction, cfg.square_halves)
            photo = resize(photo, size)
            pairs[i, :1] = to_grayscale(photo)
            pairs[i, 1:] = photo
        else:
            a, b = split_pair(image, path, cfg.square_halves)
            source, target = (a, b) if cfg.direction == "AtoB" else (b, a)
            pairs[i, :3] = resize(source, size)
            pairs[i, 3:] = resize(target, size)
    return PairSet(pairs, [p.name for p in files], in_channels)


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

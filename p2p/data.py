"""Loading a dataset's splits: where a split is, its pairs decoded once and kept, and the training loader.

A dataset folder holds `train/`, `test/` (and maybe `val/`) of images that put A on the left half and B on
the right half; `data.direction` picks which half is the input. Every image is decoded once into uint8,
already resized to `load_size` (train) or `crop_size` (test) (`p2p.pairs`, from `p2p.images`), and the
decoded split is kept on disk for the next process (`p2p.decoded_cache`, read memory-mapped); a step only
crops and mirrors, with the same offsets for input and target, and the training loader hands the pages of
each image it has copied back to the kernel, so a split larger than memory trains with bounded memory.
"""

from __future__ import annotations

from pathlib import Path

import torch

from p2p import decoded_cache
from p2p.config import DataConfig, data_root
from p2p.errors import UserError
from p2p.images import IMAGE_SUFFIXES, list_images, to_float
from p2p.pairs import PairSet, decode_pairs


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
    cached = decoded_cache.file_for(cfg, folder, files, size)
    if cached.is_file():
        saved = decoded_cache.read(cached, memory_map)
        if saved is not None:
            return saved
    if memory_map:
        try:
            decoded_cache.decode_into_file(cfg, split, files, size, cached, progress)
        except OSError as exc:  # a full disk: the file only bounds memory and saves time; decode in memory
            decoded_cache.warn_unkept(cached, exc)
        else:
            saved = decoded_cache.read(cached, memory_map)
            if saved is not None:
                return saved
    pairs = decode_pairs(cfg, split, files, size, progress)
    try:
        decoded_cache.save(pairs, cached)
    except OSError as exc:
        decoded_cache.warn_unkept(cached, exc)
    return pairs


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

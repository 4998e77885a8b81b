"""Fitting and caching the FCN scorer: one per dataset and resolution, shared by every run.

`ensure_fcn_scorer` is what callers use: it returns the cached file, fitting it first if it is
missing (under a file lock, so two processes never fit the same scorer at once; the second
waits and then uses the first one's file). `p2p fcn fit` calls `fit_scorer` directly.
"""

from __future__ import annotations

import contextlib
import dataclasses
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch
import torch.nn.functional as F
from filelock import FileLock, Timeout
from tqdm import tqdm

from p2p import checkpoint, data, images
from p2p.cache import cache_file
from p2p.config import DataConfig, RunConfig, data_root
from p2p.errors import UserError
from p2p.metrics import weights
from p2p.metrics.fcn import FCN8s, FcnScorer, fcn_scores, scorer_state
from p2p.metrics.segmentation import (
    IGNORE,
    Palette,
    class_counts,
    find_palette,
    labels_to_classes,
    load_palette,
    segmentation_scores,
)
from p2p.names import check_name

LABELS_TO_PHOTO = "BtoA"  # pix2pix releases put the label map in the B (right) half: facades, cityscapes


@dataclass(frozen=True)
class FitSettings:
    """How the segmenter is fine-tuned on the train split's real photos (measured costs: docs/scores.md, "The FCN scorer")."""

    epochs: Optional[int] = None  # None: 10 at 128x128 and below, else 4 (see `epochs_for`)
    batch_size: int = 8
    lr: float = 1e-4  # VGG layers (Adam)
    head_lr: float = 1e-3  # the new head, learnt from scratch
    weight_decay: float = 1e-4
    frozen_blocks: int = 2  # VGG blocks kept at ImageNet weights: generic edges, and a third less work per step
    width: int = 1024  # channels of the fc6/fc7 head
    dropout: float = 0.5
    jitter: float = 286 / 256  # resize to size * jitter, random crop `size`, mirror (as pix2pix's own jitter)
    max_images: Optional[int] = None  # cap on train images (tests)
    seed: int = 0

    def epochs_for(self, size: int) -> int:
        """Fewer passes at higher resolution keep the fit affordable on a CPU: a pass at 256x256
        costs ~4 at 128x128, so 4 of them cost ~1.6x the 128x128 fit."""
        return self.epochs or (10 if size <= 128 else 4)


# ---------------------------------------------------------------- where scorers live


def scorer_path(dataset: str, size: int, cache_dir: str | None = None) -> Path:
    return cache_file("fcn", f"{check_name(dataset, 'data.dataset')}-{size}.pt", "data.dataset", cache_dir)


def dataset_palette(data_cfg: DataConfig) -> Palette | None:
    path = find_palette(data_root(data_cfg) / data_cfg.dataset, data_cfg.dataset)
    return load_palette(path) if path is not None else None


def fcn_skip_reason(data_cfg: DataConfig) -> str | None:
    """None when the FCN-score applies (labels -> photo on a dataset with a palette), else why not."""
    if data_cfg.task != "aligned":
        return f"data.task is {data_cfg.task} (the FCN-score needs the label map as the generator's input)"
    if data_cfg.direction != LABELS_TO_PHOTO:
        return (f"data.direction is {data_cfg.direction}: the outputs are not photos made from label maps "
                f"(labels -> photo is {LABELS_TO_PHOTO})")
    if find_palette(data_root(data_cfg) / data_cfg.dataset, data_cfg.dataset) is None:
        return f"dataset '{data_cfg.dataset}' has no palette.json (label colours -> classes)"
    return None


# ---------------------------------------------------------------- ensure (fit once, under a lock)


def ensure_fcn_scorer(data_cfg: DataConfig, size: int, progress: bool = True, cache_dir: str | None = None,
                      weights_dir: str | None = None, settings: FitSettings | None = None,
                      device: str = "auto") -> Path:
    """The cached scorer for (dataset, size), fitted first if missing. Sweeps call this before starting workers."""
    path = scorer_path(data_cfg.dataset, size, cache_dir)
    if path.is_file():
        return path
    with file_lock(path):
        if path.is_file():  # another process fitted it while this one waited
            return path
        print(f"p2p: no FCN scorer for {data_cfg.dataset} at {size}x{size} yet; fitting it once "
              f"(cached in {path}, used by every later run)", file=sys.stderr, flush=True)
        fit_scorer(data_cfg, size, path, settings or FitSettings(), weights_dir=weights_dir, progress=progress,
                   device=device)
    return path


def scorer_for_run(cfg: RunConfig, progress: bool = True) -> Path | None:
    """The scorer a run's evaluation uses, made ready; None when the run does not score FCN.

    With `eval.fcn_fit_missing: false` a missing scorer is an error instead of a fit.
    """
    if "fcn" not in cfg.eval.metrics or fcn_skip_reason(cfg.data) is not None:
        return None
    path = scorer_path(cfg.data.dataset, cfg.data.crop_size, cfg.eval.cache_dir)
    if not path.is_file() and not cfg.eval.fcn_fit_missing:
        raise UserError(f"eval.fcn_fit_missing is false and there is no FCN scorer at {path} "
                        f"(run `p2p fcn fit --size {cfg.data.crop_size}` first, or drop fcn from eval.metrics)")
    return ensure_fcn_scorer(cfg.data, cfg.data.crop_size, progress=progress, cache_dir=cfg.eval.cache_dir,
                             weights_dir=cfg.eval.weights_dir, device=cfg.runtime.device)


@contextlib.contextmanager
def file_lock(path: Path):
    """`path`'s lock file (`<name>.lock` beside it) held for the block; says so when another process has it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(path.with_name(path.name + ".lock"))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        print(f"p2p: waiting for another process fitting {path.name}", file=sys.stderr, flush=True)
        lock.acquire()
    try:
        yield
    finally:
        lock.release()


# ---------------------------------------------------------------- fitting


def fit_scorer(data_cfg: DataConfig, size: int, path: Path, settings: FitSettings = FitSettings(),
               weights_dir: str | None = None, progress: bool = True, device: str = "auto") -> dict:
    """Fine-tune FCN-8s on the train split's real photos at `size`, score it on the held-out split (`test`, or
    `val` for a dataset without one, as Cityscapes), save it.

    Returns the file's `info`: the settings, the time it took, the ground-truth scores (real
    held-out photos) and the majority-class baseline. Void pixels (a palette's `ignore` entry) are
    neither learnt nor scored.
    """
    reason = fcn_skip_reason(dataclasses.replace(data_cfg, task="aligned", direction=LABELS_TO_PHOTO))
    palette = dataset_palette(data_cfg)
    if reason is not None or palette is None:
        raise UserError(f"cannot fit an FCN scorer for '{data_cfg.dataset}': {reason}")
    if size < 32:
        raise UserError(f"FCN scorer size {size}: expected at least 32 (VGG16 halves it five times)")
    started = time.perf_counter()
    run_on = torch.device("cuda" if device == "auto" and torch.cuda.is_available() else
                          "cpu" if device == "auto" else device)
    photos_labels = DataConfig(root=data_cfg.root, dataset=data_cfg.dataset, direction="AtoB", task="aligned")
    # Its own RNG stream: a fit started by a training run's evaluation must not shift that run's randomness.
    with torch.random.fork_rng(devices=[run_on] if run_on.type == "cuda" else []):
        torch.manual_seed(settings.seed)
        net = FCN8s(palette.num_classes, width=settings.width, dropout=settings.dropout)
        weights.load_features(net.features, "vgg16", weights_dir)  # before the data: a missing file fails fast
        train = data.load_pairs(photos_labels, "train", round(size * settings.jitter), settings.max_images, progress)
        net = train_segmenter(net, train, palette, size, settings, run_on, progress,
                              desc=f"fit FCN {data_cfg.dataset}-{size}")
    fit_seconds = time.perf_counter() - started

    train_counts = class_counts(train.pairs[:, 3:], palette)
    info = {"settings": dataclasses.asdict(dataclasses.replace(settings, epochs=settings.epochs_for(size))),
            "fit_seconds": round(fit_seconds, 1), "train_images": len(train),
            **reference_scores(FcnScorer(net, palette, size, data_cfg.dataset, {}), photos_labels, train_counts)}
    checkpoint.save_atomic(scorer_state(net, palette, size, data_cfg.dataset, settings.width, info), path)
    return info


def train_segmenter(net: FCN8s, train: data.PairSet, palette: Palette, size: int, settings: FitSettings,
                    device: torch.device, progress: bool, desc: str) -> FCN8s:
    """Cross-entropy on jittered (photo, class map) crops; Adam with one warm-up-then-anneal cycle."""
    loader = data.TrainLoader(train, size, settings.batch_size, flip=True, seed=settings.seed)
    net.freeze_blocks(settings.frozen_blocks)
    fmt = torch.channels_last if device.type == "cpu" else torch.contiguous_format  # oneDNN's fast layout
    net = net.to(device, memory_format=fmt)
    backbone = [p for p in net.features.parameters() if p.requires_grad]
    head = [p for name, p in net.named_parameters() if not name.startswith("features.")]
    optimizer = torch.optim.AdamW([{"params": backbone, "lr": settings.lr}, {"params": head, "lr": settings.head_lr}],
                                  weight_decay=settings.weight_decay)
    epochs = settings.epochs_for(size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=[settings.lr, settings.head_lr],
                                                   total_steps=epochs * len(loader), pct_start=0.1)
    bar = tqdm(total=epochs * len(train), unit="img", desc=desc, disable=not progress, dynamic_ncols=True)
    net.train()
    for epoch in range(epochs):
        for photos, label_maps in loader.epoch():
            targets = labels_to_classes(images.to_uint8(label_maps), palette).to(device)
            if palette.void and bool((targets == IGNORE).all()):
                bar.update(len(photos))  # nothing but void in these crops: no loss to learn from
                continue
            x = photos.add(1.0).div(2.0).to(device, memory_format=fmt)
            loss = F.cross_entropy(net(x), targets, ignore_index=IGNORE)  # void pixels teach nothing
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            bar.update(len(photos))
            bar.set_postfix(epoch=epoch + 1, loss=f"{loss.item():.3f}")
    bar.close()
    return net.eval().requires_grad_(False)


def reference_split(photos_labels: DataConfig) -> str:
    """The split a scorer is checked on: `test`, else `val` (the pix2pix Cityscapes release has only train/val)."""
    dataset = data_root(photos_labels) / photos_labels.dataset
    return "test" if (dataset / "test").is_dir() or not (dataset / "val").is_dir() else "val"


def reference_scores(scorer: FcnScorer, photos_labels: DataConfig, train_counts: torch.Tensor) -> dict:
    """The segmenter on the real held-out photos (the paper's "ground truth" row), and predicting the
    train split's most frequent class everywhere (the floor any useful segmenter must clear)."""
    split = reference_split(photos_labels)
    test = data.load_pairs(photos_labels, split, scorer.size)
    photos, label_maps = test.pairs[:, :3], test.pairs[:, 3:]
    k = scorer.palette.num_classes
    majority = int(train_counts.argmax())
    # Predicting one class everywhere: every pixel of true class t lands in column `majority` of row t.
    hist = torch.zeros(k, k, dtype=torch.int64)
    hist[:, majority] = class_counts(label_maps, scorer.palette)
    return {"ground_truth": fcn_scores(scorer, photos, label_maps),
            "majority_class": scorer.palette.names[majority],
            "majority": segmentation_scores(hist),
            "test_images": len(test), "reference_split": split}


def format_fit(info: dict) -> str:
    """The scorer's report: its score on real test photos beside the majority-class floor."""
    rows = [(f"ground truth (real {info.get('reference_split', 'test')} photos)", info["ground_truth"]),
            (f"majority class ({info['majority_class']})", info["majority"])]
    lines = [f"  fitted in {info['fit_seconds']:.0f} s on {info['train_images']} train photos, "
             f"{info['settings']['epochs']} epoch(s); scored on {info['test_images']} "
             f"{info.get('reference_split', 'test')} photos",
             f"  {'':34s} {'pixel acc':>9s} {'class acc':>9s} {'IoU':>7s}"]
    lines += [f"  {name:34s} {s['pixel_acc']:9.3f} {s['class_acc']:9.3f} {s['iou']:7.3f}" for name, s in rows]
    return "\n".join(lines)

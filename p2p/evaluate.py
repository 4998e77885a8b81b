"""Apply a generator to a split and score its outputs (what training calls at the end)."""

from __future__ import annotations

import copy
import functools
from pathlib import Path

import torch
import torch.nn as nn
from tqdm import tqdm
from torchvision.io import write_png as _write_png
from torchvision.utils import make_grid

from p2p import data, runtime
from p2p.config import DataConfig, RunConfig
from p2p.metrics import ScoreSettings, score_images


@functools.lru_cache(maxsize=4)
def eval_pairs(cfg: DataConfig, split: str, max_images: int | None) -> data.PairSet:
    """Decoded once per process: training scores every `eval.every` epochs on the same images."""
    return data.load_eval(cfg, split, max_images)


@torch.no_grad()
def generate(G: nn.Module, inputs: torch.Tensor, cfg: RunConfig, device: torch.device,
             seed: int | None = None, progress: bool = False) -> torch.Tensor:
    """uint8 outputs for uint8 inputs.

    `eval.g_mode: train` is the paper's test-time mode: batch statistics and dropout,
    one image at a time (as its batch-1 test). It runs on a copy (train-mode batch norm
    would move the running statistics) under a fixed seed, so re-scoring gives the same numbers.
    """
    train_mode = cfg.eval.g_mode == "train"
    net = copy.deepcopy(G) if train_mode else G
    was_training = G.training
    net.train(train_mode)
    batch = 1 if train_mode else cfg.eval.batch_size
    outputs = []
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(cfg.seed if seed is None else seed)
        for start in tqdm(range(0, len(inputs), batch), desc="generate", unit="batch", disable=not progress,
                          leave=False):
            x = data.to_float(inputs[start : start + batch]).to(device)
            with runtime.autocast(device, cfg.runtime.precision):
                y = net(x)
            outputs.append(data.to_uint8(y).cpu())
    G.train(was_training)
    return torch.cat(outputs)


def evaluate_generator(G: nn.Module, cfg: RunConfig, device: torch.device, split: str | None = None,
                       ) -> tuple[dict[str, float], torch.Tensor | None]:
    """(scores keyed `eval/*`, a sample grid input | output | target or None)."""
    pairs = eval_pairs(cfg.data, split or cfg.eval.split, cfg.eval.max_images)
    inputs, targets = pairs.split(pairs.pairs)
    outputs = generate(G, inputs, cfg, device)
    settings = ScoreSettings(metrics=cfg.eval.metrics, batch_size=cfg.eval.batch_size, device=str(device))
    scores = score_images(outputs, targets, settings, labels=inputs if cfg.data.task == "aligned" else None)
    grid = sample_grid(inputs[: cfg.eval.samples], outputs[: cfg.eval.samples], targets[: cfg.eval.samples]) \
        if cfg.eval.samples else None
    return scores, grid


def sample_grid(inputs: torch.Tensor, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """One row per image: input | output | target (uint8, 3 x H x W)."""
    if inputs.shape[1] == 1:
        inputs = inputs.expand(-1, 3, -1, -1)
    rows = torch.stack([inputs, outputs, targets], 1).flatten(0, 1)
    return make_grid(rows, nrow=3, padding=2, pad_value=255)


def write_png(image: torch.Tensor, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    _write_png(image.contiguous(), str(path))

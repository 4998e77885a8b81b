"""The FCN-score's segmenter: FCN-8s (Long et al. 2015) on VGG16 features, and its scorer file.

A scorer is fitted once per dataset and resolution (`p2p.metrics.fcn_fit`) and kept in a file
that holds everything needed to score: the weights, the palette, the resolution, and how it
was fitted (with its score on the real test photos, the paper's "ground truth" row).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm import tqdm

from p2p.errors import UserError
from p2p.metrics.segmentation import Palette, confusion_matrix, labels_to_classes, palette_from_dict, segmentation_scores

FORMAT = "p2p-fcn-scorer/1"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# Indices in torchvision's vgg16().features after which pool3, pool4 and pool5 come out.
POOL3, POOL4 = 17, 24
BLOCK_ENDS = (5, 10, 17, 24, 31)  # the five conv blocks end after these indices (their max-pools)


class FCN8s(nn.Module):
    """Class scores from pool5 (through conv "fc6"/"fc7"), refined by 1x1 scores of pool4 and pool3.

    The original's fc6/fc7 are VGG's fully connected layers recast as 7x7/1x1 convolutions of
    width 4096; only VGG's convolution weights are available here, so a lighter head
    (3x3 then 1x1, `width` channels) is learnt from scratch. Upsampling is bilinear, as the
    original's fixed final upsampling.
    """

    def __init__(self, num_classes: int, width: int = 1024, dropout: float = 0.5):
        super().__init__()
        from torchvision.models.vgg import cfgs, make_layers  # lazy: torchvision's import costs ~2 s

        # torchvision's vgg16().features, without building (and randomly initialising) its 120M-parameter classifier
        self.features = make_layers(cfgs["D"], batch_norm=False)
        self.fc = nn.Sequential(
            nn.Conv2d(512, width, 3, padding=1), nn.ReLU(inplace=True), nn.Dropout2d(dropout),
            nn.Conv2d(width, width, 1), nn.ReLU(inplace=True), nn.Dropout2d(dropout),
            nn.Conv2d(width, num_classes, 1),
        )
        self.score_pool4 = nn.Conv2d(512, num_classes, 1)
        self.score_pool3 = nn.Conv2d(256, num_classes, 1)
        for skip in (self.score_pool4, self.score_pool3):  # start as FCN-32s; the skips learn a correction
            nn.init.zeros_(skip.weight)
            nn.init.zeros_(skip.bias)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, photos: torch.Tensor) -> torch.Tensor:
        """float [0, 1] (N, 3, H, W) -> class logits (N, K, H, W)."""
        x = (photos - self.mean) / self.std
        pool3 = self.features[:POOL3](x)
        pool4 = self.features[POOL3:POOL4](pool3)
        pool5 = self.features[POOL4:](pool4)
        scores = self.fc(pool5)
        scores = _upsample(scores, pool4) + self.score_pool4(pool4)
        scores = _upsample(scores, pool3) + self.score_pool3(pool3)
        return _upsample(scores, x)

    def freeze_blocks(self, blocks: int) -> None:
        """Keep the first `blocks` VGG blocks at their ImageNet weights (cheaper steps, generic edges)."""
        end = BLOCK_ENDS[blocks - 1] if blocks else 0
        for index, layer in enumerate(self.features):
            layer.requires_grad_(index >= end)


def _upsample(scores: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return F.interpolate(scores, size=like.shape[-2:], mode="bilinear", align_corners=False)


@dataclass(frozen=True)
class FcnScorer:
    """A fitted segmenter, ready to score photos of `size` x `size`."""

    net: FCN8s
    palette: Palette
    size: int
    dataset: str
    info: dict  # how it was fitted, its ground-truth and majority-class scores

    @property
    def device(self) -> torch.device:
        return next(self.net.parameters()).device


def scorer_state(net: FCN8s, palette: Palette, size: int, dataset: str, width: int, info: dict) -> dict:
    return {"format": FORMAT, "dataset": dataset, "size": size, "palette": palette.to_dict(), "width": width,
            "state_dict": {k: v.detach().cpu() for k, v in net.state_dict().items()}, "info": info}


def load_scorer(path: str | Path, device: str = "cpu") -> FcnScorer:
    """Loaded once per process and file version (a refit file is read again)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: FCN scorer not found (fit it with `p2p fcn fit`)")
    return _load_scorer(str(path.resolve()), path.stat().st_mtime_ns, device)


@functools.lru_cache(maxsize=4)
def _load_scorer(path: str, mtime_ns: int, device: str) -> FcnScorer:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise UserError(f"{path}: not a readable FCN scorer ({type(exc).__name__}); fit it again with "
                        "`p2p fcn fit --force`") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise UserError(f"{path}: not an FCN scorer of format {FORMAT}; fit it again with `p2p fcn fit --force`")
    palette = palette_from_dict(state["palette"], path)
    net = FCN8s(palette.num_classes, width=state["width"])
    net.load_state_dict(state["state_dict"])
    net = net.eval().requires_grad_(False).to(device)
    if torch.device(device).type == "cpu":
        net = net.to(memory_format=torch.channels_last)  # oneDNN's fast layout for these convolutions
    return FcnScorer(net, palette, int(state["size"]), str(state["dataset"]), dict(state["info"]))


@torch.inference_mode()
def predict_classes(net: nn.Module, photos: torch.Tensor, batch_size: int = 8) -> torch.Tensor:
    """uint8 (N, 3, H, W) photos -> int64 (N, H, W) predicted class ids."""
    device = next(net.parameters()).device
    fmt = torch.channels_last if device.type == "cpu" else torch.contiguous_format
    predictions = []
    for start in range(0, len(photos), batch_size):
        x = photos[start : start + batch_size].to(device).float().div(255.0).contiguous(memory_format=fmt)
        predictions.append(net(x).argmax(1).cpu())
    return torch.cat(predictions)


def fcn_scores(scorer: FcnScorer, photos: torch.Tensor, label_maps: torch.Tensor,
               batch_size: int = 8, progress: bool = False) -> dict[str, float]:
    """FCN-score: the segmenter's prediction on `photos` against the label maps they were made from.

    One confusion matrix over all images (not a mean of per-image scores), as the reference.
    """
    if photos.shape[-2:] != (scorer.size, scorer.size):
        raise UserError(f"FCN scorer for {scorer.dataset} was fitted at {scorer.size}x{scorer.size}; "
                        f"got images of {photos.shape[-1]}x{photos.shape[-2]}")
    if label_maps.shape[-2:] != photos.shape[-2:] or len(label_maps) != len(photos):
        raise ValueError(f"label maps {tuple(label_maps.shape)} do not match photos {tuple(photos.shape)}")
    k = scorer.palette.num_classes
    hist = torch.zeros(k, k, dtype=torch.int64)
    for start in tqdm(range(0, len(photos), batch_size), desc="score FCN", unit="batch", disable=not progress,
                      leave=False):
        predicted = predict_classes(scorer.net, photos[start : start + batch_size], batch_size)
        true = labels_to_classes(label_maps[start : start + batch_size], scorer.palette)
        hist += confusion_matrix(true, predicted, k)
    return segmentation_scores(hist)

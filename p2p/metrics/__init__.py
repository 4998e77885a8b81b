"""Scores of generated images against their targets.

`score_images` is the one entry point: training, `p2p eval` and `p2p score` all
call it, so a number means the same thing wherever it was computed.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from p2p.metrics import image


@dataclass(frozen=True)
class ScoreSettings:
    metrics: tuple[str, ...] = ("fcn", "lpips", "ssim", "psnr", "l1")
    batch_size: int = 8
    device: str = "cpu"


def score_images(outputs: torch.Tensor, targets: torch.Tensor, settings: ScoreSettings,
                 labels: torch.Tensor | None = None) -> dict[str, float]:
    """Mean scores over a set of uint8 (N, 3, H, W) images, keyed `eval/<name>`."""
    scores: dict[str, float] = {}
    per_image = {"l1": image.l1, "ssim": image.ssim, "psnr": image.psnr}
    for name, fn in per_image.items():
        if name in settings.metrics:
            values = torch.cat([fn(outputs[i : i + settings.batch_size], targets[i : i + settings.batch_size])
                                for i in range(0, len(outputs), settings.batch_size)])
            scores[f"eval/{name}"] = float(values.mean())
    return scores

"""Scores of generated images against their targets.

`score_images` is the one entry point: training, `p2p eval` and `p2p score` all
call it on uint8 images (what would be saved as PNG), so a number means the same
thing wherever it was computed.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from p2p.metrics import image

# The order scores are printed and logged in.
SCORE_KEYS = ("eval/fcn_pixel_acc", "eval/fcn_class_acc", "eval/fcn_iou", "eval/lpips", "eval/ssim",
              "eval/psnr", "eval/l1")


@dataclass(frozen=True)
class ScoreSettings:
    metrics: tuple[str, ...] = ("fcn", "lpips", "ssim", "psnr", "l1")
    batch_size: int = 8
    device: str = "cpu"
    weights_dir: str | None = None  # ImageNet backbones (see p2p.metrics.weights)
    lpips_net: str = "alex"
    fcn_scorer: str | None = None  # a fitted scorer file (p2p.metrics.fcn_fit); FCN scores need it and label maps


def score_images(outputs: torch.Tensor, targets: torch.Tensor, settings: ScoreSettings,
                 labels: torch.Tensor | None = None, progress: bool = False) -> dict[str, float]:
    """Scores over a set of uint8 (N, 3, H, W) images, keyed `eval/<name>`.

    LPIPS, SSIM, PSNR and L1 are means of per-image values; the FCN scores (only with
    `labels`, the label maps the outputs were made from) come from one confusion matrix.
    """
    if outputs.shape != targets.shape or outputs.dtype != torch.uint8 or targets.dtype != torch.uint8:
        raise ValueError(f"expected uint8 images of one shape, got {outputs.dtype} {tuple(outputs.shape)} "
                         f"and {targets.dtype} {tuple(targets.shape)}")
    scores: dict[str, float] = {}
    if "fcn" in settings.metrics and labels is not None:
        from p2p.metrics.fcn import fcn_scores, load_scorer

        if settings.fcn_scorer is None:
            raise ValueError("FCN scores need ScoreSettings.fcn_scorer (see p2p.metrics.fcn_fit.ensure_fcn_scorer)")
        scorer = load_scorer(settings.fcn_scorer, settings.device)
        fcn = fcn_scores(scorer, outputs, labels, settings.batch_size, progress)
        scores |= {f"eval/fcn_{k}": v for k, v in fcn.items()}
    if "lpips" in settings.metrics:
        from p2p.metrics.perceptual import lpips_distance, lpips_model

        model = lpips_model(settings.lpips_net, settings.weights_dir, settings.device)
        distances = lpips_distance(outputs, targets, model, settings.batch_size, progress)
        scores["eval/lpips"] = float(distances.double().mean())
    per_image = {"ssim": image.ssim, "psnr": image.psnr, "l1": image.l1}
    for name, fn in per_image.items():
        if name in settings.metrics:
            values = torch.cat([fn(outputs[i : i + settings.batch_size], targets[i : i + settings.batch_size])
                                for i in range(0, len(outputs), settings.batch_size)])
            scores[f"eval/{name}"] = float(values.double().mean())
    return scores

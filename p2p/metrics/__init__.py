"""Scores of generated images against their targets.

`score_images` is the one entry point: training, `p2p eval` and `p2p score` all
call it on uint8 images (what would be saved as PNG), so a number means the same
thing wherever it was computed.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from p2p import contract
from p2p.errors import UserError
from p2p.metrics import image


@dataclass(frozen=True)
class ScoreSettings:
    metrics: tuple[str, ...] = contract.DEFAULT_METRICS
    batch_size: int = 8
    device: str = "cpu"
    weights_dir: str | None = None  # ImageNet backbones (see p2p.metrics.weights)
    lpips_net: str = "alex"
    fcn_scorer: str | None = None  # a fitted scorer file (p2p.metrics.fcn_fit); FCN scores need it and label maps
    kid_subsets: int = 100
    kid_subset_size: int | None = None  # None: half the images, at most 1000 (p2p.metrics.distribution)


def score_images(outputs: torch.Tensor, targets: torch.Tensor, settings: ScoreSettings,
                 labels: torch.Tensor | None = None, progress: bool = False) -> dict[str, float]:
    """Scores over a set of uint8 (N, 3, H, W) images, keyed as in `p2p.contract` (in its order).

    LPIPS, SSIM, PSNR and L1 are means of per-image values; the FCN scores (only with
    `labels`, the label maps the outputs were made from) come from one confusion matrix;
    KID (mean and spread over subsets) and FID compare the set of outputs with the set of targets.
    """
    if outputs.shape != targets.shape or outputs.dtype != torch.uint8 or targets.dtype != torch.uint8:
        raise ValueError(f"expected uint8 images of one shape, got {outputs.dtype} {tuple(outputs.shape)} "
                         f"and {targets.dtype} {tuple(targets.shape)}")
    scores: dict[str, float] = {}
    if "fcn" in settings.metrics and labels is not None:
        from p2p.metrics.fcn import fcn_scores, load_scorer  # lazy: only runs scored by the FCN load it

        if settings.fcn_scorer is None:
            raise ValueError("FCN scores need ScoreSettings.fcn_scorer (see p2p.metrics.fcn_fit.ensure_fcn_scorer)")
        scorer = load_scorer(settings.fcn_scorer, settings.device)
        fcn = fcn_scores(scorer, outputs, labels, settings.batch_size, progress)
        scores |= {s.key: fcn[s.part] for s in contract.scores_of("fcn")}
    if "lpips" in settings.metrics:
        from p2p.metrics.perceptual import lpips_distance, lpips_model  # lazy: lpips and torchvision's models

        model = lpips_model(settings.lpips_net, settings.weights_dir, settings.device)
        distances = lpips_distance(outputs, targets, model, settings.batch_size, progress)
        scores[contract.only_score_of("lpips").key] = float(distances.double().mean())
    per_image = {"ssim": image.ssim, "psnr": image.psnr, "l1": image.l1}
    for name, fn in per_image.items():
        if name in settings.metrics:
            values = torch.cat([fn(outputs[i : i + settings.batch_size], targets[i : i + settings.batch_size])
                                for i in range(0, len(outputs), settings.batch_size)])
            scores[contract.only_score_of(name).key] = float(values.double().mean())
    if "kid" in settings.metrics or "fid" in settings.metrics:
        scores |= distribution_scores(outputs, targets, settings, progress)
    return scores


def distribution_scores(outputs: torch.Tensor, targets: torch.Tensor, settings: ScoreSettings,
                        progress: bool = False) -> dict[str, float]:
    """KID (mean and spread) and/or FID, from one Inception pass over each set."""
    from p2p.metrics import distribution  # lazy: torchmetrics, only for KID/FID
    from p2p.metrics.inception import inception_features, inception_network  # lazy, as distribution

    if len(outputs) < 2:
        raise UserError(f"eval.metrics: KID and FID compare sets of images and need at least 2, got {len(outputs)}")
    net = inception_network(settings.weights_dir, settings.device)
    fake = inception_features(outputs, net, settings.batch_size, progress, desc="Inception outputs")
    real = inception_features(targets, net, settings.batch_size, progress, desc="Inception targets")
    scores: dict[str, float] = {}
    if "kid" in settings.metrics:
        mean, std = distribution.kid(real, fake, settings.kid_subsets, settings.kid_subset_size)
        scores |= {s.key: {"mean": mean, "std": std}[s.part] for s in contract.scores_of("kid")}
    if "fid" in settings.metrics:
        scores[contract.only_score_of("fid").key] = distribution.fid(real, fake)
    return scores

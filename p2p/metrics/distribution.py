"""Distribution scores of generated images against real ones: KID and FID (torchmetrics), on Inception features.

Both compare the two *sets* of images, not image pairs. The features are computed once
(`p2p.metrics.inception`; the Inception pass is nearly all the cost) and handed to torchmetrics'
`KernelInceptionDistance` and `FrechetInceptionDistance` through a pass-through feature module,
so the two scores share them.

KID (Binkowski et al. 2018) is the unbiased estimate of MMD^2 with the kernel
k(x, y) = (x.y / d + 1)^3, averaged over random subsets; it is the primary score here because it
is unbiased at any number of images. FID (Heusel et al. 2017) is biased upward by roughly 1/N
(Chong & Forsyth 2020), badly so below N = 2048 (the feature dimension, where the covariance
estimates are singular): a test split of 106 facades gives FIDs that only compare at equal N.
"""

from __future__ import annotations

import warnings

import torch
import torch.nn as nn

from p2p.metrics.inception import NUM_FEATURES

KID_SUBSETS = 100
KID_MAX_SUBSET = 1000  # Binkowski et al.'s subset size, for large sets
KID_SEED = 0  # subsets are drawn under a fixed seed: re-scoring gives the same numbers
FID_RELIABLE_IMAGES = NUM_FEATURES


class _Precomputed(nn.Module):
    """torchmetrics calls its feature module on what `update` is given: here, features already computed."""

    num_features = NUM_FEATURES  # read by torchmetrics instead of probing with a dummy image

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return features


def kid_subset_size(n_real: int, n_fake: int) -> int:
    """Half the smaller set (at most 1000): subsets that overlap less give a spread that means something."""
    return max(2, min(KID_MAX_SUBSET, min(n_real, n_fake) // 2))


def _check(real: torch.Tensor, fake: torch.Tensor) -> None:
    if real.dim() != 2 or fake.dim() != 2 or real.shape[1] != fake.shape[1]:
        raise ValueError(f"expected (N, D) features of one width, got {tuple(real.shape)} and {tuple(fake.shape)}")
    if min(len(real), len(fake)) < 2:
        raise ValueError(f"KID and FID need at least 2 images a side, got {len(real)} and {len(fake)}")


def fid(real: torch.Tensor, fake: torch.Tensor) -> float:
    """Frechet distance between Gaussians fitted to two sets of features (float64, on the CPU)."""
    from torchmetrics.image.fid import FrechetInceptionDistance  # lazy: torchmetrics' import, for FID only

    _check(real, fake)
    metric = FrechetInceptionDistance(feature=_Precomputed())
    metric.update(real.double().cpu(), real=True)
    metric.update(fake.double().cpu(), real=False)
    return float(metric.compute())


def kid(real: torch.Tensor, fake: torch.Tensor, subsets: int = KID_SUBSETS, subset_size: int | None = None,
        seed: int = KID_SEED) -> tuple[float, float]:
    """(mean, standard deviation) of the unbiased MMD^2 over `subsets` random subsets of each set."""
    from torchmetrics.image.kid import KernelInceptionDistance  # lazy: torchmetrics' import, for KID only

    _check(real, fake)
    size = subset_size or kid_subset_size(len(real), len(fake))
    with warnings.catch_warnings():  # "will save all extracted features": 2048 floats an image, as intended
        warnings.simplefilter("ignore", UserWarning)
        metric = KernelInceptionDistance(feature=_Precomputed(), subsets=subsets, subset_size=size)
    metric.update(real.double().cpu(), real=True)
    metric.update(fake.double().cpu(), real=False)
    with torch.random.fork_rng(devices=[]):  # the subsets come from torch.randperm; leave the caller's RNG alone
        torch.manual_seed(seed)
        mean, std = metric.compute()
    return float(mean), float(std)


def fid_warning(n_images: int) -> str | None:
    """What to tell a user about an FID from `n_images` images (None when there are enough)."""
    if n_images >= FID_RELIABLE_IMAGES:
        return None
    return (f"FID from {n_images} images is strongly biased upward (fewer than {FID_RELIABLE_IMAGES}, the feature "
            f"dimension): compare FIDs only at the same number of images; KID is the unbiased score")

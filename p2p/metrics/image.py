"""Pixel-level scores on uint8 images: L1, SSIM, PSNR (torchmetrics, on [0, 1])."""

from __future__ import annotations

import torch
from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure


def unit(images: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] -> float [0, 1]; SSIM's constants assume this range."""
    return images.float() / 255.0


def l1(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per-image mean absolute error on the [-1, 1] scale the generator is trained on."""
    return (unit(outputs) - unit(targets)).abs().mul(2.0).flatten(1).mean(1)


def ssim(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per-image SSIM (Gaussian window 11, sigma 1.5), as scikit-image with gaussian_weights=True."""
    return structural_similarity_index_measure(unit(outputs), unit(targets), gaussian_kernel=True, sigma=1.5,
                                               kernel_size=11, data_range=1.0, reduction="none")


def psnr(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR in dB."""
    return peak_signal_noise_ratio(unit(outputs), unit(targets), data_range=1.0, reduction="none",
                                   dim=(1, 2, 3))

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


SSIM_BORDER = 5  # the Gaussian window's radius (11 taps at sigma 1.5)


def ssim(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per-image SSIM (Gaussian window 11, sigma 1.5), as scikit-image with gaussian_weights=True.

    torchmetrics averages its SSIM map over the whole image, border included (where the window
    reads reflected pixels); scikit-image and the SSIM paper's code average only where the window
    lies inside the image. The map is cropped by the window's radius to match.
    """
    # float32 (float64 convolutions are ~15x slower here): identical images score 1 - ~2e-6.
    _, full = structural_similarity_index_measure(unit(outputs), unit(targets), gaussian_kernel=True, sigma=1.5,
                                                  kernel_size=11, data_range=1.0, reduction="none",
                                                  return_full_image=True)
    b = SSIM_BORDER
    return full[..., b:-b, b:-b].flatten(1).mean(1)


PSNR_CAP = 100.0  # dB


def psnr(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR in dB, capped at 100 dB.

    Identical images have an infinite PSNR; one of them would make a split's mean infinite
    (and unloggable). 100 dB is an MSE of 1e-10 on [0, 1]: 8-bit images up to 256x256 reach
    it only when they equal their target but for at most one value off by one step.
    """
    value = peak_signal_noise_ratio(unit(outputs), unit(targets), data_range=1.0, reduction="none",
                                    dim=(1, 2, 3))
    return value.clamp(max=PSNR_CAP)

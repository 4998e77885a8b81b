"""Losses and GAN stabilisation tricks, as pure functions of tensors.

Randomness (label smoothing, flipping, noise, the image pool) always comes from an
explicit `torch.Generator`, so a run is reproducible and a resumed run matches.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def l1_loss(fake: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return F.l1_loss(fake, target)


def gan_loss(logits: torch.Tensor, target: torch.Tensor | float, kind: str) -> torch.Tensor:
    """`vanilla`: BCE on logits; `lsgan`: squared error. `target` is a number or a tensor like `logits`."""
    if not torch.is_tensor(target):
        target = torch.full_like(logits, float(target))
    if kind == "vanilla":
        return F.binary_cross_entropy_with_logits(logits, target)
    if kind == "lsgan":
        return F.mse_loss(logits, target)
    raise ValueError(f"unknown GAN loss {kind!r}")


def generator_gan_loss(fake_logits: torch.Tensor, kind: str) -> torch.Tensor:
    """Non-saturating: G maximises log D(G(x)) (targets 1), as the paper does."""
    return gan_loss(fake_logits, 1.0, kind)


def real_targets(shape: torch.Size, smoothing: tuple[float, float] | None, generator: torch.Generator,
                 device: torch.device | str = "cpu") -> torch.Tensor:
    """Targets for real samples: 1, or one-sided smoothing: uniform in [low, high] per output unit."""
    if smoothing is None:
        return torch.ones(shape, device=device)
    low, high = smoothing
    return (low + (high - low) * torch.rand(shape, generator=generator, device=generator.device)).to(device)


def flip_labels(flip_prob: float, generator: torch.Generator) -> torch.Tensor | bool:
    """Whether this D step swaps real and fake targets: a boolean tensor on the generator's device (no host
    sync, so a CUDA graph can hold the draw), or False when flipping is off (nothing drawn)."""
    if flip_prob <= 0.0:
        return False
    return torch.rand((), generator=generator, device=generator.device) < flip_prob


def instance_noise_std(initial: float, progress_epochs: float, decay_epochs: float) -> float:
    """Linearly decaying std: `initial` at the start, 0 after `decay_epochs` epochs."""
    if initial <= 0.0 or decay_epochs <= 0:
        return 0.0
    return initial * max(0.0, 1.0 - progress_epochs / decay_epochs)


def add_instance_noise(images: torch.Tensor, std: float | torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """`images` plus Gaussian noise of `std`: a number (0: nothing drawn) or a tensor on the device (always drawn:
    a CUDA graph's step reads this step's std from it)."""
    if not torch.is_tensor(std) and std <= 0.0:
        return images
    noise = torch.randn(images.shape, generator=generator, dtype=images.dtype, device=generator.device)
    return images + std * noise.to(images.device)


def discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor, kind: str,
                       real_target: torch.Tensor, flipped: torch.Tensor | bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(loss on real, loss on fake). Where `flipped` (a boolean, or a boolean tensor: chosen on the device),
    real samples get fake targets and vice versa."""
    fake_target = torch.zeros_like(fake_logits)
    if torch.is_tensor(flipped):
        real_target = real_target.expand_as(real_logits)
        real_target, fake_target = torch.where(flipped, fake_target, real_target), torch.where(flipped, real_target,
                                                                                               fake_target)
    elif flipped:
        real_target, fake_target = fake_target, real_target
    return gan_loss(real_logits, real_target, kind), gan_loss(fake_logits, fake_target, kind)


class ImagePool:
    """History of generated images (Shrivastava et al.): D sees a mix of new and old fakes.

    Each query image enters the pool; while the pool is full, with probability 1/2 it
    is swapped for a random stored one, which D sees instead.
    """

    def __init__(self, size: int):
        self.size = size
        self.images: list[torch.Tensor] = []

    def query(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        if self.size == 0:
            return images
        out = []
        for image in images.detach():
            image = image.unsqueeze(0)
            if len(self.images) < self.size:
                self.images.append(image.clone())
                out.append(image)
            elif bool(torch.rand((), generator=generator) < 0.5):
                slot = int(torch.randint(0, self.size, (), generator=generator))
                out.append(self.images[slot].clone())
                self.images[slot] = image.clone()
            else:
                out.append(image)
        return torch.cat(out, 0)

    def state_dict(self) -> dict:
        return {"images": [t.cpu() for t in self.images]}

    def load_state_dict(self, state: dict, device: torch.device | str = "cpu") -> None:
        self.images = [t.to(device) for t in state["images"]]

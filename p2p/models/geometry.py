"""What sizes the networks accept, without building them (standard library only: the config schema
checks a run's crop against its networks here, before anything imports torch).

A PatchGAN is `n_layers` stride-2 4x4 convolutions, then two 4x4 stride-1 ones (p2p.models.discriminators);
its receptive field is set by `n_layers`: 16x16, 70x70 and 286x286 for 1, 3 and 5, and 0 is the
PixelGAN (1x1 convolutions only). What a generator needs of the crop are facts registered with it
(p2p.models.registry).
"""

from __future__ import annotations

from p2p.models import registry

PATCH_TO_LAYERS = {1: 0, 16: 1, 70: 3, 286: 5}  # receptive field -> stride-2 layers (1: the PixelGAN)


def discriminator_layers(patch: int | None, n_layers: int | None = None) -> int:
    """Number of stride-2 layers; 0 means the PixelGAN. An explicit `n_layers` wins over `patch`."""
    if n_layers is not None:
        return n_layers
    return PATCH_TO_LAYERS[patch]


def receptive_field(n_layers: int) -> int:
    # n strided 4x4 convs, then two 4x4 stride-1 convs: 1 + 3(2^n - 1) + 2*3*2^n
    return 1 if n_layers == 0 else 9 * 2**n_layers - 2


def patch_output_size(size: int, n_layers: int) -> int:
    """Output units per side of a PatchGAN with `n_layers` on a `size` x `size` input."""
    if n_layers == 0:
        return size
    for _ in range(n_layers):
        size = (size + 2 - 4) // 2 + 1
    for _ in range(2):
        size = size + 2 - 4 + 1
    return size


def min_crop_for_discriminator(n_layers: int) -> int:
    """Smallest power-of-two crop that leaves the PatchGAN at least one output unit."""
    if n_layers == 0:
        return 1
    size = 1
    while patch_output_size(size, n_layers) < 1:
        size *= 2
    return size


def discriminator_crop_problem(crop: int, n_layers: int) -> str | None:
    """What a crop must be for this discriminator, or None when it fits."""
    need = min_crop_for_discriminator(n_layers)
    if crop < need:
        rf = receptive_field(n_layers)
        return f"at least {need} for a {rf}x{rf} discriminator"
    return None


def generator_crop_problem(arch: str, crop: int) -> str | None:
    """What a crop must be for this generator (its registered facts), or None when it fits."""
    spec = registry.generator(arch)
    if spec.encoder_decoder:
        fits = crop >= spec.min_crop and not crop & (crop - 1)
    else:
        fits = crop >= spec.min_crop and not crop % spec.crop_multiple
    return None if fits else f"{spec.crop_rule()} for the {arch} generator"

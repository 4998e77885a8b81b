"""The model registry: every network the lab can build, by name, like timm's `register_model`/`create_model`.

One table. A generator is registered once, below, with `@register_generator(name, description=..., facts)`
on a builder `(generator config, in_channels, out_channels, crop) -> nn.Module`; everything else reads
the table:

- the config schema (`p2p.config.GeneratorConfig`) accepts `model.generator.arch` only if it is a
  registered name, and refuses any other with one line naming the registered ones;
- `p2p.models.geometry` checks a crop against the registered facts (`encoder_decoder`, `min_crop`,
  `crop_multiple`);
- `p2p.models.factory.create_generator` calls the builder;
- `p2p describe --list-models` prints the names and descriptions.

This module is standard library only: the config schema reads it before anything imports torch. So
the builders import their network classes (p2p.models.generators, .discriminators) when they are
called. The discriminator is a PatchGAN whose depth comes from `model.discriminator.patch` /
`n_layers` (p2p.models.geometry); it is registered here too, as the one discriminator family.

To add a generator: write its `nn.Module` in p2p/models/generators.py, register a builder below, and
add its parameter count to tests/test_registry.py (which builds every registered model).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from p2p.errors import UserError

__all__ = ["GeneratorSpec", "DiscriminatorSpec", "UnknownModel", "register_generator", "register_discriminator",
           "generator", "discriminator", "generator_names", "discriminator_names", "GENERATORS", "DISCRIMINATORS",
           "PATCHGAN"]


@dataclass(frozen=True)
class GeneratorSpec:
    """A registered generator: its builder and what the rest of the lab needs to know without building it."""

    name: str
    build: Callable[[Any, int, int, int], Any]  # (GeneratorConfig, in_channels, out_channels, crop) -> nn.Module
    description: str  # one line, for `p2p describe --list-models`
    # log2(crop) downsamplings to a 1x1 bottleneck: the crop is a power of two >= min_crop, and
    # `model.generator.dropout_at` chooses its dropout levels (p2p.models.generators.dropout_levels)
    encoder_decoder: bool = False
    min_crop: int = 1
    crop_multiple: int = 1  # e.g. 4 for two stride-2 downsamplings and back

    def crop_rule(self) -> str:
        """What a crop must be for this generator, in words ("a power of two >= 32")."""
        if self.encoder_decoder:
            return f"a power of two >= {self.min_crop}"
        rule = f"a multiple of {self.crop_multiple}" if self.crop_multiple > 1 else "any size"
        return rule + (f" >= {self.min_crop}" if self.min_crop > 1 else "")


@dataclass(frozen=True)
class DiscriminatorSpec:
    name: str
    build: Callable[[Any, int, int], Any]  # (DiscriminatorConfig, in_channels, n_layers) -> nn.Module
    description: str


GENERATORS: dict[str, GeneratorSpec] = {}  # registration order: the order names are listed in
DISCRIMINATORS: dict[str, DiscriminatorSpec] = {}


class UnknownModel(UserError):
    """A name that is not in the registry (a one-line user error naming the registered ones)."""


def register_generator(name: str, *, description: str, encoder_decoder: bool = False, min_crop: int = 1,
                       crop_multiple: int = 1) -> Callable[[Callable], Callable]:
    """Decorator: register `builder` as the generator `name` (the value of `model.generator.arch`)."""
    def register(builder: Callable) -> Callable:
        if name in GENERATORS:
            raise ValueError(f"generator {name!r} is registered twice")
        GENERATORS[name] = GeneratorSpec(name, builder, description, encoder_decoder, min_crop, crop_multiple)
        return builder
    return register


def register_discriminator(name: str, *, description: str) -> Callable[[Callable], Callable]:
    """Decorator: register `builder` as the discriminator family `name`."""
    def register(builder: Callable) -> Callable:
        if name in DISCRIMINATORS:
            raise ValueError(f"discriminator {name!r} is registered twice")
        DISCRIMINATORS[name] = DiscriminatorSpec(name, builder, description)
        return builder
    return register


def generator_names() -> tuple[str, ...]:
    return tuple(GENERATORS)


def discriminator_names() -> tuple[str, ...]:
    return tuple(DISCRIMINATORS)


def known(names: tuple[str, ...]) -> str:
    """'unet', 'encoder_decoder', ...: the registered names as a config error lists them."""
    return ", ".join(repr(n) for n in names)


def generator(name: str) -> GeneratorSpec:
    try:
        return GENERATORS[name]
    except KeyError:
        raise UnknownModel(f"unknown generator {name!r} (registered: {known(generator_names())}; "
                           "see p2p describe --list-models)") from None


def discriminator(name: str) -> DiscriminatorSpec:
    try:
        return DISCRIMINATORS[name]
    except KeyError:
        raise UnknownModel(f"unknown discriminator {name!r} (registered: {known(discriminator_names())})") from None


# ---------------------------------------------------------------- the table
# Each builder constructs its network exactly as the lab always has: the same modules in the same order,
# so the same seed gives the same weights (tests/test_numerics.py pins that bit for bit).


@register_generator("unet", encoder_decoder=True, min_crop=32,
                    description="U-Net: log2(crop) downsamplings to a 1x1 bottleneck, with skips (the paper's generator)")
def _unet(g: Any, in_channels: int, out_channels: int, crop: int) -> Any:
    from p2p.models.generators import UNetGenerator  # lazy: torch (this module is read before it)

    return UNetGenerator(in_channels, out_channels, crop, g.ngf, g.norm, g.dropout, skip=True, dropout_at=g.dropout_at)


@register_generator("encoder_decoder", encoder_decoder=True, min_crop=32,
                    description="the U-Net without its skip connections (the paper's encoder-decoder baseline)")
def _encoder_decoder(g: Any, in_channels: int, out_channels: int, crop: int) -> Any:
    from p2p.models.generators import UNetGenerator  # lazy: torch (this module is read before it)

    return UNetGenerator(in_channels, out_channels, crop, g.ngf, g.norm, g.dropout, skip=False,
                         dropout_at=g.dropout_at)


@register_generator("resnet_6blocks", crop_multiple=4,
                    description="Johnson et al.'s ResNet: 2 downsamplings, 6 residual blocks, 2 upsamplings")
def _resnet_6blocks(g: Any, in_channels: int, out_channels: int, crop: int) -> Any:
    from p2p.models.generators import ResnetGenerator  # lazy: torch (this module is read before it)

    return ResnetGenerator(in_channels, out_channels, g.ngf, g.norm, g.dropout, n_blocks=6)


@register_generator("resnet_9blocks", crop_multiple=4,
                    description="Johnson et al.'s ResNet: 2 downsamplings, 9 residual blocks, 2 upsamplings")
def _resnet_9blocks(g: Any, in_channels: int, out_channels: int, crop: int) -> Any:
    from p2p.models.generators import ResnetGenerator  # lazy: torch (this module is read before it)

    return ResnetGenerator(in_channels, out_channels, g.ngf, g.norm, g.dropout, n_blocks=9)


PATCHGAN = "patchgan"


@register_discriminator(PATCHGAN, description="PatchGAN: n_layers stride-2 4x4 convolutions; model.discriminator.patch "
                                              "1 (PixelGAN), 16, 70 or 286, or n_layers")
def _patchgan(d: Any, in_channels: int, n_layers: int) -> Any:
    from p2p.models.discriminators import PatchDiscriminator  # lazy: torch (this module is read before it)

    return PatchDiscriminator(in_channels, d.ndf, n_layers, d.norm)

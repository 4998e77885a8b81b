"""Model factories: build networks from config, like timm's `create_model`, by name from the registry
(p2p.models.registry): the generator is `model.generator.arch`, the discriminator the PatchGAN."""

from __future__ import annotations

import torch.nn as nn

from p2p import streams
from p2p.config import RunConfig, config_from_dict
from p2p.models import registry
from p2p.models.layers import init_weights


def channels(cfg: RunConfig) -> tuple[int, int]:
    """(input channels, output channels) of the translation."""
    return cfg.data.in_channels, 3


def create_generator(cfg: RunConfig, init: bool = True) -> nn.Module:
    g = cfg.model.generator
    in_ch, out_ch = channels(cfg)
    net = registry.generator(g.arch).build(g, in_ch, out_ch, cfg.data.crop_size)  # an unknown name: UnknownModel
    if init:  # from the run seed's own stream: the same weights in every cell with this architecture
        init_weights(net, cfg.model.init_gain, streams.generator(cfg.seed, streams.INIT_GENERATOR))
    return net


def generator_from_saved(state: dict, source: str) -> tuple[RunConfig, nn.Module]:
    """The generator a loaded `generator.pt` or training `checkpoint.pt` holds, and its config (`source`, the
    file, names it in errors): built from the saved config, uninitialised, then given the saved weights."""
    cfg = config_from_dict(state["config"], source=source)
    G = create_generator(cfg, init=False)
    G.load_state_dict(state["generator"])
    return cfg, G


def create_discriminator(cfg: RunConfig, init: bool = True) -> nn.Module:
    """A conditional D sees input and output stacked on channels; an unconditional one only the output."""
    d = cfg.model.discriminator
    in_ch, out_ch = channels(cfg)
    net = registry.discriminator(registry.PATCHGAN).build(d, in_ch + out_ch if cfg.loss.conditional else out_ch, d.layers)
    if init:
        init_weights(net, cfg.model.init_gain, streams.generator(cfg.seed, streams.INIT_DISCRIMINATOR))
    return net


def count_parameters(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


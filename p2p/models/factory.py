"""Model factories: build networks from config, like timm's `create_model`."""

from __future__ import annotations

import torch.nn as nn

from p2p import streams
from p2p.config import RunConfig
from p2p.models.discriminators import PatchDiscriminator
from p2p.models.generators import ResnetGenerator, UNetGenerator
from p2p.models.geometry import ENCODER_DECODERS
from p2p.models.layers import init_weights


def channels(cfg: RunConfig) -> tuple[int, int]:
    """(input channels, output channels) of the translation."""
    return (1 if cfg.data.task == "colorization" else 3), 3


def create_generator(cfg: RunConfig, init: bool = True) -> nn.Module:
    g = cfg.model.generator
    in_ch, out_ch = channels(cfg)
    if g.arch in ENCODER_DECODERS:
        net = UNetGenerator(in_ch, out_ch, cfg.data.crop_size, g.ngf, g.norm, g.dropout, skip=g.arch == "unet",
                            dropout_at=g.dropout_at)
    else:
        blocks = 6 if g.arch == "resnet_6blocks" else 9
        net = ResnetGenerator(in_ch, out_ch, g.ngf, g.norm, g.dropout, n_blocks=blocks)
    if init:  # from the run seed's own stream: the same weights in every cell with this architecture
        init_weights(net, cfg.model.init_gain, streams.generator(cfg.seed, streams.INIT_GENERATOR))
    return net


def create_discriminator(cfg: RunConfig, init: bool = True) -> nn.Module:
    """A conditional D sees input and output stacked on channels; an unconditional one only the output."""
    d = cfg.model.discriminator
    in_ch, out_ch = channels(cfg)
    net = PatchDiscriminator(in_ch + out_ch if cfg.loss.conditional else out_ch, d.ndf, d.layers, d.norm)
    if init:
        init_weights(net, cfg.model.init_gain, streams.generator(cfg.seed, streams.INIT_DISCRIMINATOR))
    return net


def count_parameters(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


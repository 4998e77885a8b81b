"""Generators: U-Net, the same encoder-decoder without skips, and ResNet."""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from p2p.models.layers import Dropout, conv_bias, norm_layer


class UNetBlock(nn.Module):
    """One level of the U-Net: down -> (inner levels) -> up, optionally joined by a skip.

    Built from the bottleneck outwards, as in the reference implementation, so the
    parameter count matches it exactly.
    """

    def __init__(self, outer: int, inner: int, in_channels: int | None = None, submodule: nn.Module | None = None,
                 outermost: bool = False, norm: str = "batch", dropout: float = 0.0, skip: bool = True):
        super().__init__()
        self.outermost = outermost
        self.skip = skip
        in_channels = outer if in_channels is None else in_channels
        bias = conv_bias(norm)
        innermost = submodule is None
        down_conv = nn.Conv2d(in_channels, inner, 4, stride=2, padding=1, bias=bias)
        up_in = inner if innermost or not skip else inner * 2
        if outermost:
            down = [down_conv]
            up = [nn.ReLU(True), nn.ConvTranspose2d(up_in, outer, 4, stride=2, padding=1), nn.Tanh()]
        elif innermost:
            # No norm on the bottleneck: at 1x1 with batch 1 it would zero the code.
            down = [nn.LeakyReLU(0.2, True), down_conv]
            up = [nn.ReLU(True), nn.ConvTranspose2d(up_in, outer, 4, stride=2, padding=1, bias=bias), norm_layer(norm, outer)]
        else:
            down = [nn.LeakyReLU(0.2, True), down_conv, norm_layer(norm, inner)]
            up = [nn.ReLU(True), nn.ConvTranspose2d(up_in, outer, 4, stride=2, padding=1, bias=bias), norm_layer(norm, outer)]
        if dropout > 0 and not outermost:
            up.append(Dropout(dropout))
        middle = [] if innermost else [submodule]
        self.model = nn.Sequential(*down, *middle, *up)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.outermost or not self.skip:
            return self.model(x)
        return torch.cat([x, self.model(x)], 1)


def dropout_levels(depth: int, at: str = "paper") -> tuple[int, ...]:
    """The U-Net levels (1 = outermost inner block, depth - 1 = innermost) whose decoder half ends in dropout.

    "paper": the three innermost, as the paper's decoder (CD512-CD1024-CD1024-C1024-...) and its
    Lua code, the first decoder layer (the innermost block's) included.
    "reference": junyanz/pytorch-CycleGAN-and-pix2pix's `UnetGenerator`, whose `use_dropout` blocks
    are the num_downs - 5 ngf*8 -> ngf*8 blocks built right after the innermost one: one level further
    out, never the innermost (3 at 256x256, 2 at 128x128, none at 32x32).
    """
    if at == "paper":
        return tuple(level for level in (depth - 3, depth - 2, depth - 1) if level >= 1)
    if at == "reference":
        return tuple(range(4, depth - 1))  # levels whose outer and inner widths are both ngf*8, innermost excluded
    raise ValueError(f"dropout_at {at!r}: expected 'paper' or 'reference'")


class UNetGenerator(nn.Module):
    """U-Net with log2(size) downsamplings (8 at 256x256: a 1x1 bottleneck).

    `skip=False` gives the paper's encoder-decoder: the same layers without the
    skip connections. Dropout sits in the three innermost decoder blocks, as in the
    paper's decoder (CD512-CD1024-CD1024-C1024-...), or where the reference PyTorch code puts it
    (`dropout_at="reference"`, see `dropout_levels`); parameters are the same either way.
    """

    def __init__(self, in_channels: int, out_channels: int, size: int, ngf: int = 64,
                 norm: str = "batch", dropout: float = 0.5, skip: bool = True, dropout_at: str = "paper"):
        super().__init__()
        depth = int(math.log2(size))
        widths = [ngf * min(2**i, 8) for i in range(depth)]  # encoder output widths, outermost first
        with_dropout = dropout_levels(depth, dropout_at)
        block = None
        for level in reversed(range(1, depth)):
            rate = dropout if level in with_dropout else 0.0
            block = UNetBlock(widths[level - 1], widths[level], submodule=block, norm=norm, dropout=rate, skip=skip)
        self.model = UNetBlock(out_channels, widths[0], in_channels=in_channels, submodule=block,
                               outermost=True, norm=norm, skip=skip)
        self.depth = depth

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class ResnetBlock(nn.Module):
    def __init__(self, channels: int, norm: str, dropout: float):
        super().__init__()
        bias = conv_bias(norm)
        layers = [nn.ReflectionPad2d(1), nn.Conv2d(channels, channels, 3, bias=bias), norm_layer(norm, channels), nn.ReLU(True)]
        if dropout > 0:
            layers.append(Dropout(dropout))
        layers += [nn.ReflectionPad2d(1), nn.Conv2d(channels, channels, 3, bias=bias), norm_layer(norm, channels)]
        self.block = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.block(x)


class ResnetGenerator(nn.Module):
    """Johnson et al.'s ResNet generator: 2 downsamplings, N residual blocks, 2 upsamplings."""

    def __init__(self, in_channels: int, out_channels: int, ngf: int = 64, norm: str = "batch",
                 dropout: float = 0.0, n_blocks: int = 9):
        super().__init__()
        bias = conv_bias(norm)
        layers: list[nn.Module] = [nn.ReflectionPad2d(3), nn.Conv2d(in_channels, ngf, 7, bias=bias), norm_layer(norm, ngf),
                                   nn.ReLU(True)]
        for i in range(2):
            mult = 2**i
            layers += [nn.Conv2d(ngf * mult, ngf * mult * 2, 3, stride=2, padding=1, bias=bias),
                       norm_layer(norm, ngf * mult * 2), nn.ReLU(True)]
        layers += [ResnetBlock(ngf * 4, norm, dropout) for _ in range(n_blocks)]
        for i in range(2):
            mult = 2 ** (2 - i)
            layers += [nn.ConvTranspose2d(ngf * mult, ngf * mult // 2, 3, stride=2, padding=1, output_padding=1, bias=bias),
                       norm_layer(norm, ngf * mult // 2), nn.ReLU(True)]
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(ngf, out_channels, 7), nn.Tanh()]
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

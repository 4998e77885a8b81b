"""PatchGAN discriminators: the receptive field is set by the number of stride-2 layers."""

from __future__ import annotations

import torch
import torch.nn as nn

from p2p.models.layers import conv_bias, norm_layer


class PatchDiscriminator(nn.Module):
    """C64-C128-C256-C512 style PatchGAN.

    `n_layers` stride-2 4x4 convolutions, then a stride-1 4x4 convolution and a
    4x4 convolution to one channel: receptive field 9 * 2**n_layers - 2 (16, 70, 286
    for 1, 3, 5). `n_layers = 0` is the PixelGAN: 1x1 convolutions only.
    """

    def __init__(self, in_channels: int, ndf: int = 64, n_layers: int = 3, norm: str = "batch"):
        super().__init__()
        bias = conv_bias(norm)
        if n_layers == 0:
            layers = [nn.Conv2d(in_channels, ndf, 1), nn.LeakyReLU(0.2, True),
                      nn.Conv2d(ndf, ndf * 2, 1, bias=bias), norm_layer(norm, ndf * 2), nn.LeakyReLU(0.2, True),
                      nn.Conv2d(ndf * 2, 1, 1, bias=bias)]
        else:
            layers = [nn.Conv2d(in_channels, ndf, 4, stride=2, padding=1), nn.LeakyReLU(0.2, True)]
            mult = 1
            for n in range(1, n_layers):
                prev, mult = mult, min(2**n, 8)
                layers += [nn.Conv2d(ndf * prev, ndf * mult, 4, stride=2, padding=1, bias=bias),
                           norm_layer(norm, ndf * mult), nn.LeakyReLU(0.2, True)]
            prev, mult = mult, min(2**n_layers, 8)
            layers += [nn.Conv2d(ndf * prev, ndf * mult, 4, stride=1, padding=1, bias=bias),
                       norm_layer(norm, ndf * mult), nn.LeakyReLU(0.2, True),
                       nn.Conv2d(ndf * mult, 1, 4, stride=1, padding=1)]
        self.model = nn.Sequential(*layers)
        self.n_layers = n_layers

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

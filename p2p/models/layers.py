"""Small building blocks shared by the generators and discriminators."""

from __future__ import annotations

import torch
import torch.nn as nn


def norm_layer(kind: str, channels: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "instance":
        return nn.InstanceNorm2d(channels, affine=False, track_running_stats=False)
    return nn.Identity()


def conv_bias(norm: str) -> bool:
    # A conv followed by batch norm needs no bias (the norm's shift replaces it);
    # the reference implementation keeps it for instance norm and no norm.
    return norm != "batch"


def init_weights(module: nn.Module, gain: float = 0.02, generator: torch.Generator | None = None) -> None:
    """The paper's init: conv weights ~ N(0, gain), norm scales ~ N(1, gain), biases 0 (drawn from `generator`)."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            nn.init.normal_(m.weight, 0.0, gain, generator=generator)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, gain, generator=generator)
            nn.init.zeros_(m.bias)


class Dropout(nn.Dropout):
    """Dropout whose masks come from `generator` while training, when one is set.

    A run's dropout is one random stream of its own (p2p.streams.DROPOUT), not torch's global
    generator: several runs can then train in one process (packed trials) and a CUDA graph can
    replay it. On the CPU the masks are the bits `F.dropout` draws from a generator in the same
    state (bernoulli, divided by the keep rate, times the input).
    """

    generator: torch.Generator | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0 or self.generator is None:
            return super().forward(x)
        keep = 1.0 - self.p
        return x * torch.empty_like(x).bernoulli_(keep, generator=self.generator).div_(keep)


def set_dropout_generator(net: nn.Module, generator: torch.Generator | None) -> None:
    """Where `net`'s dropout layers draw their masks while training (None: torch's global generator)."""
    for m in net.modules():
        if isinstance(m, Dropout):
            m.generator = generator

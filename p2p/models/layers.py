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

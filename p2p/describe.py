"""What a config builds: parameter counts, the measured receptive field, output sizes; and what the
model registry holds (`p2p describe --list-models`, without importing torch)."""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING

from p2p.models import registry
from p2p.models.geometry import PATCH_TO_LAYERS, patch_output_size

if TYPE_CHECKING:
    import torch.nn as nn  # lazy, as torch

    from p2p.config import RunConfig


def model_list() -> dict:
    """The registered networks: name, one-line description and, for generators, the crop they take."""
    return {
        "generators": [{"name": s.name, "description": s.description, "encoder_decoder": s.encoder_decoder,
                        "crop": s.crop_rule()} for s in registry.GENERATORS.values()],
        "discriminators": [{"name": s.name, "description": s.description, "patch": list(PATCH_TO_LAYERS)}
                           for s in registry.DISCRIMINATORS.values()],
    }


def format_model_list() -> str:
    models = model_list()
    width = max(len(m["name"]) for group in models.values() for m in group)
    lines = ["generators (model.generator.arch):"]
    lines += [f"  {m['name']:{width}}  {m['description']}; crop: {m['crop']}" for m in models["generators"]]
    lines.append("discriminators (chosen by model.discriminator.patch or n_layers):")
    lines += [f"  {m['name']:{width}}  {m['description']}" for m in models["discriminators"]]
    return "\n".join(lines)


def measure_receptive_field(D: nn.Module, in_channels: int, max_size: int = 1024) -> int:
    """Receptive field of the centre output unit, measured by backpropagation.

    Runs a copy in eval mode with all conv weights set to 1/fan-in (so no gradient
    cancels by chance), backpropagates from one output unit and measures the width of
    the input region whose gradient is non-zero. The input grows until that region no
    longer touches the border (so it is the whole field, not a clipped one).
    """
    import torch  # lazy: `p2p describe --list-models` runs without torch
    import torch.nn as nn  # lazy, as torch

    net = copy.deepcopy(D).float().eval()
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.Conv2d):
                m.weight.fill_(1.0 / m.weight[0].numel())
                if m.bias is not None:
                    m.bias.zero_()
    size = 32
    while size <= max_size:
        x = torch.zeros(1, in_channels, size, size, requires_grad=True)
        try:
            out = net(x)
        except RuntimeError:  # too small an input for this depth: no output unit at all
            size *= 2
            continue
        h, w = out.shape[-2:]
        if h >= 1 and w >= 1:
            out[0, 0, h // 2, w // 2].backward()
            touched = x.grad.abs().sum((0, 1)) > 0
            rows, cols = touched.any(1).nonzero(), touched.any(0).nonzero()
            top, bottom, left, right = int(rows.min()), int(rows.max()), int(cols.min()), int(cols.max())
            if top > 0 and left > 0 and bottom < size - 1 and right < size - 1:
                height, width = bottom - top + 1, right - left + 1
                if height != width:
                    raise RuntimeError(f"non-square receptive field {height}x{width}")
                return width
        size *= 2
    raise RuntimeError(f"receptive field larger than {max_size} pixels")


def describe(cfg: RunConfig) -> dict:
    import torch  # lazy: `p2p describe --list-models` runs without torch

    from p2p.models import channels, count_parameters, create_discriminator, create_generator  # with torch (lazy, above)

    in_ch, out_ch = channels(cfg)
    G = create_generator(cfg)
    D = create_discriminator(cfg)
    d_in = in_ch + out_ch if cfg.loss.conditional else out_ch
    crop = cfg.data.crop_size
    layers = cfg.model.discriminator.layers
    with torch.no_grad():
        g_out = tuple(G.eval()(torch.zeros(1, in_ch, crop, crop)).shape[1:])
        d_out = tuple(D.eval()(torch.zeros(1, d_in, crop, crop)).shape[1:])
    assert d_out[-1] == patch_output_size(crop, layers)
    return {
        "name": cfg.name,
        "generator": cfg.model.generator.arch,
        "generator_params": count_parameters(G),
        "discriminator_params": count_parameters(D),
        "discriminator_layers": layers,
        "discriminator_conditional": cfg.loss.conditional,
        "receptive_field": measure_receptive_field(D, d_in),
        "input_size": [in_ch, crop, crop],
        "generator_output_size": list(g_out),
        "discriminator_output_size": list(d_out),
        "gan": cfg.loss.gan,
    }


def format_description(info: dict) -> str:
    d_out = "x".join(str(v) for v in info["discriminator_output_size"])
    return "\n".join([
        f"config              {info['name']}",
        f"generator           {info['generator']}: {info['generator_params']:,} parameters "
        f"({info['generator_params'] / 1e6:.3f} M)",
        f"discriminator       PatchGAN, {info['discriminator_layers']} strided layers: "
        f"{info['discriminator_params']:,} parameters ({info['discriminator_params'] / 1e6:.3f} M)"
        + ("" if info["gan"] != "none" else " (unused: loss.gan is none)"),
        f"receptive field     {info['receptive_field']}x{info['receptive_field']} (measured by backpropagation)",
        f"input               {'x'.join(map(str, info['input_size']))}",
        f"generator output    {'x'.join(map(str, info['generator_output_size']))}",
        f"discriminator out   {d_out} ({'conditional' if info['discriminator_conditional'] else 'unconditional'})",
    ])

"""LPIPS v0.1 (Zhang et al. 2018) through the `lpips` package, its backbone from `p2p.metrics.weights`.

The package ships its calibrated linear layers but downloads the ImageNet backbone through
torchvision; here the backbone is built empty and filled from the weights setting instead.
"""

from __future__ import annotations

import functools
import warnings

import torch
from tqdm import tqdm

from p2p.errors import UserError
from p2p.metrics import weights

BACKBONES = {"alex": "alexnet", "vgg": "vgg16"}


@functools.lru_cache(maxsize=4)
def _model(net: str, source: str, weights_dir: str | None, device: str) -> torch.nn.Module:
    import lpips  # imported late: it pulls in torchvision's model zoo

    with warnings.catch_warnings():  # lpips calls torchvision's deprecated `pretrained=` argument
        warnings.simplefilter("ignore", UserWarning)
        model = lpips.LPIPS(net=net, version="0.1", pnet_rand=True, verbose=False)
    # lpips splits torchvision's `features` into slices that keep the original layer indices.
    where = {index: slice_name for slice_name, part in model.net.named_children()
             for index, _ in part.named_children()}
    state = weights.imagenet_features(BACKBONES[net], weights_dir)
    renamed = {f"{where[key.split('.')[0]]}.{key}": value for key, value in state.items()}
    try:
        model.net.load_state_dict(renamed, strict=True)
    except (RuntimeError, KeyError) as exc:
        raise UserError(f"{source}: does not hold the {BACKBONES[net]} feature layers LPIPS needs "
                                f"({str(exc).splitlines()[0]})") from None
    return model.eval().requires_grad_(False).to(device)


def lpips_model(net: str = "alex", weights_dir: str | None = None, device: str = "cpu") -> torch.nn.Module:
    """Built once per process and weights source (training scores every `eval.every` epochs with it)."""
    if net not in BACKBONES:
        raise ValueError(f"LPIPS backbone {net!r}: expected one of {sorted(BACKBONES)}")
    return _model(net, weights.weights_source(BACKBONES[net], weights_dir), weights_dir, device)


@torch.inference_mode()
def lpips_distance(outputs: torch.Tensor, targets: torch.Tensor, model: torch.nn.Module,
                   batch_size: int = 16, progress: bool = False) -> torch.Tensor:
    """Per-image LPIPS (spatial average) of uint8 (N, 3, H, W) images, as float (N,)."""
    device = next(model.parameters()).device
    distances = []
    for start in tqdm(range(0, len(outputs), batch_size), desc="score LPIPS", unit="batch", disable=not progress,
                      leave=False):
        a = outputs[start : start + batch_size].to(device).float().div(127.5).sub(1.0)
        b = targets[start : start + batch_size].to(device).float().div(127.5).sub(1.0)
        distances.append(model(a, b).flatten().float().cpu())
    return torch.cat(distances) if distances else torch.empty(0)

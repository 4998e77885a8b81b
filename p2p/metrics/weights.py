"""ImageNet convolution weights for the metric networks (AlexNet for LPIPS, VGG16 for LPIPS-vgg and the FCN).

Where they come from, in order: the folder `eval.weights_dir`, else `$P2P_WEIGHTS_DIR`, else
torchvision's own download (for users who are online; cached in torch's hub folder). If none
works the caller gets a UserError: a score is never computed on random weights.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from p2p.errors import UserError

WEIGHTS_ENV = "P2P_WEIGHTS_DIR"
FILES = {"alexnet": "alexnet-features-imagenet.pth", "vgg16": "vgg16-features-imagenet.pth"}


def weights_folder(weights_dir: str | None) -> Path | None:
    folder = weights_dir or os.environ.get(WEIGHTS_ENV)
    return Path(folder) if folder else None


def weights_source(arch: str, weights_dir: str | None) -> str:
    """A name for the weights a network will get (a cache key: a file path, or `torchvision:<arch>`)."""
    folder = weights_folder(weights_dir)
    return str((folder / FILES[arch]).resolve()) if folder is not None else f"torchvision:{arch}"


def imagenet_features(arch: str, weights_dir: str | None) -> dict[str, torch.Tensor]:
    """State dict of torchvision's `<arch>().features` (keys `0.weight`, `0.bias`, ...), ImageNet-trained."""
    if arch not in FILES:
        raise ValueError(f"no ImageNet weights known for {arch!r}")
    folder = weights_folder(weights_dir)
    if folder is not None:
        return _from_file(folder / FILES[arch], weights_dir)
    return _from_torchvision(arch)


def _from_file(path: Path, weights_dir: str | None) -> dict[str, torch.Tensor]:
    setting = "eval.weights_dir" if weights_dir else f"${WEIGHTS_ENV}"
    if not path.is_file():
        raise UserError(f"{setting}: {path} not found (expected a folder holding {FILES['alexnet']} and "
                        f"{FILES['vgg16']}: the feature layers of torchvision's ImageNet AlexNet and VGG16)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise UserError(f"{path}: not a readable weights file ({type(exc).__name__})") from None
    return {key.removeprefix("features."): value for key, value in state.items()}


def _from_torchvision(arch: str) -> dict[str, torch.Tensor]:
    import torchvision  # lazy: torchvision's import costs ~2 s

    weights = {"alexnet": torchvision.models.AlexNet_Weights.IMAGENET1K_V1,
               "vgg16": torchvision.models.VGG16_Weights.IMAGENET1K_V1}[arch]
    try:
        state = weights.get_state_dict(progress=True)
    except Exception as exc:  # offline: URLError, socket errors, a truncated file
        raise UserError(
            f"eval.weights_dir: no ImageNet {arch} weights (torchvision's download failed: "
            f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}); set {WEIGHTS_ENV} or eval.weights_dir "
            f"to a folder holding {FILES[arch]}") from None
    return {key.removeprefix("features."): value for key, value in state.items() if key.startswith("features.")}


def load_features(features: torch.nn.Module, arch: str, weights_dir: str | None) -> None:
    """Load the ImageNet weights into a `features` stack (strict: every layer must be there, with its shape)."""
    state = imagenet_features(arch, weights_dir)
    try:
        features.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise UserError(f"{weights_source(arch, weights_dir)}: does not hold torchvision's {arch} feature layers "
                        f"({str(exc).splitlines()[0]})") from None

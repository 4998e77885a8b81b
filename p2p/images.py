"""Image files and their pixels: which files are images, reading one as RGB, the halves of an A|B pair,
resizing, grayscale, and the [-1, 1] floats the networks see. No dataset or config knowledge."""

from __future__ import annotations

import warnings
from pathlib import Path

import torch

from p2p.errors import UserError

# torchvision 0.29 marks its image codecs deprecated in favour of TorchCodec; they still are the
# project's codec of record (libjpeg/libpng, no FFmpeg needed), so the notice is silenced here.
warnings.filterwarnings("ignore", message="The image decoding and encoding capabilities of TorchVision",
                        category=DeprecationWarning)

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}


def list_images(folder: Path) -> list[Path]:
    files = [p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()]
    # Natural order (2.jpg before 10.jpg) so "the first N images" means what a reader expects.
    return sorted(files, key=lambda p: (len(p.stem), p.stem) if p.stem.isdigit() else (10**9, p.stem))


def read_rgb(path: Path) -> torch.Tensor:
    """uint8 (3, H, W); an unreadable file is a user error naming it."""
    from torchvision.io import ImageReadMode, decode_image  # here: torchvision's import costs ~2 s

    try:
        return decode_image(str(path), mode=ImageReadMode.RGB)
    except Exception as exc:  # torchvision raises RuntimeError with varying texts
        raise UserError(f"{path}: cannot read image ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})") from None


def split_pair(image: torch.Tensor, path: Path, square: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """(A, B) from an aligned A|B image; with `square` (`data.square_halves`, the pix2pix releases) each half
    must be square, so a photo that is not a pair, or a pair stacked the other way, is not silently cut."""
    height, width = image.shape[-2:]
    if width % 2:
        raise UserError(f"{path}: width {width} is not two halves (expected an A|B pair of equal widths)")
    if square and width != 2 * height:
        raise UserError(f"{path}: {width}x{height} is not two square halves (expected an A|B pair of width "
                        f"2 x height = {2 * height}; set data.square_halves: false for a dataset whose halves "
                        "are not square)")
    half = width // 2
    return image[..., :half], image[..., half:]


def to_grayscale(rgb: torch.Tensor) -> torch.Tensor:
    import torchvision.transforms.v2.functional as TF  # here: torchvision's import costs ~2 s

    return TF.rgb_to_grayscale(rgb, num_output_channels=1)


def resize(image: torch.Tensor, size: int) -> torch.Tensor:
    import torchvision.transforms.v2.functional as TF  # here: torchvision's import costs ~2 s

    return TF.resize(image, [size, size], interpolation=TF.InterpolationMode.BICUBIC, antialias=True)


def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] -> float [-1, 1]."""
    return images.float().div_(127.5).sub_(1.0)


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """float [-1, 1] -> uint8 [0, 255]."""
    return images.detach().float().add(1.0).mul(127.5).round().clamp(0, 255).to(torch.uint8)

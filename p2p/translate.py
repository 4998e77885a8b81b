"""Apply a trained generator to a folder of images."""

from __future__ import annotations

from pathlib import Path

import torch

from p2p import checkpoint, images, runtime
from p2p.config import RunConfig
from p2p.errors import UserError
from p2p.evaluate import generate, write_png
from p2p.models import generator_from_saved


def load_generator(path: str | Path) -> tuple[RunConfig, torch.nn.Module]:
    """A generator and its config from `generator.pt` or a training `checkpoint.pt`."""
    return generator_from_saved(checkpoint.load(path), str(path))


def input_image(path: Path, cfg: RunConfig) -> torch.Tensor:
    """The generator's input from a file: a plain image, or the input half of an A|B pair."""
    image = images.read_rgb(path)
    h, w = image.shape[-2:]
    if w == 2 * h:  # an aligned pair: take the input half
        a, b = images.split_pair(image, path)
        image = a if cfg.data.direction == "AtoB" else b
    if cfg.data.task == "colorization":
        image = images.to_grayscale(image)
    return images.resize(image, cfg.data.crop_size)


def translate_folder(checkpoint_path: str | Path, input_dir: str | Path, output_dir: str | Path,
                     progress: bool = True) -> list[Path]:
    input_dir, output_dir = Path(input_dir), Path(output_dir)
    if not input_dir.is_dir():
        raise UserError(f"{input_dir}: input folder not found")
    files = images.list_images(input_dir)
    if not files:
        raise UserError(f"{input_dir}: holds no images")
    cfg, G = load_generator(checkpoint_path)
    device = runtime.select_device(cfg.runtime)
    G.to(device)
    inputs = torch.stack([input_image(p, cfg) for p in files])  # read all first: a bad file writes nothing
    outputs = generate(G, inputs, cfg, device, progress=progress)
    output_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for path, out in zip(files, outputs):
        target = output_dir / (path.stem + ".png")
        write_png(out, target)
        written.append(target)
    return written

"""`p2p score`: the same scores for two folders of images paired by file name.

Outputs of this or any other pix2pix implementation are scored against their targets
exactly as `p2p eval` scores a run; with a folder of label maps the FCN scores come too.
Files pair by name without extension (`1.png` with `1.jpg`); every output must have the
size of its target (and label map): nothing is resized behind the user's back.
"""

from __future__ import annotations

from pathlib import Path

import torch

from p2p import contract, images
from p2p.config import DataConfig
from p2p.errors import UserError
from p2p.metrics import ScoreSettings, score_images
from p2p.metrics.fcn_fit import ensure_fcn_scorer, fcn_skip_reason


def image_files(folder: Path, role: str) -> dict[str, Path]:
    """{name without extension: file} of a folder's images."""
    if not folder.is_dir():
        raise UserError(f"{role} {folder}: folder not found")
    files: dict[str, Path] = {}
    for path in images.list_images(folder):
        if path.stem in files:
            raise UserError(f"{role} {folder}: {files[path.stem].name} and {path.name} share the name "
                            f"'{path.stem}' (files pair by name without extension)")
        files[path.stem] = path
    if not files:
        raise UserError(f"{role} {folder}: holds no images ({', '.join(sorted(images.IMAGE_SUFFIXES))})")
    return files


def check_same_names(a: dict[str, Path], b: dict[str, Path], a_role: str, b_role: str,
                     a_dir: Path, b_dir: Path) -> None:
    only_a, only_b = sorted(set(a) - set(b)), sorted(set(b) - set(a))
    if only_a or only_b:
        parts = [f"{len(names)} only in {role} (e.g. {names[0]!r})" for names, role in
                 ((only_a, a_role), (only_b, b_role)) if names]
        raise UserError(f"{a_role} {a_dir} and {b_role} {b_dir} do not hold the same names: {', '.join(parts)}")


def read_stack(files: list[Path], role: str, like: torch.Tensor | None = None,
               like_files: list[Path] | None = None) -> torch.Tensor:
    """uint8 (N, 3, H, W); with `like`, each image must have the size of the matching image there."""
    stack = []
    for i, path in enumerate(files):  # no bar: decoding is quick next to scoring
        image = images.read_rgb(path)
        if like is not None and image.shape[-2:] != like.shape[-2:]:
            h, w = like.shape[-2:]
            raise UserError(f"{path} is {image.shape[-1]}x{image.shape[-2]} but {like_files[i]} is {w}x{h} "
                            f"({role} must have the size of the outputs they pair with)")
        if stack and image.shape != stack[0].shape:
            raise UserError(f"{path} is {image.shape[-1]}x{image.shape[-2]} but {files[0]} is "
                            f"{stack[0].shape[-1]}x{stack[0].shape[-2]} (all {role} must have one size)")
        stack.append(image)
    return torch.stack(stack)


# What `p2p score` computes unless told: the default scores that compare image pairs (+ fcn with labels).
PAIRED_METRICS = tuple(m for m in contract.DEFAULT_METRICS if m != "fcn")


def parse_metrics(text: str | None, with_labels: bool) -> tuple[str, ...]:
    """`--metrics a,b,c` -> `eval.metrics` entries (p2p.contract); None: the paired scores (and fcn with labels)."""
    if text is None:
        return ("fcn", *PAIRED_METRICS) if with_labels else PAIRED_METRICS
    names = tuple(dict.fromkeys(name.strip() for name in text.split(",") if name.strip()))
    unknown = [name for name in names if name not in contract.METRICS]
    if unknown or not names:
        raise UserError(f"--metrics {text!r}: expected a comma-separated list from {', '.join(contract.METRICS)}")
    if "fcn" in names and not with_labels:
        raise UserError("--metrics fcn: FCN scores need the label maps the outputs were made from (--labels DIR)")
    return names


def score_folders(outputs_dir: str | Path, targets_dir: str | Path, labels_dir: str | Path | None = None,
                  dataset: str = "facades", fcn_scorer: str | Path | None = None, weights_dir: str | None = None,
                  batch_size: int = 8, progress: bool = True, metrics: tuple[str, ...] | None = None,
                  ) -> tuple[dict[str, float], int]:
    """(scores keyed `eval/*`, number of image pairs). FCN scores only with `labels_dir`.

    `metrics` (default: `PAIRED_METRICS`, plus fcn with labels) may add "kid" and "fid", which
    compare the set of outputs with the set of targets.
    """
    metrics = metrics or parse_metrics(None, labels_dir is not None)
    outputs_dir, targets_dir = Path(outputs_dir), Path(targets_dir)
    outputs = image_files(outputs_dir, "outputs")
    targets = image_files(targets_dir, "targets")
    check_same_names(outputs, targets, "outputs", "targets", outputs_dir, targets_dir)
    names = sorted(outputs, key=lambda n: (len(n), n) if n.isdigit() else (10**9, n))
    output_files = [outputs[n] for n in names]
    out = read_stack(output_files, "outputs")
    tgt = read_stack([targets[n] for n in names], "targets", out, output_files)
    lab = None
    scorer_path = None
    if labels_dir is not None:
        labels_dir = Path(labels_dir)
        labels = image_files(labels_dir, "labels")
        check_same_names(outputs, labels, "outputs", "labels", outputs_dir, labels_dir)
        lab = read_stack([labels[n] for n in names], "labels", out, output_files)
        if "fcn" in metrics:
            scorer_path = fcn_scorer or _cached_scorer(dataset, out.shape[-2:], weights_dir, progress)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    settings = ScoreSettings(metrics=metrics, batch_size=batch_size, device=device, weights_dir=weights_dir,
                             fcn_scorer=str(scorer_path) if scorer_path else None)
    return score_images(out, tgt, settings, labels=lab, progress=progress), len(names)


def _cached_scorer(dataset: str, shape: torch.Size, weights_dir: str | None, progress: bool) -> Path:
    h, w = shape
    if h != w:
        raise UserError(f"--labels: FCN scores need square images (the scorers are fitted at SxS), got {w}x{h}")
    data_cfg = DataConfig(dataset=dataset, direction="BtoA")
    reason = fcn_skip_reason(data_cfg)
    if reason is not None:
        raise UserError(f"--labels: no FCN scores for --dataset {dataset}: {reason}")
    return ensure_fcn_scorer(data_cfg, h, progress=progress, weights_dir=weights_dir)

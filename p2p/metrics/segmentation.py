"""Label maps and segmentation scores: palette colours -> class ids, one confusion matrix, its scores.

The scores follow the pix2pix reference evaluation (`scripts/eval_cityscapes/util.py`):
`fast_hist` accumulates a (true, predicted) confusion matrix over the whole split, and
pixel accuracy, mean class accuracy and mean class IoU are read off it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from p2p.errors import UserError

PACKAGED_PALETTES = Path(__file__).resolve().parent / "palettes"
PALETTE_FILE = "palette.json"


@dataclass(frozen=True)
class Palette:
    """Class names and their label-map colours; class k (0-based) is `names[k]`, drawn in `colors[k]`."""

    names: tuple[str, ...]
    colors: tuple[tuple[int, int, int], ...]

    @property
    def num_classes(self) -> int:
        return len(self.names)

    def to_dict(self) -> dict:
        return {"classes": [{"id": k + 1, "name": n, "rgb": list(c)} for k, (n, c) in
                            enumerate(zip(self.names, self.colors))]}


def palette_from_dict(data: dict, source: str) -> Palette:
    try:
        classes = sorted(data["classes"], key=lambda c: c["id"])
        names = tuple(str(c["name"]) for c in classes)
        colors = tuple(tuple(int(v) for v in c["rgb"]) for c in classes)
    except (KeyError, TypeError, ValueError) as exc:
        raise UserError(f"{source}: expected {{'classes': [{{'id', 'name', 'rgb': [r, g, b]}}, ...]}} "
                        f"({type(exc).__name__}: {exc})") from None
    if len(names) < 2 or any(len(c) != 3 for c in colors):
        raise UserError(f"{source}: expected at least two classes, each with an rgb triple")
    return Palette(names, colors)  # type: ignore[arg-type]


def load_palette(path: str | Path) -> Palette:
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise UserError(f"{path}: cannot read the palette ({exc})") from None
    return palette_from_dict(data, str(path))


def find_palette(dataset_dir: Path, dataset: str) -> Path | None:
    """`palette.json` in the dataset folder, else the copy shipped with p2p (public releases have none)."""
    for candidate in (dataset_dir / PALETTE_FILE, PACKAGED_PALETTES / f"{dataset}.json"):
        if candidate.is_file():
            return candidate
    return None


def labels_to_classes(label_maps: torch.Tensor, palette: Palette) -> torch.Tensor:
    """uint8 (N, 3, H, W) colour label maps -> int64 (N, H, W) class ids 0..K-1, by nearest palette colour.

    Nearest, not exact: JPEG moves colours a few units and blurs class edges.
    """
    colors = torch.tensor(palette.colors, dtype=torch.float32)  # (K, 3)
    pixels = label_maps.permute(0, 2, 3, 1).reshape(-1, 3).float()
    ids = torch.empty(pixels.shape[0], dtype=torch.int64)
    chunk = 1 << 20  # bounds the (pixels, K) distance matrix
    for start in range(0, len(pixels), chunk):
        ids[start : start + chunk] = torch.cdist(pixels[start : start + chunk], colors).argmin(1)
    n, _, h, w = label_maps.shape
    return ids.view(n, h, w)


def classes_to_labels(class_ids: torch.Tensor, palette: Palette) -> torch.Tensor:
    """int (N, H, W) class ids -> uint8 (N, 3, H, W) colour label maps (for pictures of predictions)."""
    colors = torch.tensor(palette.colors, dtype=torch.uint8)
    return colors[class_ids].permute(0, 3, 1, 2).contiguous()


def confusion_matrix(true_ids: torch.Tensor, predicted_ids: torch.Tensor, num_classes: int) -> torch.Tensor:
    """int64 (K, K): entry [t, p] counts pixels of true class t predicted as p (the reference's `fast_hist`).

    Ids outside 0..K-1 in `true_ids` are ignored, as the reference does.
    """
    true_ids, predicted_ids = true_ids.reshape(-1).long(), predicted_ids.reshape(-1).long()
    keep = (true_ids >= 0) & (true_ids < num_classes)
    flat = num_classes * true_ids[keep] + predicted_ids[keep]
    return torch.bincount(flat, minlength=num_classes**2).view(num_classes, num_classes)


def segmentation_scores(hist: torch.Tensor) -> dict[str, float]:
    """Pixel accuracy, mean class accuracy and mean class IoU of a confusion matrix.

    Means run over the classes present in the ground truth. The reference divides by
    `x + 1e-12` and so counts an absent class as 0; the two agree whenever every class
    occurs in the split (all 12 do in the facades test split), and this one does not
    punish small subsets for classes they happen not to contain.
    """
    hist = hist.double()
    correct = hist.diag()
    per_true = hist.sum(1)
    per_predicted = hist.sum(0)
    present = per_true > 0
    class_acc = correct[present] / per_true[present]
    iou = correct[present] / (per_true + per_predicted - correct)[present]
    return {
        "pixel_acc": float(correct.sum() / hist.sum().clamp_min(1)),
        "class_acc": float(class_acc.mean()) if present.any() else 0.0,
        "iou": float(iou.mean()) if present.any() else 0.0,
    }

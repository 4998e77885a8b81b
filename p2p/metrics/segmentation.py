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


IGNORE = -1  # the class id of a void pixel: not a class of the scorer, left out of every score


@dataclass(frozen=True)
class Palette:
    """Class names and their label-map colours; class k (0-based) is `names[k]`, drawn in `colors[k]`.

    `void` are colours that belong to no class (Cityscapes' void, and the labels its evaluation ignores,
    named in `void_names`): a pixel nearest to one of them is `IGNORE`, as the pix2pix evaluation ignores
    train id 255. `ids` are the file's ids (Cityscapes' train ids), `void_id` its void entry's.
    """

    names: tuple[str, ...]
    colors: tuple[tuple[int, int, int], ...]
    ids: tuple[int, ...] = ()
    void: tuple[tuple[int, int, int], ...] = ()
    void_names: tuple[str, ...] = ()
    void_id: int | None = None

    @property
    def num_classes(self) -> int:
        return len(self.names)

    def to_dict(self) -> dict:
        ids = self.ids or tuple(range(1, self.num_classes + 1))
        classes = [{"id": i, "name": n, "rgb": list(c)} for i, n, c in zip(ids, self.names, self.colors)]
        if self.void:
            names = self.void_names or ("void",) * len(self.void)
            classes.append({"id": self.void_id if self.void_id is not None else max(ids) + 1, "name": names[0],
                            "rgb": list(self.void[0]), "ignore": True,
                            "also": [{"name": n, "rgb": list(c)} for n, c in zip(names[1:], self.void[1:])]})
        return {"classes": classes}


def palette_from_dict(data: dict, source: str) -> Palette:
    """A palette file's classes (sorted by id; class k is the k-th) and its void entry (`"ignore": true`,
    with more colours under `"also"`: labels drawn in a colour of their own but scored as void)."""
    try:
        entries = sorted(data["classes"], key=lambda c: c["id"])
        classes = [c for c in entries if not c.get("ignore", False)]
        voids = [v for c in entries if c.get("ignore", False) for v in [c, *c.get("also", [])]]
        names = tuple(str(c["name"]) for c in classes)
        colors = tuple(_rgb(c["rgb"]) for c in classes)
        void = tuple(_rgb(v["rgb"]) for v in voids)
        void_names = tuple(str(v.get("name", "void")) for v in voids)
        void_id = next((int(c["id"]) for c in entries if c.get("ignore", False)), None)
        ids = tuple(int(c["id"]) for c in classes)
    except (KeyError, TypeError, ValueError) as exc:
        raise UserError(f"{source}: expected {{'classes': [{{'id', 'name', 'rgb': [r, g, b]}}, ...]}} "
                        f"({type(exc).__name__}: {exc})") from None
    if len(names) < 2:
        raise UserError(f"{source}: expected at least two classes, each with an rgb triple")
    if len(set(colors + void)) != len(colors) + len(void):
        raise UserError(f"{source}: two entries share a colour (a colour must name one class, or void)")
    return Palette(names, colors, ids, void, void_names, void_id)


def _rgb(value) -> tuple[int, int, int]:
    rgb = tuple(int(v) for v in value)
    if len(rgb) != 3 or not all(0 <= v <= 255 for v in rgb):
        raise ValueError(f"rgb {list(value)} is not three values in 0..255")
    return rgb  # type: ignore[return-value]


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
    """uint8 (N, 3, H, W) colour label maps -> int64 (N, H, W) class ids 0..K-1, by nearest palette colour;
    a pixel nearest to a void colour is `IGNORE`.

    Nearest, not exact: JPEG moves colours a few units and blurs class edges.
    """
    colors = torch.tensor(palette.colors + palette.void, dtype=torch.float32)  # (K + V, 3)
    pixels = label_maps.permute(0, 2, 3, 1).reshape(-1, 3).float()
    ids = torch.empty(pixels.shape[0], dtype=torch.int64)
    chunk = 1 << 20  # bounds the (pixels, K) distance matrix
    for start in range(0, len(pixels), chunk):
        ids[start : start + chunk] = torch.cdist(pixels[start : start + chunk], colors).argmin(1)
    if palette.void:
        ids[ids >= palette.num_classes] = IGNORE
    n, _, h, w = label_maps.shape
    return ids.view(n, h, w)


def class_counts(label_maps: torch.Tensor, palette: Palette, batch: int = 64) -> torch.Tensor:
    """int64 (K,): pixels of each class over all label maps (void left out), a batch of maps at a time, so
    that a large split never needs its class ids (8 bytes a pixel) in memory at once."""
    counts = torch.zeros(palette.num_classes, dtype=torch.int64)
    for start in range(0, len(label_maps), batch):
        ids = labels_to_classes(label_maps[start : start + batch], palette).flatten()
        counts += torch.bincount(ids[ids != IGNORE], minlength=palette.num_classes)
    return counts


def classes_to_labels(class_ids: torch.Tensor, palette: Palette) -> torch.Tensor:
    """int (N, H, W) class ids -> uint8 (N, 3, H, W) colour label maps (for pictures of predictions);
    `IGNORE` is drawn in the first void colour (black without one)."""
    colors = torch.tensor(palette.colors + (palette.void[:1] or ((0, 0, 0),)), dtype=torch.uint8)
    class_ids = torch.where(class_ids == IGNORE, palette.num_classes, class_ids)
    return colors[class_ids].permute(0, 3, 1, 2).contiguous()


def confusion_matrix(true_ids: torch.Tensor, predicted_ids: torch.Tensor, num_classes: int) -> torch.Tensor:
    """int64 (K, K): entry [t, p] counts pixels of true class t predicted as p (the reference's `fast_hist`).

    Ids outside 0..K-1 in `true_ids` (`IGNORE`: void) are ignored, as the reference does with train id 255.
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

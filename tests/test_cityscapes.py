"""Cityscapes as in the paper, on a generated Cityscapes-like folder (the real release is not here).

The folder has the release's layout (train/ and val/, each file photo | colour label map) with label
maps drawn from the palette's colours as blocky regions, void included, and photos that are a noisy
colour function of the labels, so a segmenter can learn them. It checks the palette, the config, `p2p fcn
fit` and a tiny training run scored with the FCN, end to end.
"""

import functools
import json
import re

import pytest
import torch
from torchvision.io import write_jpeg

from p2p import download
from p2p.cli import main
from p2p.config import load_config
from p2p.metrics import fcn_fit
from p2p.metrics.fcn import load_scorer
from p2p.metrics.fcn_fit import FitSettings, fcn_skip_reason, reference_split, scorer_path
from p2p.metrics.segmentation import (
    IGNORE,
    PACKAGED_PALETTES,
    class_counts,
    classes_to_labels,
    confusion_matrix,
    find_palette,
    labels_to_classes,
    load_palette,
    segmentation_scores,
)
from tests.helpers import ROOT, TINY, TINY_FCN_FIT, WEIGHTS_DIR, sets

CONFIG = ROOT / "experiments" / "cityscapes.yaml"
# Train id, name and colour of Cityscapes' 19 evaluated classes (cityscapesScripts, helpers/labels.py).
CITYSCAPES = [(0, "road", (128, 64, 128)), (1, "sidewalk", (244, 35, 232)), (2, "building", (70, 70, 70)),
              (3, "wall", (102, 102, 156)), (4, "fence", (190, 153, 153)), (5, "pole", (153, 153, 153)),
              (6, "traffic light", (250, 170, 30)), (7, "traffic sign", (220, 220, 0)),
              (8, "vegetation", (107, 142, 35)), (9, "terrain", (152, 251, 152)), (10, "sky", (70, 130, 180)),
              (11, "person", (220, 20, 60)), (12, "rider", (255, 0, 0)), (13, "car", (0, 0, 142)),
              (14, "truck", (0, 0, 70)), (15, "bus", (0, 60, 100)), (16, "train", (0, 80, 100)),
              (17, "motorcycle", (0, 0, 230)), (18, "bicycle", (119, 11, 32))]
# Colours of labels that are drawn but not evaluated: all void, as the pix2pix evaluation's train id 255.
VOID = [(0, 0, 0), (111, 74, 0), (81, 0, 81), (250, 170, 160), (230, 150, 140), (180, 165, 180), (150, 100, 100),
        (150, 120, 90), (0, 0, 90), (0, 0, 110)]
HALF, BLOCK = 64, 16  # each half 64x64, regions of 16x16


def fake_cityscapes(root, train=32, val=8, seed=0):
    """root/cityscapes/{train,val}/N.jpg: photo | label map, 2*HALF x HALF, as the pix2pix release lays it out."""
    g = torch.Generator().manual_seed(seed)
    colors = torch.tensor([c for _, _, c in CITYSCAPES] + VOID[:2], dtype=torch.float32)  # 19 classes, 2 voids
    looks = torch.rand(len(colors), 3, generator=g) * 200 + 25  # each label's mean colour in the photos
    weights = torch.tensor([6, 3, 5, 1, 1, 1, 1, 1, 4, 2, 4, 2, 1, 3, 1, 1, 1, 1, 1, 1.5, 1.5])  # road-heavy
    for split, count in (("train", train), ("val", val)):
        folder = root / "cityscapes" / split
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(count):
            grid = torch.multinomial(weights, (HALF // BLOCK) ** 2, replacement=True, generator=g)
            ids = grid.view(HALF // BLOCK, HALF // BLOCK).repeat_interleave(BLOCK, 0).repeat_interleave(BLOCK, 1)
            label = colors[ids].permute(2, 0, 1)
            photo = looks[ids].permute(2, 0, 1) + 12 * torch.randn(3, HALF, HALF, generator=g)
            pair = torch.cat([photo, label], -1).round().clamp(0, 255).to(torch.uint8)
            write_jpeg(pair, str(folder / f"{i + 1}.jpg"), quality=95)
    return root


@pytest.fixture(scope="module")
def cityscapes_root(tmp_path_factory):
    return fake_cityscapes(tmp_path_factory.mktemp("data"))


def test_palette_holds_the_19_classes_by_train_id_and_void(cityscapes_root):
    path = find_palette(cityscapes_root / "cityscapes", "cityscapes")
    assert path == PACKAGED_PALETTES / "cityscapes.json"  # the release ships none: p2p's copy
    palette = load_palette(path)
    assert palette.num_classes == 19
    assert list(zip(palette.ids, palette.names, palette.colors)) == CITYSCAPES
    assert palette.void_id == 255 and set(palette.void) == set(VOID)
    assert "cityscapesScripts" in json.loads(path.read_text())["source"]

    # Every colour to its train id (after JPEG-like shifts of a few units); every void colour to IGNORE.
    shift = torch.tensor([5, -4, 3]).view(3, 1, 1)
    maps = torch.tensor([c for _, _, c in CITYSCAPES] + VOID).T.reshape(1, 3, 1, -1)
    maps = (maps + shift).clamp(0, 255).to(torch.uint8)
    assert labels_to_classes(maps, palette).flatten().tolist() == list(range(19)) + [IGNORE] * len(VOID)
    drawn = classes_to_labels(torch.tensor([[[13, IGNORE]]]), palette)[0, :, 0]
    assert drawn.T.tolist() == [[0, 0, 142], [0, 0, 0]]  # car, and void in black
    facades = load_palette(PACKAGED_PALETTES / "facades.json")
    assert not facades.void and labels_to_classes(torch.zeros(1, 3, 2, 2, dtype=torch.uint8), facades).min() >= 0


def test_void_is_left_out_of_the_fcn_score():
    true = torch.tensor([0, 0, 1, IGNORE, IGNORE, IGNORE])
    predicted = torch.tensor([0, 0, 1, 1, 0, 1])  # every void pixel "wrong": no effect
    assert segmentation_scores(confusion_matrix(true, predicted, 19)) == {"pixel_acc": 1.0, "class_acc": 1.0,
                                                                          "iou": 1.0}
    palette = load_palette(PACKAGED_PALETTES / "cityscapes.json")
    maps = torch.tensor([[128, 64, 128], [0, 0, 0], [81, 0, 81], [70, 70, 70]], dtype=torch.uint8).T.reshape(1, 3, 1, 4)
    counts = class_counts(maps, palette, batch=1)
    assert counts.sum() == 2 and counts[0] == 1 and counts[2] == 1


def test_config_is_the_papers_cityscapes_setting(cityscapes_root):
    cfg = load_config(CONFIG, {})
    assert (cfg.data.dataset, cfg.data.direction, cfg.data.task) == ("cityscapes", "BtoA", "aligned")
    assert (cfg.data.load_size, cfg.data.crop_size, cfg.data.flip, cfg.data.max_images) == (286, 256, True, None)
    assert (cfg.model.generator.arch, cfg.model.discriminator.patch, cfg.loss.gan, cfg.loss.conditional,
            cfg.loss.l1) == ("unet", 70, "vanilla", True, 100.0)
    assert (cfg.optim.epochs, cfg.optim.decay_epochs, cfg.optim.batch_size, cfg.optim.lr) == (100, 100, 1, 2e-4)
    assert cfg.eval.split == "val" and "fcn" in cfg.eval.metrics
    tiny = load_config(CONFIG, {**TINY, "data.root": str(cityscapes_root)})
    assert tiny.data.dataset == "cityscapes" and tiny.eval.split == "val"
    assert fcn_skip_reason(tiny.data) is None and reference_split(tiny.data) == "val"
    assert download.RELEASES["cityscapes"].url("cityscapes") == \
        "http://efrosgans.eecs.berkeley.edu/pix2pix/datasets/cityscapes.tar.gz"


@pytest.mark.slow
def test_fcn_fit_and_a_tiny_run_scored_with_it(cityscapes_root, tmp_path, mlflow_uri, monkeypatch, capsys, weights_dir):
    cache = tmp_path / "cache"
    common = ["--set", f"data.root={cityscapes_root}", "--set", f"data.crop_size={HALF}", "--set", "data.load_size=72",
              "--set", f"eval.cache_dir={cache}", "--set", f"eval.weights_dir={WEIGHTS_DIR}"]
    # `p2p fcn fit` as a user runs it, with the tests' tiny fit settings (tests/conftest.py TINY_FCN_FIT)
    monkeypatch.setattr(fcn_fit, "FitSettings", functools.partial(FitSettings, **{**TINY_FCN_FIT, "epochs": 3}))
    assert main(["fcn", "fit", str(CONFIG), *common, "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "scored on 8 val photos" in out and "fitted in" in out, out
    info = load_scorer(scorer_path("cityscapes", HALF, str(cache))).info
    assert info["train_images"] == 32 and info["reference_split"] == "val"
    truth, majority = info["ground_truth"], info["majority"]
    assert info["majority_class"] == "road"
    assert truth["pixel_acc"] > majority["pixel_acc"] + 0.1 and truth["iou"] > 2 * majority["iou"], info

    # A tiny run of the Cityscapes config, scored on val with that scorer (a missing one would be an error).
    overrides = {**TINY, "data.root": str(cityscapes_root), "data.crop_size": HALF, "data.load_size": 72,
                 "data.max_images": 8, "eval.metrics": ["fcn", "ssim", "l1"], "eval.max_images": None,
                 "eval.cache_dir": str(cache), "eval.fcn_fit_missing": False, "runtime.out_dir": str(tmp_path / "runs")}
    assert main(["train", str(CONFIG), *sets(overrides), "--no-progress"]) == 0
    out = capsys.readouterr().out
    scores = dict(re.findall(r"^\s+(eval/\S+)\s+([-\d.]+)$", out, re.M))
    assert set(scores) >= {"eval/fcn_pixel_acc", "eval/fcn_class_acc", "eval/fcn_iou", "eval/ssim", "eval/l1"}, out
    assert all(0 <= float(scores[k]) <= 1 for k in ("eval/fcn_pixel_acc", "eval/fcn_class_acc", "eval/fcn_iou"))


def test_p2p_data_fetches_a_release_and_python_m_p2p_download_still_works(tmp_path, capsys):
    import tarfile

    fake_cityscapes(tmp_path / "src", train=2, val=1)
    archive = tmp_path / "cityscapes.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(tmp_path / "src" / "cityscapes", arcname="cityscapes")
    assert main(["data", "cityscapes", str(tmp_path / "datasets"), "--url", archive.as_uri()]) == 0
    assert sorted(p.name for p in (tmp_path / "datasets" / "cityscapes").iterdir()) == ["train", "val"]
    err = capsys.readouterr().err
    assert "terms of use" in err and "prepare_cityscapes_dataset.py" in err  # said before downloading
    assert "train: 2 images, the release has 2975" in err and "val: 1 images, the release has 500" in err
    assert main(["data", "cityscapes", str(tmp_path / "datasets")]) == 0  # already there: nothing fetched
    assert "already exists" in capsys.readouterr().out
    assert download.main(["facades", str(tmp_path / "other"), (tmp_path / "missing.tar.gz").as_uri()]) == 2
    assert "download failed" in capsys.readouterr().err
    assert main(["data", "mnist"]) == 2

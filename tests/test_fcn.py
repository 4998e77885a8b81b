"""The FCN scorer: network shape, ImageNet initialisation, a real (tiny) fit, caching and when it applies."""

import threading
import time

import pytest
import torch

from p2p.config import DataConfig
from p2p.errors import UserError
from p2p.metrics import fcn_fit, weights
from p2p.metrics.fcn import FCN8s, fcn_scores, load_scorer
from p2p.metrics.fcn_fit import FitSettings, ensure_fcn_scorer, fcn_skip_reason, scorer_for_run, scorer_path
from tests.helpers import TINY_FCN_FIT, TINY_FCN_SIZE, WEIGHTS_DIR, facades_config


def tiny_scorer_path(cache):
    return cache / "fcn" / f"facades-{TINY_FCN_SIZE}.pt"


@pytest.mark.slow
def test_fcn8s_scores_every_pixel_and_its_skips_start_at_zero_and_learn():
    net = FCN8s(12, width=32)
    x = torch.rand(2, 3, 64, 64)
    logits = net(x)
    assert logits.shape == (2, 12, 64, 64)
    # Zero-initialised skips: the first prediction is pool5's (FCN-32s); the skips then learn a correction.
    for skip in (net.score_pool4, net.score_pool3):
        assert not skip.weight.any() and not skip.bias.any()
    logits.logsumexp(1).mean().backward()
    assert net.score_pool3.weight.grad.abs().sum() > 0 and net.score_pool4.weight.grad.abs().sum() > 0


def test_backbone_gets_the_imagenet_weights_and_frozen_blocks_stay_put(weights_dir):
    net = FCN8s(12, width=32)
    weights.load_features(net.features, "vgg16", str(WEIGHTS_DIR))
    reference = torch.load(WEIGHTS_DIR / "vgg16-features-imagenet.pth", weights_only=True)
    assert torch.equal(net.features[28].weight, reference["features.28.weight"])
    net.freeze_blocks(2)
    trainable = [i for i, layer in enumerate(net.features) if any(p.requires_grad for p in layer.parameters())]
    assert trainable[0] == 10  # conv3_1: blocks 1-2 (conv1_1..conv2_2) keep their ImageNet weights
    assert len(trainable) == 9  # conv3_1..conv5_3


@pytest.mark.slow
def test_tiny_fit_is_clearly_above_the_majority_class(tiny_fcn_cache):
    info = load_scorer(tiny_scorer_path(tiny_fcn_cache)).info
    truth, majority = info["ground_truth"], info["majority"]
    assert info["majority_class"] == "facade" and info["train_images"] == TINY_FCN_FIT["max_images"]
    assert majority["class_acc"] == pytest.approx(1 / 12)  # one class predicted: its recall 1, the others 0
    assert truth["pixel_acc"] > majority["pixel_acc"] + 0.04
    assert truth["class_acc"] > 1.5 * majority["class_acc"]
    assert truth["iou"] > 2.5 * majority["iou"]


@pytest.mark.slow
def test_scorer_file_holds_its_palette_and_refuses_other_sizes(tiny_fcn_cache, data_root):
    from p2p import data

    scorer = load_scorer(tiny_scorer_path(tiny_fcn_cache))
    assert scorer.size == TINY_FCN_SIZE and scorer.palette.num_classes == 12 and scorer.dataset == "facades"
    assert load_scorer(tiny_scorer_path(tiny_fcn_cache)) is scorer  # loaded once per process
    test = data.load_pairs(DataConfig(root=str(data_root), direction="AtoB"), "test", 32, 2)
    with pytest.raises(UserError, match="fitted at 64x64"):
        fcn_scores(scorer, test.pairs[:, :3], test.pairs[:, 3:])


def test_fcn_applies_to_labels_to_photo_with_a_palette_only(data_root, tmp_path):
    assert fcn_skip_reason(DataConfig(root=str(data_root), direction="BtoA")) is None
    assert "direction is AtoB" in fcn_skip_reason(DataConfig(root=str(data_root), direction="AtoB"))
    assert "colorization" in fcn_skip_reason(DataConfig(root=str(data_root), direction="BtoA", task="colorization"))
    (tmp_path / "maps").mkdir()
    assert "no palette.json" in fcn_skip_reason(DataConfig(root=str(tmp_path), dataset="maps", direction="BtoA"))
    with pytest.raises(UserError, match="cannot fit an FCN scorer for 'maps'"):
        fcn_fit.fit_scorer(DataConfig(root=str(tmp_path), dataset="maps"), 64, tmp_path / "x.pt")
    with pytest.raises(UserError, match="at least 32"):
        fcn_fit.fit_scorer(DataConfig(root=str(data_root)), 16, tmp_path / "x.pt")
    with pytest.raises(UserError, match="vgg16-features-imagenet.pth"):
        fcn_fit.fit_scorer(DataConfig(root=str(data_root)), 64, tmp_path / "x.pt", weights_dir=str(tmp_path))


@pytest.mark.slow
def test_runs_use_the_cached_scorer_and_a_missing_one_is_fitted_or_an_error(data_root, tmp_path, tiny_fcn_cache,
                                                                          monkeypatch):
    base = {"data.root": str(data_root), "data.crop_size": TINY_FCN_SIZE, "data.load_size": 72}
    cached = facades_config({**base, "eval.cache_dir": str(tiny_fcn_cache)})
    assert scorer_for_run(cached) == tiny_scorer_path(tiny_fcn_cache)
    assert scorer_for_run(facades_config({**base, "data.direction": "AtoB"})) is None
    assert scorer_for_run(facades_config({**base, "eval.metrics": ["ssim"]})) is None
    missing = facades_config({**base, "eval.cache_dir": str(tmp_path), "eval.fcn_fit_missing": False})
    with pytest.raises(UserError, match="eval.fcn_fit_missing is false.*p2p fcn fit --size 64"):
        scorer_for_run(missing)

    fitted = []

    def fake_fit(data_cfg, size, path, settings, **kwargs):
        fitted.append((data_cfg.dataset, size, settings.epochs))
        path.write_bytes(b"scorer")

    monkeypatch.setattr(fcn_fit, "fit_scorer", fake_fit)
    fitting = facades_config({**base, "eval.cache_dir": str(tmp_path)})
    assert scorer_for_run(fitting, progress=False) == scorer_path("facades", TINY_FCN_SIZE, str(tmp_path))
    assert scorer_for_run(fitting, progress=False).read_bytes() == b"scorer"
    assert fitted == [("facades", TINY_FCN_SIZE, None)]  # fitted once, then read from the cache


def test_a_second_process_waits_for_the_first_fit_instead_of_fitting_again(tmp_path, monkeypatch, data_root):
    calls = []

    def slow_fit(data_cfg, size, path, settings, **kwargs):
        calls.append(size)
        time.sleep(0.5)
        path.write_bytes(b"scorer")

    monkeypatch.setattr(fcn_fit, "fit_scorer", slow_fit)
    cfg = DataConfig(root=str(data_root))
    results = []
    workers = [threading.Thread(target=lambda: results.append(
        ensure_fcn_scorer(cfg, 64, progress=False, cache_dir=str(tmp_path), settings=FitSettings())))
        for _ in range(2)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert calls == [64] and len(set(results)) == 1 and results[0].read_bytes() == b"scorer"


def test_default_fit_epochs_shrink_with_resolution():
    assert [FitSettings().epochs_for(s) for s in (64, 128, 256)] == [10, 10, 4]
    assert FitSettings(epochs=3).epochs_for(256) == 3

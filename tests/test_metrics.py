"""Scores against independent references: LPIPS's published distances, scikit-image's SSIM and PSNR,
the pix2pix reference's confusion-matrix scores; and sanity on real facades."""

import urllib.error

import numpy as np
import pytest
import torch
import torchvision.transforms.v2.functional as TF
from skimage.metrics import peak_signal_noise_ratio as skimage_psnr
from skimage.metrics import structural_similarity

from p2p import data, images
from p2p.config import DataConfig
from p2p.contract import DEFAULT_KEYS as SCORE_KEYS
from p2p.errors import UserError
from p2p.metrics import ScoreSettings, image, score_images, weights
from p2p.metrics.perceptual import lpips_distance, lpips_model
from p2p.metrics.segmentation import (
    PACKAGED_PALETTES,
    classes_to_labels,
    confusion_matrix,
    labels_to_classes,
    load_palette,
    segmentation_scores,
)
from tests.helpers import TINY_FCN_SIZE, WEIGHTS_DIR

EXAMPLES = WEIGHTS_DIR / "lpips-examples"
# ../shared/weights/README.md: LPIPS v0.1 distances of the LPIPS project's example images.
LPIPS_REFERENCE = {"alex": {"ex_p0": 0.7219, "ex_p1": 0.1376}, "vgg": {"ex_p0": 0.5686, "ex_p1": 0.4217}}


def photos_and_labels(data_root, size, count=None):
    pairs = data.load_pairs(DataConfig(root=str(data_root), direction="AtoB"), "test", size, count)
    return pairs.pairs[:, :3].contiguous(), pairs.pairs[:, 3:].contiguous()


@pytest.mark.slow
@pytest.mark.parametrize("net", ["alex", "vgg"])
def test_lpips_reproduces_the_reference_distances(net, weights_dir):
    reference = images.read_rgb(EXAMPLES / "ex_ref.png")[None]
    model = lpips_model(net, str(WEIGHTS_DIR))
    for name, expected in LPIPS_REFERENCE[net].items():
        distorted = images.read_rgb(EXAMPLES / f"{name}.png")[None]
        assert float(lpips_distance(reference, distorted, model)) == pytest.approx(expected, abs=1e-4)
    assert float(lpips_distance(reference, reference, model)) == 0.0


@pytest.mark.slow
def test_missing_weights_are_an_error_never_random_weights(tmp_path, monkeypatch):
    with pytest.raises(UserError, match="alexnet-features-imagenet.pth"):
        lpips_model("alex", str(tmp_path))
    (tmp_path / "vgg16-features-imagenet.pth").write_bytes(b"not a state dict")
    with pytest.raises(UserError, match="not a readable weights file"):
        weights.imagenet_features("vgg16", str(tmp_path))
    # No folder set: torchvision's download, which fails offline -> a clear error too.
    import torchvision

    def offline(self, *args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.delenv(weights.WEIGHTS_ENV, raising=False)
    monkeypatch.setattr(torchvision.models.AlexNet_Weights, "get_state_dict", offline)
    with pytest.raises(UserError, match="download failed.*P2P_WEIGHTS_DIR"):
        lpips_model("alex", None)


@pytest.mark.slow
def test_ssim_and_psnr_agree_with_scikit_image_on_real_facades(data_root):
    photos, labels = photos_and_labels(data_root, 256, 4)
    noise = torch.randn(photos.shape, generator=torch.Generator().manual_seed(0)) * 20
    noisy = (photos.float() + noise).round().clamp(0, 255).to(torch.uint8)
    candidates = {"noisy": noisy, "other photo": photos.roll(1, 0), "label map": labels}
    for name, outputs in candidates.items():
        ours_ssim, ours_psnr = image.ssim(outputs, photos), image.psnr(outputs, photos)
        for i in range(len(photos)):
            out, ref = outputs[i].permute(1, 2, 0).numpy(), photos[i].permute(1, 2, 0).numpy()
            expected = structural_similarity(out / 255.0, ref / 255.0, gaussian_weights=True, sigma=1.5,
                                             use_sample_covariance=False, data_range=1, channel_axis=2)
            assert float(ours_ssim[i]) == pytest.approx(expected, abs=1e-3), name
            assert float(ours_psnr[i]) == pytest.approx(skimage_psnr(ref, out, data_range=255), abs=1e-3), name
    assert 0.2 < float(image.ssim(noisy, photos).mean()) < 0.9  # a test that spans the range, not only ~0 or ~1


def test_psnr_of_identical_images_is_capped_at_100_db():
    a = torch.randint(0, 256, (2, 3, 64, 64), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    assert image.psnr(a, a).tolist() == [100.0, 100.0]
    b = a.clone()
    b[0, 0, :2, 0] ^= 1  # two values one step off: finite, just under the cap at 64x64
    assert 80 < float(image.psnr(b, a)[0]) < 100


def reference_get_scores(hist):
    """pix2pix's scripts/eval_cityscapes/util.py, verbatim in numpy."""
    acc = np.diag(hist).sum() / (hist.sum() + 1e-12)
    cl_acc = np.diag(hist) / (hist.sum(1) + 1e-12)
    iu = np.diag(hist) / (hist.sum(1) + hist.sum(0) - np.diag(hist) + 1e-12)
    return acc, np.nanmean(cl_acc), np.nanmean(iu)


def reference_fast_hist(a, b, n):
    k = np.where((a >= 0) & (a < n))[0]
    return np.bincount(n * a[k].astype(int) + b[k], minlength=n**2).reshape(n, n)


def test_confusion_matrix_scores_on_a_hand_made_example():
    true = torch.tensor([0, 0, 1, 1, 2, 2, 255])  # 255: unlabelled, ignored
    predicted = torch.tensor([0, 1, 1, 1, 2, 0, 2])
    hist = confusion_matrix(true, predicted, 3)
    assert hist.tolist() == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    scores = segmentation_scores(hist)
    assert scores["pixel_acc"] == pytest.approx(4 / 6)
    assert scores["class_acc"] == pytest.approx((1 / 2 + 1 + 1 / 2) / 3)
    assert scores["iou"] == pytest.approx((1 / 3 + 2 / 3 + 1 / 2) / 3)
    # A class absent from the ground truth is left out of the means (the reference would count it as 0).
    absent = segmentation_scores(confusion_matrix(torch.tensor([0, 0, 1]), torch.tensor([0, 2, 1]), 3))
    assert absent["class_acc"] == pytest.approx((1 / 2 + 1) / 2)
    assert absent["iou"] == pytest.approx((1 / 2 + 1) / 2)


def test_confusion_matrix_scores_match_the_reference_code_when_every_class_occurs():
    rng = np.random.default_rng(0)
    true = rng.integers(0, 12, 5000)
    predicted = np.where(rng.random(5000) < 0.6, true, rng.integers(0, 12, 5000))
    hist = confusion_matrix(torch.from_numpy(true), torch.from_numpy(predicted), 12)
    assert np.array_equal(hist.numpy(), reference_fast_hist(true, predicted, 12))
    ours = segmentation_scores(hist)
    acc, cl_acc, iu = reference_get_scores(hist.numpy())
    assert (ours["pixel_acc"], ours["class_acc"], ours["iou"]) == pytest.approx((acc, cl_acc, iu), abs=1e-9)


@pytest.mark.slow
def test_palette_maps_real_label_maps_to_the_twelve_classes(data_root):
    palette = load_palette(data_root / "facades" / "palette.json")
    assert load_palette(PACKAGED_PALETTES / "facades.json") == palette  # the copy shipped for online users
    _, labels = photos_and_labels(data_root, 256)
    classes = labels_to_classes(labels, palette)
    assert classes.shape == (106, 256, 256)
    counts = torch.bincount(classes.flatten(), minlength=12)
    assert (counts > 0).all()  # every class occurs in the test split
    assert palette.names[int(counts.argmax())] == "facade"
    # Golden class shares of the test split (background, facade, window, ..., molding).
    share = (counts / counts.sum()).tolist()
    assert [round(share[k], 3) for k in (0, 1, 2, 9)] == [0.221, 0.333, 0.140, 0.091]
    # Nearest, and near inside regions: JPEG moves colours a few units there (and blurs edges far more).
    redrawn = classes_to_labels(classes, palette)
    distance = (redrawn.float() - labels.float()).norm(dim=1)
    assert float(distance.median()) < 12
    assert torch.equal(labels_to_classes(redrawn, palette), classes)  # colours -> ids -> colours is exact


@pytest.fixture(scope="module")
def test_split_64(data_root):
    return photos_and_labels(data_root, TINY_FCN_SIZE)


def all_scores(outputs, targets, labels, cache):
    settings = ScoreSettings(weights_dir=str(WEIGHTS_DIR), fcn_scorer=str(cache / "fcn" / f"facades-{TINY_FCN_SIZE}.pt"))
    return score_images(outputs, targets, settings, labels=labels)


@pytest.mark.slow
def test_real_photos_against_themselves_score_perfectly_and_the_ground_truth_fcn_row(test_split_64,
                                                                                        tiny_fcn_cache):
    from p2p.metrics.fcn import load_scorer

    photos, labels = test_split_64
    scores = all_scores(photos, photos, labels, tiny_fcn_cache)
    assert list(scores) == list(SCORE_KEYS)
    assert scores["eval/lpips"] == 0.0 and scores["eval/l1"] == 0.0
    assert scores["eval/ssim"] == pytest.approx(1.0, abs=1e-5)  # float32 arithmetic
    assert scores["eval/psnr"] == 100.0
    truth = load_scorer(tiny_fcn_cache / "fcn" / f"facades-{TINY_FCN_SIZE}.pt").info["ground_truth"]
    assert {k: scores[f"eval/fcn_{k}"] for k in truth} == truth


@pytest.mark.slow
def test_blurred_or_shuffled_photos_score_worse_on_every_metric(test_split_64, tiny_fcn_cache):
    photos, labels = (images[:40] for images in test_split_64)
    real = all_scores(photos, photos, labels, tiny_fcn_cache)
    blurred = TF.gaussian_blur(photos, [7, 7], [2.0, 2.0])
    shuffled = photos.roll(1, 0)  # each photo scored against another facade and its label map
    for name, outputs in (("blurred", blurred), ("shuffled", shuffled)):
        worse = all_scores(outputs, photos, labels, tiny_fcn_cache)
        for key in ("eval/fcn_pixel_acc", "eval/fcn_class_acc", "eval/fcn_iou", "eval/ssim", "eval/psnr"):
            assert worse[key] < real[key] - 0.005, (name, key, worse[key], real[key])
        for key in ("eval/lpips", "eval/l1"):
            assert worse[key] > real[key] + 0.01, (name, key)

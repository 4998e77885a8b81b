"""`p2p score OUTPUTS TARGETS [--labels DIR]`: folders paired by name, the same scores as `p2p eval`."""

import json
import os
import shutil
import subprocess
import sys

import pytest
import torchvision.transforms.v2.functional as TF
from torchvision.io import write_png

from p2p import data
from p2p.cli import main
from p2p.config import DataConfig
from p2p.metrics import ScoreSettings, score_images
from tests.helpers import TINY_FCN_SIZE, WEIGHTS_DIR

EXAMPLES = WEIGHTS_DIR / "lpips-examples"


@pytest.fixture
def lpips_folders(tmp_path, weights_dir):
    """The LPIPS example: the reference in one folder, a distorted image under the same name in the other."""
    (tmp_path / "ref").mkdir()
    (tmp_path / "p0").mkdir()
    shutil.copy(EXAMPLES / "ex_ref.png", tmp_path / "ref" / "ex.png")
    shutil.copy(EXAMPLES / "ex_p0.png", tmp_path / "p0" / "ex.png")
    return tmp_path / "p0", tmp_path / "ref"


@pytest.mark.slow
def test_score_command_prints_the_reference_lpips_distance(lpips_folders, tmp_path):
    env = {**os.environ, "P2P_WEIGHTS_DIR": str(WEIGHTS_DIR)}
    proc = subprocess.run([sys.executable, "-m", "p2p", "score", *map(str, lpips_folders), "--json", "--no-progress"],
                          capture_output=True, text=True, cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["images"] == 1
    assert result["scores"]["eval/lpips"] == pytest.approx(0.7219, abs=1e-4)  # ../shared/weights/README.md
    assert set(result["scores"]) == {"eval/lpips", "eval/ssim", "eval/psnr", "eval/l1"}


@pytest.mark.slow
def test_plain_output_lists_the_scores(lpips_folders, monkeypatch, capsys):
    monkeypatch.setenv("P2P_WEIGHTS_DIR", str(WEIGHTS_DIR))
    assert main(["score", *map(str, lpips_folders), "--no-progress"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "1 image pairs" and out[1].split() == ["eval/lpips", "0.7219"]


def write_images(folder, images, names, suffix=".png"):
    folder.mkdir(parents=True, exist_ok=True)
    for image, name in zip(images, names):
        write_png(image.contiguous(), str(folder / f"{name}{suffix}"))


def errors_of(argv, capsys):
    assert main(argv) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("p2p: error: ") and captured.out == ""
    return lines[0]


def test_mismatched_names_and_sizes_are_one_line_errors(tmp_path, data_root, capsys):
    photos = data.load_pairs(DataConfig(root=str(data_root)), "test", 64, 3).pairs[:, 3:]
    write_images(tmp_path / "out", photos, ["1", "2", "3"])
    write_images(tmp_path / "tgt", photos[:2], ["1", "2"], suffix=".jpg")  # paired by name without extension
    write_images(tmp_path / "tgt", photos[2:], ["4"])
    err = errors_of(["score", str(tmp_path / "out"), str(tmp_path / "tgt")], capsys)
    assert "do not hold the same names: 1 only in outputs (e.g. '3'), 1 only in targets (e.g. '4')" in err

    small = data.load_pairs(DataConfig(root=str(data_root)), "test", 32, 3).pairs[:, 3:]
    write_images(tmp_path / "small", small, ["1", "2", "3"])
    err = errors_of(["score", str(tmp_path / "out"), str(tmp_path / "small")], capsys)
    assert "small/1.png is 32x32 but" in err and "out/1.png is 64x64" in err

    write_images(tmp_path / "dup", photos[:1], ["1"], suffix=".jpg")
    write_images(tmp_path / "dup", photos[:1], ["1"])
    assert "share the name '1'" in errors_of(["score", str(tmp_path / "dup"), str(tmp_path / "out")], capsys)
    assert "folder not found" in errors_of(["score", str(tmp_path / "nope"), str(tmp_path / "out")], capsys)
    (tmp_path / "empty").mkdir()
    assert "holds no images" in errors_of(["score", str(tmp_path / "empty"), str(tmp_path / "out")], capsys)
    err = errors_of(["score", str(tmp_path / "out"), str(tmp_path / "out"), "--labels", str(tmp_path / "small")],
                    capsys)
    assert "labels must have the size of the outputs" in err
    err = errors_of(["score", str(tmp_path / "out"), str(tmp_path / "out"), "--labels", str(tmp_path / "out"),
                     "--dataset", "maps"], capsys)
    assert "no FCN scores for --dataset maps" in err


@pytest.mark.slow
def test_folders_score_exactly_as_in_memory_images(tmp_path, data_root, tiny_fcn_cache, capsys, monkeypatch):
    """What `p2p eval` computes on generated images, `p2p score` computes on them saved as PNG."""
    monkeypatch.setenv("P2P_WEIGHTS_DIR", str(WEIGHTS_DIR))
    monkeypatch.setenv("P2P_CACHE_DIR", str(tiny_fcn_cache))  # the cached scorer for facades at 64x64
    test = data.load_pairs(DataConfig(root=str(data_root), direction="AtoB"), "test", TINY_FCN_SIZE, 12)
    photos, labels = test.pairs[:, :3].contiguous(), test.pairs[:, 3:].contiguous()
    outputs = TF.gaussian_blur(photos, [5, 5], [1.5, 1.5])  # a stand-in for generated photos
    names = [name.rsplit(".", 1)[0] for name in test.names]
    write_images(tmp_path / "outputs", outputs, names)
    write_images(tmp_path / "photos", photos, names)
    write_images(tmp_path / "labels", labels, names)
    assert main(["score", str(tmp_path / "outputs"), str(tmp_path / "photos"), "--labels", str(tmp_path / "labels"),
                 "--json", "--no-progress"]) == 0
    printed = json.loads(capsys.readouterr().out)
    settings = ScoreSettings(weights_dir=str(WEIGHTS_DIR),
                             fcn_scorer=str(tiny_fcn_cache / "fcn" / f"facades-{TINY_FCN_SIZE}.pt"))
    assert printed == {"images": 12, "scores": score_images(outputs, photos, settings, labels=labels)}

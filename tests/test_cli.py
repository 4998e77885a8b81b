"""The command line end to end: train (the issue's smoke command), describe, translate."""

import json
import subprocess
import sys

import pytest
import torch
from torchvision.io import decode_image

from tests.helpers import ROOT

pytestmark = pytest.mark.slow  # end to end: each test trains, runs a command or builds a report

FACADES = str(ROOT / "experiments" / "facades.yaml")


def p2p(*args, cwd, env=None):
    return subprocess.run([sys.executable, "-m", "p2p", *args], capture_output=True, text=True, cwd=cwd, env=env)


def test_train_command_leaves_a_run_and_translate_uses_it(tmp_path, data_root, monkeypatch):
    import os

    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env["P2P_DATA_ROOT"] = str(data_root)
    proc = p2p("train", FACADES, "--set", "optim.epochs=1", "--set", "optim.decay_epochs=0",
               "--set", "data.max_images=4", "--set", "data.crop_size=64", "--set", "data.load_size=72",
               "--set", "model.discriminator.patch=16", "--set", "eval.metrics=[ssim,psnr,l1]",
               "--set", "eval.max_images=2", "--set", "model.generator.ngf=16", "--no-progress", cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "mlflow.db").is_file()  # the default store: sqlite in the working folder
    run_id = proc.stdout.split()[1]
    generator = next((tmp_path / "runs" / "facades").glob("*/generator.pt"))
    assert generator.parent.name == run_id

    from mlflow.tracking import MlflowClient
    run = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}").get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["model.discriminator.patch"] == "16"
    assert {"train/loss_D_real", "train/loss_D_fake", "train/loss_G_GAN", "train/loss_G_L1", "train/lr",
            "train/img_per_s", "eval/ssim"} <= set(run.data.metrics)

    # translate: aligned test pairs in, one PNG out per input at the generator's size
    inputs = tmp_path / "in"
    inputs.mkdir()
    for name in ("1.jpg", "2.jpg", "3.jpg"):
        (inputs / name).write_bytes((data_root / "facades" / "test" / name).read_bytes())
    proc = p2p("translate", str(generator), str(inputs), str(tmp_path / "out"), cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr
    outs = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert outs == ["1.png", "2.png", "3.png"]
    image = decode_image(str(tmp_path / "out" / "1.png"))
    assert image.shape == (3, 64, 64) and image.dtype == torch.uint8

    # a bad input folder: one line, exit 2, nothing written
    (tmp_path / "empty").mkdir()
    proc = p2p("translate", str(generator), str(tmp_path / "empty"), str(tmp_path / "out2"), cwd=tmp_path, env=env)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out2").exists()
    proc = p2p("translate", str(tmp_path / "nope.pt"), str(inputs), str(tmp_path / "out3"), cwd=tmp_path, env=env)
    assert proc.returncode == 2 and "nope.pt: checkpoint not found" in proc.stderr


def test_describe_json_reports_paper_counts_and_receptive_fields(tmp_path):
    proc = p2p("describe", FACADES, "--json", cwd=tmp_path)
    info = json.loads(proc.stdout)
    assert info["generator_params"] == 54_413_955 and info["discriminator_params"] == 2_768_705
    assert info["receptive_field"] == 70 and info["discriminator_output_size"] == [1, 30, 30]
    for patch in (286,):  # the others are measured in-process in test_models.py
        info = json.loads(p2p("describe", FACADES, "--json", "--set", f"model.discriminator.patch={patch}",
                              cwd=tmp_path).stdout)
        assert info["receptive_field"] == patch


def test_train_missing_data_is_a_user_error(tmp_path):
    proc = p2p("train", FACADES, "--set", f"data.root={tmp_path}", cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip() == (f"p2p: error: data.dataset: folder {tmp_path}/facades not found (set data.root "
                                   "or P2P_DATA_ROOT to the folder holding 'facades', or run `make data`)")
    assert not (tmp_path / "mlflow.db").exists()  # nothing half-written

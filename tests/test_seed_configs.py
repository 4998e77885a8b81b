"""The seed projects' setups as configs: facades with LSGAN + tricks, CelebA colourisation; each trains end to
end at the CPU scale (made tiny with --set), and the tricks sweep resolves on top of LSGAN with --set."""

from pathlib import Path

import pytest
import torch
from torchvision.io import write_jpeg

from p2p import checkpoint, data, images
from p2p.cli import main
from p2p.config import load_config
from p2p.tracking import client
from tests.helpers import ROOT, TINY, sets

LSGAN = ROOT / "experiments" / "facades-lsgan-tricks.yaml"
COLOR = ROOT / "experiments" / "celeba-colorization.yaml"
TRICKS_SWEEP = ROOT / "sweeps" / "tricks.yaml"


def train_cli(config, overrides, capsys) -> tuple[str, Path]:
    """`p2p train CONFIG --scale cpu --set ...`: (the finished run's id, its run folder)."""
    assert main(["train", str(config), "--scale", "cpu", "--no-progress", *sets(overrides)]) == 0
    first = capsys.readouterr().out.splitlines()[0]  # "run ID finished: RUN_DIR"
    run_id, _, run_dir = first.removeprefix("run ").partition(" finished: ")
    return run_id, Path(run_dir)


def test_lsgan_tricks_config_holds_the_seed_setup():
    cfg = load_config(LSGAN)
    assert cfg.name == "facades-lsgan-tricks" and cfg.data.direction == "BtoA"  # the rest is facades.yaml's
    assert (cfg.loss.gan, cfg.loss.conditional, cfg.loss.l1) == ("lsgan", True, 100.0)
    t = cfg.tricks
    assert (t.label_smoothing, t.label_flip, t.instance_noise, t.instance_noise_epochs) == ((0.8, 1.2), 0.05, 0.1, 0)
    cpu = load_config(LSGAN, scale="cpu")
    assert (cpu.data.crop_size, cpu.model.generator.ngf, cpu.optim.total_epochs) == (128, 32, 6)
    from p2p import losses

    total = cpu.optim.total_epochs  # instance_noise_epochs 0: the whole run
    assert losses.instance_noise_std(t.instance_noise, 0, total) == 0.1
    assert losses.instance_noise_std(t.instance_noise, total, total) == 0.0  # decayed to 0 by the end


@pytest.mark.slow
def test_lsgan_tricks_trains_end_to_end_at_the_cpu_scale(mlflow_uri, tiny_overrides, capsys):
    run_id, _ = train_cli(LSGAN, {**tiny_overrides, "runtime.deterministic": True}, capsys)
    run = client().get_run(run_id)
    assert run.info.status == "FINISHED"
    params = run.data.params
    assert params["loss.gan"] == "lsgan" and params["tricks.label_flip"] == "0.05"
    assert params["tricks.label_smoothing"] == "[0.8, 1.2]" and params["tricks.instance_noise"] == "0.1"
    assert params["data.crop_size"] == "32" and params["model.generator.ngf"] == "8"  # --set over --scale cpu
    history = client().get_metric_history(run_id, "train/loss_D_real")
    assert len(history) == 2 and all(0 < m.value < 10 for m in history)
    for key in ("eval/ssim", "eval/psnr", "eval/l1"):
        assert torch.isfinite(torch.tensor(run.data.metrics[key]))


@pytest.fixture
def single_photos(tmp_path, data_root):
    """A CelebA-like folder of single photos, datasets/celeba/{train,test}/*.jpg: the photo (A) halves of facades."""
    root = tmp_path / "datasets"
    for split, count in (("train", 4), ("test", 3)):
        folder = root / "celeba" / split
        folder.mkdir(parents=True)
        for path in images.list_images(data_root / "facades" / split)[:count]:
            pair = images.read_rgb(path)
            write_jpeg(pair[:, :, : pair.shape[-1] // 2].contiguous(), str(folder / path.name), quality=95)
    return root


def test_colorization_config_reads_single_photos_as_grayscale_to_colour(single_photos):
    cfg = load_config(COLOR, {"data.root": str(single_photos)})
    assert (cfg.data.dataset, cfg.data.task, cfg.data.layout) == ("celeba", "colorization", "single")
    assert "fcn" not in cfg.eval.metrics  # no label maps
    pairs = data.load_pairs(cfg.data, "test", 32)
    assert pairs.in_channels == 1 and pairs.pairs.shape == (3, 4, 32, 32)
    gray, photo = pairs.pairs[:, :1], pairs.pairs[:, 1:]
    assert torch.equal(gray, images.to_grayscale(photo))  # the input is the grayscale of the target
    assert (photo[:, 0] != photo[:, 2]).float().mean() > 0.5  # a colour photo, not three equal channels


@pytest.mark.slow
def test_colorization_trains_end_to_end_at_the_cpu_scale(mlflow_uri, tiny_overrides, single_photos, capsys):
    overrides = {**tiny_overrides, "data.root": str(single_photos), "data.max_images": 4, "eval.max_images": 3}
    run_id, run_dir = train_cli(COLOR, overrides, capsys)
    run = client().get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["data.task"] == "colorization" and run.data.params["data.layout"] == "single"
    assert set(k for k in run.data.metrics if k.startswith("eval/")) == {"eval/ssim", "eval/psnr", "eval/l1"}
    state = checkpoint.load(run_dir / checkpoint.GENERATOR)
    from p2p.config import config_from_dict
    from p2p.models import create_generator

    G = create_generator(config_from_dict(state["config"]), init=False)
    G.load_state_dict(state["generator"])
    assert G(torch.zeros(1, 1, 32, 32)).shape == (1, 3, 32, 32)  # one grayscale channel in, colour out


@pytest.mark.slow
def test_tricks_sweep_resolves_every_cell_on_top_of_lsgan(tmp_path, mlflow_uri, capsys):
    from p2p.sweep.driver import make_plan
    from p2p.sweep.spec import load_spec

    spec = load_spec(TRICKS_SWEEP)
    plan = make_plan(spec, "cpu", ["loss.gan=lsgan"])
    assert not plan.invalid and set(plan.configs) == {"none", "label_smoothing", "label_flip", "instance_noise", "all"}
    assert {cell: cfg.loss.gan for cell, cfg in plan.configs.items()} == dict.fromkeys(plan.configs, "lsgan")
    tricks = {cell: (cfg.tricks.label_smoothing, cfg.tricks.label_flip, cfg.tricks.instance_noise)
              for cell, cfg in plan.configs.items()}
    assert tricks == {"none": (None, 0.0, 0.0), "label_smoothing": ((0.8, 1.0), 0.0, 0.0),
                      "label_flip": (None, 0.05, 0.0), "instance_noise": (None, 0.0, 0.1),
                      "all": ((0.8, 1.0), 0.05, 0.1)}  # each cell keeps its own trick, all on LSGAN
    assert all(cfg.loss.l1 == 100.0 and cfg.data.crop_size == 128 for cfg in plan.configs.values())
    # The command itself: every cell listed, none INVALID, nothing created (a dry run).
    tiny = {key: TINY[key] for key in ("data.crop_size", "data.load_size", "model.generator.ngf",
                                      "model.discriminator.ndf", "model.discriminator.patch", "data.root")}
    argv = ["sweep", str(TRICKS_SWEEP), "--scale", "cpu", "--set", "loss.gan=lsgan", *sets(tiny), "--dry-run",
            "--storage", f"sqlite:///{tmp_path / 'optuna.db'}", "--no-progress"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "5 cells x 4 seeds = 20 trials" in out and "INVALID" not in out  # the CPU protocol: 4 seeds
    rows = [line.split()[0] for line in out.splitlines() if line.startswith("  ") and "todo" in line]
    assert rows == ["none", "label_smoothing", "label_flip", "instance_noise", "all"]
    assert not (tmp_path / "optuna.db").exists()

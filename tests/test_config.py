"""Config loading: types, overrides, scale overlays, and one-line errors naming key and file."""

import subprocess
import sys

import pytest

from p2p.config import RunConfig, load_config, parse_override
from p2p.errors import UserError
from tests.helpers import ROOT, facades_config

FACADES = ROOT / "experiments" / "facades.yaml"


def test_facades_holds_the_papers_settings():
    cfg = facades_config()
    assert isinstance(cfg, RunConfig)
    assert (cfg.data.direction, cfg.data.load_size, cfg.data.crop_size, cfg.data.flip) == ("BtoA", 286, 256, True)
    g, d = cfg.model.generator, cfg.model.discriminator
    assert (g.arch, g.ngf, g.norm, g.dropout) == ("unet", 64, "batch", 0.5)
    assert (d.patch, d.ndf, d.norm) == (70, 64, "batch")
    assert (cfg.loss.gan, cfg.loss.conditional, cfg.loss.l1, cfg.loss.d_scale) == ("vanilla", True, 100.0, 0.5)
    o = cfg.optim
    assert (o.lr, o.beta1, o.beta2, o.epochs, o.decay_epochs, o.batch_size) == (2e-4, 0.5, 0.999, 100, 100, 1)
    assert o.total_epochs == 200  # the paper's 100 + 100
    assert cfg.model.init_gain == 0.02
    assert cfg.eval.g_mode == "train"


def test_overrides_are_typed_yaml():
    assert facades_config({"optim.lr": "1e-4"}).optim.lr == 1e-4  # YAML 1.1 reads 1e-4 as a string
    assert parse_override("tricks.label_smoothing=[0.8, 1.2]") == ("tricks.label_smoothing", [0.8, 1.2])
    cfg = facades_config({"optim.lr": 1e-4, "tricks.label_smoothing": [0.8, 1.2], "data.max_images": None})
    assert cfg.optim.lr == 1e-4 and cfg.tricks.label_smoothing == (0.8, 1.2)
    cfg = load_config(FACADES, ["optim.epochs=3", "loss.conditional=false", "eval.metrics=[ssim]"])
    assert cfg.optim.epochs == 3 and cfg.loss.conditional is False and cfg.eval.metrics == ("ssim",)
    # an int where a float is expected is fine; a float where an int is expected is not
    assert facades_config({"loss.l1": 10}).loss.l1 == 10.0


def test_config_is_frozen():
    cfg = facades_config()
    with pytest.raises(AttributeError):
        cfg.optim.lr = 1.0  # type: ignore[misc]


def test_scale_overlay_sits_between_file_and_overrides():
    cfg = load_config(FACADES, {"optim.epochs": 1}, scale="cpu")
    assert (cfg.data.crop_size, cfg.data.load_size, cfg.model.generator.ngf, cfg.model.discriminator.ndf) == (128, 143, 32, 32)
    assert cfg.optim.epochs == 1 and cfg.optim.decay_epochs == 3
    assert load_config(FACADES, scale="paper") == facades_config()
    with pytest.raises(UserError, match="scale 'huge'"):
        load_config(FACADES, scale="huge")


@pytest.mark.parametrize("overrides, message", [
    ({"data.foo": 1}, "unknown key 'data.foo'"),
    ({"optim.epochs": "ten"}, "key 'optim.epochs' expected an integer, got 'ten'"),
    ({"optim.epochs": 2.5}, "key 'optim.epochs' expected an integer"),
    ({"data.direction": "AtoC"}, "key 'data.direction' expected one of 'AtoB', 'BtoA'"),
    ({"model.discriminator.patch": 7}, "key 'model.discriminator.patch' expected one of 1, 16, 70, 286"),
    ({"data.crop_size": 64, "data.load_size": 72, "model.discriminator.patch": 286},
     "key 'data.crop_size' expected at least 128 for a 286x286 discriminator, got 64"),
    ({"data.crop_size": 96, "data.load_size": 100}, "key 'data.crop_size' expected a power of two >= 32"),
    ({"tricks.label_flip": 1.5}, "key 'tricks.label_flip' expected a probability"),
    ({"tricks.label_smoothing": [1.0, 0.8]}, "key 'tricks.label_smoothing' expected null or [low, high]"),
    ({"loss.gan": "none", "loss.l1": 0}, "key 'loss.l1' expected a weight > 0 when loss.gan is none"),
    ({"eval.metrics": ["is"]}, "key 'eval.metrics' expected a list from fcn, lpips"),
    ({"data.load_size": 100}, "key 'data.load_size' expected an integer >= data.crop_size"),
])
def test_invalid_configs_name_the_key_and_file(overrides, message):
    with pytest.raises(UserError) as err:
        facades_config(overrides)
    text = str(err.value)
    assert message in text
    assert "facades.yaml" in text
    assert "\n" not in text


def test_bad_files(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: [unclosed\n")
    with pytest.raises(UserError, match="bad.yaml: line 2 is not valid YAML"):
        load_config(bad)
    bad.write_text("- a list\n")
    with pytest.raises(UserError, match="expected a mapping"):
        load_config(bad)
    with pytest.raises(UserError, match="config file not found"):
        load_config(tmp_path / "missing.yaml")
    child = tmp_path / "child.yaml"
    child.write_text(f"base: {FACADES}\noptim:\n  epochs: 7\n")
    cfg = load_config(child)
    assert cfg.optim.epochs == 7 and cfg.optim.decay_epochs == 100


@pytest.mark.slow
def test_cli_user_error_is_one_line_and_exit_2(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "p2p", "describe", str(FACADES), "--set", "model.generator.arch=vit"],
                          capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("p2p: error: ") and "model.generator.arch" in lines[0] and "facades.yaml" in lines[0]
    assert proc.stdout == ""


def test_scoring_is_due_every_n_epochs_and_at_the_end():
    """One rule (EvalConfig.due) for when the trainer scores and what the sweep estimate counts."""
    ends_only = facades_config({"optim.epochs": 3, "optim.decay_epochs": 2})
    assert [e for e in range(1, 6) if ends_only.eval.due(e, 5)] == [5] and ends_only.eval.passes(5) == 1
    every_2 = facades_config({"eval.every": 2}).eval
    assert [e for e in range(1, 6) if every_2.due(e, 5)] == [2, 4, 5] and every_2.passes(5) == 3
    assert every_2.passes(4) == 2  # the last epoch is one of the every-2 ones: scored once

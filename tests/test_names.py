"""Names are names, not paths: a run's name and experiment, the dataset, the eval split, a sweep's name
(in the spec or `--name`), its cells and scale, and the cache's file names never reach outside the folder
they belong to. A refusal is one line naming the key and the file (exit status 2), before anything is
written or any MLflow run started; the names the shipped configs and specs use still load."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from p2p import decoded_cache, names
from p2p.cli import main
from p2p.config import DataConfig, load_config
from p2p.errors import UserError
from p2p.metrics.fcn_fit import scorer_path
from p2p.sweep.spec import load_spec, run_dir, trial_config
from tests.helpers import FACADES, ROOT, TINY, facades_config

BAD = {"up": "../escaped", "absolute": "/abs", "nested": "a/b", "nul": "a\0b"}
CONFIG_KEYS = ["name", "experiment", "data.dataset", "eval.split"]


def created(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


@pytest.fixture
def sandbox(tmp_path, monkeypatch):
    """A working folder with its own (never to be created) MLflow store, sweep storage and cache."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.setenv("P2P_SWEEP_STORAGE", f"sqlite:///{tmp_path / 'optuna.db'}")
    monkeypatch.setenv("P2P_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path


def one_line_exit_2(capsys, argv: list[str]) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("p2p: error: "), err
    return lines[0]


# ---------------------------------------------------------------- the rule


@pytest.mark.parametrize("value", ["facades", "L1+cGAN", "1x1", "facades-lsgan-tricks", "a.b", "a b", "façades",
                                   "run_2026-01-05", ".hidden", "ab:c"])
def test_names(value):
    assert names.is_name(value) and names.check_name(value, "name", "f.yaml") == value


@pytest.mark.parametrize("value", ["", ".", "..", "../x", "/abs", "a/b", "a\\b", "\\\\server\\share", "a\0b", "a\nb",
                                   "a\x1fb", "a\x7fb", "a\u2028b", "C:x", "c:", None, 3])
def test_not_names(value):
    assert not names.is_name(value)
    with pytest.raises(UserError) as err:
        names.check_name(value, "name", "f.yaml")
    text = str(err.value)
    assert text.startswith("f.yaml: key 'name' expected a name, not a path") and "\n" not in text


@pytest.mark.parametrize("value, ok", [("unet/L1+cGAN", True), ("70x70", True), ("a/b/c", True), ("/abs", False),
                                       ("a/", False), ("a//b", False), ("a/../b", False), ("..", False),
                                       (".x", False), ("a/.x", False), ("a\\b", False), ("a\0b", False)])
def test_cell_names_are_names_joined_by_slashes(value, ok):
    assert names.is_tag(value) is ok
    if ok:
        assert names.is_name(names.tag_folder(value))


def test_inside(tmp_path):
    assert names.inside(tmp_path, tmp_path / "a" / "b", "name") == tmp_path / "a" / "b"
    assert names.inside("runs", "runs/a/../b", "name") == Path("runs/a/../b")
    for outside in (tmp_path, tmp_path / ".." / "x", tmp_path.parent / (tmp_path.name + "x"), Path("/abs")):
        with pytest.raises(UserError, match=r"f.yaml: key 'name' makes the path .* which is not inside "):
            names.inside(tmp_path, outside, "name", "f.yaml")


# ---------------------------------------------------------------- run configs


@pytest.mark.parametrize("key", CONFIG_KEYS)
@pytest.mark.parametrize("value", BAD.values(), ids=BAD.keys())
def test_config_names_are_refused_at_load(key, value):
    with pytest.raises(UserError) as err:
        facades_config({key: value})
    text = str(err.value)
    assert text.startswith(f"{FACADES}: key '{key}' expected a name, not a path") and "\n" not in text


def test_config_file_names_are_refused_naming_the_file(tmp_path):
    path = tmp_path / "escape.yaml"
    path.write_text(f"base: {FACADES}\nname: ../../escaped\n")
    with pytest.raises(UserError, match=r"escape.yaml: key 'name' expected a name, not a path .*got '../../escaped'"):
        load_config(path)


@pytest.mark.parametrize("config", sorted((ROOT / "experiments").glob("*.yaml")), ids=lambda p: p.stem)
def test_shipped_configs_still_load(config):
    for scale in (None, "cpu", "paper"):
        cfg = load_config(config, scale=scale)
        for value in (cfg.name, cfg.experiment, cfg.data.dataset, cfg.eval.split):
            assert names.is_name(value)


@pytest.mark.parametrize("key", CONFIG_KEYS)
@pytest.mark.parametrize("value", BAD.values(), ids=BAD.keys())
def test_train_refuses_before_writing_or_tracking(sandbox, capsys, key, value):
    out = sandbox / "deep" / "runs"
    line = one_line_exit_2(capsys, ["train", str(FACADES), "--set", f"{key}={value}", "--set", f"runtime.out_dir={out}",
                                    "--no-progress"])
    assert f"key '{key}' expected a name, not a path" in line and "facades.yaml" in line
    assert created(sandbox) == []  # no run folder anywhere, no mlflow.db (so no MLflow run), no cache


@pytest.mark.slow  # a fresh process (it imports torch); the in-process tests above check the same in the fast tier
def test_train_command_in_a_fresh_process(tmp_path):
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}", "P2P_CACHE_DIR": str(tmp_path)}
    proc = subprocess.run([sys.executable, "-m", "p2p", "train", str(FACADES), "--set", "name=../../escaped",
                           "--set", f"runtime.out_dir={tmp_path / 'a' / 'runs'}", "--no-progress"],
                          capture_output=True, text=True, cwd=tmp_path, env=env)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.strip() == (f"p2p: error: {FACADES}: key 'name' expected {names.NAME}, got '../../escaped'")
    assert created(tmp_path) == []


def test_the_run_folder_is_checked_where_it_is_made(data_root, tmp_path):
    """Belt and braces: a config made without the schema (dataclasses.replace) still cannot leave out_dir."""
    from p2p.trainer import train

    cfg = facades_config({**TINY, "runtime.out_dir": str(tmp_path / "runs")})
    escaping = dataclasses.replace(cfg, name="../../escaped")
    with pytest.raises(UserError, match=r"key 'name' makes the path .*escaped/.* which is not inside .*runs"):
        train(escaping, progress=False)
    assert not (tmp_path.parent / "escaped").exists() and not (tmp_path / "runs").exists()


# ---------------------------------------------------------------- caches


@pytest.mark.parametrize("value", BAD.values(), ids=BAD.keys())
def test_cache_file_names(tmp_path, value):
    with pytest.raises(UserError, match="key 'data.dataset' expected a name, not a path"):
        scorer_path(value, 64, str(tmp_path))
    with pytest.raises(UserError, match="key 'data.dataset' expected a name, not a path"):
        decoded_cache.file_for(DataConfig(dataset=value), tmp_path, [], 64)  # a DataConfig made without the schema
    assert scorer_path("facades", 64, str(tmp_path)) == tmp_path / "fcn" / "facades-64.pt"
    assert created(tmp_path) == []


# ---------------------------------------------------------------- sweeps


def write_spec(folder: Path, body: dict, file: str = "spec.yaml") -> Path:
    path = folder / file
    path.write_text(yaml.safe_dump({"name": "ok", "base": str(FACADES), "objective": {"metric": "eval/ssim"},
                                    "cells": {"a": {}}, **body}, sort_keys=False))
    return path


@pytest.mark.parametrize("value", [*BAD.values(), "a b", ""], ids=[*BAD.keys(), "space", "empty"])
def test_sweep_names_are_refused(tmp_path, value):
    with pytest.raises(UserError) as err:
        load_spec(write_spec(tmp_path, {"name": value}))
    assert "spec.yaml: key 'name' expected a name, not a path" in str(err.value)
    with pytest.raises(UserError, match=r"^--name .*: expected a name, not a path"):
        load_spec(write_spec(tmp_path, {}), name=value)


@pytest.mark.parametrize("cells", [{"../x": {}}, {"/abs": {}}, {"a/../b": {}}, {"a\\b": {}}, {"a\0b": {}}, {".x": {}},
                                   ["../{value}"]], ids=["up", "absolute", "dotdot", "backslash", "nul", "hidden", "list"])
def test_cell_names_are_refused(tmp_path, cells):
    body = {"cells": cells}
    if isinstance(cells, list):
        body = {"cells": [1, 2], "factor": {"key": "loss.l1", "cell_name": cells[0]}}
    with pytest.raises(UserError, match=r"spec.yaml: key 'cells' expected a cell name"):
        load_spec(write_spec(tmp_path, body))


def test_run_folders_of_a_sweep(tmp_path):
    assert run_dir("runs", "generator", "cpu", "unet/L1+cGAN", 1) == Path("runs/sweeps/generator/cpu/unet__L1+cGAN/seed1")
    assert run_dir("runs", "s", "scales/tiny.yaml", "a", 0) == Path("runs/sweeps/s/scales/tiny.yaml/a/seed0")
    for sweep, scale, cell, key in [("../x", "cpu", "a", "name"), ("a/b", "cpu", "a", "name"), ("s", "cpu", "../a", "cells"),
                                    ("s", "/abs/tiny.yaml", "a", "--scale"), ("s", "../tiny.yaml", "a", "--scale")]:
        with pytest.raises(UserError, match=f"sweep {sweep}: key '{key}'"):
            run_dir(tmp_path, sweep, scale, cell, 0)
    assert created(tmp_path) == []


def test_a_scale_overlay_outside_is_refused_before_any_trial(tmp_path):
    overlay = tmp_path / "tiny.yaml"
    overlay.write_text("optim: {epochs: 1}\n")
    spec = load_spec(write_spec(tmp_path, {}))
    with pytest.raises(UserError, match=r"spec.yaml: key '--scale' makes the path .*tiny.yaml, which is not inside"):
        trial_config(spec, str(overlay), {}, 0)


@pytest.mark.parametrize("spec", sorted((ROOT / "sweeps").glob("*.yaml")), ids=lambda p: p.stem)
def test_shipped_specs_and_their_cells_still_load(spec, tmp_path):
    loaded = load_spec(spec)
    assert names.is_name(loaded.name)
    for cell in loaded.cells:
        for scale in ("cpu", "paper"):
            folder = run_dir(tmp_path, loaded.name, scale, cell.name, 0)
            assert folder.parent.name == cell.name.replace("/", "__") and names.is_name(folder.parent.name)
    if loaded.cells:
        trial_config(loaded, "cpu", loaded.cells[0].overrides, 0)


@pytest.mark.parametrize("argv", [["--name", "../escaped"], ["--name", "/abs"], ["--set", "name=../escaped"],
                                  ["--set", "data.dataset=a/b"]], ids=["name-up", "name-absolute", "set-name",
                                                                        "set-dataset"])
def test_sweep_command_refuses_before_anything(sandbox, capsys, argv):
    spec = write_spec(sandbox, {})
    before = created(sandbox)
    line = one_line_exit_2(capsys, ["sweep", str(spec), "--scale", "cpu", "--workers", "1", "--no-progress", *argv])
    assert "expected a name, not a path" in line
    assert created(sandbox) == before  # no storage, no MLflow store, no run folder

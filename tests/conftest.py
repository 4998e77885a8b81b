"""Shared fixtures: the facades data beside the project, a private MLflow store, tiny configs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("P2P_SHARED", ROOT.parent / "shared"))
DATA_ROOT = SHARED / "data"
WEIGHTS_DIR = SHARED / "weights"

# Tiny but real: 64x64 crops of 8 facades, a 16x16 PatchGAN, narrow nets.
TINY = {
    "data.root": str(DATA_ROOT), "data.max_images": 4, "data.crop_size": 32, "data.load_size": 36,
    "model.generator.ngf": 8, "model.discriminator.ndf": 8, "model.discriminator.patch": 16,
    "optim.epochs": 1, "optim.decay_epochs": 1, "eval.metrics": ["ssim", "psnr", "l1"], "eval.max_images": 4,
    "eval.samples": 2, "runtime.threads": 1,
}


@pytest.fixture(scope="session", autouse=True)
def private_cache(tmp_path_factory):
    """Caches (decoded datasets, FCN scorers found by default) in a session folder, not the checkout's .cache."""
    patch = pytest.MonkeyPatch()
    patch.setenv("P2P_CACHE_DIR", str(tmp_path_factory.mktemp("p2p-cache")))
    yield
    patch.undo()


@pytest.fixture(scope="session")
def data_root() -> Path:
    if not (DATA_ROOT / "facades" / "train").is_dir():
        pytest.fail(f"facades not found at {DATA_ROOT}: tests need ../shared beside the project")
    return DATA_ROOT


@pytest.fixture
def mlflow_uri(tmp_path, monkeypatch) -> str:
    """A private sqlite store per test (and artifacts under tmp_path)."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.chdir(tmp_path)
    return uri


@pytest.fixture
def tiny_overrides(data_root, tmp_path) -> dict:
    return {**TINY, "runtime.out_dir": str(tmp_path / "runs")}


# A real but tiny FCN scorer: 64x64, 120 train photos, 2 epochs (~20 s), clearly above the majority class.
TINY_FCN_SIZE = 64
TINY_FCN_FIT = {"epochs": 2, "max_images": 120, "width": 256, "lr": 2e-4, "head_lr": 2e-3}


@pytest.fixture(scope="session")
def tiny_fcn_cache(data_root, tmp_path_factory) -> Path:
    """A cache folder (`eval.cache_dir`) holding the tiny facades-64 FCN scorer, fitted once per session."""
    from p2p.config import DataConfig
    from p2p.metrics.fcn_fit import FitSettings, ensure_fcn_scorer

    cache = tmp_path_factory.mktemp("fcn-cache")
    ensure_fcn_scorer(DataConfig(root=str(data_root)), TINY_FCN_SIZE, progress=False, cache_dir=str(cache),
                      weights_dir=str(WEIGHTS_DIR), settings=FitSettings(**TINY_FCN_FIT))
    return cache


def facades_config(overrides: dict | None = None):
    from p2p.config import load_config

    return load_config(ROOT / "experiments" / "facades.yaml", {**(overrides or {})})

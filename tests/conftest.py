"""Fixtures: the shared data beside the project, a private MLflow store, tiny configs, a tiny FCN scorer.

Two tiers (pytest markers): `make test-fast` runs the unit tests (`-m "not slow"`), `make test` (CI)
all of them. A test that needs the lab's shared data (`data_root`, `weights_dir`, `tiny_fcn_cache`, or
the `shared` marker) is skipped, with `helpers.SHARED_ABSENT` as its reason, where that data is not
there; `.ci/run` fails if anything was skipped so.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import (  # noqa: F401  (the names tests/numerics_probe.py imports from here)
    DATA_ROOT,
    ROOT,
    SHARED,
    TINY,
    TINY_FCN_FIT,
    TINY_FCN_SIZE,
    WEIGHTS_DIR,
    facades_config,
    shared_absent_reason,
    shared_present,
)

SHARED_FIXTURES = {"data_root", "weights_dir", "tiny_fcn_cache"}
# Modules in the slow tier as a whole: end to end (a fresh process, a server, real data at scale), or many
# random examples (test_fuzz).
SLOW_MODULES = {"test_numerics", "test_ui", "test_faults", "test_memmap", "test_signals", "test_sweep_run",
                "test_sweep_postgres", "test_fuzz"}


def pytest_collection_modifyitems(config, items):
    skip = None if shared_present() else pytest.mark.skip(reason=shared_absent_reason())
    for item in items:
        if item.module.__name__.rsplit(".", 1)[-1] in SLOW_MODULES:
            item.add_marker(pytest.mark.slow)
        if skip is not None and (item.get_closest_marker("shared")
                                 or SHARED_FIXTURES & set(getattr(item, "fixturenames", ()))):
            item.add_marker(skip)


@pytest.fixture(scope="session", autouse=True)
def private_cache(tmp_path_factory):
    """Caches (decoded datasets, FCN scorers found by default) in a session folder, not the checkout's .cache."""
    patch = pytest.MonkeyPatch()
    patch.setenv("P2P_CACHE_DIR", str(tmp_path_factory.mktemp("p2p-cache")))
    yield
    patch.undo()


@pytest.fixture(scope="session")
def data_root() -> Path:
    if not shared_present():
        pytest.skip(shared_absent_reason())
    return DATA_ROOT


@pytest.fixture(scope="session")
def weights_dir() -> Path:
    """The verified ImageNet (and Inception) weights of ../shared/weights."""
    if not shared_present():
        pytest.skip(shared_absent_reason())
    return WEIGHTS_DIR


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


@pytest.fixture(scope="session")
def tiny_fcn_cache(data_root, tmp_path_factory) -> Path:
    """A cache folder (`eval.cache_dir`) holding the tiny facades-64 FCN scorer, fitted once per session."""
    from p2p.config import DataConfig
    from p2p.metrics.fcn_fit import FitSettings, ensure_fcn_scorer

    cache = tmp_path_factory.mktemp("fcn-cache")
    ensure_fcn_scorer(DataConfig(root=str(data_root)), TINY_FCN_SIZE, progress=False, cache_dir=str(cache),
                      weights_dir=str(WEIGHTS_DIR), settings=FitSettings(**TINY_FCN_FIT))
    return cache

"""Nothing is ever unpickled: a file that would run code when unpickled is refused by every loader.

Each test feeds one loader a pickle whose `__reduce__` runs `touch MARKER` (the control test shows
that unpickling it really does), and checks that the marker never appears and that the user sees
one line naming the file (exit status 2 where the loader is a command).
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from p2p import checkpoint, data, decoded_cache, images, tracking
from p2p.cli import main
from p2p.errors import UserError
from p2p.sweep.spec import run_dir
from tests.helpers import ROOT, facades_config, one_error_line, sets

FACADES = str(ROOT / "experiments" / "facades.yaml")


class Poison:
    """Unpickling this runs a shell command that creates the marker file."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {shlex.quote(str(self.marker))}",))


@pytest.fixture
def marker(tmp_path) -> Path:
    return tmp_path / "MARKER"


def poison_checkpoint(path: Path, marker: Path) -> Path:
    """A file shaped like a p2p checkpoint / generator.pt whose config is the payload."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"format": checkpoint.FORMAT, "config": Poison(marker), "generator": {}, "run_id": "x", "epoch": 1,
                "finished": False}, path)
    return path


def test_the_poison_runs_code_when_unpickled(tmp_path, marker):
    """The control: without weights_only=True the payload does run (so the tests below can fail)."""
    path = poison_checkpoint(tmp_path / "checkpoint.pt", marker)
    torch.load(path, map_location="cpu", weights_only=False)
    assert marker.is_file()


def test_no_loader_in_p2p_or_analysis_unpickles():
    """Every torch.load in the package and the reports passes weights_only=True, and none passes False."""
    for folder in ("p2p", "analysis"):
        for source in (ROOT / folder).rglob("*.py"):
            text = source.read_text()
            assert "weights_only=False" not in text, source
            for call in re.finditer(r"torch\.load\(([^()]|\([^()]*\))*\)", text):
                assert "weights_only=True" in call.group(0), (source, call.group(0))


def test_translate_refuses_a_poisoned_generator(tmp_path, marker, data_root, capsys):
    poisoned = poison_checkpoint(tmp_path / "generator.pt", marker)
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "1.jpg").write_bytes((data_root / "facades" / "test" / "1.jpg").read_bytes())
    assert main(["translate", str(poisoned), str(tmp_path / "in"), str(tmp_path / "out")]) == 2
    line = one_error_line(capsys.readouterr().err, str(poisoned), "refused", "posix.system")
    assert "never unpickles" in line
    assert not marker.exists() and not (tmp_path / "out").exists()


def test_eval_refuses_a_poisoned_checkpoint_file(tmp_path, marker, mlflow_uri, capsys):
    poisoned = poison_checkpoint(tmp_path / "runs" / "checkpoint.pt", marker)
    assert main(["eval", str(poisoned), "--no-progress"]) == 2
    one_error_line(capsys.readouterr().err, str(poisoned), "refused")
    assert not marker.exists()


@pytest.mark.slow
def test_eval_refuses_a_poisoned_generator_artifact_of_a_run(tmp_path, marker, mlflow_uri, capsys):
    """`p2p eval RUN_ID`: the run's generator.pt comes from the (sqlite) MLflow store's artifacts."""
    c = tracking.client()
    run = c.create_run(tracking.experiment_id("poison"), run_name="poisoned")
    c.log_param(run.info.run_id, "runtime.out_dir", str(tmp_path / "elsewhere"))  # no local copy to find
    upload = tmp_path / "upload"
    poison_checkpoint(upload / checkpoint.GENERATOR, marker)
    c.log_artifact(run.info.run_id, str(upload / checkpoint.GENERATOR))
    assert main(["eval", run.info.run_id, "--no-progress"]) == 2
    one_error_line(capsys.readouterr().err, checkpoint.GENERATOR, "refused")
    assert not marker.exists()


@pytest.mark.slow
@pytest.mark.parametrize("how", ["folder", "latest"])
def test_train_resume_refuses_a_poisoned_checkpoint(tmp_path, marker, mlflow_uri, tiny_overrides, capsys, how):
    folder = Path(tiny_overrides["runtime.out_dir"]) / "facades" / "0123abcd"
    poisoned = poison_checkpoint(folder / checkpoint.CHECKPOINT, marker)
    resume = ["--resume", str(folder)] if how == "folder" else ["--resume"]
    assert main(["train", FACADES, *sets(tiny_overrides), *resume, "--no-progress"]) == 2
    one_error_line(capsys.readouterr().err, str(poisoned), "refused")
    assert not marker.exists()
    assert not (tmp_path / "mlflow.db").exists()  # refused before any run was opened


@pytest.mark.slow
def test_sweep_resume_refuses_a_poisoned_trial_checkpoint(tmp_path, marker, data_root):
    from tests.helpers import sweep_command, sweep_env
    from tests.helpers import write_sweep_spec as write_spec

    spec = write_spec(tmp_path, "poison", {"a": {}}, seeds=1)
    poisoned = poison_checkpoint(run_dir(tmp_path / "runs", "poison", "cpu", "a", 0) / checkpoint.CHECKPOINT, marker)
    storage, uri = f"sqlite:///{tmp_path / 'optuna.db'}", f"sqlite:///{tmp_path / 'mlflow.db'}"
    proc = subprocess.run(sweep_command(spec, storage, workers=1), cwd=tmp_path, env=sweep_env(uri),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("p2p: error:")]
    assert len(errors) == 1 and str(poisoned) in errors[0] and "refused" in errors[0], proc.stderr
    assert "Traceback" not in proc.stderr
    assert not marker.exists()


@pytest.mark.slow
def test_report_samples_refuse_a_poisoned_generator_artifact(tmp_path, marker, mlflow_uri):
    """The report's sample grid downloads each cell's generator.pt from MLflow."""
    from analysis.load import load_sweep
    from analysis.samples import cell_samples

    tracker = tracking.MlflowTracker()
    tracker.start("poison", "a seed0", tags={"p2p.sweep": "poison", "p2p.cell": "a", "p2p.seed": "0", "p2p.scale": "cpu"})
    upload = tmp_path / "upload"
    poison_checkpoint(upload / checkpoint.GENERATOR, marker)
    tracker.log_artifact(upload / checkpoint.GENERATOR)
    tracker.finish()
    runs = load_sweep("poison", "cpu", root=tmp_path)
    with pytest.raises(UserError, match=rf"{tracker.run_id}/{checkpoint.GENERATOR}: refused"):
        cell_samples(runs, count=2)
    assert not marker.exists()


def test_fcn_scorer_cache_refuses_a_poisoned_scorer(tmp_path, marker, monkeypatch, capsys):
    from p2p.metrics.fcn import FORMAT
    from p2p.metrics.fcn_fit import scorer_path

    monkeypatch.setenv("P2P_CACHE_DIR", str(tmp_path / "cache"))
    path = scorer_path("facades", 64)
    path.parent.mkdir(parents=True)
    torch.save({"format": FORMAT, "dataset": "facades", "size": 64, "state_dict": Poison(marker)}, path)
    assert main(["fcn", "fit", FACADES, "--size", "64", "--no-progress"]) == 2  # finds it cached: loads it
    one_error_line(capsys.readouterr().err, str(path), "FCN scorer")
    assert not marker.exists()


def test_decoded_data_cache_refuses_a_poisoned_file_and_decodes_again(tmp_path, marker, tiny_overrides, capsys):
    cfg = facades_config(tiny_overrides).data
    folder = data.split_dir(cfg, "train")
    files = images.list_images(folder)[: cfg.max_images]
    cached = decoded_cache.file_for(cfg, folder, files, cfg.load_size)
    cached.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"pairs": Poison(marker), "names": [], "in_channels": 3}, cached)
    pairs = data.load_pairs(cfg, "train", cfg.load_size, cfg.max_images)
    assert not marker.exists()
    assert len(pairs) == cfg.max_images and pairs.pairs.shape[-1] == cfg.load_size
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("p2p: warning: ") and str(cached) in lines[0], lines
    assert "refused" in lines[0] and "decoding the split again" in lines[0]
    # the refused file was replaced by a plain one
    assert torch.equal(checkpoint.load_plain(cached, "decoded-data cache")["pairs"], pairs.pairs)


@pytest.mark.slow
def test_a_real_process_refuses_the_poison_in_one_line(tmp_path, marker):
    """`p2p translate` of a poisoned file in its own process: no traceback, exit 2, nothing run or written."""
    poisoned = poison_checkpoint(tmp_path / "generator.pt", marker)
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "1.png").write_bytes(b"")  # the generator is loaded before any input is read
    proc = subprocess.run([sys.executable, "-m", "p2p", "translate", str(poisoned), str(tmp_path / "in"),
                           str(tmp_path / "out")], capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 2 and not marker.exists() and not (tmp_path / "out").exists()
    one_error_line(proc.stderr, str(poisoned), "refused")

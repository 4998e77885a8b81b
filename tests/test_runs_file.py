"""Per-seed data published with a report: runs.csv and epochs.csv rebuild the report and its verdicts without MLflow."""

import json

import pandas as pd
import pytest

from analysis.report import build_report
from analysis.runs_file import EPOCHS_CSV, RUNS_COLUMNS, RUNS_CSV
from p2p.cli import main as p2p_main
from tests.helpers import ROOT, make_sweep

pytestmark = pytest.mark.slow  # builds reports (figures) from a sweep in MLflow


def _without_time(record: dict) -> dict:
    """findings.json less when it was written and the command that rewrites the report (it names the --out folder)."""
    provenance = {**record["provenance"], "commands": record["provenance"]["commands"][:1]}
    return {**{k: v for k, v in record.items() if k != "written"}, "provenance": provenance}


def test_runs_csv_rebuilds_the_report_and_its_verdicts(mlflow_uri, tiny_overrides, tmp_path, monkeypatch, capsys):
    make_sweep(tiny_overrides, tmp_path, with_generators=False)
    published = build_report("patchsize", out_root=tmp_path / "published", root=ROOT, samples=0, log=False)
    runs = pd.read_csv(published / RUNS_CSV)
    assert list(runs.columns) == RUNS_COLUMNS
    # one row per trial (11 finished, 1 failed), in the spec's cell order, with every score under its MLflow name
    assert len(runs) == 12 and (runs["status"] == "FINISHED").sum() == 11
    assert list(dict.fromkeys(runs["cell"])) == ["1x1", "16x16", "70x70", "286x286"]
    assert {"eval/fcn_iou", "eval/lpips", "eval/ssim", "eval/psnr", "eval/l1"} <= set(runs.columns)
    assert runs.loc[(runs["cell"] == "70x70") & (runs["seed"] == 0), "eval/fcn_iou"].item() == pytest.approx(0.22)
    epochs = pd.read_csv(published / EPOCHS_CSV)
    assert set(epochs["metric"]) >= {"eval/fcn_iou", "train/lr", "train/loss_G_L1"}

    # The store is gone: the file alone gives the same findings.json (every claim, interval, trend and provenance).
    (tmp_path / "mlflow.db").unlink()
    monkeypatch.chdir(ROOT)  # where the command runs: sweeps/ is here
    assert p2p_main(["report", "patchsize", "--runs", str(published / RUNS_CSV), "--out", str(tmp_path / "again")]) == 0
    again = tmp_path / "again" / "patchsize"
    first, second = (json.loads((d / "findings.json").read_text()) for d in (published, again))
    assert _without_time(second) == _without_time(first)
    lines = [line for line in (published / "report.md").read_text().splitlines() if line.startswith("- ")]
    assert lines == [line for line in (again / "report.md").read_text().splitlines() if line.startswith("- ")]
    assert "Read from `runs.csv` and `epochs.csv`" in (again / "report.md").read_text()
    # what it writes beside the rebuilt report is the same data
    assert (again / RUNS_CSV).read_text() == (published / RUNS_CSV).read_text()
    assert (again / EPOCHS_CSV).read_text() == (published / EPOCHS_CSV).read_text()


def test_a_runs_file_that_is_not_one_is_a_one_line_error(tmp_path, capsys):
    bad = tmp_path / RUNS_CSV
    bad.write_text("cell,seed\nL1,0\n")
    assert p2p_main(["report", "loss", "--runs", str(bad), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "not a runs.csv written by `p2p report --out`" in err
    assert not (tmp_path / "out" / "loss").exists()

"""The published findings re-judged from their own per-seed data: results/<scale>/<sweep>/runs.csv (and the
epochs.csv beside it) rebuild each report's findings.json with the same verdicts, intervals and sign verdicts."""

import json

import pytest

from analysis.report import build_report
from analysis.runs_file import RUNS_CSV
from tests.helpers import ROOT

pytestmark = pytest.mark.slow  # builds a report (figures) per published sweep
PUBLISHED = sorted((ROOT / "results").glob(f"*/*/{RUNS_CSV}"))


def test_the_lab_publishes_per_seed_data():
    assert ROOT / "results" / "cpu" / "loss" / RUNS_CSV in PUBLISHED


@pytest.mark.parametrize("runs", PUBLISHED, ids=[f"{p.parent.parent.name}/{p.parent.name}" for p in PUBLISHED])
def test_runs_csv_reproduces_the_published_verdicts(runs, tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)  # sweeps/ is here: the spec's cells and claims
    out = build_report(runs.parent.name, out_root=tmp_path, runs_csv=runs)
    published = json.loads((runs.parent / "findings.json").read_text())
    rebuilt = json.loads((out / "findings.json").read_text())
    keys = ("claim", "verdict", "mean_difference", "anytime_valid", "sign_test", "shape", "leave_one_out",
            "per_seed_differences", "fixed_protocol")
    assert [{k: c.get(k) for k in keys} for c in rebuilt["claims"]] == \
        [{k: c.get(k) for k in keys} for c in published["claims"]]
    assert rebuilt["verdicts"] == published["verdicts"] and rebuilt["flagged_seeds"] == published["flagged_seeds"]
    assert rebuilt["every_score"] == published["every_score"]

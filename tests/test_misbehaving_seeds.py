"""Reports on seeds that misbehave, and on sweeps of a user's own: built from a runs.csv written here (no MLflow).

One seed of one cell collapses: the report names the (cell, seed), says the verdict hangs on it, and gives the
sign verdict beside the mean one. A user's sweep without claims reads as comparisons against its first cell.
"""

import json

import numpy as np
import pandas as pd
import pytest
import yaml

from analysis.report import build_report
from analysis.runs_file import EPOCH_COLUMNS, EPOCHS_CSV, RUNS_COLUMNS, RUNS_CSV
from analysis.signs import sign_e_values
from p2p.cli import main as p2p_main
from tests.helpers import ROOT

pytestmark = pytest.mark.slow  # each builds a report (figures)
T0 = 1_767_600_000_000  # ms


def write_runs(folder, sweep, scores: dict[str, dict[int, float]], lpips: dict[str, dict[int, float]] | None = None):
    """runs.csv and epochs.csv of a finished sweep: FCN IoU (and LPIPS) per cell and seed, one epoch each."""
    rows, points = [], []
    for c, (cell, values) in enumerate(scores.items()):
        for seed, value in values.items():
            start = T0 + (100 * seed + c) * 60_000
            run_id = f"{c:02d}{seed:02d}" + "0" * 28
            row = dict.fromkeys(RUNS_COLUMNS, "")
            row.update(sweep=sweep, scale="cpu", objective="eval/fcn_iou", cell=cell, seed=seed, spec_seed=seed < 4,
                       run_id=run_id, run_name=f"{cell} seed{seed}", status="FINISHED", start_time=start,
                       end_time=start + 60_000, wall_s=60.0, git_commit="c" * 40, machine="a CPU, 2 cores",
                       precision="fp32", every="0", max_images="null", epochs="1", decay_epochs="0")
            row["eval/fcn_iou"] = value
            if lpips:
                row["eval/lpips"] = lpips[cell][seed]
            rows.append(row)
            points += [(run_id, cell, seed, "eval/fcn_iou", 1, value, start + 50_000),
                       (run_id, cell, seed, "train/lr", 1, 2e-4, start + 40_000)]
    folder.mkdir(parents=True)
    pd.DataFrame(rows, columns=RUNS_COLUMNS).to_csv(folder / RUNS_CSV, index=False)
    pd.DataFrame(points, columns=EPOCH_COLUMNS).to_csv(folder / EPOCHS_CSV, index=False)
    return folder / RUNS_CSV


def write_spec(folder, name, cells, claims=None):
    spec = {"name": name, "base": str(ROOT / "experiments" / "facades.yaml"), "cells": cells, "seeds": 4,
            "objective": {"metric": "eval/fcn_iou"}}
    if claims:
        spec["claims"] = claims
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def test_a_collapsed_seed_is_named_and_the_sign_verdict_stands_beside_the_mean(tmp_path):
    rng = np.random.default_rng(7)
    seeds = range(12)
    base = {s: 0.100 + 0.004 * rng.standard_normal() for s in seeds}
    better = {s: base[s] + 0.010 + 0.003 * rng.standard_normal() for s in seeds}
    better[7] = 0.020  # seed 7 of L1+cGAN collapses: its difference is about -0.08 against +0.01 for the rest
    spec = write_spec(tmp_path, "mine", {"cGAN": {"loss.l1": 0}, "L1+cGAN": {}},
                      [{"better": "L1+cGAN", "worse": "cGAN", "why": "L1 keeps the output near the target"}])
    runs = write_runs(tmp_path / "published" / "mine", "mine", {"cGAN": base, "L1+cGAN": better})

    out = build_report(str(spec), out_root=tmp_path / "report", runs_csv=runs)
    md = (out / "report.md").read_text()
    record = json.loads((out / "findings.json").read_text())
    claim = record["claims"][0]
    line = next(x for x in md.splitlines() if x.startswith("- L1+cGAN scores above cGAN"))

    # The outlier rule names the collapsed seed, in the report's Progress section and in findings.json.
    assert [(f["cell"], f["seed"], f["metric"], f["side"]) for f in record["flagged_seeds"]] == [
        ("L1+cGAN", 7, "eval/fcn_iou", "worse")]
    assert "- L1+cGAN seed 7: FCN class IoU 0.020, " in md and "robust SDs below the cell's median" in md
    assert "Misbehaving seeds (the rule, fixed before any result: modified z-score" in md
    # The mean verdict: the collapsed seed drags the mean and widens the interval, so it is not resolved; without
    # seed 7 it would be reproduced, and the line says so, naming the seed.
    d = np.array([better[s] - base[s] for s in seeds])
    assert claim["per_seed_differences"] == {str(s): pytest.approx(d[s]) for s in seeds}
    assert claim["verdict"] == "same direction, not resolved"
    assert claim["leave_one_out"] == [{"seed": 7, "verdict": "reproduced"}]
    assert "**hangs on one seed**: without seed 7 it reads reproduced" in line
    # The sign verdict: 11 of 12 seeds above, the e-process (running maximum) against 2 / alpha at alpha 0.05.
    wins = (d > 0).astype(int)
    e_max = float(sign_e_values(wins).max())
    assert (claim["sign_test"]["above"], claim["sign_test"]["below"], claim["sign_test"]["ties"]) == (11, 1, 0)
    assert claim["sign_test"]["e_above"] == pytest.approx(e_max) and claim["sign_test"]["threshold"] == 40
    assert e_max >= 40 and claim["sign_test"]["verdict"] == "reproduced"
    assert "sign verdict **reproduced** in most seeds (11 of 12 seeds above, 1 below, 0 tied" in line
    # The Gaussian assumption fails on these differences (one far value): the line says so.
    assert claim["shape"]["fails"] and "**assumption doubtful**" in line
    assert (out / "differences.png").stat().st_size > 10_000 and "](differences.png)" in md


def test_a_users_sweep_without_claims_reads_as_comparisons_against_its_first_cell(tmp_path, monkeypatch, capsys):
    cells = {"GAN": {"loss.conditional": False, "loss.l1": 0}, "cGAN": {"loss.l1": 0}, "L1+cGAN": {}}
    means = {"GAN": 0.06, "cGAN": 0.07, "L1+cGAN": 0.11}
    rng = np.random.default_rng(3)
    scores = {cell: {s: m + 0.002 * rng.standard_normal() for s in range(8)} for cell, m in means.items()}
    lpips = {cell: {s: 0.5 + 0.001 * rng.standard_normal() for s in range(8)} for cell in cells}
    (tmp_path / "sweeps").mkdir()
    write_spec(tmp_path / "sweeps", "mine", cells)
    runs = write_runs(tmp_path / "published" / "mine", "mine", scores, lpips)
    monkeypatch.chdir(tmp_path)
    # `p2p report` takes the spec's path, as `p2p sweep` does
    assert p2p_main(["report", "sweeps/mine.yaml", "--runs", str(runs), "--out", "out"]) == 0
    md = (tmp_path / "out" / "mine" / "report.md").read_text()
    assert "- cGAN against GAN on FCN class IoU: **higher**" in md
    assert "- L1+cGAN against GAN on FCN class IoU: **higher**" in md
    assert "Verdicts: 2 higher, 0 lower, 0 negligible, 0 not resolved of 2 comparisons." in md
    assert "reversed" not in md and "reproduced" not in md
    # every other logged score judged as a second family (here LPIPS alone: 2 tests at 0.05/2)
    assert "## Every score (a second family)" in md and "2 tests (claims x scores)" in md
    record = json.loads((tmp_path / "out" / "mine" / "findings.json").read_text())
    assert record["every_score"]["tests"] == 2 and [c["metric"] for c in record["every_score"]["claims"]] == [
        "eval/lpips", "eval/lpips"]
    assert record["trials_planned"] == 24 and record["trials_in_spec"] == 12


def test_a_spec_claim_must_name_its_cells(tmp_path, capsys):
    spec = write_spec(tmp_path, "mine", {"A": {}, "B": {"loss.l1": 0}}, [{"better": "A", "worse": "C"}])
    assert p2p_main(["sweep", str(spec), "--dry-run"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"p2p: error: {spec}: key 'claims[0].worse' expected the name of a cell of this spec (A, B), "
                   "got 'C'")

"""Reports from a sweep stored in MLflow: paired findings, anytime-valid verdicts, power, trends, provenance, the paper."""

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import yaml
from scipy import stats

from analysis import paper
from analysis.__main__ import main as report_main
from analysis.findings import judge_all, open_cells
from analysis.load import load_sweep
from analysis.power import paired_power
from analysis.report import build_report
from analysis.stats import kendall_tau, t_interval
from analysis.summary import main as summary_main
from p2p import tracking
from p2p.errors import UserError
from tests.helpers import IOU, MACHINE, ROOT, SEEDS, TINY, make_sweep

pytestmark = pytest.mark.slow  # end to end: each test trains, runs a command or builds a report


def paired(better, worse, seeds=SEEDS):
    common = [s for s in seeds if IOU[better][s] is not None and IOU[worse][s] is not None]
    return stats.ttest_rel([IOU[better][s] for s in common], [IOU[worse][s] for s in common])


def test_report_of_an_unfinished_sweep(mlflow_uri, tiny_overrides, tmp_path, data_root, monkeypatch, capsys):
    parent = make_sweep(tiny_overrides, tmp_path)
    runs = load_sweep("patchsize", root=ROOT)
    assert runs.scale == "paper" and runs.parent_run_id == parent.run_id
    assert runs.cells == ["1x1", "16x16", "70x70", "286x286"] and runs.seeds == [0, 1, 2]
    assert runs.missing() == [("286x286", 1)]
    assert runs.failed()["failure"].tolist() == ["non-finite loss (train/loss_G_GAN) in epoch 2 by step 17"]

    # Paired over common seeds; the fixed-n test Holm-corrected over the 4 claims (in this order, which is also the
    # p-values' order) describes them.
    found = judge_all(runs, "eval/fcn_iou")
    claims = [(c.better, c.worse) for c in paper.CLAIMS["patchsize"]]
    p = [paired(b, w).pvalue for b, w in claims]
    assert [f.diff.p for f in found] == [pytest.approx(x) for x in p] and p == sorted(p)
    expected_holm = np.maximum.accumulate([4 * p[0], 3 * p[1], 2 * p[2], 1 * p[3]])
    assert [f.p_holm for f in found] == [pytest.approx(x) for x in expected_holm]
    assert [f.diff.n for f in found] == [3, 3, 2, 2]  # 286x286 has seeds 0 and 2
    # The verdicts read the anytime-valid intervals at 0.05/4: 3 seeds are too few for any of them to be bounded
    # (4 are needed), so nothing is resolved yet, not even 70x70 > 1x1 with its fixed-n p of 7e-4.
    assert [f.verdict for f in found] == ["same direction, not resolved"] * 4
    assert not any(f.interval.bounded for f in found) and open_cells(found) == set(runs.cells)
    assert p[0] < expected_holm[0] < 0.05 and p[1] < 0.05 < expected_holm[1]
    # One claim alone is judged at 0.05, where 3 seeds do bound the interval. LPIPS: lower is better.
    lower = judge_all(runs, "eval/lpips", claims=[paper.Claim("1x1", "70x70")])
    assert lower[0].verdict == "reversed" and lower[0].p_holm == pytest.approx(paired("70x70", "1x1").pvalue)
    assert lower[0].interval.low > 0 and lower[0].interval.alpha == 0.05

    out_root = tmp_path / "results" / "paper"
    out = build_report("patchsize", out_root=out_root, root=ROOT, samples=2)
    md = (out / "report.md").read_text()
    html = (out / "report.html").read_text()
    # the score table: mean ± 95% t half-width of the three 70x70 seeds
    half = t_interval([0.22, 0.25, 0.23]).half_width
    assert f"| 70x70   | 3/3     | {0.3 + 0.7 / 3:.3f} ± {half:.3f}" in md and f"{0.7 / 3:.3f} ± {half:.3f}" in md
    assert f"| 286x286 | 2/3     | {t_interval([0.45, 0.44]).text(3)} " in md

    # the header: provenance, then how the findings were judged
    assert "Code: git commit `aaaaaaaaaaaa` (8 runs), `bbbbbbbbbbbb` (3 runs)." in md
    assert f"Machine: {MACHINE} (11 runs)." in md
    assert "Runs: 2026-01-05 09:00 to 2026-01-06 09:20 UTC; wall time 63 min" in md  # not the 24 h between
    assert (".venv/bin/p2p sweep sweeps/patchsize.yaml --scale paper --set optim.epochs=2 --set eval.every=1`, then "
            f"`.venv/bin/p2p report patchsize --scale paper --out {out_root}`") in md
    assert ("Differences between cells: the per-seed differences over the 2-3 common seeds of the two cells, judged by "
            "a t-mixture confidence sequence (Lai 1976; Wang & Ramdas 2024), prior precision c = 0.1.") in md
    assert "Multiplicity: Bonferroni over the 4 claims of this sweep, each interval at alpha = 0.05/4 = 0.0125" in md
    assert "The fixed-n 95% t-interval and p beside each verdict describe the seeds at hand" in md

    # a finding: the verdict, the interval it read, the fixed-n test beside it, the trend, and power
    ci = paired("70x70", "1x1").confidence_interval(0.95)
    line = next(x for x in md.splitlines() if x.startswith("- 70x70 scores above 1x1"))
    assert line.startswith(f"- 70x70 scores above 1x1 on FCN class IoU: **same direction, not resolved**, difference "
                           "+0.123, anytime-valid interval unbounded at alpha 0.05/4 (needs 4 common seeds) (paired over "
                           f"3 seeds; fixed-n 95% t-interval +0.123 [{ci.low:.3f}, {ci.high:.3f}], p = 7.3e-04); "
                           "over training: cannot tell (3 seeds are too few for intervals valid across 3 epochs; 4 "
                           "would do); power ")
    assert "Verdicts: 0 reproduced, 0 reversed, 0 negligible, 4 not resolved of 4 claims." in md
    assert (p[0], expected_holm[0]) == (pytest.approx(7.3e-4, abs=5e-6), pytest.approx(0.0029, abs=5e-5))
    sd = np.std([0.12, 0.13, 0.12], ddof=1)
    need = found[0].smallest.n
    assert paired_power(0.01, sd, need, 0.0125) >= 0.8 > paired_power(0.01, sd, need - 1, 0.0125)
    assert f"80% needs {need} seeds ({found[0].observed.n} for the observed difference)" in line
    assert "16x16 scores above 1x1 on FCN class IoU: **same direction, not resolved**" in md
    assert "over training: cannot tell (2 seeds are too few for intervals valid across 3 epochs; 4 would do)" in md
    assert ("Points before the last epoch (every epoch, `eval.every`) score the first 20 test images "
            "(`eval.every_max_images`); the last epoch (epoch 3, the square) scores all the test images") in md

    # findings.json: what the summary table and the README are made from
    record = json.loads((out / "findings.json").read_text())
    first = record["claims"][0]
    assert record["claims_tested"] == 4 and record["power_alpha"] == 0.0125 and record["correction"] == "bonferroni"
    assert record["claim_alpha"] == 0.0125 and record["verdicts"].startswith("0 reproduced")
    assert (first["method"], first["seeds"], first["common_seeds"], first["verdict"]) == (
        "paired", 3, [0, 1, 2], "same direction, not resolved")
    assert first["anytime_valid"]["bounded"] is False and first["anytime_valid"]["min_seeds"] == 4
    assert first["mean_difference"] == pytest.approx(0.37 / 3) and first["low"] == pytest.approx(ci.low)
    assert first["p"] == pytest.approx(p[0]) and first["p_holm"] == pytest.approx(expected_holm[0])
    assert first["holds_from_epoch"] is None and first["epochs"] == [1, 2, 3]
    assert first["over_training_alpha_per_epoch"] == pytest.approx(0.0125 / 3)
    assert first["seeds_needed"]["smallest_effect"] == need and first["seeds_needed"]["smallest_effect_size"] == 0.01
    assert record["claims"][2]["holds_from_epoch"] is None and record["claims"][2]["sign_flips"] == [[1, 2]]
    assert record["provenance"]["wall_time_s"] == 63 * 60 and record["provenance"]["machines"] == [MACHINE]

    # the paper's Table 3 beside ours, and Kendall's tau against it (scipy on the same means)
    assert "Table 3" in md and "| 16x16   | 0.65 " in md
    means = {"1x1": 0.11, "16x16": 0.64 / 3, "70x70": 0.70 / 3, "286x286": 0.145}
    tau = stats.kendalltau([means[c] for c in means], [paper.paper_table("patchsize")[c]["eval/fcn_iou"] for c in means])
    assert f"FCN class IoU: Kendall's tau = {tau.statistic:+.2f} over 4 cells" in md
    assert "Missing (1): 286x286 seed 1" in md
    assert "Failed: 286x286 seed 1: FAILED — non-finite loss" in md
    for name in ("scores.png", "differences.png", "findings_over_training.png", "training_curves.png", "samples.png"):
        assert (out / name).stat().st_size > 10_000
        assert f"]({name})" in md
    assert html.count("src='data:image/png;base64,") == 5 and "src='http" not in html
    assert "<b>same direction, not resolved</b>" in html
    logged = {a.path for a in tracking.client().list_artifacts(parent.run_id, "report")}
    assert {"report/report.html", "report/report.md", "report/scores.png", "report/findings.json"} <= logged

    # The published copy (--out) from the command line, and the summary table over it.
    monkeypatch.chdir(ROOT)  # where `make report` runs (sweeps/ is here); the store and --out are absolute
    published = tmp_path / "results" / "cpu"
    assert report_main(["patchsize", "--out", str(published), "--samples", "0", "--no-log"]) == 0
    assert {p.name for p in (published / "patchsize").iterdir()} >= {"report.md", "report.html", "findings.json",
                                                                     "scores.png", "findings_over_training.png"}
    capsys.readouterr()
    assert summary_main([str(published)]) == 0
    table = capsys.readouterr().out
    # Beside the sequential verdict, the fixed protocol at the seeds at hand (the spec's): Holm p < 0.05 calls it.
    assert (f"| patchsize | 70x70 scores above 1x1 on FCN class IoU | same direction, not resolved | reproduced "
            f"(Holm p {found[0].p_holm:.2g}) | +0.123 "
            f"[{ci.low:.3f}, {ci.high:.3f}] | unbounded (alpha 0.0125; needs 4 seeds) | 3 (paired) | "
            f"{found[0].observed.n} / {need} (for 0.01) | - | not resolved (3 up, 0 down, 0 tied) | none |") in table
    assert len(table.strip().splitlines()) == 2 + 4 + 2  # header, 4 claims, a blank line and the verdicts counted
    assert table.strip().endswith("Sequential verdicts: 0 reproduced, 0 reversed, 0 negligible, 4 not resolved of 4 "
                                  "claims.")


def test_kendall_tau():
    tau, p, n = kendall_tau({"a": 1, "b": 2, "c": 3}, {"a": 3, "b": 2, "c": 1, "d": 0})
    assert (tau, n) == (pytest.approx(-1.0), 3)
    assert math.isnan(kendall_tau({"a": 1}, {"a": 2})[0])


def test_dry_run_of_a_sweep_with_finished_runs(mlflow_uri, tiny_overrides, tmp_path, capsys):
    from p2p.sweep.driver import SweepOptions, run_sweep
    from p2p.sweep.spec import load_spec

    make_sweep(tiny_overrides, tmp_path, with_generators=False)
    tiny = {k: v for k, v in TINY.items() if k != "model.discriminator.patch"}
    spec = tmp_path / "patchsize.yaml"
    spec.write_text(yaml.safe_dump({
        "name": "patchsize", "base": str(ROOT / "experiments" / "facades.yaml"), "seeds": 3,
        "factor": {"key": "model.discriminator.patch", "cell_name": "{value}x{value}"}, "cells": [1, 16, 70, 286],
        "objective": {"metric": "eval/ssim"}, "scales": {"paper": {"set": tiny}}}))
    from analysis.findings import read_findings

    assert run_sweep(spec, SweepOptions(scale="paper", workers=1), dry_run=True, findings=read_findings) == 0
    out = capsys.readouterr().out.splitlines()
    at = out.index("  findings so far on FCN class IoU (11 finished runs): 0 reproduced, 0 reversed, 0 negligible, "
                   "4 not resolved of 4 claims; anytime-valid intervals at alpha 0.05/4 (negligible within +-0.01); "
                   "seeds a fixed design needs for 80% power at alpha 0.05/4 (observed difference, smallest effect)")
    assert out[at + 1].startswith("    70x70 vs 1x1: same direction, not resolved, +0.123 unbounded (paired over 3 "
                                  "seeds); seeds needed 3, 7")
    assert "same direction, not resolved" in out[at + 2] and out[at + 5].startswith("estimate: ")
    from analysis.findings import read_findings

    fresh = read_findings(load_spec(spec), "cpu")  # no runs at that scale: every claim open, nothing to print
    assert fresh.lines == () and fresh.claims == 4 and fresh.open_cells == {"1x1", "16x16", "70x70", "286x286"}


def test_unknown_sweep_is_a_one_line_error(mlflow_uri, capsys):
    from p2p.cli import main

    with pytest.raises(UserError, match="sweep 'nosuch': no sweeps/nosuch.yaml and no MLflow experiment"):
        load_sweep("nosuch", root=ROOT)
    assert main(["report", "nosuch"]) == 2  # `p2p report`, what `make report` calls
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and err.startswith("p2p: error: sweep 'nosuch'")
    # `python -m analysis` is the same command
    proc = subprocess.run([sys.executable, "-m", "analysis", "nosuch"], capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ})
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1
    assert proc.stderr.startswith("p2p: error: sweep 'nosuch'")


def test_the_caption_says_which_points_score_how_many_images():
    import pandas as pd

    from analysis.load import SweepRuns
    from analysis.report import scoring_caption

    def caption(every, every_max, max_images):
        trials = pd.DataFrame([{"cell": "a", "seed": 0, "status": "FINISHED", "every": every,
                                "every_max_images": every_max, "max_images": max_images, "epochs": "3",
                                "decay_epochs": "3"}])
        return scoring_caption(SweepRuns("x", "cpu", None, ["a"], [0], "eval/ssim", "maximize", trials))

    assert caption("2", "16", "null").startswith(
        "Points before the last epoch (every 2 epochs, `eval.every`) score the first 16 test images "
        "(`eval.every_max_images`); the last epoch (epoch 6, the square) scores all the test images")
    assert caption("1", "null", "50").startswith(
        "Every point (every epoch, `eval.every`, and the last epoch (epoch 6)) scores the first 50 test images")
    assert caption("0", "null", "null").startswith(
        "The runs scored only at the end (`eval.every: 0`): one point per claim, on all the test images (epoch 6).")

"""Reports from a sweep stored in MLflow: intervals, the paper beside us, unfinished sweeps, errors."""

import math
import subprocess
import sys

import numpy as np
import pytest
from scipy import stats

from analysis import paper
from analysis.load import load_sweep
from analysis.report import build_report, judge
from analysis.stats import kendall_tau, t_interval, welch_difference
from p2p import checkpoint, tracking
from p2p.config import to_dict
from p2p.errors import UserError
from p2p.models import create_generator
from tests.conftest import ROOT, facades_config

# FCN IoU per (cell, seed): 70x70 and 16x16 clearly above 1x1; 286x286 has one seed (the other failed).
IOU = {("1x1", 0): 0.10, ("1x1", 1): 0.12, ("16x16", 0): 0.20, ("16x16", 1): 0.21,
       ("70x70", 0): 0.22, ("70x70", 1): 0.25, ("286x286", 0): 0.15}


def make_sweep(tiny_overrides, tmp_path, with_generators=True):
    """A patchsize sweep at the cpu scale as the sweep engine leaves it, with known numbers."""
    parent = tracking.RunTracker.start("patchsize", "patchsize-cpu",
                                       tags={"p2p.sweep": "patchsize", "p2p.scale": "cpu", "p2p.role": "sweep"})
    cfg = facades_config({**tiny_overrides, "data.crop_size": 32, "data.load_size": 32})
    generator = tmp_path / "generator.pt"
    checkpoint.save_atomic({"config": to_dict(cfg), "generator": create_generator(cfg).state_dict()}, generator)
    for (cell, seed), iou in IOU.items():
        tags = {"p2p.sweep": "patchsize", "p2p.cell": cell, "p2p.seed": seed, "p2p.scale": "cpu"}
        run = tracking.RunTracker.start("patchsize", f"{cell} seed{seed}", tags=tags, parent_run_id=parent.run_id)
        for epoch in (1, 2, 3):
            run.log_metrics({"train/loss_D_real": 0.7 - 0.1 * epoch + 0.01 * seed, "train/loss_D_fake": 0.6,
                             "train/loss_G_GAN": 0.8 + 0.05 * epoch, "train/loss_G_L1": 0.4 / epoch}, step=epoch)
        run.log_metrics({"eval/fcn_iou": iou, "eval/fcn_pixel_acc": 0.3 + iou, "eval/fcn_class_acc": 0.1 + iou,
                         "eval/lpips": 0.5 - iou, "eval/ssim": 0.2 + iou / 10, "eval/psnr": 12 + iou,
                         "eval/l1": 0.4 - iou / 10}, step=3)
        if with_generators:
            run.log_artifact(generator)
        run.finish()
    failed = tracking.RunTracker.start("patchsize", "286x286 seed1", parent_run_id=parent.run_id,
                                       tags={"p2p.sweep": "patchsize", "p2p.cell": "286x286", "p2p.seed": 1,
                                             "p2p.scale": "cpu"})
    failed.fail("non-finite loss (train/loss_G_GAN) in epoch 2 by step 17")
    return parent


def test_t_interval_and_welch_match_scipy():
    x = [0.22, 0.25, 0.27]
    interval = t_interval(x)
    low, high = stats.t.interval(0.95, len(x) - 1, loc=np.mean(x), scale=stats.sem(x))
    assert interval.low == pytest.approx(low) and interval.high == pytest.approx(high)
    assert t_interval([0.3]).n == 1 and math.isnan(t_interval([0.3]).half_width)
    a, b = [0.22, 0.25], [0.10, 0.12]
    diff = welch_difference(a, b)
    ttest = stats.ttest_ind(a, b, equal_var=False)
    ci = ttest.confidence_interval(0.95)
    assert diff.mean == pytest.approx(0.125) and diff.low == pytest.approx(ci.low) and diff.high == pytest.approx(ci.high)
    tau, p, n = kendall_tau({"a": 1, "b": 2, "c": 3}, {"a": 3, "b": 2, "c": 1, "d": 0})
    assert (tau, n) == (pytest.approx(-1.0), 3)


def test_report_of_an_unfinished_sweep(mlflow_uri, tiny_overrides, tmp_path, data_root):
    parent = make_sweep(tiny_overrides, tmp_path)
    runs = load_sweep("patchsize", root=ROOT)
    assert runs.scale == "cpu" and runs.parent_run_id == parent.run_id
    assert runs.cells == ["1x1", "16x16", "70x70", "286x286"] and runs.seeds == [0, 1]
    assert runs.missing() == [("286x286", 1)]
    assert runs.failed()["failure"].tolist() == ["non-finite loss (train/loss_G_GAN) in epoch 2 by step 17"]

    verdict = judge("70x70", "1x1", runs, "eval/fcn_iou")
    expected = welch_difference([0.22, 0.25], [0.10, 0.12])
    assert verdict.verdict == "reproduced" and verdict.difference.mean == pytest.approx(0.125)
    assert verdict.text == (f"70x70 scores above 1x1 on FCN class IoU: reproduced, difference "
                            f"0.125 ± {expected.half_width:.3f} (2 vs 2 seeds)")
    one_seed = judge("70x70", "286x286", runs, "eval/fcn_iou")
    assert one_seed.verdict == "same direction, no interval (one seed)"
    lower = judge("1x1", "70x70", runs, "eval/lpips")  # LPIPS: lower is better, 1x1 is worse
    assert lower.verdict == "reversed"

    out = build_report("patchsize", out_root=tmp_path / "reports", root=ROOT, samples=2)
    md = (out / "report.md").read_text()
    html = (out / "report.html").read_text()
    # the score table: mean ± 95% t half-width of the two 70x70 seeds
    half = t_interval([0.22, 0.25]).half_width
    assert f"| 70x70   | 2/2     | 0.535 ± {half:.3f}" in md and f"0.235 ± {half:.3f}" in md
    assert "| 286x286 | 1/2     | 0.450 " in md
    # the paper's Table 3 beside ours, and Kendall's tau against it (scipy on the same means)
    assert "Table 3" in md and "| 16x16   | 0.65 " in md
    means = {"1x1": 0.11, "16x16": 0.205, "70x70": 0.235, "286x286": 0.15}
    tau = stats.kendalltau([means[c] for c in means], [paper.paper_table("patchsize")[c]["eval/fcn_iou"] for c in means])
    assert f"FCN class IoU: Kendall's tau = {tau.statistic:+.2f} over 4 cells" in md
    assert "Missing (1): 286x286 seed 1" in md
    assert "Failed: 286x286 seed 1: FAILED — non-finite loss" in md
    for name in ("scores.png", "training_curves.png", "samples.png"):
        assert (out / name).stat().st_size > 10_000
        assert f"]({name})" in md
    assert html.count("src='data:image/png;base64,") == 3 and "src='http" not in html
    logged = {a.path for a in tracking.client().list_artifacts(parent.run_id, "report")}
    assert {"report/report.html", "report/report.md", "report/scores.png"} <= logged


def test_unknown_sweep_is_a_one_line_error(mlflow_uri):
    with pytest.raises(UserError, match="sweep 'nosuch': no sweeps/nosuch.yaml and no MLflow experiment"):
        load_sweep("nosuch", root=ROOT)
    proc = subprocess.run([sys.executable, "-m", "analysis", "nosuch"], capture_output=True, text=True, cwd=ROOT,
                          env={**__import__("os").environ})
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1
    assert proc.stderr.startswith("p2p: error: sweep 'nosuch'")

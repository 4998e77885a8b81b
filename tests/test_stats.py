"""Findings' statistics: paired and Welch tests against scipy, Holm by hand, power, trends, provenance, summary."""

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from analysis import paper
from analysis.findings import Trend, judge_all, trend, verdict
from analysis.load import SweepRuns
from analysis.power import Needed, first_reaching, load_effect_sizes, paired_power, power_now, seeds_needed, welch_power
from analysis.provenance import active_spans, reproduce_commands, split_set_tag, union_ms
from analysis.stats import Difference, compare, holm, paired_difference, t_interval, welch_test
from analysis.summary import summary
from tests.helpers import ROOT

MIN = 60_000  # ms


def test_t_interval_matches_scipy():
    x = [0.22, 0.25, 0.27]
    interval = t_interval(x)
    low, high = stats.t.interval(0.95, len(x) - 1, loc=np.mean(x), scale=stats.sem(x))
    assert interval.low == pytest.approx(low) and interval.high == pytest.approx(high)
    assert t_interval([0.3]).n == 1 and math.isnan(t_interval([0.3]).half_width)


def test_paired_difference_matches_scipy_ttest_rel():
    a = {0: 0.22, 1: 0.25, 2: 0.27, 3: 0.24}
    b = {0: 0.10, 1: 0.12, 2: 0.16, 3: 0.11, 7: 0.90}  # seed 7 has no partner: left out
    diff = compare(a, b)
    ref = stats.ttest_rel([0.22, 0.25, 0.27, 0.24], [0.10, 0.12, 0.16, 0.11])
    ci = ref.confidence_interval(0.95)
    assert diff.method == "paired" and diff.n == 4 and diff.seeds == (0, 1, 2, 3)
    assert diff.mean == pytest.approx(0.1225)  # (0.12 + 0.13 + 0.11 + 0.13) / 4
    assert diff.t == pytest.approx(ref.statistic) and diff.p == pytest.approx(ref.pvalue)
    assert diff.low == pytest.approx(ci.low) and diff.high == pytest.approx(ci.high)
    assert diff.sd == pytest.approx(np.std([0.12, 0.13, 0.11, 0.13], ddof=1))
    # The same numbers unpaired would be a much weaker test: pairing removes the seed's share.
    assert diff.p < stats.ttest_ind(list(a.values()), list(b.values())[:4], equal_var=False).pvalue


def test_welch_only_where_seeds_are_unmatched_and_matches_scipy():
    a, b = {0: 0.22, 1: 0.25, 2: 0.27}, {3: 0.10, 4: 0.12, 5: 0.16, 6: 0.11}
    diff = compare(a, b)
    ref = stats.ttest_ind([0.22, 0.25, 0.27], [0.10, 0.12, 0.16, 0.11], equal_var=False)
    ci = ref.confidence_interval(0.95)
    assert diff.method == "welch" and (diff.n_a, diff.n_b) == (3, 4)
    assert diff.t == pytest.approx(ref.statistic) and diff.p == pytest.approx(ref.pvalue)
    assert diff.df == pytest.approx(ref.df) and diff.low == pytest.approx(ci.low) and diff.high == pytest.approx(ci.high)
    # One common seed is not a pairing: still Welch.
    assert compare({0: 0.2, 1: 0.3}, {1: 0.1, 2: 0.15}).method == "welch"
    # Too few seeds for either test: the mean difference, no interval, no p.
    one = compare({0: 0.3}, {0: 0.1, 1: 0.2})
    assert one.method == "none" and one.mean == pytest.approx(0.15) and math.isnan(one.p)
    assert compare({}, {0: 0.1}).method == "none" and math.isnan(compare({}, {0: 0.1}).mean)
    with pytest.raises(ValueError):
        paired_difference({0: 1.0}, {0: 2.0})
    with pytest.raises(ValueError):
        welch_test([1.0], [2.0, 3.0])


def test_differences_without_spread():
    # Common random numbers can make two cells differ by the same amount at every seed.
    same = compare({0: 0.5, 1: 0.75}, {0: 0.25, 1: 0.5})  # exact in binary: both differences are 0.25
    assert (same.mean, same.half_width, same.p) == (0.25, 0.0, 0.0)
    equal = compare({0: 0.3, 1: 0.4}, {0: 0.3, 1: 0.4})
    assert (equal.mean, equal.half_width, equal.p) == (0.0, 0.0, 1.0)


def test_holm_by_hand():
    # p = 0.01, 0.04, 0.03, 0.005 (m = 4). Sorted: 0.005, 0.01, 0.03, 0.04
    #   x (m - i + 1) = 4, 3, 2, 1  ->  0.020, 0.030, 0.060, 0.040
    #   running maximum (step-down is monotone)  ->  0.020, 0.030, 0.060, 0.060
    # back in input order: 0.01 -> 0.03, 0.04 -> 0.06, 0.03 -> 0.06, 0.005 -> 0.02
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    # capped at 1: 0.5 x 2 = 1.0, then 0.6 x 1 = 0.6 -> max(1.0, 0.6) = 1.0
    assert holm([0.5, 0.6]) == pytest.approx([1.0, 1.0])
    # an untested claim (nan) stays nan and still counts in m = 3: 0.01 x 3 = 0.03, 0.04 x 2 = 0.08
    adjusted = holm([0.01, math.nan, 0.04])
    assert adjusted[0] == pytest.approx(0.03) and math.isnan(adjusted[1]) and adjusted[2] == pytest.approx(0.08)
    assert holm([]) == [] and holm([0.2]) == pytest.approx([0.2])


def test_power_textbook_cases_and_normal_bound():
    ns = np.arange(2, 1001)
    # Paired t-test, d = 1, alpha 0.05 two-sided, 80% power: n = 10 (G*Power; Cohen 1988). d = 0.5: 34.
    assert first_reaching(paired_power(1.0, 1.0, ns, 0.05)) == 10
    assert first_reaching(paired_power(0.5, 1.0, ns, 0.05)) == 34
    assert paired_power(1.0, 1.0, 10, 0.05) >= 0.8 > paired_power(1.0, 1.0, 9, 0.05)
    # Two groups of equal sd: Welch's df equals the pooled test's there: d = 0.5 needs 64 per group.
    assert first_reaching(welch_power(0.5, 1.0, 1.0, ns, 0.05)) == 64
    for alpha in (0.05, 0.0125):
        za, zb = stats.norm.ppf(1 - alpha / 2), stats.norm.ppf(0.8)
        for d in (0.3, 0.5, 0.8, 1.0, 1.5):
            n = first_reaching(paired_power(d, 1.0, ns, alpha))
            normal = (za + zb) ** 2 / d**2  # the z-test needs fewer: a lower bound for the t-test
            assert n >= math.ceil(normal)
            assert abs(n - math.ceil(normal + za**2 / 2)) <= 1  # Guenther's (1981) correction of it
    # The effect scales by sd: detecting 0.01 with sd 0.02 is d = 0.5.
    assert first_reaching(paired_power(0.01, 0.02, ns, 0.05)) == 34


def test_seeds_needed_from_a_difference():
    diff = compare({0: 0.22, 1: 0.25, 2: 0.27, 3: 0.24}, {0: 0.10, 1: 0.12, 2: 0.16, 3: 0.11})
    alpha = 0.05 / 4
    sd = np.std([0.12, 0.13, 0.11, 0.13], ddof=1)  # 0.00957
    need = seeds_needed(diff, 0.01, alpha)
    d = 0.01 / sd
    assert need.n == first_reaching(paired_power(d, 1.0, np.arange(2, 1001), alpha))
    assert paired_power(0.01, sd, need.n, alpha) >= 0.8 > paired_power(0.01, sd, need.n - 1, alpha)
    assert seeds_needed(diff, diff.mean, alpha).n == 3  # d = 12.8: the smallest n with any power at 1.25%
    assert power_now(diff, 0.01, alpha) == pytest.approx(float(paired_power(0.01, sd, 4, alpha)))
    assert seeds_needed(diff, 1e-6, alpha) == Needed(None, ">1000") and seeds_needed(diff, 0.0, alpha).text() == ">1000"
    flat = compare({0: 0.5, 1: 0.75}, {0: 0.25, 1: 0.5})
    assert seeds_needed(flat, 0.01, alpha).text() == "n/a"  # no spread to plan from
    assert seeds_needed(compare({0: 0.3}, {0: 0.2}), 0.01, alpha).text() == "n/a"
    welch = compare({0: 0.22, 1: 0.25, 2: 0.27}, {3: 0.10, 4: 0.12, 5: 0.16})
    n = seeds_needed(welch, 0.05, alpha).n
    assert welch_power(0.05, welch.sd, welch.sd_b, n, alpha) >= 0.8 > welch_power(0.05, welch.sd, welch.sd_b, n - 1,
                                                                                  alpha)


def test_effect_sizes_are_the_contracts():
    sizes = load_effect_sizes()
    assert sizes == {"eval/fcn_pixel_acc": 0.01, "eval/fcn_class_acc": 0.01, "eval/fcn_iou": 0.01,
                     "eval/lpips": 0.01, "eval/ssim": 0.01, "eval/psnr": 0.25, "eval/l1": 0.005}
    assert 'data/*.yaml' in (ROOT / "pyproject.toml").read_text()  # the paper's tables, installed with the package


def d(mean, p, method="paired"):
    return Difference(method, mean, 0.01 if method != "none" else math.nan, p, 3, 3, 3)


def test_verdicts_use_the_adjusted_p_and_the_claimed_direction():
    assert verdict(d(0.05, 0.001), 0.04, +1) == "reproduced"
    assert verdict(d(0.05, 0.001), 0.06, +1) == "same direction, not significant"
    assert verdict(d(-0.05, 0.001), 0.01, +1) == "reversed"
    assert verdict(d(-0.05, 0.001), 0.20, +1) == "other direction, not significant"
    assert verdict(d(-0.05, 0.001), 0.01, -1) == "reproduced"  # LPIPS: lower is better
    assert verdict(d(0.05, math.nan, "none"), math.nan, +1) == "same direction, no interval (one seed)"
    assert verdict(Difference("none", math.nan, math.nan, math.nan, 0, 0, 1), math.nan, +1) == "missing"


def runs_of(name, cells, values, metric="eval/fcn_iou"):
    """A SweepRuns built by hand: values[cell] = {seed: score}."""
    rows = [{"run_id": f"{c}-{s}", "cell": c, "seed": s, "status": "FINISHED", metric: v}
            for c in cells for s, v in values.get(c, {}).items()]
    seeds = sorted({s for v in values.values() for s in v})
    return SweepRuns(name, "cpu", None, list(cells), seeds, metric, "maximize", pd.DataFrame(rows))


def test_tricks_claims_are_each_cell_against_none_holm_corrected():
    values = {"none": {0: 0.10, 1: 0.12, 2: 0.11}, "label_flip": {0: 0.13, 1: 0.16, 2: 0.14},
              "all": {0: 0.09, 1: 0.13, 2: 0.10}}
    results = judge_all(runs_of("tricks", ["none", "label_flip", "all"], values), "eval/fcn_iou")
    assert [(r.claim.better, r.claim.worse) for r in results] == [("label_flip", "none"), ("all", "none")]
    flip = stats.ttest_rel([0.13, 0.16, 0.14], [0.10, 0.12, 0.11]).pvalue  # differences 0.03, 0.04, 0.03
    other = stats.ttest_rel([0.09, 0.13, 0.10], [0.10, 0.12, 0.11]).pvalue  # -0.01, 0.01, -0.01
    assert flip < other
    assert [r.diff.p for r in results] == [pytest.approx(flip), pytest.approx(other)]
    # Holm over K = 2: the smaller p x 2, the larger x 1 but not below the first
    assert results[0].p_holm == pytest.approx(2 * flip) and results[1].p_holm == pytest.approx(max(2 * flip, other))
    assert [r.verdict for r in results] == ["reproduced", "other direction, not significant"]
    assert results[0].text == "label_flip scores above none on FCN class IoU"
    assert results[0].claims == 2 and results[0].record()["seeds_needed"]["alpha"] == 0.025


def test_a_claim_with_a_missing_cell_still_counts_in_the_family():
    values = {"1x1": {0: 0.10, 1: 0.12, 2: 0.11}, "70x70": {0: 0.22, 1: 0.25, 2: 0.23}}
    results = judge_all(runs_of("patchsize", ["1x1", "16x16", "70x70", "286x286"], values), "eval/fcn_iou")
    assert len(results) == len(paper.CLAIMS["patchsize"]) == 4
    p = stats.ttest_rel([0.22, 0.25, 0.23], [0.10, 0.12, 0.11]).pvalue
    assert results[0].p_holm == pytest.approx(4 * p)  # the only p, x 4 claims
    assert [r.verdict for r in results[1:]] == ["missing"] * 3
    assert results[1].line() == "16x16 scores above 1x1 on FCN class IoU: cannot tell yet (no finished run of 16x16)"


def history(rows):
    return pd.DataFrame([{"cell": c, "seed": s, "epoch": e, "value": v} for c, s, e, v in rows])


def test_trend_holds_from_the_epoch_after_which_every_interval_excludes_0():
    rows = []
    worse = {0: 0.10, 1: 0.12, 2: 0.11}
    gains = {1: [0.04, -0.02, 0.02], 2: [0.10, 0.11, 0.10], 3: [0.12, 0.13, 0.12]}  # per seed, per epoch
    for epoch, gain in gains.items():
        for seed, g in enumerate(gain):
            rows += [("a", seed, epoch, worse[seed] + g), ("b", seed, epoch, worse[seed])]
    rows.append(("a", 3, 3, 0.5))  # a seed only one cell has: not part of the pairing
    t = trend(history(rows), "a", "b", +1)
    assert t.epochs == (1, 2, 3) and t.ns == (3, 3, 3)
    low, high = stats.t.interval(0.95, 2, loc=np.mean(gains[1]), scale=stats.sem(gains[1]))
    assert (t.lows[0], t.highs[0]) == (pytest.approx(low), pytest.approx(high)) and low < 0 < high
    assert t.holds_from == 2 and t.text() == "holds from epoch 2 of 3"
    # The same numbers as a 'lower is better' claim: reversed from epoch 2.
    assert trend(history(rows), "a", "b", -1).text() == "reversed from epoch 2 of 3"


def test_trend_names_sign_flips_and_never():
    flip = Trend((2, 4, 6), (-0.02, 0.01, 0.03), (-0.03, -0.01, 0.02), (-0.01, 0.03, 0.04), (3, 3, 3), +1)
    assert flip.flips == [(2, 4)] and flip.text() == "holds from epoch 6 of 6 (the sign flips between epochs 2 and 4)"
    never = Trend((2, 4, 6), (0.02, -0.01, 0.01), (0.01, -0.03, -0.01), (0.03, 0.01, 0.03), (3, 3, 3), +1)
    assert never.holds_from is None and never.text() == "never holds: the sign flips between epochs 2 and 4, 4 and 6"
    flat = Trend((2, 4), (0.01, 0.01), (-0.01, -0.01), (0.03, 0.03), (3, 3), +1)
    assert flat.text() == "never holds (the interval includes 0 at epoch 4, the last scored)"
    one = Trend((2,), (0.01,), (math.nan,), (math.nan,), (1,), +1)
    assert one.text() == "over training: cannot tell (fewer than 2 common seeds)"
    assert Trend((6,), (0.02,), (0.01,), (0.03,), (3,), +1).text() == "holds at epoch 6, the only one scored"
    assert Trend((6,), (0.02,), (-0.01,), (0.05,), (3,), +1).text() == "does not hold at epoch 6, the only one scored"


def test_wall_time_is_the_union_of_active_time():
    # A run of 3 epochs (one every 10 min), killed after epoch 3 and resumed 170 min later:
    # gaps 10, 10, 10, 170, 10, 5 min, median 10, so the 170 counts as one 10-min epoch (redone).
    start, stamps, end = 0, [10 * MIN, 20 * MIN, 30 * MIN, 200 * MIN, 210 * MIN], 215 * MIN
    assert active_spans(start, end, stamps) == [(0, 30 * MIN), (190 * MIN, 215 * MIN)]
    # Too few epochs to tell: the run's whole interval.
    assert active_spans(0, 100 * MIN, [50 * MIN]) == [(0, 100 * MIN)]
    # A second run [5, 40] overlapping the first: [0, 40] + [190, 215] = 40 + 25 min.
    spans = active_spans(start, end, stamps) + [(5 * MIN, 40 * MIN)]
    assert union_ms(spans) == 65 * MIN
    assert union_ms([(0, 10), (20, 30), (25, 40), (5, 8)]) == 30


def test_reproduce_commands():
    runs = runs_of("patchsize", ["1x1"], {"1x1": {0: 0.1}})
    runs.spec_path = ROOT / "sweeps" / "patchsize.yaml"
    assert reproduce_commands(runs, Path("reports")) == ["make sweep-patchsize SCALE=cpu",
                                                         "make report SWEEP=patchsize SCALE=cpu"]
    runs.parent_tags = {"p2p.set": "optim.epochs=2 data.root=/data sets/x eval.every=1"}
    assert split_set_tag(runs.parent_tags["p2p.set"]) == ["optim.epochs=2", "data.root=/data sets/x", "eval.every=1"]
    assert reproduce_commands(runs, Path("results/cpu")) == [
        ".venv/bin/p2p sweep sweeps/patchsize.yaml --scale cpu --set optim.epochs=2 --set 'data.root=/data sets/x' "
        "--set eval.every=1", ".venv/bin/p2p report patchsize --scale cpu --out results/cpu"]


def test_summary_table_over_findings_files(tmp_path):
    claim = {"claim": "70x70 scores above 1x1 on FCN class IoU", "metric": "eval/fcn_iou", "method": "paired",
             "seeds": 3, "seeds_better": 3, "seeds_worse": 3, "mean_difference": 0.1233, "low": 0.109, "high": 0.138,
             "verdict": "reproduced", "holds_from_epoch": 2, "over_training": "holds from epoch 2 of 3",
             "seeds_needed": {"observed": 3, "smallest_effect": 7, "smallest_effect_size": 0.01}}
    never = {**claim, "claim": "x scores above y on LPIPS", "metric": "eval/lpips", "method": "welch",
             "seeds_better": 2, "seeds_worse": 3, "holds_from_epoch": None, "sign_flips": [[2, 4]],
             "over_training": "never holds: the sign flips between epochs 2 and 4", "verdict": "not reproduced",
             "seeds_needed": {"observed": ">1000", "smallest_effect": "n/a", "smallest_effect_size": 0.01}}
    (tmp_path / "patchsize").mkdir()
    (tmp_path / "patchsize" / "findings.json").write_text(json.dumps({"sweep": "patchsize", "claims": [claim, never]}))
    lines = summary(tmp_path).splitlines()
    assert lines[0] == ("| sweep | claim | verdict | difference [95%] | seeds | seeds for 80% power | "
                        "holds from epoch |")
    assert lines[2] == ("| patchsize | 70x70 scores above 1x1 on FCN class IoU | reproduced | +0.123 [0.109, 0.138] | "
                        "3 (paired) | 3 / 7 (for 0.01) | 2 |")
    assert lines[3].endswith("| 2 vs 3 (Welch) | >1000 / n/a (for 0.01) | never (sign flips 2-4) |")
    proc = subprocess.run([sys.executable, "-m", "analysis.summary", str(tmp_path / "nothing")], capture_output=True,
                          text=True, cwd=ROOT)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1
    assert proc.stderr.startswith("p2p: error: ") and "no */findings.json" in proc.stderr

"""Findings' statistics: paired and Welch tests against scipy, Holm by hand, power, verdicts from anytime-valid
intervals (the intervals themselves: test_sequential.py), trends, the report's text, provenance, summary."""

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
from analysis.findings import ALPHA, Trend, findings_lines, judge_all, open_cells, trend, verdict
from analysis.load import SweepRuns
from analysis.power import Needed, first_reaching, load_effect_sizes, paired_power, power_now, seeds_needed, welch_power
from analysis.provenance import active_spans, reproduce_commands, split_set_tag, union_ms
from analysis.report import ReportDoc
from analysis.sequential import Sequence, half_width, min_seeds, sequence
from analysis.stats import Difference, compare, holm, paired_difference, t_interval, welch_test
from analysis.summary import summary
from p2p.sweep.spec import StatedClaim
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


def iv(mean, half):
    return Sequence(mean, half, 6, 0.05)


def test_verdicts_read_the_anytime_valid_interval_and_the_claimed_direction():
    # The fixed-n p (0.001 here) decides nothing: the interval of the confidence sequence does.
    assert verdict(d(0.05, 0.001), iv(0.05, 0.04), +1, 0.01) == "reproduced"
    assert verdict(d(0.05, 0.001), iv(0.05, 0.06), +1, 0.01) == "same direction, not resolved"
    assert verdict(d(-0.05, 0.001), iv(-0.05, 0.04), +1, 0.01) == "reversed"
    assert verdict(d(-0.05, 0.001), iv(-0.05, math.inf), +1, 0.01) == "other direction, not resolved"
    assert verdict(d(-0.05, 0.001), iv(-0.05, 0.04), -1, 0.01) == "reproduced"  # LPIPS: lower is better
    # Negligible: inside +-the smallest effect of interest, on either side of 0, even where it excludes 0.
    assert verdict(d(0.002, 0.5), iv(0.002, 0.006), +1, 0.01) == "negligible"
    assert verdict(d(0.005, 0.001), iv(0.005, 0.004), -1, 0.01) == "negligible"
    assert verdict(d(0.005, 0.5), iv(0.005, 0.006), +1, 0.01) == "same direction, not resolved"  # reaches 0.011
    assert verdict(d(0.002, 0.5), iv(0.002, 0.006), +1, math.nan) == "same direction, not resolved"  # no effect set
    # Welch (unmatched seeds) has no anytime-valid interval: never resolved, whatever its p.
    assert verdict(d(0.05, 1e-6, "welch"), iv(0.05, math.nan), +1, 0.01) == "same direction, not resolved"
    assert verdict(d(0.05, math.nan, "none"), iv(0.05, math.nan), +1, 0.01) == "same direction, no interval (one seed)"
    assert verdict(Difference("none", math.nan, math.nan, math.nan, 0, 0, 1), iv(math.nan, math.nan), +1,
                   0.01) == "missing"


def runs_of(name, cells, values, metric="eval/fcn_iou"):
    """A SweepRuns built by hand: values[cell] = {seed: score}."""
    rows = [{"run_id": f"{c}-{s}", "cell": c, "seed": s, "status": "FINISHED", metric: v}
            for c in cells for s, v in values.get(c, {}).items()]
    seeds = sorted({s for v in values.values() for s in v})
    return SweepRuns(name, "cpu", None, list(cells), seeds, metric, "maximize", pd.DataFrame(rows))


NONE = [0.10, 0.12, 0.11, 0.13, 0.09, 0.12]
GAINS = {"label_flip": [0.03, 0.04, 0.03, 0.035, 0.04, 0.03],  # clearly better
         "all": [0.001, -0.001, 0.0, 0.002, -0.002, 0.001],  # no better, and by less than 0.01 for sure
         "dropout": [0.02, -0.01, 0.03, -0.02, 0.01, 0.0]}  # cannot tell yet


def tricks_runs(stated: bool = False):
    """The tricks sweep's runs; `stated`: as if its spec claimed each trick beats none (`claims:`)."""
    values = {"none": dict(enumerate(NONE))}
    values.update({cell: {s: NONE[s] + g for s, g in enumerate(gain)} for cell, gain in GAINS.items()})
    return claiming(runs_of("tricks", ["none", *GAINS], values)) if stated else runs_of("tricks", ["none", *GAINS], values)


def claiming(runs):
    """`runs` with a spec that states 'each cell beats the first' as its claims."""
    runs.stated = tuple(StatedClaim(cell, runs.cells[0]) for cell in runs.cells[1:])
    return runs


def test_tricks_comparisons_are_each_cell_against_none_with_anytime_valid_verdicts():
    # Nobody claimed a trick helps: each cell against the spec's first (none) reads as what it found.
    results = judge_all(tricks_runs(), "eval/fcn_iou")
    assert [(r.claim.better, r.claim.worse) for r in results] == [(c, "none") for c in GAINS]
    # Described by the fixed-n test (scipy), Holm-corrected over the K = 3 claims ...
    p = [stats.ttest_rel([NONE[s] + g for s, g in enumerate(GAINS[c])], NONE).pvalue for c in GAINS]
    assert [r.diff.p for r in results] == [pytest.approx(x) for x in p]
    assert [r.p_holm for r in results] == [pytest.approx(x) for x in holm(p)]
    # ... judged by the confidence sequence of each mean difference at alpha / 3 (Bonferroni).
    for r, cell in zip(results, GAINS):
        gain = np.array([NONE[s] + g for s, g in enumerate(GAINS[cell])]) - np.array(NONE)
        assert r.interval.alpha == pytest.approx(ALPHA / 3) and r.interval.n == 6
        assert r.interval.half_width == pytest.approx(half_width(gain.std(ddof=1), 6, ALPHA / 3))
        assert r.interval.low == pytest.approx(gain.mean() - r.interval.half_width)
    assert [r.verdict for r in results] == ["higher", "negligible", "not resolved, leans higher"]
    assert not any(r.claim.stated for r in results)
    assert [r.resolved for r in results] == [True, True, False]
    assert open_cells(results) == {"dropout", "none"}  # what a driver adding seeds until resolved would run
    assert open_cells(results[:2]) == set()
    assert results[0].text == "label_flip against none on FCN class IoU"
    assert results[0].claims == 3 and results[0].record()["seeds_needed"]["alpha"] == pytest.approx(ALPHA / 3)
    # The report's line: the verdict, the interval it read, the fixed-n test beside it.
    iv0 = results[0].interval
    assert results[0].line().startswith(
        f"label_flip against none on FCN class IoU: **higher**, difference +0.034, anytime-valid "
        f"[{iv0.low:.3f}, {iv0.high:.3f}] at alpha 0.05/3 (paired over 6 seeds; fixed-n 95% t-interval "
        f"{results[0].diff.text(3)}, p = ")
    assert "**negligible**" in results[1].line() and "excludes 0 too" not in results[1].line()
    record = results[1].record()
    assert record["verdict"] == "negligible" and record["resolved"] is True
    assert record["anytime_valid"]["negligible_within"] == 0.01 and record["anytime_valid"]["bounded"] is True
    assert -0.01 <= record["anytime_valid"]["low"] < 0 < record["anytime_valid"]["high"] <= 0.01
    assert record["anytime_valid"]["e_value"] == pytest.approx(results[1].interval.e_value)
    json.dumps(results[2].record(), allow_nan=False)  # nan and unbounded ends are null: strict JSON


def test_too_few_seeds_for_the_family_leave_the_interval_unbounded():
    # 3 seeds and 3 claims: at alpha 0.05/3 the confidence sequence needs 4 seeds, however clear the difference.
    values = {"none": {0: 0.10, 1: 0.12, 2: 0.11}, "label_flip": {0: 0.13, 1: 0.16, 2: 0.14},
              "all": {0: 0.09, 1: 0.13, 2: 0.10}, "dropout": {0: 0.2, 1: 0.2, 2: 0.2}}
    results = judge_all(claiming(runs_of("tricks", ["none", "label_flip", "all", "dropout"], values)), "eval/fcn_iou")
    assert min_seeds(ALPHA / 3) == 4 and not results[0].interval.bounded
    assert results[0].diff.p < 0.05  # the fixed-n test alone would have called it
    assert [r.verdict for r in results] == ["same direction, not resolved", "other direction, not resolved",
                                            "same direction, not resolved"]
    assert "anytime-valid interval unbounded at alpha 0.05/3 (needs 4 common seeds)" in results[0].line()
    assert results[0].record()["anytime_valid"]["low"] is None and open_cells(results) == {"none", "label_flip",
                                                                                          "all", "dropout"}


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
    worse = [0.10, 0.12, 0.11, 0.13, 0.09, 0.12]
    gains = {1: [0.04, -0.02, 0.02, 0.0, 0.03, -0.01], 2: [0.10, 0.11, 0.10, 0.09, 0.12, 0.10],
             3: [0.12, 0.13, 0.12, 0.11, 0.12, 0.14]}  # per seed, per epoch
    for epoch, gain in gains.items():
        for seed, g in enumerate(gain):
            rows += [("a", seed, epoch, worse[seed] + g), ("b", seed, epoch, worse[seed])]
    rows.append(("a", 6, 3, 0.5))  # a seed only one cell has: not part of the pairing
    t = trend(history(rows), "a", "b", +1, 0.05)
    assert t.epochs == (1, 2, 3) and t.ns == (6, 6, 6)
    # Each epoch's interval: the confidence sequence at 0.05 / 3 epochs, valid across the epochs and the seeds.
    assert t.epoch_alpha == pytest.approx(0.05 / 3)
    expect = sequence(np.mean(gains[1]), np.std(gains[1], ddof=1), 6, 0.05 / 3)
    assert (t.lows[0], t.highs[0]) == (pytest.approx(expect.low), pytest.approx(expect.high)) and expect.low < 0
    assert t.holds_from == 2 and t.text() == "holds from epoch 2 of 3"
    # The same numbers as a 'lower is better' claim: reversed from epoch 2.
    assert trend(history(rows), "a", "b", -1, 0.05).text() == "reversed from epoch 2 of 3"
    # Three of the seeds: too few for intervals valid across 3 epochs at 0.05 / 3 each; it says so.
    three = [r for r in rows if r[1] < 3]
    assert trend(history(three), "a", "b", +1, 0.05).text() == (
        "over training: cannot tell (3 seeds are too few for intervals valid across 3 epochs; 4 would do)")


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
    anytime = {"low": 0.071, "high": 0.176, "alpha": 0.0125, "bounded": True, "e_value": 310.0, "min_seeds": 4,
               "negligible_within": 0.01}
    claim = {"claim": "70x70 scores above 1x1 on FCN class IoU", "metric": "eval/fcn_iou", "method": "paired",
             "seeds": 6, "seeds_better": 6, "seeds_worse": 6, "mean_difference": 0.1233, "low": 0.109, "high": 0.138,
             "p_holm": 0.0031, "verdict": "reproduced", "anytime_valid": anytime, "holds_from_epoch": 2,
             "over_training": "holds from epoch 2 of 3",
             "seeds_needed": {"observed": 3, "smallest_effect": 7, "smallest_effect_size": 0.01}}
    small = {**claim, "claim": "16x16 scores above 70x70 on FCN class IoU", "mean_difference": 0.0004, "low": -0.002,
             "p_holm": 0.42,
             "high": 0.003, "verdict": "negligible", "anytime_valid": {**anytime, "low": -0.006, "high": 0.007}}
    few = {**claim, "claim": "16x16 scores above 1x1 on FCN class IoU", "seeds": 3, "verdict": "same direction, "
           "not resolved", "anytime_valid": {**anytime, "low": None, "high": None, "bounded": False}}
    never = {**claim, "claim": "x scores above y on LPIPS", "metric": "eval/lpips", "method": "welch",
             "seeds_better": 2, "seeds_worse": 3, "holds_from_epoch": None, "sign_flips": [[2, 4]],
             "over_training": "never holds: the sign flips between epochs 2 and 4", "verdict": "other direction, "
             "not resolved", "seeds_needed": {"observed": ">1000", "smallest_effect": "n/a", "smallest_effect_size": 0.01}}
    older = {key: value for key, value in claim.items() if key != "anytime_valid"}  # a findings.json from before
    (tmp_path / "patchsize").mkdir()
    (tmp_path / "patchsize" / "findings.json").write_text(json.dumps({"sweep": "patchsize",
                                                                      "claims": [claim, small, few, never, older]}))
    lines = summary(tmp_path).splitlines()
    assert lines[0] == ("| sweep | claim | verdict | fixed protocol (spec's seeds) | difference [fixed-n 95%] | "
                        "anytime-valid interval | seeds | seeds for 80% power | holds from epoch | sign verdict (seeds) | "
                        "seeds that misbehave, shape |")
    # The fixed protocol's column: recorded where seeds were added, else the fixed-n test at the seeds at hand.
    assert lines[2] == ("| patchsize | 70x70 scores above 1x1 on FCN class IoU | reproduced | reproduced (Holm p 0.0031) "
                        "| +0.123 [0.109, 0.138] | [0.071, 0.176] (alpha 0.0125) | 6 (paired) | 3 / 7 (for 0.01) | 2 | - | - |")
    assert lines[3].startswith("| patchsize | 16x16 scores above 70x70 on FCN class IoU | negligible | same direction, "
                               "not significant (Holm p 0.42) | +0.000 [-0.002, 0.003] | [-0.006, 0.007] (alpha 0.0125) |")
    assert "| unbounded (alpha 0.0125; needs 4 seeds) | 3 (paired) |" in lines[4]
    assert lines[5].endswith("| - | 2 vs 3 (Welch) | >1000 / n/a (for 0.01) | never (sign flips 2-4) | - | - |")
    # A findings.json from before the sequential verdicts: its verdict was the fixed protocol's, and it is not counted.
    assert lines[6].startswith("| patchsize | 70x70 scores above 1x1 on FCN class IoU | - (fixed-n only) | reproduced "
                               "(Holm p 0.0031) | +0.123 [0.109, 0.138] | - |")
    assert lines[7:] == ["", "Sequential verdicts: 1 reproduced, 0 reversed, 1 negligible, 2 not resolved of 4 claims.",
                         "Judged by the earlier fixed protocol only (findings.json from before the sequential "
                         "verdicts): 1 claim."]
    # The command itself prints the same.
    proc = subprocess.run([sys.executable, "-m", "analysis.summary", str(tmp_path)], capture_output=True, text=True,
                          cwd=ROOT)
    assert proc.returncode == 0 and proc.stdout.splitlines() == lines
    proc = subprocess.run([sys.executable, "-m", "analysis.summary", str(tmp_path / "nothing")], capture_output=True,
                          text=True, cwd=ROOT)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1
    assert proc.stderr.startswith("p2p: error: ") and "no */findings.json" in proc.stderr


class NoProvenance:
    """Where a report built without MLflow comes from: nowhere worth a line."""

    def lines(self) -> list[str]:
        return []

    def record(self) -> dict:
        return {}


def test_report_findings_json_summary_and_dry_run_carry_the_new_verdicts(tmp_path):
    runs = tricks_runs(stated=True)
    found = judge_all(runs, "eval/fcn_iou")
    doc = ReportDoc(runs, "eval/fcn_iou", pd.DataFrame({"cell": runs.cells}), None, [], found, [], [], {},
                    NoProvenance(), written="2026-01-07 10:00")
    md = doc.markdown()
    # The header names the method, its references, the multiplicity correction and what negligible means.
    assert ("Differences between cells: the per-seed differences over the 6 common seeds of the two cells, judged by "
            "a t-mixture confidence sequence (Lai 1976; Wang & Ramdas 2024), prior precision c = 0.1. The verdicts read "
            "its intervals, which are anytime-valid (a confidence sequence: Howard, Ramdas, McAuliffe & Sekhon 2021)") in md
    assert "Multiplicity: Bonferroni over the 3 claims of this sweep, each interval at alpha = 0.05/3 = 0.01667" in md
    assert "negligible = it lies within +-0.01 (FCN class IoU's smallest effect of interest, `p2p/contract.py`)" in md
    assert "Verdicts: 1 reproduced, 0 reversed, 1 negligible, 1 not resolved of 3 claims." in md
    assert "- all scores above none on FCN class IoU: **negligible**, difference +0.000, anytime-valid [" in md
    assert "<b>negligible</b>" in doc.html()
    record = doc.record()
    assert (record["correction"], record["claim_alpha"]) == ("bonferroni", pytest.approx(ALPHA / 3))
    assert record["verdicts"] == "1 reproduced, 0 reversed, 1 negligible, 1 not resolved of 3 claims"
    assert [c["verdict"] for c in record["claims"]] == ["reproduced", "negligible", "same direction, not resolved"]
    (tmp_path / "tricks").mkdir()
    (tmp_path / "tricks" / "findings.json").write_text(json.dumps(record, allow_nan=False))
    table = summary(tmp_path).splitlines()
    assert "| tricks | all scores above none on FCN class IoU | negligible |" in table[3]
    assert table[-1] == "Sequential verdicts: 1 reproduced, 0 reversed, 1 negligible, 1 not resolved of 3 claims."
    # `p2p sweep --dry-run`'s lines: counted, then one per claim.
    lines = findings_lines(found, "eval/fcn_iou", 24)
    assert lines[0].startswith("  findings so far on FCN class IoU (24 finished runs): 1 reproduced, 0 reversed, "
                               "1 negligible, 1 not resolved of 3 claims; anytime-valid intervals at alpha 0.05/3")
    assert lines[2].startswith(f"    all vs none: negligible, +0.000 {found[1].interval.text(3)} (paired over 6 seeds); "
                               "seeds needed ")


def test_a_sweep_run_until_resolved_reports_its_seeds_and_the_fixed_protocol_beside(tmp_path):
    # The spec's 4 seeds (0-3), then seeds 4-9 added to every cell: the verdict reads all 10; the fixed protocol's
    # look is the paired t-test over seeds 0-3 only, Holm over the 3 claims.
    none = [0.10, 0.12, 0.11, 0.13, 0.09, 0.12, 0.10, 0.11, 0.12, 0.10]
    gains = {"label_flip": [0.03, 0.04, 0.03, 0.035, 0.04, 0.03, 0.03, 0.04, 0.035, 0.03],
             "all": [-0.001, -0.001, 0.0, 0.001, -0.002, 0.001, 0.0, -0.001, 0.001, 0.0],
             "dropout": [0.02, -0.01, 0.03, -0.02, 0.01, 0.0, 0.02, -0.01, 0.0, 0.01]}
    values = {"none": dict(enumerate(none))}
    values.update({cell: {s: none[s] + g for s, g in enumerate(gain)} for cell, gain in gains.items()})
    runs = claiming(runs_of("tricks", ["none", *gains], values))
    runs.seeds = [0, 1, 2, 3]
    assert runs.added_seeds == [4, 5, 6, 7, 8, 9] and runs.seeds_per_cell() == {c: 10 for c in runs.cells}
    found = judge_all(runs, "eval/fcn_iou")
    assert [f.diff.n for f in found] == [10, 10, 10]
    p = [stats.ttest_rel([none[s] + gains[c][s] for s in range(4)], none[:4]).pvalue for c in gains]
    assert [f.fixed.p_holm for f in found] == [pytest.approx(x) for x in holm(p)]
    assert [f.fixed.seeds for f in found] == [(0, 1, 2, 3)] * 3
    assert holm(p)[0] < 0.05 < holm(p)[2]
    assert [f.fixed.verdict for f in found] == ["reproduced", "other direction, not significant",
                                                "same direction, not significant"]
    assert (f"; the fixed 4-seed protocol (seeds 0-3, Holm) said reproduced (Holm p = {holm(p)[0]:.3f}); sign verdict "
            "**reproduced** in most seeds (10 of 10 seeds above, 0 below, 0 tied") in found[0].line()
    assert found[0].record()["fixed_protocol"] == {"seeds": [0, 1, 2, 3], "mean_difference": pytest.approx(0.03375),
                                                   "p_holm": pytest.approx(holm(p)[0]), "verdict": "reproduced"}
    # Without added seeds there is nothing to put beside: the fixed-n test is already the one at hand.
    assert all(f.fixed is None for f in judge_all(tricks_runs(), "eval/fcn_iou"))

    # The report: the seeds per cell, the protocol beside, the command that runs the same seeds again.
    doc = ReportDoc(runs, "eval/fcn_iou", pd.DataFrame({"cell": runs.cells}), None, [], found, [], [], {},
                    NoProvenance(), written="2026-01-07 10:00")
    md = doc.markdown()
    assert ("Sweep `tricks` at the `cpu` scale, run `--until-resolved`: 40 trials finished, the spec's 4 seeds per "
            "cell, then seeds added in rounds to the cells of open claims (seeds per cell: none 10, label_flip 10, "
            "all 10, dropout 10)") in md
    assert "Beside each verdict where seeds were added: what the lab's earlier fixed protocol says" in md
    record = doc.record()
    assert record["until_resolved"] is True and record["seeds_per_cell"]["dropout"] == 10
    (tmp_path / "tricks").mkdir()
    (tmp_path / "tricks" / "findings.json").write_text(json.dumps(record, allow_nan=False))
    table = summary(tmp_path).splitlines()
    assert f"| tricks | label_flip scores above none on FCN class IoU | reproduced | reproduced (Holm p {holm(p)[0]:.2g}) |" \
        in table[2]
    runs.spec_path = ROOT / "sweeps" / "tricks.yaml"
    assert reproduce_commands(runs, Path("results/cpu"))[0] == \
        ".venv/bin/p2p sweep sweeps/tricks.yaml --scale cpu --until-resolved --max-seeds 10"


def test_the_machine_line_says_what_precision_the_runs_ran_at():
    from analysis.load import _unresolved
    from analysis.provenance import provenance

    runs = runs_of("tricks", ["none", "all"], {"none": {0: 0.1, 1: 0.2}, "all": {0: 0.1, 1: 0.3}})
    frame = runs.trials.assign(start_time=[0, 0, 0, 0], end_time=[60_000] * 4, git_commit="a" * 40,
                               machine="AMD EPYC, 2 cores, AVX512",
                               precision=["bf16", "bf16", "bf16", _unresolved("auto")])
    runs.trials = frame
    lines = provenance(runs, Path("results/cpu")).lines()
    assert lines[1] == ("Machine: AMD EPYC, 2 cores, AVX512, bf16 (3 runs); AMD EPYC, 2 cores, AVX512, precision auto "
                        "(resolved value not recorded) (1 run).")
    assert _unresolved("fp32") == "fp32" and _unresolved(None) is None

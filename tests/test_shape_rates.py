"""The shape check (analysis/shape.py): its rule at the edges, its words, and how often it fails by simulation,
Gaussian claims (it should rarely) and misbehaving ones (it should, given seeds enough)."""

import math

import numpy as np
import pytest
from scipy import stats

from analysis.misbehaving import BY_NAME
from analysis.shape import ShapeCheck, check_shape, rule_fires, shape_statistics

CLAIMS = 4_000  # simulated claims per case: a rate is known to about +-1.5% (two standard errors at 50%)


def test_a_gaussian_sample_passes_a_lognormal_one_of_30_fails_and_2_cannot_be_checked():
    rng = np.random.default_rng(2921)
    gaussian = check_shape(rng.normal(0.02, 0.01, 12))
    assert gaussian.checkable and not gaussian.fails and gaussian.n == 12
    assert gaussian.shapiro_p == pytest.approx(stats.shapiro(np.random.default_rng(2921).normal(0.02, 0.01, 12)).pvalue)
    assert gaussian.text().endswith(": nothing against the Gaussian assumption (a weak check with 12 seeds)")
    skewed = check_shape(rng.lognormal(0.0, 1.0, 30) - 1.0)
    assert skewed.fails and skewed.failed_by == ("shapiro", "skew") and skewed.skew > 1 and skewed.kurtosis > 1
    assert skewed.text().endswith(": not Gaussian-looking — read the sign verdict")
    two = check_shape([0.1, 0.2])
    assert not two.checkable and not two.fails
    assert two.text() == "shape not checkable with 2 differences (Shapiro-Wilk needs 5)"
    assert two.record()["shapiro_p"] is None and two.record()["checkable"] is False
    # Nan values are left out; equal values have no shape; 3 values have no kurtosis (its correction needs 4).
    assert check_shape([0.1, math.nan, 0.2]).n == 2
    assert check_shape([0.05] * 6).text() == "all 6 differences are equal: no shape to check"
    # 3 or 4 values are not checked: with so few, one tie makes Shapiro-Wilk reject (0.12, 0.13, 0.12: p 2e-15)
    assert not check_shape([0.12, 0.13, 0.12]).checkable and not check_shape([0.12, 0.13, 0.12, 0.2]).fails
    five = check_shape([0.1, 0.3, 0.25, 0.2, 0.22])
    assert five.checkable and five.text().endswith("(a weak check with 5 seeds)")


def test_the_rule_at_its_edges():
    assert rule_fires(20, 1.01, 0.2) == (False, True) and rule_fires(19, 1.5, 0.2) == (False, False)  # skew from 20
    assert rule_fires(30, -1.01, 0.2) == (False, True) and rule_fires(30, 0.99, 0.0499) == (True, False)
    assert rule_fires(30, 0.5, 0.05) == (False, False)  # p < 0.05, strictly
    check = ShapeCheck(n=21, skew=2.1, kurtosis=5.3, shapiro_p=0.003)
    assert check.fails and check.failed_by == ("shapiro", "skew")
    assert check.text() == ("differences skew +2.10, excess kurtosis 5.3, Shapiro-Wilk p = 0.003: not Gaussian-looking — "
                            "read the sign verdict")
    assert ShapeCheck(n=21, skew=-1.2, kurtosis=0.4, shapiro_p=0.3).failed_by == ("skew",)
    assert ShapeCheck(n=9, skew=-1.2, kurtosis=0.4, shapiro_p=0.3).failed_by == ()
    record = ShapeCheck(n=21, skew=-1.2, kurtosis=0.4, shapiro_p=0.3).record()
    assert record["fails"] and record["failed_by"] == ["skew"] and "Shapiro-Wilk p < 0.05" in record["rule"]
    # The vectorised statistics are check_shape's own, claim by claim.
    x = np.random.default_rng(2922).lognormal(0.0, 0.5, (5, 10))
    skew, kurtosis, p = shape_statistics(x)
    for row, s, k, q in zip(x, skew, kurtosis, p):
        one = check_shape(row)
        assert (one.skew, one.kurtosis, one.shapiro_p) == pytest.approx((s, k, q))


def fail_rate(x: np.ndarray) -> float:
    skew, _, p = shape_statistics(x)
    by_shapiro, by_skew = rule_fires(x.shape[-1], skew, p)
    return float((by_shapiro | by_skew).mean())


def test_how_often_the_check_fails():
    # Measured with these draws (4,000 claims each); each asserted within 3 standard errors or a bound.
    rng = np.random.default_rng(2923)
    rates = {}
    for name, seeds in (("Gaussian", 8), ("Gaussian", 10), ("Gaussian", 20), ("Gaussian", 30),
                        ("lognormal, sigma 1", 10), ("lognormal, sigma 1", 30), ("5% collapse", 10), ("5% collapse", 30),
                        ("10% collapse", 10)):
        rates[name, seeds] = fail_rate(BY_NAME[name].sample(rng, (CLAIMS, seeds), "mean"))
    print({k: f"{100 * v:.1f}%" for k, v in rates.items()})
    # Gaussian: Shapiro-Wilk alone errs 5% at any n; the skew rule (from 20 seeds) adds a few chance failures.
    margin = 3 * math.sqrt(0.05 * 0.95 / CLAIMS)
    assert rates["Gaussian", 30] <= 0.05 + margin  # measured 5.4%
    assert rates["Gaussian", 8] <= 0.05 + margin and rates["Gaussian", 10] <= 0.05 + margin  # measured 4.9%, 5.5%
    assert rates["Gaussian", 20] <= 0.10  # measured 7.6%
    # Misbehaving shapes: caught more often with more seeds, and reliably by 30 for the gross ones.
    assert rates["lognormal, sigma 1", 30] > 0.97 and rates["lognormal, sigma 1", 10] > 0.55  # measured 99%, 62%
    assert rates["5% collapse", 30] > 0.75 and rates["5% collapse", 10] > 0.35  # measured 80%, 43%
    assert rates["10% collapse", 10] > 0.6  # measured 69%

"""Anytime-valid verdicts (analysis/sequential.py), checked by integration and by simulating thousands of sweeps.

Each simulation draws every synthetic sweep's per-seed differences at once (numpy, one fixed generator) and
reads the verdict after every seed, as a lab that keeps adding seeds and re-reading its report would.
"""

import math

import numpy as np
import pytest
from scipy import integrate, stats

from analysis import paper
from analysis.findings import ALPHA
from analysis.power import FEWEST_SEEDS, MAX_SEEDS, first_reaching, load_effect_sizes, paired_power
from analysis.sequential import (
    ABOVE,
    BELOW,
    MIXTURE_PRECISION,
    NEGLIGIBLE,
    OPEN,
    half_width,
    log_e_value,
    min_seeds,
    resolve,
    running_moments,
    sequence,
    tally,
)

SWEEPS = 20_000  # synthetic sweeps per simulation: a rate near 5% is then known to about +-0.3%
LOOKS = 30  # the verdict is read after every seed, from the method's minimum up to this many
EFFECT = load_effect_sizes()["eval/fcn_iou"]  # the smallest effect of interest of the headline score (0.01)


def verdicts(x: np.ndarray, alpha: float = ALPHA, effect: float = EFFECT) -> np.ndarray:
    """The verdict code (sequential.ABOVE/BELOW/NEGLIGIBLE/OPEN) after each seed: x[..., :n] for n = 1..N."""
    n, mean, sd = running_moments(x)
    width = half_width(sd, n, alpha)
    return resolve(mean - width, mean + width, effect)


def mixture_by_integration(x: list[float], mu: float, c: float) -> float:
    """M_n(mu) from its definition: the scale-invariant likelihood ratio (sigma out with d sigma / sigma, as
    u = 1 / sigma), mixed over the standardised effect theta ~ N(0, 1/c); by numerical integration
    (over where the integrands live: 10 prior sds of theta, 12 x the data's scale of u)."""
    d = np.asarray(x) - mu
    n, s, v = len(d), d.sum(), (d**2).sum()
    scale = 1 / math.sqrt(c)

    def prior(t):  # N(0, 1/c), by hand: scipy's frozen pdf per point would take seconds here
        return math.exp(-t * t / (2 * scale**2)) / (scale * math.sqrt(2 * math.pi))

    top_u = 12 * math.sqrt(n / v)
    top, _ = integrate.dblquad(lambda u, t: u ** (n - 1) * math.exp(-v * u * u / 2 + t * s * u - n * t * t / 2) * prior(t),
                               -10 * scale, 10 * scale, 0, top_u, epsrel=1e-8)
    bottom, _ = integrate.quad(lambda u: u ** (n - 1) * math.exp(-v * u * u / 2), 0, top_u)
    return top / bottom


def test_the_closed_form_is_the_mixture_it_claims_to_be():
    x = [0.3, 1.1, 0.7, 1.6, 0.2]
    for mu, c in ((0.0, MIXTURE_PRECISION), (0.5, MIXTURE_PRECISION), (-0.4, 1.0)):
        d = np.asarray(x)
        closed = math.exp(log_e_value(d.mean(), d.std(ddof=1), len(d), mu, c))
        assert closed == pytest.approx(mixture_by_integration(x, mu, c), rel=1e-7)
    # One value says nothing about a scale-free effect: M_1 = 1 (the martingale starts at 1).
    assert math.exp(log_e_value(0.7, 0.0, 1, 0.0)) == 1.0


def test_the_interval_ends_are_where_the_evidence_reaches_1_over_alpha():
    d = np.array([0.021, 0.034, 0.012, 0.027, 0.030, 0.018])
    mean, sd, n = d.mean(), d.std(ddof=1), len(d)
    for alpha in (0.05, 0.0125):
        iv = sequence(mean, sd, n, alpha)
        for end in (iv.low, iv.high):
            assert log_e_value(mean, sd, n, end) == pytest.approx(math.log(1 / alpha))
        assert log_e_value(mean, sd, n, mean) < math.log(1 / alpha)  # the mean itself is always inside
        assert iv.log_e == pytest.approx(float(log_e_value(mean, sd, n, 0.0)))
        assert (iv.low > 0) == (iv.e_value >= 1 / alpha)  # excludes 0 exactly when the e-value for 0 is 1/alpha


def test_how_wide_it_is_and_how_many_seeds_it_needs():
    # Unbounded at 2 seeds at any sensible alpha; 3 suffice for one claim at 0.05, 4 for up to 13 claims.
    assert math.isinf(half_width(1.0, 2, 0.05)) and math.isnan(half_width(1.0, 1, 0.05))
    assert min_seeds(0.05) == 3 and min_seeds(0.05 / 13) == 4 and min_seeds(0.05 / 14) == 5
    for alpha in (0.05, 0.05 / 4, 0.05 / 6):
        n = min_seeds(alpha)
        assert math.isfinite(half_width(1.0, n, alpha)) and math.isinf(half_width(1.0, n - 1, alpha))
    # The price of looking at every seed, against the fixed-n t-interval at the same alpha: about 2x at
    # 4 seeds, about 1.8x from 10 seeds on (the t-interval is valid at one look only).
    def ratio(n, alpha):
        return half_width(1.0, n, alpha) / (stats.t.ppf(1 - alpha / 2, n - 1) / math.sqrt(n))

    assert 2.0 < ratio(4, 0.05) < 2.1 and 2.2 < ratio(4, 0.05 / 4) < 2.3
    assert all(1.6 < ratio(n, 0.05) < 1.9 for n in (10, 20, 30))
    # Zero spread (common random numbers): a point, at the mean.
    assert half_width(0.0, 4, 0.05) == 0.0 and sequence(0.25, 0.0, 4, 0.05).text() == "[0.250, 0.250]"


def test_resolve_reads_negligible_first_then_the_side_of_0():
    assert resolve(0.02, 0.05, 0.01) == ABOVE and resolve(-0.05, -0.02, 0.01) == BELOW
    assert resolve(-0.005, 0.008, 0.01) == NEGLIGIBLE and resolve(0.002, 0.008, 0.01) == NEGLIGIBLE
    assert resolve(-0.005, 0.02, 0.01) == OPEN and resolve(-math.inf, math.inf, 0.01) == OPEN
    assert resolve(math.nan, math.nan, 0.01) == OPEN and resolve(-0.005, 0.008, math.nan) == OPEN
    assert tally(["reproduced", "negligible", "same direction, not resolved", "missing"]) == (
        "1 reproduced, 0 reversed, 1 negligible, 1 not resolved, 1 missing a cell of 4 claims")


def test_no_effect_gives_a_false_verdict_at_most_alpha_of_the_time_looking_after_every_seed():
    rng = np.random.default_rng(1901)
    x = rng.normal(0.0, 3 * EFFECT, (SWEEPS, LOOKS))
    codes = verdicts(x)[:, 1:]  # looks at 2..30 seeds (2 is never bounded: no verdict there)
    false = ((codes == ABOVE) | (codes == BELOW)).any(axis=1).mean()
    assert false <= ALPHA  # measured: 2.8%
    # What the old reading did with the same draws: a fixed-n paired t-test at 0.05 after every seed.
    n, mean, sd = running_moments(x)
    t = np.abs(mean[:, 1:]) / (sd[:, 1:] / np.sqrt(n[1:]))
    naive = (t > stats.t.ppf(1 - ALPHA / 2, n[1:] - 1)).any(axis=1).mean()
    assert naive > 0.25  # measured: 30%; the test above would catch a method this loose


def test_a_sweep_of_four_claims_stays_family_wise_at_alpha():
    # The patchsize sweep's claims share cells (70x70 vs 1x1 and 16x16 vs 1x1 both read 1x1), so they are
    # correlated; Bonferroni does not mind. Each cell's score per seed: a seed effect all cells share
    # (common random numbers, it cancels in a difference) plus the cell's own noise; no cell is better.
    rng = np.random.default_rng(1902)
    cells = ["1x1", "16x16", "70x70", "286x286"]
    seed_effect = rng.normal(0, 0.05, (SWEEPS // 4, LOOKS))
    score = {c: 0.2 + seed_effect + rng.normal(0, 2 * EFFECT, seed_effect.shape) for c in cells}
    claims = paper.CLAIMS["patchsize"]
    wrong = np.zeros(SWEEPS // 4, dtype=bool)
    for claim in claims:
        codes = verdicts(score[claim.better] - score[claim.worse], ALPHA / len(claims))[:, 1:]
        wrong |= ((codes == ABOVE) | (codes == BELOW)).any(axis=1)
    assert wrong.mean() <= ALPHA  # measured: 2.4%


def test_a_true_effect_of_one_sd_is_resolved_within_1_5x_the_seeds_a_fixed_design_plans():
    planned = first_reaching(paired_power(1.0, 1.0, np.arange(FEWEST_SEEDS, MAX_SEEDS + 1), ALPHA))
    assert planned == 10
    rng = np.random.default_rng(1903)
    sd, horizon = 3 * EFFECT, 80  # d = 1, three times the smallest effect (not negligible)
    codes = verdicts(rng.normal(sd, sd, (SWEEPS, horizon)))
    resolved = codes != OPEN
    # Seeds at the first resolving look; a sweep still open at `horizon` counts as horizon + 1 (too few, not too many).
    first = np.where(resolved.any(axis=1), resolved.argmax(axis=1) + 1, horizon + 1)
    assert first.mean() <= 1.5 * planned  # measured: 14.4 seeds on average (median 13); 96% resolved by 30
    assert (codes[np.arange(SWEEPS), np.minimum(first, horizon) - 1] == ABOVE).mean() > 0.999  # and rightly


def test_negligible_is_reached_for_no_difference_with_a_small_spread_and_rarely_wrongly():
    rng = np.random.default_rng(1904)
    codes = verdicts(rng.normal(0.0, EFFECT / 4, (SWEEPS, LOOKS)))[:, 1:]
    negligible = codes == NEGLIGIBLE
    assert negligible.any(axis=1).mean() > 0.99  # measured: all of them, at 4 seeds (median; mean 4.2)
    assert np.median(np.where(negligible.any(axis=1), negligible.argmax(axis=1) + 2, LOOKS + 1)) <= 5
    # A spread as large as the effect of interest takes many more seeds: mean 19.5, 92% by 30.
    wide = verdicts(rng.normal(0.0, EFFECT, (SWEEPS // 4, LOOKS)))[:, 1:] == NEGLIGIBLE
    assert wide.any(axis=1).mean() > 0.85
    # A difference exactly the size of the effect of interest is not negligible: that verdict is wrong there,
    # and (the interval holding at every look) is given at most alpha of the time.
    edge = verdicts(rng.normal(EFFECT, EFFECT / 4, (SWEEPS, LOOKS)))[:, 1:] == NEGLIGIBLE
    assert edge.any(axis=1).mean() <= ALPHA  # measured: 1.5%

"""The sign verdict (analysis/signs.py): its closed form by integration, its counts and words, and its error and power
by simulating thousands of claims read after every seed (analysis/misbehaving.py draws the shapes) and exactly,
by dynamic programming over the counts."""

import math

import numpy as np
import pytest
from scipy import integrate, stats

from analysis.misbehaving import BY_NAME, exact_sign_rate, sign_verdict_given
from analysis.signs import ABOVE, BELOW, OPEN, e_table, seeds_to_resolve, sign_e_values, sign_verdict

CLAIMS = 20_000  # simulated claims per shape
LOOKS = 30  # read after every seed, 1 to 30


def mixture_by_integration(k: int, n: int) -> float:
    """E_n from its definition: the bet's wealth prod(1 + lambda (2 x_i - 1)), k wins of n, averaged over lambda ~ U[0, 1]."""
    value, _ = integrate.quad(lambda lam: (1 + lam) ** k * (1 - lam) ** (n - k), 0.0, 1.0, epsabs=0, epsrel=1e-12)
    return value


def test_the_closed_form_is_the_mixture_it_claims_to_be():
    table = e_table(40)
    for n in (1, 2, 3, 7, 8, 14, 30, 40):
        for k in sorted({0, 1, n // 2, (3 * n) // 4, n - 1, n}):
            assert table[n - 1, k] == pytest.approx(mixture_by_integration(k, n), rel=1e-9), (k, n)
    # All one way it is (2^(n+1) - 1) / (n + 1): 8 seeds reach 40 (alpha 0.05, each side at 0.025), 7 do not.
    assert table[7, 8] == pytest.approx(511 / 9) and table[6, 7] == pytest.approx(255 / 8) and 255 / 8 < 40
    assert math.isnan(table[2, 4])  # 4 wins in 3 looks: no such count


def test_e_values_run_along_the_last_axis_of_many_sequences_at_once():
    rng = np.random.default_rng(2911)
    wins = (rng.random((50, 12)) < 0.6).astype(int)
    together = sign_e_values(wins)
    assert together.shape == (50, 12)
    for row, e in zip(wins, together):
        k = np.cumsum(row)
        assert np.allclose(e, [mixture_by_integration(int(k[i]), i + 1) for i in range(12)], rtol=1e-9)
    assert sign_e_values(np.array([1, 0, 1])) == pytest.approx([1.5, 2 / 3, 11 / 12])
    with pytest.raises(ValueError, match="0s and 1s"):
        sign_e_values(np.array([1, 2]))


def test_seeds_to_resolve_all_one_way():
    assert seeds_to_resolve(0.05) == 8 and seeds_to_resolve(0.05 / 4) == 10 and seeds_to_resolve(0.05 / 6) == 11
    for alpha in (0.05, 0.0125, 0.001):
        n = seeds_to_resolve(alpha)
        assert sign_verdict([0.01] * n, alpha).result == ABOVE
        assert sign_verdict([-0.01] * (n - 1), alpha).result == OPEN
        assert sign_verdict([-0.01] * n, alpha).result == BELOW


def test_counts_ties_against_and_reads_the_running_maximum():
    v = sign_verdict([0.02] * 11 + [-0.01] * 3, 0.05)
    assert (v.above, v.below, v.ties, v.n) == (11, 3, 0, 14)
    assert v.counts_text() == "11 of 14 seeds above, 3 below, 0 tied"
    # The e-process peaked at 11 wins of 11 ((2^12 - 1) / 12 = 341.25) and fell after the 3 losses; the verdict
    # is read at every look, so the peak decides (the same seeds in another order peak lower).
    assert v.e_above == pytest.approx(4095 / 12) and v.result == ABOVE
    assert v.e_below == pytest.approx(0.5)  # the best 'below' look: the first seed, a loss (E_1 = 1/2)
    mixed = sign_verdict([0.02, -0.01] * 3 + [0.02] * 8, 0.05)
    assert mixed.above == 11 and mixed.e_above == pytest.approx(e_table(14)[13, 11]) and mixed.e_above < v.e_above
    # A tie is a loss for both directions: 8 wins and a tie is weaker than 8 wins alone.
    tied = sign_verdict([0.01] * 8 + [0.0], 0.05)
    assert tied.ties == 1 and tied.counts_text() == "8 of 9 seeds above, 0 below, 1 tied"
    assert tied.e_above == pytest.approx(511 / 9)  # the peak at 8 seeds; the tie after it cannot undo it
    assert sign_verdict([0.0] + [0.01] * 8, 0.05).e_above == pytest.approx(e_table(9)[8, 8]) and e_table(9)[8, 8] < 511 / 9
    assert sign_verdict([0.0] * 20, 0.05).result == OPEN  # all tied: no evidence either way, ever


def test_words_and_record():
    v = sign_verdict([0.02] * 11 + [-0.01] * 3, 0.05)
    assert v.text() == "sign test: 11 of 14 seeds above, 3 below, 0 tied: above (e-value 341 >= 40, alpha 0.05)"
    record = v.record()
    assert record["result"] == "above" and record["threshold"] == 40.0 and record["alpha"] == 0.05
    assert (record["above"], record["below"], record["ties"], record["seeds_to_resolve"]) == (11, 3, 0, 8)
    assert record["e_above"] == pytest.approx(341.25)
    few = sign_verdict([0.01, 0.02, -0.01], 0.0125)
    assert few.result == OPEN and few.text().endswith("160 decides at alpha 0.0125, 10 seeds all one way at the fewest)")
    assert sign_verdict([], 0.05).e_above == 1.0 and sign_verdict([], 0.05).n == 0
    with pytest.raises(ValueError, match="nan"):
        sign_verdict([0.1, math.nan], 0.05)


@pytest.mark.parametrize("alpha", [0.05, 0.0125])
def test_no_majority_gives_a_false_verdict_at_most_alpha_of_the_time_whatever_the_shape(alpha):
    exact = exact_sign_rate(LOOKS, alpha)  # any continuous median-0 shape: the signs are fair coins
    assert exact <= alpha  # 1.89% at 0.05, 0.43% at 0.0125: Ville's bound is not tight with 30 looks
    rng = np.random.default_rng(2912 if alpha == 0.05 else 2913)
    # The simulation must agree with the exact rate within 4 binomial standard errors (0.38% at 0.05,
    # 0.19% at 0.0125 with 20,000 claims): a miss there is a bug, not chance (1 in 15,000).
    margin = 4 * math.sqrt(exact * (1 - exact) / CLAIMS)
    for name in ("Gaussian", "lognormal, sigma 1", "5% collapse", "10% collapse"):
        x = BY_NAME[name].sample(rng, (CLAIMS, LOOKS), "median")
        rate = sign_verdict_given(x, alpha).mean()
        assert abs(rate - exact) <= margin, (name, rate, exact)
        assert rate <= alpha, (name, rate)


def test_ties_only_make_it_more_cautious():
    # Scores rounded to the score's digits tie: here 20% of seeds, the others split evenly.
    assert exact_sign_rate(LOOKS, 0.05, 0.4, 0.4) < exact_sign_rate(LOOKS, 0.05)  # 0.20% against 1.89%
    # H0's edge with ties: as many above as not above (ties and losses), P(d > 0) = 1/2 exactly.
    assert exact_sign_rate(LOOKS, 0.05, 0.5, 0.4) <= 0.05 / 2  # 1.05%, the 'above' side's share of alpha
    rng = np.random.default_rng(2914)
    x = rng.choice([-1.0, 0.0, 1.0], size=(CLAIMS, LOOKS), p=[0.4, 0.2, 0.4])
    assert sign_verdict_given(x, 0.05).mean() <= 0.005  # measured 0.2%, as the exact rate says


def test_a_clear_majority_is_found_so_the_error_test_could_fail():
    # 80% of seeds above (a difference with median > 0): resolved 'above' by 30 seeds in 74% of claims at 0.05,
    # 55% at 0.0125 (exact); a verdict that never spoke would pass the error test above and fail this one.
    rng = np.random.default_rng(2915)
    x = np.where(rng.random((CLAIMS, LOOKS)) < 0.8, 1.0, -1.0) * rng.lognormal(0.0, 1.0, (CLAIMS, LOOKS))
    for alpha, exact in ((0.05, 0.737), (0.0125, 0.554)):
        above = (sign_e_values((x > 0).astype(int)) >= 2 / alpha).any(axis=1).mean()
        assert above == pytest.approx(exact, abs=0.015)
        assert exact_sign_rate(LOOKS, alpha, 0.8) == pytest.approx(exact, abs=0.001)
    # ... and never 'below' (a false verdict the other way): that needs a majority of the 20% below.
    assert (sign_e_values((x < 0).astype(int)) >= 40).any(axis=1).mean() < 0.001
    # What it costs on Gaussian seeds, where the mean verdict is the right tool: a shift of one sd (84% of seeds
    # above) is resolved by 30 seeds in 89% of claims (the mean verdict: 96%, tests/test_sequential.py).
    assert exact_sign_rate(LOOKS, 0.05, stats.norm.cdf(1.0)) == pytest.approx(0.887, abs=0.001)


def test_it_answers_a_different_question_from_the_mean_verdict():
    # Mean 0 is not median 0. Lognormal (sigma 1) differences centred at mean 0 put 31% of seeds above 0
    # (P(Z > 0.5)): the typical seed is worse, and the sign verdict says 'below' by 30 seeds in 27% of claims at
    # 0.05, rightly about the majority. A 10% collapse centred at mean 0 puts 76% of seeds above 0 (0.9 P(Z > -1)):
    # 'above' in 54%. The mean verdict reads the mean; where they disagree, the seeds are skewed or collapsing.
    p_lognormal, p_collapse = 1 - stats.norm.cdf(0.5), 0.9 * stats.norm.cdf(1.0)
    assert exact_sign_rate(LOOKS, 0.05, p_lognormal) == pytest.approx(0.269, abs=0.001)
    assert exact_sign_rate(LOOKS, 0.05, p_collapse) == pytest.approx(0.542, abs=0.001)
    rng = np.random.default_rng(2916)
    x = BY_NAME["lognormal, sigma 1"].sample(rng, (CLAIMS, LOOKS), "mean")
    below = (sign_e_values((x < 0).astype(int)) >= 40).any(axis=1).mean()
    assert below == pytest.approx(0.269, abs=0.013)  # 4 standard errors
    x = BY_NAME["10% collapse"].sample(rng, (CLAIMS, LOOKS), "mean")
    above = (sign_e_values((x > 0).astype(int)) >= 40).any(axis=1).mean()
    assert above == pytest.approx(0.542, abs=0.014)

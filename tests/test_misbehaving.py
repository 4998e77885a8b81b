"""The mean verdict's false-verdict rate when the seeds misbehave: the t-mixture confidence sequence
(analysis.sequential's running_moments and half_width, through analysis.misbehaving.mean_verdict_given) read after
every seed from 2 to 30, on differences of mean 0 drawn from the shapes of docs/verdicts.md's table.

The Gaussian and the symmetric heavy-tailed shapes stay under alpha; the skewed and collapsing ones do not, which
is why every mean verdict has a sign verdict beside it (tests/test_signs.py: that one stays under alpha for all).
"""

import math

import numpy as np
import pytest

from analysis.misbehaving import BY_NAME, LOOKS, SHAPES, Rates, mean_verdict_given, table

CLAIMS = 10_000  # per shape; `python -m analysis.misbehaving` uses 20,000 for the table in docs/verdicts.md

# docs/verdicts.md's table (20,000 claims per shape, looks 2..30): the mean verdict's rate at alpha 0.05, 0.0125.
DOCUMENTED = {
    "Gaussian": (0.025, 0.005),
    "Student t, 3 df": (0.016, 0.003),
    "10% of values x5": (0.021, 0.004),
    "lognormal, sigma 0.5": (0.075, 0.029),
    "lognormal, sigma 1": (0.220, 0.132),
    "5% collapse": (0.139, 0.065),
    "10% collapse": (0.284, 0.190),
}
WELL_BEHAVED = ("Gaussian", "Student t, 3 df", "10% of values x5")


def standard_error(rate: float, claims: int) -> float:
    return math.sqrt(max(rate * (1 - rate), 1e-4) / claims)


@pytest.mark.parametrize("alpha", [0.05, 0.0125])
def test_the_mean_verdict_holds_alpha_only_for_well_behaved_seeds(alpha):
    rng = np.random.default_rng(2931 if alpha == 0.05 else 2932)
    column = 0 if alpha == 0.05 else 1
    measured = {}
    for shape in SHAPES:
        x = shape.sample(rng, (CLAIMS, LOOKS), "mean")
        assert abs(x.mean()) < 0.01 * x.std()  # centred at mean 0: any verdict is false
        measured[shape.name] = rate = float(mean_verdict_given(x, alpha).mean())
        documented = DOCUMENTED[shape.name][column]
        # This draw and the documented one (other draws, twice the claims) agree within 4 standard errors of the
        # difference of two estimates: a miss means the table is stale or the method changed.
        margin = 4 * math.sqrt(standard_error(documented, CLAIMS) ** 2 + standard_error(documented, 2 * CLAIMS) ** 2)
        assert abs(rate - documented) <= margin, (shape.name, rate, documented)
        if shape.name in WELL_BEHAVED:
            assert rate <= alpha, (shape.name, rate)
        else:  # clearly over alpha: by more than 4 standard errors
            assert rate - 4 * standard_error(rate, CLAIMS) > alpha, (shape.name, rate)
    print(f"alpha {alpha:g}: " + ", ".join(f"{name} {100 * r:.1f}%" for name, r in measured.items()))


def test_the_shapes_are_what_their_names_say():
    rng = np.random.default_rng(2933)
    collapse = BY_NAME["10% collapse"].sample(rng, (200_000,), "median")
    assert np.median(collapse) == pytest.approx(0.0, abs=3e-4)  # half the seeds above 0, half below
    assert (collapse < -0.15).mean() == pytest.approx(0.10, abs=0.003)  # the collapsed seeds, 0.2 under the rest
    skewed = BY_NAME["lognormal, sigma 1"].sample(rng, (200_000,), "mean")
    assert skewed.mean() == pytest.approx(0.0, abs=0.02) and np.median(skewed) == pytest.approx(1 - math.exp(0.5), abs=0.01)
    assert (skewed > 0).mean() < 0.35  # mean 0, yet most seeds below it: the median and the mean disagree
    with pytest.raises(ValueError, match="centre"):
        BY_NAME["Gaussian"].sample(rng, (3,), "mode")


def test_the_table_prints_each_shape_and_rate():
    text = table([Rates("Gaussian", {0.05: 0.0251, 0.0125: 0.0049}, {0.05: 0.0189, 0.0125: 0.0043})])
    assert text.splitlines()[2] == "| Gaussian | 2.5% | 0.5% | 1.9% | 0.4% |"
    assert text.splitlines()[0].startswith("| shape of the differences | mean verdict at 0.05 (mean 0) |")

"""Seeds that misbehave, simulated: how often each verdict is falsely given when the per-seed differences are
not Gaussian. The table of docs/verdicts.md ("When the seeds misbehave"); `python -m analysis.misbehaving`
prints it, and tests/test_signs.py and tests/test_misbehaving.py assert on it.

Every shape is drawn for many claims at once (claims x looks, numpy, one fixed generator) and centred so that
there is no difference to find: at mean 0 for the mean verdict (analysis/sequential.py), whose null is
"mean 0"; at median 0 for the sign verdict (analysis/signs.py), whose null is "as many seeds above as below".
Each claim is read after every seed, as a sweep that keeps adding seeds and re-reading its report would.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy import stats

from analysis.sequential import half_width, running_moments
from analysis.signs import e_table, sign_e_values, threshold

CLAIMS = 20_000  # simulated claims per shape: a rate near 5% is then known to about +-0.3% (two standard errors)
LOOKS = 30  # read after every seed up to this many
ALPHAS = (0.05, 0.0125)  # one claim at 0.05; one of a sweep's 4 claims (Bonferroni)
COLLAPSED = -0.2  # a collapsed seed's difference; the others' spread is COLLAPSE_SD
COLLAPSE_SD = 0.02


def _collapse(share: float) -> Callable[[np.random.Generator, tuple], np.ndarray]:
    def draw(rng: np.random.Generator, size: tuple) -> np.ndarray:
        return np.where(rng.random(size) < share, COLLAPSED, rng.normal(0.0, COLLAPSE_SD, size))

    return draw


def _collapse_median(share: float) -> float:
    """The median of the collapse mixture: the point mass lies below it, so (1 - share) Phi(m / sd) = 1/2 - share."""
    return float(COLLAPSE_SD * stats.norm.ppf((0.5 - share) / (1 - share)))


def _scaled_tail(rng: np.random.Generator, size: tuple) -> np.ndarray:
    return rng.normal(0.0, 1.0, size) * np.where(rng.random(size) < 0.1, 5.0, 1.0)


def _lognormal(sigma: float) -> Callable[[np.random.Generator, tuple], np.ndarray]:
    def draw(rng: np.random.Generator, size: tuple) -> np.ndarray:
        return rng.lognormal(0.0, sigma, size)

    return draw


@dataclass(frozen=True)
class Shape:
    """A distribution of per-seed differences, with its mean and median (to centre it at either)."""

    name: str
    draw: Callable[[np.random.Generator, tuple], np.ndarray]
    mean: float
    median: float

    def sample(self, rng: np.random.Generator, size: tuple, centre: str) -> np.ndarray:
        """Draws centred at 'mean' (mean 0) or 'median' (median 0)."""
        if centre not in ("mean", "median"):
            raise ValueError(f"centre is 'mean' or 'median', got {centre!r}")
        return self.draw(rng, size) - (self.mean if centre == "mean" else self.median)


SHAPES = (
    Shape("Gaussian", lambda rng, size: rng.normal(0.0, 1.0, size), 0.0, 0.0),
    Shape("Student t, 3 df", lambda rng, size: rng.standard_t(3, size), 0.0, 0.0),
    Shape("10% of values x5", _scaled_tail, 0.0, 0.0),
    Shape("lognormal, sigma 0.5", _lognormal(0.5), float(np.exp(0.5**2 / 2)), 1.0),
    Shape("lognormal, sigma 1", _lognormal(1.0), float(np.exp(0.5)), 1.0),
    Shape("5% collapse", _collapse(0.05), 0.05 * COLLAPSED, _collapse_median(0.05)),
    Shape("10% collapse", _collapse(0.10), 0.10 * COLLAPSED, _collapse_median(0.10)),
)
BY_NAME = {shape.name: shape for shape in SHAPES}


def mean_verdict_given(x: np.ndarray, alpha: float) -> np.ndarray:
    """Per claim (row of x), whether the mean verdict's interval (analysis.sequential: running_moments, half_width)
    excluded 0 at any look from 2 seeds to x.shape[-1]: a verdict given where there is none to give under mean 0."""
    n, mean, sd = running_moments(x)
    width = half_width(sd, n, alpha)  # nan at 1 seed, inf while unbounded: both compare False below
    return ((mean - width > 0) | (mean + width < 0)).any(axis=-1)


def sign_verdict_given(x: np.ndarray, alpha: float) -> np.ndarray:
    """Per claim, whether either sign e-process reached 2 / alpha at any look from 1 seed on (ties count against)."""
    bar = threshold(alpha)
    return (sign_e_values((x > 0).astype(int)) >= bar).any(axis=-1) | (sign_e_values((x < 0).astype(int)) >= bar).any(axis=-1)


def exact_sign_rate(looks: int, alpha: float, p_above: float = 0.5, p_below: float | None = None) -> float:
    """P(the sign verdict is given, either way, by `looks` seeds) exactly, by dynamic programming over the counts
    (seeds above, seeds below): each seed is above with p_above, below with p_below (1 - p_above by default), tied
    otherwise. With p_above = p_below = 1/2 it is the false-verdict rate under any continuous median-0 shape."""
    p_below = 1.0 - p_above if p_below is None else p_below
    p_tie = 1.0 - p_above - p_below
    table, bar = e_table(looks), threshold(alpha)
    alive = np.zeros((looks + 1, looks + 1))  # [above, below]: mass not yet decided
    alive[0, 0] = 1.0
    decided = 0.0
    for n in range(1, looks + 1):
        step = alive * p_tie
        step[1:, :] += alive[:-1, :] * p_above
        step[:, 1:] += alive[:, :-1] * p_below
        up, down = np.arange(looks + 1)[:, None], np.arange(looks + 1)[None, :]
        possible = up + down <= n
        e_up = np.where(possible, table[n - 1, np.minimum(up, n)], 0.0)
        e_down = np.where(possible, table[n - 1, np.minimum(down, n)], 0.0)
        hit = possible & ((e_up >= bar) | (e_down >= bar))
        decided += step[hit].sum()
        alive = np.where(hit, 0.0, step)
    return float(decided)


@dataclass(frozen=True)
class Rates:
    """The false-verdict rates of one shape: the mean verdict under mean 0, the sign verdict under median 0."""

    shape: str
    mean_verdict: dict[float, float]  # alpha -> rate
    sign_verdict: dict[float, float]


def rates(claims: int = CLAIMS, looks: int = LOOKS, alphas: tuple[float, ...] = ALPHAS, seed: int = 2901) -> list[Rates]:
    """Every shape's rates, from one generator (fixed seed): the draws are the same on every run."""
    rng = np.random.default_rng(seed)
    out = []
    for shape in SHAPES:
        by_mean = shape.sample(rng, (claims, looks), "mean")
        by_median = shape.sample(rng, (claims, looks), "median")
        out.append(Rates(shape.name, {a: float(mean_verdict_given(by_mean, a).mean()) for a in alphas},
                         {a: float(sign_verdict_given(by_median, a).mean()) for a in alphas}))
    return out


def table(results: list[Rates], alphas: tuple[float, ...] = ALPHAS) -> str:
    """The markdown table of docs/verdicts.md."""
    head = ([f"mean verdict at {a:g} (mean 0)" for a in alphas] + [f"sign verdict at {a:g} (median 0)" for a in alphas])
    lines = ["| shape of the differences | " + " | ".join(head) + " |", "|---" * (len(head) + 1) + "|"]
    for r in results:
        cells = [f"{100 * r.mean_verdict[a]:.1f}%" for a in alphas] + [f"{100 * r.sign_verdict[a]:.1f}%" for a in alphas]
        lines.append(f"| {r.shape} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m analysis.misbehaving", description=__doc__.splitlines()[0])
    parser.add_argument("--claims", type=int, default=CLAIMS, help="simulated claims per shape")
    parser.add_argument("--looks", type=int, default=LOOKS, help="read after every seed up to this many")
    args = parser.parse_args(argv)
    print(f"{args.claims} simulated claims per shape, no true difference, read after every seed up to {args.looks} "
          f"(the mean verdict from 2 seeds, the sign verdict from 1); false-verdict rates:\n")
    print(table(rates(args.claims, args.looks)))
    exact = ", ".join(f"{100 * exact_sign_rate(args.looks, a):.2f}% at {a:g}" for a in ALPHAS)
    print(f"\nThe sign verdict's rate under any continuous median-0 shape, exactly: {exact}.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

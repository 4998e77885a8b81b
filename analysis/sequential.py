"""Anytime-valid intervals for a mean paired difference: verdicts that stay valid as seeds are added.

A fixed-n t-test read again after every new round of seeds is no longer a 5% test (looking at
4, 8, 12 and 16 seeds gives a false verdict about 14% of the time). A confidence sequence is a
sequence of intervals C_2, C_3, ... that *all* hold together: P(mu in C_n for every n) >= 1 - alpha.
So the verdict may be read after every seed, the sweep may stop or go on because of what it read,
and the error stays at alpha.

The method: the t-mixture confidence sequence for the mean of Gaussian data with unknown variance
(Lai 1976, "On confidence sequences", Ann. Statist. 4(2); as a test martingale in the scale-invariant
filtration: Wang & Ramdas 2024, "Anytime-valid t-tests and confidence sequences for Gaussian means
with unknown variance", Sequential Analysis, arXiv:2310.03722; confidence sequences in general:
Howard, Ramdas, McAuliffe & Sekhon 2021, Ann. Statist. 49(2)). For the differences x_1..x_n of the
common seeds and a candidate mean mu, with S = sum(x_i - mu) and V = sum((x_i - mu)^2):

    M_n(mu) = sqrt(c / (n + c)) * (1 - S^2 / ((n + c) V)) ** (-n / 2)

is the likelihood ratio of the scale-free part of the data (sigma integrated out with the right
Haar measure d sigma / sigma), mixed over the standardised effect theta = (mean - mu) / sigma with a
N(0, 1/c) prior. Under mean mu it is a nonnegative martingale starting at 1 (M_1 = 1: one value
says nothing about a scale-free effect), so by Ville's inequality P(sup_n M_n(mu) >= 1/alpha) <= alpha,
and C_n = {mu: M_n(mu) < 1/alpha} is a (1 - alpha) confidence sequence. It depends on the data only
through n, the mean and the sd, so it is the same whatever order the seeds finished in. It assumes the
per-seed differences are Gaussian (the t-test's assumption too).

C_n is the mean +- a half-width: solving M_n < 1/alpha for d = mean - mu gives
d^2 (n - rho (n + c)) < rho (n + c)(n - 1) sd^2 / n with rho = 1 - (alpha^2 c / (n + c))^(1/n); where
n <= rho (n + c) every mu is in C_n (the interval is unbounded: too few seeds for this alpha).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

# The prior precision c of the standardised effect: N(0, 1/c), sd 1/sqrt(0.1) = 3.2. Fixed here,
# before any result, by the trade-off the simulations in tests/test_sequential.py measure: a smaller c
# buys a bounded interval with fewer seeds (c = 0.1: 4 seeds suffice for up to 13 claims at a
# family-wise 0.05; c = 0.2 needs 5 seeds beyond 4 claims), a larger one resolves middling effects
# sooner (d = 1 at alpha 0.05: 14.4 seeds on average with c = 0.1, 13.3 with c = 0.5, 15.3 with
# c = 0.05, against the 10 a fixed design with 80% power plans for).
MIXTURE_PRECISION = 0.1
METHOD = "t-mixture confidence sequence (Lai 1976; Wang & Ramdas 2024)"

# What an interval says about a claim, before the claim's direction is known (see `resolve`).
OPEN, ABOVE, BELOW, NEGLIGIBLE = 0, 1, -1, 2


def _rho(n, alpha: float, c: float):
    return 1.0 - (alpha**2 * c / (n + c)) ** (1.0 / n)


def half_width(sd, n, alpha: float, c: float = MIXTURE_PRECISION):
    """The half-width of C_n around the mean of n values with sample sd `sd` (ddof 1); inf where unbounded.

    Vectorised over sd and n (numpy broadcasting); nan for n < 2 (no spread to scale by).
    """
    sd, n = np.asarray(sd, dtype=float), np.asarray(n, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        rho = _rho(n, alpha, c)
        room = n - rho * (n + c)  # > 0: the interval is bounded
        width = np.sqrt(rho * (n + c) * (n - 1) * sd**2 / (n * room))
    width = np.where(room > 0, width, np.inf)
    return np.where(n >= 2, width, np.nan)[()]


def log_e_value(mean, sd, n, mu: float = 0.0, c: float = MIXTURE_PRECISION):
    """log M_n(mu), the evidence against a true mean `mu` (C_n excludes mu where it is >= log(1/alpha)).

    From the mean and sd (ddof 1) of n values: S = n (mean - mu), V = (n - 1) sd^2 + n (mean - mu)^2.
    Vectorised; 0 (an e-value of 1, no evidence) for n < 2.
    """
    mean, sd, n = (np.asarray(v, dtype=float) for v in (mean, sd, n))
    d = mean - mu
    s2, v = (n * d) ** 2, (n - 1) * sd**2 + n * d**2
    with np.errstate(divide="ignore", invalid="ignore"):
        r = np.where(v > 0, s2 / ((n + c) * v), 0.0)  # V = 0: every value is mu exactly, S = 0 too
        log_m = 0.5 * np.log(c / (n + c)) - 0.5 * n * np.log1p(-r)
    return np.where(n >= 2, log_m, 0.0)[()]


def min_seeds(alpha: float, c: float = MIXTURE_PRECISION) -> int:
    """The fewest values whose C_n can be bounded at this alpha: alpha^2 > (c / (n + c))^(n - 1)."""
    n = 2
    while alpha**2 <= (c / (n + c)) ** (n - 1):
        n += 1
    return n


def resolve(low, high, effect: float):
    """What an interval (low, high) for a mean difference says, vectorised: ABOVE (excludes 0, above it),
    BELOW, NEGLIGIBLE (inside [-effect, effect]: smaller than anything that matters) or OPEN.

    NEGLIGIBLE is read first: an interval such as [0.002, 0.008] against an effect of interest of
    0.01 excludes 0 too, but what it settles is that the difference is too small to matter.
    A nan effect (a score without one) never makes a difference negligible.
    """
    low, high = np.asarray(low, dtype=float), np.asarray(high, dtype=float)
    out = np.full(np.broadcast(low, high).shape, OPEN)
    out = np.where(low > 0, ABOVE, out)
    out = np.where(high < 0, BELOW, out)
    if not math.isnan(effect):
        out = np.where((low >= -effect) & (high <= effect), NEGLIGIBLE, out)
    return out[()]


@dataclass(frozen=True)
class Sequence:
    """The confidence sequence's interval for a mean difference at the current seeds: mean +- half_width."""

    mean: float
    half_width: float  # inf: unbounded (too few seeds for alpha); nan: fewer than 2 values
    n: int
    alpha: float
    log_e: float = 0.0  # log M_n(0): the evidence against no difference

    @property
    def low(self) -> float:
        return self.mean - self.half_width

    @property
    def high(self) -> float:
        return self.mean + self.half_width

    @property
    def bounded(self) -> bool:
        return math.isfinite(self.half_width)

    @property
    def e_value(self) -> float:
        return math.exp(min(self.log_e, 700.0))  # capped: beyond e^700 it is "overwhelming" anyway

    def text(self, digits: int = 3) -> str:
        """'[0.081, 0.169]', or 'unbounded' where the seeds are too few for alpha."""
        if math.isnan(self.half_width):
            return "-"
        if not self.bounded:
            return "unbounded"
        return f"[{self.low:.{digits}f}, {self.high:.{digits}f}]"


def sequence(mean: float, sd: float, n: int, alpha: float, c: float = MIXTURE_PRECISION) -> Sequence:
    """C_n at level alpha for the mean of n values with this mean and sd (ddof 1)."""
    if n < 2 or math.isnan(mean) or math.isnan(sd):
        return Sequence(mean, math.nan, n, alpha)
    return Sequence(mean, float(half_width(sd, n, alpha, c)), n, alpha, float(log_e_value(mean, sd, n, 0.0, c)))


def running_moments(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(n, mean, sd with ddof 1) of x[..., :n] for n = 1..x.shape[-1]: every look at a growing set of seeds."""
    n = np.arange(1, x.shape[-1] + 1, dtype=float)
    mean = np.cumsum(x, axis=-1) / n
    squares = np.cumsum(x**2, axis=-1) - n * mean**2  # sum of squared deviations
    with np.errstate(divide="ignore", invalid="ignore"):
        sd = np.sqrt(np.maximum(squares, 0.0) / (n - 1))
    return n, mean, sd


# ---------------------------------------------------------------- the verdict words, counted

CLAIM_RESOLVED = ("reproduced", "reversed", "negligible")  # a stated claim settled: more seeds are not needed
COMPARISON_RESOLVED = ("higher", "lower", "negligible")  # the same for a comparison nobody claimed
RESOLVED = tuple(dict.fromkeys(CLAIM_RESOLVED + COMPARISON_RESOLVED))


def tally(verdicts: list[str]) -> str:
    """'2 reproduced, 0 reversed, 1 negligible, 3 not resolved of 6 claims' (and how many cannot be judged yet);
    comparisons nobody claimed are counted as '1 higher, 0 lower, ... of 4 comparisons'."""
    comparisons = bool(verdicts) and not any(v in ("reproduced", "reversed") or "direction" in v for v in verdicts) \
        and any(v in ("higher", "lower") or "leans" in v for v in verdicts)
    words, noun = (COMPARISON_RESOLVED, "comparison") if comparisons else (CLAIM_RESOLVED, "claim")
    counts = {word: sum(v == word for v in verdicts) for word in words}
    missing = sum(v == "missing" for v in verdicts)
    parts = [f"{counts[word]} {word}" for word in words]
    parts.append(f"{len(verdicts) - sum(counts.values()) - missing} not resolved")
    if missing:
        parts.append(f"{missing} missing a cell")
    return f"{', '.join(parts)} of {len(verdicts)} {noun}{'s' if len(verdicts) != 1 else ''}"

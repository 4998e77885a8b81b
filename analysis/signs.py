"""A distribution-free, anytime-valid verdict: does one cell beat the other in more than half of the seeds?

The mean verdict (analysis/sequential.py) assumes Gaussian per-seed differences. One collapsed seed or a
skewed spread breaks that assumption, and its error is then no longer alpha (docs/verdicts.md, "When the
seeds misbehave"). This verdict needs no assumption about the shape: it reads only the signs of the
per-seed differences, so it tests the median (the majority of seeds), not the mean.

The method: a sign test as an e-process (test martingales: Shafer, Shen, Vereshchagin & Vovk 2011, "Test
martingales, Bayes factors and p-values", Statist. Sci. 26(1); betting on signs: Ramdas, Grunwald, Vovk &
Shafer 2023, "Game-theoretic statistics and safe anytime-valid inference", Statist. Sci. 38(4)). For the
direction "above", H0 is P(d > 0) <= 1/2 and x_i = 1 if d_i > 0, else 0 (a tie counts as a loss). A gambler
who stakes the fraction lambda in [0, 1] of their wealth on each seed being above holds

    W_n(lambda) = prod_i (1 + lambda (2 x_i - 1))

after n seeds; under H0 each factor has expectation 1 + lambda (2 P(d > 0) - 1) <= 1, so W_n is a nonnegative
supermartingale starting at 1, and so is its mixture over a uniform prior on lambda:

    E_n = int_0^1 (1 + lambda)^k (1 - lambda)^(n - k) d lambda = 2^(n+1) B(k+1, n-k+1) (1 - I_{1/2}(k+1, n-k+1))

with k the wins (substitute p = (1 + lambda) / 2: it is 2^(n+1) times the Beta(k+1, n-k+1) mass above 1/2).
By Ville's inequality P(sup_n E_n >= 1/a) <= a under H0, so the verdict may be read after every seed and the
sweep may stop or go on because of it. "below" is the mirror (x_i = 1 if d_i < 0, ties again against). Each
direction is tested at alpha / 2, so the two together err at most alpha: a verdict is given when a running
maximum reaches 2 / alpha.

Ties count against both directions, so they can only slow a verdict down, never make a false one likelier.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import special

from analysis.stats import json_number as _num  # an infinite e-value (beyond ~1,000 unanimous seeds) as null

ABOVE, BELOW, OPEN = "above", "below", "open"
METHOD = "sign-test e-process (uniform mixture over the bet; ties count against)"


def _log_e(k, n):
    """log E_n for k wins in n looks (vectorised): (n+1) log 2 + log B(k+1, n-k+1) + log(1 - I_{1/2}(k+1, n-k+1)).

    1 - I_{1/2}(a, b) is computed as I_{1/2}(b, a) (the Beta's symmetry), which keeps its precision when it is
    tiny (few wins: the e-value is then near 0, and 1 - I would round to 0)."""
    k, n = np.asarray(k, dtype=float), np.asarray(n, dtype=float)
    with np.errstate(divide="ignore"):
        return (n + 1) * math.log(2.0) + special.betaln(k + 1, n - k + 1) + np.log(special.betainc(n - k + 1, k + 1, 0.5))


def e_table(looks: int) -> np.ndarray:
    """E_n for every n = 1..looks and k = 0..looks wins: row n - 1, column k (nan where k > n)."""
    n = np.arange(1, looks + 1, dtype=float)[:, None]
    k = np.arange(looks + 1, dtype=float)[None, :]
    with np.errstate(over="ignore", invalid="ignore"):  # beyond about 1,000 seeds all one way: inf, "overwhelming"
        return np.where(k <= n, np.exp(_log_e(np.minimum(k, n), n)), np.nan)


def sign_e_values(wins: np.ndarray) -> np.ndarray:
    """E_n of a 0/1 sequence after each look n = 1..N (along the last axis; a 2-D array of simulated sequences
    gives one row of e-values per sequence). E_0 = 1 is not included.

    E_n depends on the sequence only through (n, k), so the e-values are looked up in e_table(N): a simulation
    of many sequences costs one table of N (N + 1) values."""
    wins = np.asarray(wins)
    if wins.shape[-1] == 0:
        return np.ones(wins.shape, dtype=float)
    if not np.isin(wins, (0, 1)).all():
        raise ValueError("sign_e_values takes a sequence of 0s and 1s (1: the seed is on the tested side)")
    looks = wins.shape[-1]
    k = np.cumsum(wins, axis=-1, dtype=np.int64)
    return e_table(looks)[np.arange(looks), k]


def threshold(alpha: float) -> float:
    """The e-value a direction must reach: 1 / (alpha / 2), each direction being tested at alpha / 2."""
    return 2.0 / alpha


def seeds_to_resolve(alpha: float) -> int:
    """The fewest seeds, all one way, that can reach the threshold: E_n = (2^(n+1) - 1) / (n + 1) >= 2 / alpha.

    8 at alpha 0.05, 10 at 0.05 / 4, 11 at 0.05 / 6: this verdict needs more seeds than the mean verdict,
    the price of assuming nothing about the shape."""
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    n = 1
    while (2.0 ** (n + 1) - 1) / (n + 1) < threshold(alpha):
        n += 1
    return n


@dataclass(frozen=True)
class SignVerdict:
    """The signs of a claim's per-seed differences and what the sign-test e-processes make of them."""

    above: int  # seeds with d > 0
    below: int  # seeds with d < 0
    ties: int  # d == 0
    e_above: float  # running max of the 'above' e-process over the looks
    e_below: float
    alpha: float  # the alpha this verdict was judged at (both directions together)

    @property
    def n(self) -> int:
        return self.above + self.below + self.ties

    @property
    def threshold(self) -> float:
        return threshold(self.alpha)

    @property
    def result(self) -> str:
        """ABOVE or BELOW once that direction's running maximum reaches 2 / alpha, else OPEN.

        Both reach it only in a long, strange sequence (a large majority one way, then the other); ABOVE is
        read first."""
        if self.e_above >= self.threshold:
            return ABOVE
        if self.e_below >= self.threshold:
            return BELOW
        return OPEN

    def counts_text(self) -> str:
        """'11 of 14 seeds above, 3 below, 0 tied'."""
        return f"{self.above} of {self.n} seed{'s' if self.n != 1 else ''} above, {self.below} below, {self.ties} tied"

    def text(self) -> str:
        """'sign test: 11 of 14 seeds above, 3 below, 0 tied: above (e-value 57 >= 40, alpha 0.05)', or how far
        an open one is, and the seeds all one way it would take at the fewest."""
        head = f"sign test: {self.counts_text()}"
        at = f"alpha {self.alpha:.3g}"
        if self.result != OPEN:
            e = self.e_above if self.result == ABOVE else self.e_below
            return f"{head}: {self.result} (e-value {e:.3g} >= {self.threshold:.3g}, {at})"
        return (f"{head}: open (e-values {self.e_above:.3g} above, {self.e_below:.3g} below; {self.threshold:.3g} "
                f"decides at {at}, {seeds_to_resolve(self.alpha)} seeds all one way at the fewest)")

    def record(self) -> dict:
        """findings.json's entry: the counts, both e-values (running maxima), alpha, the threshold and the result."""
        return {"method": METHOD, "above": self.above, "below": self.below, "ties": self.ties, "seeds": self.n,
                "e_above": _num(self.e_above), "e_below": _num(self.e_below), "alpha": self.alpha,
                "threshold": self.threshold, "seeds_to_resolve": seeds_to_resolve(self.alpha),
                "result": self.result}


def sign_verdict(differences: Sequence[float], alpha: float) -> SignVerdict:
    """The sign verdict of per-seed differences taken in the order given (the caller's seed order: the e-process
    is read after each of them, and its running maximum decides)."""
    d = np.asarray(list(differences), dtype=float)
    if np.isnan(d).any():
        raise ValueError("sign_verdict: a difference is nan (pass only the seeds both cells scored)")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    up, down = (d > 0).astype(int), (d < 0).astype(int)
    # With no seeds there is no look: E_0 = 1, no evidence either way.
    e_up = float(sign_e_values(up).max()) if len(d) else 1.0
    e_down = float(sign_e_values(down).max()) if len(d) else 1.0
    return SignVerdict(int(up.sum()), int(down.sum()), int((d == 0).sum()), e_up, e_down, alpha)


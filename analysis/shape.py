"""The Gaussian assumption of the mean verdict, checked where it can be: the shape of a claim's per-seed differences.

The mean verdict (analysis/sequential.py) assumes Gaussian differences. Under skewed or collapsing ones its false
verdicts run well above alpha (docs/verdicts.md, "When the seeds misbehave"). A fixed rule, chosen before any
result was looked at (the skew rule's least seeds raised from 8 to 20, and the least seeds from 3 to 5, before any
sweep's results were read: below those the check cried wolf on Gaussian claims): the check fails when the
Shapiro-Wilk test rejects normality at SHAPIRO_P = 0.05 (MIN_SEEDS = 5 seeds or more: with 3 or 4 values one tie
alone rejects it), or when the sample skewness is beyond +-SKEW_LIMIT = 1 with SKEW_MIN_SEEDS = 20 seeds or more
(below that the skewness of even Gaussian samples is too variable to read: its sd is 0.75 at 8 values). A failed
check does not change the verdict; it says to read the sign verdict (analysis/signs.py), which assumes nothing
about the shape, beside it.

With few seeds the check is weak (tests/test_shape_rates.py measures it): a lognormal sigma 1 shape fails it in
about 62% of claims at 10 seeds (almost all at 30), a 5% collapse in 43% at 10 and 80% at 30. Gaussian claims fail
it about 5% of the time (Shapiro-Wilk's own rate), 7.6% at 20 seeds where the skew rule starts. A failed check is
a prompt to read the sign verdict, not evidence of a problem.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

from analysis.stats import format_p
from analysis.stats import json_number as _num

SHAPIRO_P = 0.05
SKEW_LIMIT = 1.0
SKEW_MIN_SEEDS = 20
MIN_SEEDS = 5  # Shapiro-Wilk runs from 3, but with 3 or 4 values a tie alone rejects normality
RULE = (f"Shapiro-Wilk p < {SHAPIRO_P:g} ({MIN_SEEDS} seeds or more), or |skewness| > {SKEW_LIMIT:g} "
        f"({SKEW_MIN_SEEDS} seeds or more)")


@dataclass(frozen=True)
class ShapeCheck:
    """The shape of n per-seed differences: skewness and excess kurtosis (bias-corrected) and Shapiro-Wilk's p;
    nan where there are too few differences for one (kurtosis needs 4) or they are all equal."""

    n: int
    skew: float
    kurtosis: float  # excess: 0 for a Gaussian
    shapiro_p: float

    @property
    def checkable(self) -> bool:
        """3 differences or more, not all equal (no spread, no shape)."""
        return self.n >= MIN_SEEDS and not math.isnan(self.shapiro_p)

    @property
    def failed_by(self) -> tuple[str, ...]:
        """Which parts of the rule fire: 'shapiro', 'skew' (empty when the check passes or cannot be made)."""
        if not self.checkable:
            return ()
        by_shapiro, by_skew = rule_fires(self.n, self.skew, self.shapiro_p)
        return tuple(name for name, fired in (("shapiro", by_shapiro), ("skew", by_skew)) if fired)

    @property
    def fails(self) -> bool:
        return bool(self.failed_by)

    def text(self) -> str:
        """'differences skew +2.10, excess kurtosis 5.3, Shapiro-Wilk p = 0.003: not Gaussian-looking — read the sign
        verdict', or why there is no check."""
        if self.n < MIN_SEEDS:
            return f"shape not checkable with {self.n} difference{'s' if self.n != 1 else ''} (Shapiro-Wilk needs {MIN_SEEDS})"
        if not self.checkable:
            return f"all {self.n} differences are equal: no shape to check"
        kurtosis = f", excess kurtosis {self.kurtosis:.1f}" if not math.isnan(self.kurtosis) else ""
        head = f"differences skew {self.skew:+.2f}{kurtosis}, Shapiro-Wilk p = {format_p(self.shapiro_p)}"
        if self.fails:
            return f"{head}: not Gaussian-looking — read the sign verdict"
        weak = f" (a weak check with {self.n} seeds)" if self.n < SKEW_MIN_SEEDS else ""
        return f"{head}: nothing against the Gaussian assumption{weak}"

    def record(self) -> dict:
        return {"n": self.n, "skew": _num(self.skew), "excess_kurtosis": _num(self.kurtosis),
                "shapiro_p": _num(self.shapiro_p), "checkable": self.checkable, "fails": self.fails,
                "failed_by": list(self.failed_by), "rule": RULE}


def rule_fires(n, skew, shapiro_p) -> tuple:
    """The rule's two parts (Shapiro-Wilk, skewness), vectorised: whether each fires. nan fires neither."""
    skew, shapiro_p = np.asarray(skew, dtype=float), np.asarray(shapiro_p, dtype=float)
    return (shapiro_p < SHAPIRO_P)[()], ((np.asarray(n) >= SKEW_MIN_SEEDS) & (np.abs(skew) > SKEW_LIMIT))[()]


def shape_statistics(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(skewness, excess kurtosis, Shapiro-Wilk p) along the last axis of x, 3 values or more, not all equal:
    many simulated claims at once (tests/test_shape_rates.py) or one claim (check_shape)."""
    x = np.asarray(x, dtype=float)
    kurtosis = stats.kurtosis(x, axis=-1, bias=False) if x.shape[-1] >= 4 else np.full(x.shape[:-1], np.nan)
    return stats.skew(x, axis=-1, bias=False), kurtosis, stats.shapiro(x, axis=-1).pvalue


def check_shape(differences: Sequence[float]) -> ShapeCheck:
    """The shape of the per-seed differences (nan values left out)."""
    d = np.asarray([v for v in differences if v is not None and not math.isnan(v)], dtype=float)
    n = len(d)
    if n < MIN_SEEDS or np.ptp(d) == 0:
        return ShapeCheck(n, math.nan, math.nan, math.nan)
    skew, kurtosis, p = shape_statistics(d)  # kurtosis nan at 3: its bias correction needs 4
    return ShapeCheck(n, float(skew), float(kurtosis), float(p))




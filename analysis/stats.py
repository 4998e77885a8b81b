"""Small statistics for reports: t-intervals over seeds, paired and Welch differences, Holm, Kendall's tau.

A difference between two cells is paired by seed wherever it can be: the seeds are common
random numbers (the same data order, initialisation and dropout streams in every cell), so a
per-seed difference cancels what the seed does to both cells, and only the cells' effect and
what is left of the noise remain.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats


class Bounds:
    """`low` and `high` of an interval held as mean +- half_width."""

    mean: float
    half_width: float

    @property
    def low(self) -> float:
        return self.mean - self.half_width

    @property
    def high(self) -> float:
        return self.mean + self.half_width


@dataclass(frozen=True)
class Interval(Bounds):
    mean: float
    half_width: float  # nan with fewer than 2 values
    n: int

    def text(self, digits: int = 3) -> str:
        if self.n == 0:
            return "-"
        if math.isnan(self.half_width):
            return f"{self.mean:.{digits}f}"
        return f"{self.mean:.{digits}f} ± {self.half_width:.{digits}f}"


def t_interval(values, confidence: float = 0.95) -> Interval:
    """Mean and half-width of the t-distribution confidence interval for the mean."""
    x = np.asarray([v for v in values if v is not None and not math.isnan(v)], dtype=float)
    n = len(x)
    if n == 0:
        return Interval(math.nan, math.nan, 0)
    if n == 1:
        return Interval(float(x[0]), math.nan, 1)
    sem = x.std(ddof=1) / math.sqrt(n)
    return Interval(float(x.mean()), float(stats.t.ppf(0.5 + confidence / 2, n - 1) * sem), n)


@dataclass(frozen=True)
class Difference(Bounds):
    """mean(a) - mean(b) and its test: `paired` over common seeds, `welch` over unmatched ones, or `none`."""

    method: str  # paired | welch | none (too few seeds for a test)
    mean: float
    half_width: float  # of the unadjusted confidence interval; nan without a test
    p: float  # two-sided; nan without a test
    n: int  # paired: the common seeds; otherwise the smaller cell's count
    n_a: int
    n_b: int
    t: float = math.nan
    df: float = math.nan
    sd: float = math.nan  # paired: sd of the per-seed differences; welch: sd of cell a
    sd_b: float = math.nan  # welch: sd of cell b
    seeds: tuple[int, ...] = ()  # paired: the common seeds

    def text(self, digits: int = 3) -> str:
        """'+0.125 [0.081, 0.169]' (the 95% interval), or the mean alone without a test."""
        if math.isnan(self.mean):
            return "-"
        if math.isnan(self.half_width):
            return f"{self.mean:+.{digits}f}"
        return f"{self.mean:+.{digits}f} [{self.low:.{digits}f}, {self.high:.{digits}f}]"

    def describe(self) -> str:
        if self.method == "paired":
            return f"paired over {self.n} seeds"
        if self.method == "welch":
            return f"Welch, {self.n_a} vs {self.n_b} seeds"
        return f"no test, {self.n_a} vs {self.n_b} seeds"


def _clean(values: dict[int, float]) -> dict[int, float]:
    return {int(k): float(v) for k, v in values.items() if v is not None and not math.isnan(v)}


def _t_test(mean: float, se: float, df: float, confidence: float) -> tuple[float, float, float]:
    """(t, two-sided p, half-width) of a mean with standard error `se` on `df` degrees of freedom."""
    if se == 0:  # no spread at all: a nonzero difference is certain, a zero one is no evidence
        return (math.copysign(math.inf, mean), 0.0, 0.0) if mean != 0 else (math.nan, 1.0, 0.0)
    t = mean / se
    return t, float(2 * stats.t.sf(abs(t), df)), float(stats.t.ppf(0.5 + confidence / 2, df) * se)


def paired_difference(a: dict[int, float], b: dict[int, float], confidence: float = 0.95) -> Difference:
    """Paired t-test on the per-seed differences a[s] - b[s] over the seeds both have (at least 2)."""
    a, b = _clean(a), _clean(b)
    seeds = tuple(sorted(set(a) & set(b)))
    if len(seeds) < 2:
        raise ValueError(f"a paired difference needs 2 common seeds, got {len(seeds)}")
    d = np.array([a[s] - b[s] for s in seeds])
    n, mean, sd = len(d), float(d.mean()), float(d.std(ddof=1))
    t, p, half = _t_test(mean, sd / math.sqrt(n), n - 1, confidence)
    return Difference("paired", mean, half, p, n, len(a), len(b), t, n - 1, sd, seeds=seeds)


def welch_test(a, b, confidence: float = 0.95) -> Difference:
    """Welch's t-test and interval for mean(a) - mean(b) (unequal variances; 2 values per cell at least)."""
    x, y = np.asarray(list(a), dtype=float), np.asarray(list(b), dtype=float)
    if len(x) < 2 or len(y) < 2:
        raise ValueError(f"Welch's test needs 2 values per cell, got {len(x)} and {len(y)}")
    va, vb = x.var(ddof=1) / len(x), y.var(ddof=1) / len(y)
    mean, se = float(x.mean() - y.mean()), math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va**2 / (len(x) - 1) + vb**2 / (len(y) - 1)) if se > 0 else float(len(x) + len(y) - 2)
    t, p, half = _t_test(mean, se, df, confidence)
    return Difference("welch", mean, half, p, min(len(x), len(y)), len(x), len(y), t, df,
                      float(x.std(ddof=1)), float(y.std(ddof=1)))


def compare(a: dict[int, float], b: dict[int, float], confidence: float = 0.95) -> Difference:
    """a - b from {seed: value}: paired over the common seeds when there are 2, else Welch, else no test."""
    a, b = _clean(a), _clean(b)
    if len(set(a) & set(b)) >= 2:
        return paired_difference(a, b, confidence)
    if len(a) >= 2 and len(b) >= 2:
        return welch_test(a.values(), b.values(), confidence)
    mean = float(np.mean(list(a.values())) - np.mean(list(b.values()))) if a and b else math.nan
    return Difference("none", mean, math.nan, math.nan, min(len(a), len(b)), len(a), len(b))


def holm(pvalues: list[float]) -> list[float]:
    """Holm's step-down adjusted p-values (family-wise error), in the input order.

    The i-th smallest of m p-values (i = 1..m) is multiplied by m - i + 1; the products are
    made non-decreasing in that order and capped at 1. A nan (a claim that cannot be tested
    yet) stays nan but still counts in m: the family is what the sweep set out to test.
    """
    m = len(pvalues)
    order = sorted((i for i, p in enumerate(pvalues) if not math.isnan(p)), key=lambda i: pvalues[i])
    adjusted = [math.nan] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * pvalues[i]))
        adjusted[i] = running
    return adjusted


def kendall_tau(ours: dict[str, float], theirs: dict[str, float]) -> tuple[float, float, int]:
    """Kendall's tau-b between two scorings of the cells both have: (tau, p-value, number of cells)."""
    common = [c for c in ours if c in theirs and not math.isnan(ours[c])]
    if len(common) < 2:
        return math.nan, math.nan, len(common)
    result = stats.kendalltau([ours[c] for c in common], [theirs[c] for c in common])
    return float(result.statistic), float(result.pvalue), len(common)


def json_number(x) -> float | None:
    """A number for findings.json: nan (none), an unbounded end or an infinite e-value (inf) as null."""
    return None if x is None or not math.isfinite(x) else float(x)


def format_p(p: float) -> str:
    """'0.042', '3.1e-05', or '-' without a test."""
    if math.isnan(p):
        return "-"
    return f"{p:.3f}" if p >= 0.001 else f"{p:.1e}"

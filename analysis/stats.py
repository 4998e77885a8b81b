"""Small statistics for reports: t-intervals over seeds, Welch differences, Kendall's tau."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats


@dataclass(frozen=True)
class Interval:
    mean: float
    half_width: float  # nan with fewer than 2 values
    n: int

    @property
    def low(self) -> float:
        return self.mean - self.half_width

    @property
    def high(self) -> float:
        return self.mean + self.half_width

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


def welch_difference(a, b, confidence: float = 0.95) -> Interval:
    """mean(a) - mean(b) with a Welch t-interval (unequal variances); n is min(len(a), len(b))."""
    a = np.asarray(a, dtype=float)
    b = np.asarray(b, dtype=float)
    if len(a) == 0 or len(b) == 0:
        return Interval(math.nan, math.nan, 0)
    diff = float(a.mean() - b.mean())
    if len(a) < 2 or len(b) < 2:
        return Interval(diff, math.nan, min(len(a), len(b)))
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    se = math.sqrt(va + vb)
    if se == 0:
        return Interval(diff, 0.0, min(len(a), len(b)))
    dof = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    return Interval(diff, float(stats.t.ppf(0.5 + confidence / 2, dof) * se), min(len(a), len(b)))


def summarize(frame: pd.DataFrame, group: str, metrics: list[str], confidence: float = 0.95) -> pd.DataFrame:
    """One row per group: n and, per metric, mean, low, high (the t-interval)."""
    rows = []
    for name, part in frame.groupby(group, sort=False):
        row = {group: name, "n": len(part)}
        for metric in metrics:
            interval = t_interval(part[metric].dropna().tolist() if metric in part else [], confidence)
            row[f"{metric} mean"] = interval.mean
            row[f"{metric} ±"] = interval.half_width
            row[f"{metric} n"] = interval.n
        rows.append(row)
    return pd.DataFrame(rows)


def kendall_tau(ours: dict[str, float], theirs: dict[str, float]) -> tuple[float, float, int]:
    """Kendall's tau-b between two scorings of the cells both have: (tau, p-value, number of cells)."""
    common = [c for c in ours if c in theirs and not math.isnan(ours[c])]
    if len(common) < 2:
        return math.nan, math.nan, len(common)
    result = stats.kendalltau([ours[c] for c in common], [theirs[c] for c in common])
    return float(result.statistic), float(result.pvalue), len(common)

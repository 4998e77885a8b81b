"""The claims a sweep tests, judged: paired differences, Holm's correction, power, and the claim over training.

Torch- and matplotlib-free, so `p2p sweep --dry-run` can print the verdicts so far.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

from analysis import paper
from analysis.load import SweepRuns
from analysis.power import Needed, load_effect_sizes, power_now, seeds_needed
from analysis.stats import Difference, compare, holm, t_interval
from p2p import contract

ALPHA = 0.05  # family-wise, over the claims of one sweep


def comparison_metric(runs: SweepRuns) -> str:
    """The paper's headline score (FCN class IoU) where we have it, else the sweep's objective."""
    headline = contract.HEADLINE.key
    if runs.finished.get(headline) is not None and runs.finished[headline].notna().any():
        return headline
    return runs.objective


def claims_for(runs: SweepRuns) -> list[paper.Claim]:
    """The paper's claims for this ablation; without any (the tricks sweep), every cell against the first."""
    claims = paper.CLAIMS.get(runs.name)
    if claims is not None:
        return list(claims)
    if not runs.cells:
        return []
    return [paper.Claim(cell, runs.cells[0], f"better than {runs.cells[0]}") for cell in runs.cells[1:]]


# ---------------------------------------------------------------- over training


@dataclass(frozen=True)
class Trend:
    """The paired difference better - worse at each scored epoch (common seeds), with 95% t-intervals."""

    epochs: tuple[int, ...]
    means: tuple[float, ...]
    lows: tuple[float, ...]
    highs: tuple[float, ...]
    ns: tuple[int, ...]  # common seeds at each epoch
    sign: int  # +1: the claim is 'better scores above worse'; -1: 'below'

    def _signed_low(self, i: int) -> float:
        """The interval's end nearest 0 in the claimed direction (nan without an interval)."""
        return min(self.sign * self.lows[i], self.sign * self.highs[i])

    def _signed_high(self, i: int) -> float:
        return max(self.sign * self.lows[i], self.sign * self.highs[i])

    def _from(self, excludes) -> int | None:
        """The earliest epoch from which every later point satisfies `excludes(i)`."""
        start = None
        for i in reversed(range(len(self.epochs))):
            if not excludes(i):
                break
            start = self.epochs[i]
        return start

    @property
    def holds_from(self) -> int | None:
        return self._from(lambda i: self._signed_low(i) > 0)

    @property
    def reversed_from(self) -> int | None:
        return self._from(lambda i: self._signed_high(i) < 0)

    @property
    def flips(self) -> list[tuple[int, int]]:
        """(epoch, next epoch) pairs between which the mean difference changes sign."""
        return [(self.epochs[i], self.epochs[i + 1]) for i in range(len(self.epochs) - 1)
                if self.means[i] * self.means[i + 1] < 0]

    def text(self) -> str:
        if not self.epochs:
            return "no scores over training"
        if max(self.ns) < 2:
            return "over training: cannot tell (fewer than 2 common seeds)"
        if len(self.epochs) == 1:  # scored only at the end (eval.every 0)
            held = self.holds_from is not None
            return f"{'holds' if held else 'does not hold'} at epoch {self.epochs[0]}, the only one scored"
        flips = ", ".join(f"{a} and {b}" for a, b in self.flips)
        flipped = f" (the sign flips between epochs {flips})" if flips else ""
        if self.holds_from is not None:
            return f"holds from epoch {self.holds_from} of {self.epochs[-1]}{flipped}"
        if self.reversed_from is not None:
            return f"reversed from epoch {self.reversed_from} of {self.epochs[-1]}{flipped}"
        if flips:
            return f"never holds: the sign flips between epochs {flips}"
        return f"never holds (the interval includes 0 at epoch {self.epochs[-1]}, the last scored)"


def trend(history: pd.DataFrame, better: str, worse: str, sign: int) -> Trend:
    """From a long frame (cell, seed, epoch, value): per epoch, the differences of the seeds both cells scored."""
    a = history[history["cell"] == better].set_index(["epoch", "seed"])["value"]
    b = history[history["cell"] == worse].set_index(["epoch", "seed"])["value"]
    paired = pd.concat({"a": a, "b": b}, axis=1).dropna()
    epochs, means, lows, highs, ns = [], [], [], [], []
    for epoch, part in paired.groupby(level="epoch"):
        interval = t_interval((part["a"] - part["b"]).tolist())
        epochs.append(int(epoch))
        means.append(interval.mean)
        lows.append(interval.low)
        highs.append(interval.high)
        ns.append(interval.n)
    return Trend(tuple(epochs), tuple(means), tuple(lows), tuple(highs), tuple(ns), sign)


# ---------------------------------------------------------------- verdicts


def verdict(diff: Difference, p_holm: float, sign: int, alpha: float = ALPHA) -> str:
    """reproduced / reversed (Holm-adjusted p < alpha), else which side of 0 the mean difference is on
    (both are "not reproduced": the two words say which way the runs lean)."""
    if math.isnan(diff.mean):
        return "missing"
    good = sign * diff.mean
    if diff.method == "none":
        return "same direction, no interval (one seed)" if good > 0 else "other direction, no interval (one seed)"
    if p_holm < alpha:
        return "reproduced" if good > 0 else "reversed"
    return "same direction, not significant" if good > 0 else "other direction, not significant"


@dataclass(frozen=True)
class ClaimResult:
    claim: paper.Claim
    metric: str
    diff: Difference  # better - worse, in the score's units
    p_holm: float
    verdict: str
    claims: int  # K, the claims of the sweep (Holm's family; power at alpha / K)
    effect: float  # the smallest effect of interest for this score
    observed: Needed  # seeds for 80% power at the observed difference
    smallest: Needed  # ... at the smallest effect of interest
    power: float  # the power the current seeds have for the smallest effect
    trend: Trend | None = None

    @property
    def sign(self) -> int:
        return -1 if contract.lower_is_better(self.metric) else 1

    @property
    def text(self) -> str:
        """'70x70 scores above 1x1 on FCN class IoU'."""
        side = "below" if self.sign < 0 else "above"
        return f"{self.claim.better} scores {side} {self.claim.worse} on {contract.label(self.metric)}"

    def tests(self) -> str:
        d = self.diff
        if d.method == "none":
            return d.describe()
        return f"{d.describe()}, p = {format_p(d.p)}, Holm p = {format_p(self.p_holm)}"

    def power_text(self) -> str:
        """Power beside the verdict: now, for the smallest effect; and the seeds 80% would take."""
        if self.diff.method == "none":
            return "power: not computable until both cells have 2 seeds"
        now = f"{self.power:.0%}" if not math.isnan(self.power) else "n/a"
        return (f"power {now} for a difference of {self.effect:g}; 80% needs {self.smallest.text()} seeds "
                f"({self.observed.text()} for the observed difference)")

    def line(self) -> str:
        """One line of the report's findings."""
        if self.verdict == "missing":
            side = self.claim.better if not self.diff.n_a else self.claim.worse
            return f"{self.text}: cannot tell yet (no finished run of {side})"
        parts = [f"{self.text}: **{self.verdict}**, difference {self.diff.text(digits(self.metric))} "
                 f"({self.tests()})"]
        if self.trend is not None:
            parts.append(self.trend.text())
        parts.append(self.power_text())
        return "; ".join(parts)

    def record(self) -> dict:
        """findings.json's entry for this claim (numbers, nan as null)."""
        d = self.diff
        return {"claim": self.text, "metric": self.metric, "better": self.claim.better, "worse": self.claim.worse,
                "why": self.claim.why, "method": d.method, "seeds": d.n, "seeds_better": d.n_a,
                "seeds_worse": d.n_b, "common_seeds": list(d.seeds), "mean_difference": _num(d.mean),
                "low": _num(d.low), "high": _num(d.high), "p": _num(d.p), "p_holm": _num(self.p_holm),
                "verdict": self.verdict, "holds_from_epoch": self.trend.holds_from if self.trend else None,
                "reversed_from_epoch": self.trend.reversed_from if self.trend else None,
                "sign_flips": [list(f) for f in self.trend.flips] if self.trend else [],
                "epochs": list(self.trend.epochs) if self.trend else [],
                "over_training": self.trend.text() if self.trend else None,
                "seeds_needed": {"observed": self.observed.value(), "smallest_effect": self.smallest.value(),
                                 "smallest_effect_size": self.effect, "power": 0.8,
                                 "alpha": ALPHA / max(1, self.claims)},
                "power_now": _num(self.power)}


def judge_all(runs: SweepRuns, metric: str, history: pd.DataFrame | None = None,
              claims: list[paper.Claim] | None = None) -> list[ClaimResult]:
    """Every claim of the sweep on `metric`: tested, Holm-corrected together, with power (and trend)."""
    claims = claims_for(runs) if claims is None else claims
    diffs = [compare(runs.values(c.better, metric), runs.values(c.worse, metric)) for c in claims]
    adjusted = holm([d.p for d in diffs])
    k = len(claims)
    effect = load_effect_sizes().get(metric, math.nan)
    sign = -1 if contract.lower_is_better(metric) else 1
    results = []
    for claim, diff, p_holm in zip(claims, diffs, adjusted):
        over = trend(history, claim.better, claim.worse, sign) if history is not None else None
        results.append(ClaimResult(claim, metric, diff, p_holm, verdict(diff, p_holm, sign), k, effect,
                                   seeds_needed(diff, diff.mean, ALPHA / k), seeds_needed(diff, effect, ALPHA / k),
                                   power_now(diff, effect, ALPHA / k), over))
    return results


def method_summary(results: list[ClaimResult]) -> str:
    """Which test the differences used, for the report's header."""
    paired = sorted({r.diff.n for r in results if r.diff.method == "paired"})
    welch = [r.text for r in results if r.diff.method == "welch"]
    untested = [r for r in results if r.diff.method == "none"]
    parts = []
    if paired:
        seeds = str(paired[0]) if len(paired) == 1 else f"{paired[0]}-{paired[-1]}"
        parts.append(f"a paired t-test over the {seeds} common seeds of the two cells (per-seed differences)")
    if welch:
        parts.append(f"Welch's t-test where the cells share fewer than 2 seeds ({len(welch)} of {len(results)} "
                     f"claims)")
    if untested:
        parts.append(f"no test where a cell has fewer than 2 seeds ({len(untested)} claims)")
    return "; ".join(parts) if parts else "no test yet"


def digits(metric: str) -> int:
    return contract.digits(metric)


def format_p(p: float) -> str:
    if math.isnan(p):
        return "-"
    return f"{p:.3f}" if p >= 0.001 else f"{p:.1e}"


def _num(x: float) -> float | None:
    return None if x is None or math.isnan(x) else float(x)


# ---------------------------------------------------------------- for `p2p sweep --dry-run`


def plan_lines(spec, scale: str) -> list[str]:
    """The verdicts so far and the seeds power asks for, one line per claim; [] while no run has finished."""
    from analysis.load import load_sweep
    from p2p import tracking

    if spec.search is not None or not tracking.store_exists() or not tracking.experiment_exists(spec.name):
        return []
    runs = load_sweep(spec.name, scale, spec=spec)
    if runs.finished.empty:
        return []
    metric = comparison_metric(runs)
    results = judge_all(runs, metric)
    k = len(results)
    lines = [f"  findings so far on {contract.label(metric)} ({len(runs.finished)} finished runs): Holm over "
             f"{k} claims; seeds for 80% power at alpha 0.05/{k} (observed difference, smallest effect "
             f"{results[0].effect:g})" if results else "  findings so far: no claims"]
    for r in results:
        need = f"seeds needed {r.observed.text()}, {r.smallest.text()}" if r.diff.method != "none" else \
            "seeds needed: n/a (fewer than 2 seeds)"
        lines.append(f"    {r.claim.better} vs {r.claim.worse}: {r.verdict}, {r.diff.text(digits(metric))} "
                     f"({r.diff.describe()}); {need}")
    return lines

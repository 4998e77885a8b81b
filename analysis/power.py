"""How many seeds a claim needs: the exact power of the paired (or Welch) t-test, from the noncentral t.

Power is for a two-sided test at a Bonferroni level alpha = 0.05 / K (K = the claims of the
sweep): a sweep that wants each of its claims to survive the correction for all of them
must plan for the strictest level a claim can face (Holm's first step).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats

from analysis.stats import Difference
from p2p import contract

TARGET_POWER = 0.8
FEWEST_SEEDS, MAX_SEEDS = 2, 1000  # the n searched for a power: a t-test needs 2 seeds (a spread); beyond 1000, '>1000'


def load_effect_sizes() -> dict[str, float]:
    """{score: the smallest difference between two cells worth detecting, in the score's units} (p2p.contract)."""
    return {s.key: s.effect for s in contract.SCORES if s.effect is not None}


def _two_sided(nc: np.ndarray, df: np.ndarray, alpha: float) -> np.ndarray:
    """P(|T| > t_crit) for T ~ noncentral t(df, nc), nc >= 0."""
    crit = stats.t.ppf(1 - alpha / 2, df)
    upper = stats.nct.sf(crit, df, nc)
    # The wrong-side tail is ~0 for a large nc, where scipy returns nan for it.
    lower = np.nan_to_num(stats.nct.cdf(-crit, df, nc), nan=0.0)
    return upper + lower


def paired_power(effect: float, sd: float, n, alpha: float) -> np.ndarray:
    """Power of the paired t-test over n seeds to detect a mean difference `effect` (sd of the differences `sd`)."""
    n = np.asarray(n, dtype=float)
    return _two_sided(abs(effect) / sd * np.sqrt(n), n - 1, alpha)


def welch_power(effect: float, sd_a: float, sd_b: float, n, alpha: float) -> np.ndarray:
    """Power of Welch's test with n seeds in each cell (the Welch-Satterthwaite df at those sds)."""
    n = np.asarray(n, dtype=float)
    va, vb = sd_a**2 / n, sd_b**2 / n
    df = (va + vb) ** 2 / ((va**2 + vb**2) / (n - 1))
    return _two_sided(abs(effect) / np.sqrt(va + vb), df, alpha)


def first_reaching(power: np.ndarray, target: float = TARGET_POWER) -> int | None:
    """The first n = FEWEST_SEEDS, FEWEST_SEEDS + 1, ... whose power (power[0] is FEWEST_SEEDS's) reaches the target."""
    hits = np.flatnonzero(power >= target)
    return int(hits[0]) + FEWEST_SEEDS if len(hits) else None


@dataclass(frozen=True)
class Needed:
    """Seeds (per cell) for 80% power: `n`, or None with `why` ('>1000' or 'n/a')."""

    n: int | None
    why: str = ""

    def text(self) -> str:
        return str(self.n) if self.n is not None else self.why

    def value(self) -> int | str:
        return self.n if self.n is not None else self.why


def seeds_needed(diff: Difference, effect: float, alpha: float, target: float = TARGET_POWER) -> Needed:
    """Seeds that would detect `effect` with `target` power, from the spread this difference shows."""
    ns = np.arange(FEWEST_SEEDS, MAX_SEEDS + 1)
    if diff.method == "paired" and diff.sd > 0:
        power = lambda: paired_power(effect, diff.sd, ns, alpha)  # noqa: E731
    elif diff.method == "welch" and (diff.sd > 0 or diff.sd_b > 0):
        power = lambda: welch_power(effect, diff.sd, diff.sd_b, ns, alpha)  # noqa: E731
    else:  # fewer than 2 seeds (no spread to plan from), or no spread at all
        return Needed(None, "n/a")
    if effect == 0 or math.isnan(effect):  # no difference is ever detected
        return Needed(None, f">{MAX_SEEDS}")
    n = first_reaching(power(), target)
    return Needed(n, "" if n is not None else f">{MAX_SEEDS}")


def power_now(diff: Difference, effect: float, alpha: float) -> float:
    """The power the seeds this difference has give to detect `effect` (nan where it cannot be computed)."""
    if diff.method == "paired" and diff.sd > 0:
        return float(paired_power(effect, diff.sd, diff.n, alpha))
    if diff.method == "welch" and (diff.sd > 0 or diff.sd_b > 0):
        n = min(diff.n_a, diff.n_b)  # planned as a balanced design
        return float(welch_power(effect, diff.sd, diff.sd_b, n, alpha))
    return math.nan

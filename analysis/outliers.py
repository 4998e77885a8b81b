"""Misbehaving seeds, named by a rule fixed before any result was looked at.

Within a cell, a seed's score is flagged when its modified z-score

    z = 0.6745 (x - median) / MAD

exceeds OUTLIER_Z = 3.5 in absolute value (Iglewicz & Hoaglin 1993, "How to Detect and Handle Outliers",
ASQC Basic References in Quality Control 16). MAD is the median absolute deviation from the median, and
MAD / 0.6745 estimates a Gaussian sd, so z counts robust sds from the median: one wild seed moves neither
the median nor the MAD, so it cannot hide itself the way it hides from a mean and sd. Where MAD is 0 (more
than half the seeds share one value), the robust sd is 1.253314 x the mean absolute deviation from the median
instead (sqrt(pi / 2) x that deviation estimates a Gaussian sd; Iglewicz & Hoaglin's fallback). That is 0 only
when every seed has the median's value, and then no seed differs from it: nothing is flagged.

Cells with fewer than MIN_SEEDS = 5 seeds are not checked (the median and MAD of 4 values say too little
about the spread; a report says so, see `unchecked_text`).

The rule is not an error-rate test: with nothing wrong (Gaussian seeds) it flags some seed in about 21% of
5-seed cells, 14% of 8-seed and 9% of 30-seed ones, because the MAD of a few values is itself noisy; a seed
collapsed 10 sds below the rest is flagged 80% of the time at 5 seeds, 91% at 8, nearly always from 10 on
(tests/test_outliers.py). A flag names a seed; it removes nothing. The verdicts are computed on all the seeds. What a flag asks is
that the seed's run be looked at (a collapsed GAN, a diverged loss), and the report's leave-one-seed-out
line says whether any one seed decides a claim.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from p2p import contract

OUTLIER_Z = 3.5
MIN_SEEDS = 5
MAD_TO_SD = 0.6745  # the Gaussian's MAD in sds (its 3rd quartile): MAD / 0.6745 estimates the sd
MEAN_DEVIATION_TO_SD = 1.253314  # sqrt(pi / 2): the Gaussian's sd in mean absolute deviations
RULE = (f"modified z-score |0.6745 (x - median) / MAD| > {OUTLIER_Z:g} within the cell (Iglewicz & Hoaglin 1993; "
        f"1.253314 x the mean absolute deviation where MAD is 0), cells of {MIN_SEEDS} seeds or more")


@dataclass(frozen=True)
class Flag:
    """A seed whose score lies far from the rest of its cell's."""

    cell: str
    seed: int
    metric: str
    value: float
    median: float  # the cell's median over its seeds (this one included)
    z: float  # modified z-score, signed: negative = on the score's worse side
    side: str  # "worse" | "better"

    def why(self) -> str:
        """'3.9 robust SDs below the cell's median 0.104 (worse side)'."""
        where = "below" if self.value < self.median else "above"
        return (f"{abs(self.z):.1f} robust SDs {where} the cell's median {self.median:.{contract.digits(self.metric)}f} "
                f"({self.side} side)")

    def text(self) -> str:
        """'seed 3 of 70x70 (FCN class IoU 0.012): 3.9 robust SDs below the cell's median 0.104 (worse side)'."""
        return (f"seed {self.seed} of {self.cell} ({contract.label(self.metric)} "
                f"{self.value:.{contract.digits(self.metric)}f}): {self.why()}")

    def record(self) -> dict:
        return {"cell": self.cell, "seed": self.seed, "metric": self.metric, "value": self.value,
                "median": self.median, "z": self.z, "side": self.side, "why": self.why(), "rule": RULE}


def robust_sd(values: np.ndarray) -> np.ndarray:
    """MAD / 0.6745, or 1.253314 x the mean absolute deviation from the median where MAD is 0 (0 only when all
    equal); along the last axis (many simulated cells at once, or one cell)."""
    deviation = np.abs(values - np.median(values, axis=-1, keepdims=True))
    mad = np.median(deviation, axis=-1)
    return np.where(mad > 0, mad / MAD_TO_SD, MEAN_DEVIATION_TO_SD * deviation.mean(axis=-1))[()]


def modified_z(values: np.ndarray) -> np.ndarray:
    """(x - median) / robust_sd along the last axis, unsigned by the score's direction; 0 where every value is
    the median (no spread: none differs)."""
    values = np.asarray(values, dtype=float)
    scale = np.expand_dims(robust_sd(values), -1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(scale > 0, (values - np.median(values, axis=-1, keepdims=True)) / scale, 0.0)


def flag_cell(cell: str, metric: str, values: dict[int, float], lower_is_better: bool) -> list[Flag]:
    """The flagged seeds of one cell's scores {seed: value}, in seed order; none with fewer than MIN_SEEDS seeds
    (missing scores, None or nan, do not count)."""
    clean = {int(s): float(v) for s, v in values.items() if v is not None and not math.isnan(v)}
    if len(clean) < MIN_SEEDS:
        return []
    seeds = sorted(clean)
    x = np.array([clean[s] for s in seeds])
    median, better = float(np.median(x)), -1.0 if lower_is_better else 1.0
    flags = []
    for seed, value, z in zip(seeds, x, better * modified_z(x)):  # signed so that negative is the worse side
        if abs(z) > OUTLIER_Z:
            flags.append(Flag(cell, seed, metric, float(value), median, float(z), "worse" if z < 0 else "better"))
    return flags


def unchecked_text(cell: str, seeds: int) -> str | None:
    """Why a cell was not checked ('1x1: 4 seeds, too few to check for outliers (5 needed)'), or None if it was."""
    if seeds >= MIN_SEEDS:
        return None
    return f"{cell}: {seeds} seed{'s' if seeds != 1 else ''}, too few to check for outliers ({MIN_SEEDS} needed)"

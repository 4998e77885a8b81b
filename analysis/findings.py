"""The claims a sweep tests, judged: anytime-valid intervals, Bonferroni over the claims, power, and the claim over training.

Each claim's verdict comes from the confidence sequence of its mean paired difference
(analysis/sequential.py) at alpha / K, K the sweep's claims: valid however many seeds there are
and however often the verdicts were read before, family-wise over the sweep. The fixed-n paired
t-test (interval, p, Holm p) is kept beside it as a description of the seeds at hand.
Torch- and matplotlib-free, so `p2p sweep --dry-run` can print the verdicts so far.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

from analysis import paper
from analysis.load import SweepRuns
from analysis.outliers import Flag, flag_cell
from analysis.power import Needed, load_effect_sizes, power_now, seeds_needed
from analysis.sequential import (
    ABOVE,
    BELOW,
    METHOD,
    MIXTURE_PRECISION,
    NEGLIGIBLE,
    OPEN,
    RESOLVED,
    Sequence,
    min_seeds,
    resolve,
    sequence,
    tally,
)
from analysis.shape import ShapeCheck, check_shape
from analysis.signs import ABOVE as SIGNS_ABOVE
from analysis.signs import BELOW as SIGNS_BELOW
from analysis.signs import SignVerdict, sign_verdict
from analysis.stats import Difference, compare, format_p, holm
from analysis.stats import json_number as _num
from p2p import contract
from p2p.sweep.claims import Findings

ALPHA = 0.05  # family-wise, over the claims of one sweep


def comparison_metric(runs: SweepRuns) -> str:
    """The paper's headline score (FCN class IoU) where we have it, else the sweep's objective."""
    headline = contract.HEADLINE.key
    if runs.finished.get(headline) is not None and runs.finished[headline].notna().any():
        return headline
    return runs.objective


def claims_for(runs: SweepRuns) -> list[paper.Claim]:
    """What the report judges: the spec's own `claims:` where it states some, else the paper's claims for this
    ablation; without either (the tricks sweep, a user's own sweep), each cell against the spec's first, as
    comparisons nobody claimed (their verdicts read higher / lower / negligible / not resolved)."""
    return claims_of(runs.name, runs.stated, list(runs.cells))


def claims_of(sweep: str, stated: Sequence, cells: list[str]) -> list[paper.Claim]:
    """`claims_for` from a sweep's name, its spec's stated claims and its cells (what analysis.protocol counts)."""
    if stated:
        return [paper.Claim(c.better, c.worse, c.why) for c in stated]
    claims = paper.CLAIMS.get(sweep)
    if claims is not None:
        return list(claims)
    if not cells:
        return []
    return [paper.Claim(cell, cells[0], stated=False) for cell in cells[1:]]


# ---------------------------------------------------------------- over training


@dataclass(frozen=True)
class Trend:
    """The paired difference better - worse at each scored epoch (common seeds), with intervals that hold at all
    the epochs together: each epoch's confidence sequence at alpha / (the epochs looked at), Bonferroni over
    them. 'Holds from epoch E' then errs with probability alpha at most, however many epochs and seeds were read.
    """

    epochs: tuple[int, ...]
    means: tuple[float, ...]
    lows: tuple[float, ...]  # -inf where the seeds are too few for a bounded interval; nan with one seed
    highs: tuple[float, ...]
    ns: tuple[int, ...]  # common seeds at each epoch
    sign: int  # +1: the claim is 'better scores above worse'; -1: 'below'
    alpha: float = ALPHA  # for all the epochs together

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

    @property
    def epoch_alpha(self) -> float:
        return self.alpha / max(1, len(self.epochs))

    def text(self) -> str:
        if not self.epochs:
            return "no scores over training"
        if max(self.ns) < 2:
            return "over training: cannot tell (fewer than 2 common seeds)"
        if not any(math.isfinite(low) for low in self.lows):  # every interval unbounded: no reading at all
            need = min_seeds(self.epoch_alpha)
            return (f"over training: cannot tell ({max(self.ns)} seeds are too few for intervals valid across "
                    f"{len(self.epochs)} epoch{'s' if len(self.epochs) > 1 else ''}; {need} would do)")
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


def trend(history: pd.DataFrame, better: str, worse: str, sign: int, alpha: float = ALPHA) -> Trend:
    """From a long frame (cell, seed, epoch, value): per epoch, the differences of the seeds both cells scored,
    each epoch's interval the confidence sequence at alpha / (the epochs scored)."""
    a = history[history["cell"] == better].set_index(["epoch", "seed"])["value"]
    b = history[history["cell"] == worse].set_index(["epoch", "seed"])["value"]
    paired = pd.concat({"a": a, "b": b}, axis=1).dropna()
    groups = [(int(epoch), (part["a"] - part["b"]).to_numpy()) for epoch, part in paired.groupby(level="epoch")]
    per_epoch = alpha / max(1, len(groups))
    epochs, means, lows, highs, ns = [], [], [], [], []
    for epoch, d in groups:
        sd = float(d.std(ddof=1)) if len(d) > 1 else math.nan
        interval = sequence(float(d.mean()), sd, len(d), per_epoch)
        epochs.append(epoch)
        means.append(interval.mean)
        lows.append(interval.low)
        highs.append(interval.high)
        ns.append(interval.n)
    return Trend(tuple(epochs), tuple(means), tuple(lows), tuple(highs), tuple(ns), sign, alpha)


# ---------------------------------------------------------------- verdicts


def verdict(diff: Difference, interval: Sequence, sign: int, effect: float, stated: bool = True) -> str:
    """From the anytime-valid interval of the mean difference: negligible (inside +-effect), reproduced / reversed
    (excludes 0 in / against the claimed direction); else which side of 0 the mean difference is on (both
    "not resolved": the words say which way the runs lean, and more seeds may settle it).

    A comparison nobody claimed (`stated` False) reads as what it found, in the score's own terms: higher /
    lower (the interval excludes 0), negligible, or not resolved (and which way it leans)."""
    if math.isnan(diff.mean):
        return "missing"
    if not stated:
        return _found(diff, interval, effect)
    good = sign * diff.mean
    if diff.method == "none":
        return "same direction, no interval (one seed)" if good > 0 else "other direction, no interval (one seed)"
    found = resolve(interval.low, interval.high, effect)
    if found == NEGLIGIBLE:
        return "negligible"
    if found != OPEN:
        return "reproduced" if found == (ABOVE if sign > 0 else BELOW) else "reversed"
    return "same direction, not resolved" if good > 0 else "other direction, not resolved"


def _found(diff: Difference, interval: Sequence, effect: float) -> str:
    """A comparison's verdict: higher, lower, negligible, or not resolved (leaning higher or lower)."""
    lean = "higher" if diff.mean > 0 else "lower"
    if diff.method == "none":
        return f"no interval (one seed), leans {lean}"
    found = resolve(interval.low, interval.high, effect)
    if found == NEGLIGIBLE:
        return "negligible"
    if found != OPEN:
        return "higher" if found == ABOVE else "lower"
    return f"not resolved, leans {lean}"


@dataclass(frozen=True)
class FixedLook:
    """What the lab's earlier fixed protocol says on the spec's own seeds: one paired t-test per claim, Holm over
    the claims, p < 0.05. Valid at that one look only; kept beside a sequential verdict read at more seeds."""

    seeds: tuple[int, ...]  # the common seeds it tested (the spec's)
    mean: float
    p_holm: float
    verdict: str

    def text(self) -> str:
        shown = f"{self.seeds[0]}-{self.seeds[-1]}" if self.seeds else "none"
        return f"the fixed {len(self.seeds)}-seed protocol (seeds {shown}, Holm) said {self.verdict} (Holm p = " \
               f"{format_p(self.p_holm)})"


def fixed_verdict(mean: float, p_holm: float, sign: int, alpha: float = ALPHA, stated: bool = True) -> str:
    """The fixed-n protocol's verdict: reproduced / reversed at Holm p < alpha, else which way the runs lean (a
    comparison nobody claimed: higher / lower, else not significant)."""
    if math.isnan(mean) or math.isnan(p_holm):
        return "not tested"
    if not stated:
        return ("higher" if mean > 0 else "lower") if p_holm < alpha else \
            f"not significant, leans {'higher' if mean > 0 else 'lower'}"
    if p_holm < alpha:
        return "reproduced" if sign * mean > 0 else "reversed"
    return "same direction, not significant" if sign * mean > 0 else "other direction, not significant"


def fixed_looks(runs: SweepRuns, metric: str, claims: list[paper.Claim]) -> list[FixedLook]:
    """Each claim as the fixed protocol judged it: paired over the spec's seeds only, Holm over the claims."""
    own = set(runs.seeds)
    diffs = [compare({s: v for s, v in runs.values(c.better, metric).items() if s in own},
                     {s: v for s, v in runs.values(c.worse, metric).items() if s in own}) for c in claims]
    adjusted = holm([d.p for d in diffs])
    sign = -1 if contract.lower_is_better(metric) else 1
    return [FixedLook(tuple(d.seeds), d.mean, p, fixed_verdict(d.mean, p, sign, stated=c.stated))
            for d, p, c in zip(diffs, adjusted, claims)]


def interval_for(diff: Difference, alpha: float) -> Sequence:
    """The confidence sequence of a paired difference at alpha; none (nan) for an unpaired or untested one:
    Welch's setting (two unknown variances, unmatched seeds) has no interval of this kind here."""
    if diff.method != "paired":
        return Sequence(diff.mean, math.nan, diff.n, alpha)
    return sequence(diff.mean, diff.sd, diff.n, alpha)


@dataclass(frozen=True)
class ClaimResult:
    claim: paper.Claim
    metric: str
    diff: Difference  # better - worse, in the score's units; its t-interval and p describe, they do not decide
    p_holm: float  # the fixed-n test's, Holm-corrected: descriptive too
    interval: Sequence  # the anytime-valid interval at alpha / claims: what the verdict reads
    verdict: str
    claims: int  # K, the claims of the sweep (Bonferroni's family; power at alpha / K)
    effect: float  # the smallest effect of interest for this score
    observed: Needed  # seeds for 80% power at the observed difference
    smallest: Needed  # ... at the smallest effect of interest
    power: float  # the power the current seeds have for the smallest effect
    trend: Trend | None = None
    fixed: FixedLook | None = None  # the fixed protocol at the spec's seeds, where seeds were added beyond them
    differences: tuple[tuple[int, float], ...] = ()  # (seed, better - worse) of the common seeds, in seed order
    signs: SignVerdict | None = None  # the distribution-free verdict: does one cell win in most seeds?
    shape: ShapeCheck | None = None  # the Gaussian assumption, checked on the differences
    left_out: tuple[tuple[int, str], ...] = ()  # (seed, the verdict without it) where leaving it out changes it

    @property
    def sign_word(self) -> str:
        """The sign verdict in the claim's words: reproduced / reversed (a stated claim), higher / lower (a
        comparison), or not resolved; '' without seeds."""
        if self.signs is None:
            return ""
        result = self.signs.result
        if result not in (SIGNS_ABOVE, SIGNS_BELOW):
            return "not resolved"
        if not self.claim.stated:
            return "higher" if result == SIGNS_ABOVE else "lower"
        return "reproduced" if (result == SIGNS_ABOVE) == (self.sign > 0) else "reversed"

    def sign_text(self) -> str:
        """'sign verdict **reproduced** in most seeds (12 of 14 seeds above, 2 below, 0 tied; e-value 57 >= 320 at
        alpha 0.05/4)'."""
        if self.signs is None:
            return "sign verdict: no common seeds"
        s, word = self.signs, self.sign_word
        e = max(s.e_above, s.e_below)
        found = f"**{word}** in most seeds" if word != "not resolved" else "**not resolved**"
        return (f"sign verdict {found} ({s.counts_text()}; e-value {e:.3g}, {s.threshold:.3g} decides at alpha "
                f"{ALPHA:g}/{self.claims})")

    def left_out_text(self) -> str:
        if not self.left_out:
            return ""
        each = ", ".join(f"without seed {seed} it reads {verdict}" for seed, verdict in self.left_out)
        return f"**hangs on one seed**: {each}"

    @property
    def sign(self) -> int:
        return -1 if contract.lower_is_better(self.metric) else 1

    @property
    def resolved(self) -> bool:
        """Whether the claim is settled (reproduced, reversed or negligible): more seeds would not change that."""
        return self.verdict in RESOLVED

    @property
    def text(self) -> str:
        """'70x70 scores above 1x1 on FCN class IoU'; a comparison nobody claimed: 'cGAN against GAN on ...'."""
        if not self.claim.stated:
            return f"{self.claim.better} against {self.claim.worse} on {contract.label(self.metric)}"
        side = "below" if self.sign < 0 else "above"
        return f"{self.claim.better} scores {side} {self.claim.worse} on {contract.label(self.metric)}"

    def interval_text(self) -> str:
        """'anytime-valid [0.051, 0.194] at alpha 0.05/4', or why there is none."""
        d, at = self.diff, f"at alpha {ALPHA:g}/{self.claims}"
        if d.method != "paired":
            return "no anytime-valid interval (needs 2 seeds both cells finished)"
        if not self.interval.bounded:
            return f"anytime-valid interval unbounded {at} (needs {min_seeds(self.interval.alpha)} common seeds)"
        text = f"anytime-valid {self.interval.text(digits(self.metric))} {at}"
        if self.verdict == "negligible" and resolve(self.interval.low, self.interval.high, math.nan) != OPEN:
            text += f" (excludes 0 too: a real difference, smaller than {self.effect:g})"
        return text

    def tests(self) -> str:
        """The fixed-n test, described: the t-interval and p at the seeds at hand."""
        d = self.diff
        if d.method == "none":
            return d.describe()
        kind = "Welch" if d.method == "welch" else "fixed-n"
        return f"{d.describe()}; {kind} 95% t-interval {d.text(digits(self.metric))}, p = {format_p(d.p)}"

    def power_text(self) -> str:
        """Power beside the verdict: now, for the smallest effect; and the seeds 80% would take (a fixed design)."""
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
        parts = [f"{self.text}: **{self.verdict}**, difference {self.diff.mean:+.{digits(self.metric)}f}, "
                 f"{self.interval_text()} ({self.tests()})"]
        if self.trend is not None:
            parts.append(self.trend.text())
        parts.append(self.power_text())
        if self.fixed is not None:
            parts.append(self.fixed.text())
        if self.diff.method == "paired":
            parts.append(self.sign_text())
        if self.left_out:
            parts.append(self.left_out_text())
        if self.shape is not None and self.shape.fails:
            parts.append(f"**assumption doubtful**: {self.shape.text()}")
        return "; ".join(parts)

    def record(self) -> dict:
        """findings.json's entry for this claim (numbers, nan and unbounded ends as null)."""
        d, iv = self.diff, self.interval
        paired = d.method == "paired"
        return {"claim": self.text, "metric": self.metric, "better": self.claim.better, "worse": self.claim.worse,
                "why": self.claim.why, "method": d.method, "seeds": d.n, "seeds_better": d.n_a,
                "seeds_worse": d.n_b, "common_seeds": list(d.seeds), "mean_difference": _num(d.mean),
                "low": _num(d.low), "high": _num(d.high), "p": _num(d.p), "p_holm": _num(self.p_holm),
                "verdict": self.verdict, "resolved": self.resolved,
                "anytime_valid": {"low": _num(iv.low), "high": _num(iv.high), "alpha": iv.alpha,
                                  "bounded": iv.bounded, "e_value": _num(iv.e_value) if paired else None,
                                  "min_seeds": min_seeds(iv.alpha), "negligible_within": _num(self.effect)},
                "holds_from_epoch": self.trend.holds_from if self.trend else None,
                "reversed_from_epoch": self.trend.reversed_from if self.trend else None,
                "sign_flips": [list(f) for f in self.trend.flips] if self.trend else [],
                "epochs": list(self.trend.epochs) if self.trend else [],
                "over_training": self.trend.text() if self.trend else None,
                "over_training_alpha_per_epoch": self.trend.epoch_alpha if self.trend and self.trend.epochs else None,
                "seeds_needed": {"observed": self.observed.value(), "smallest_effect": self.smallest.value(),
                                 "smallest_effect_size": self.effect, "power": 0.8,
                                 "alpha": ALPHA / max(1, self.claims)},
                "power_now": _num(self.power),
                "fixed_protocol": {"seeds": list(self.fixed.seeds), "mean_difference": _num(self.fixed.mean),
                                   "p_holm": _num(self.fixed.p_holm), "verdict": self.fixed.verdict}
                if self.fixed is not None else None,
                "stated": self.claim.stated,
                "per_seed_differences": {str(seed): d for seed, d in self.differences},
                "sign_test": {**self.signs.record(), "verdict": self.sign_word} if self.signs is not None else None,
                "shape": self.shape.record() if self.shape is not None else None,
                "leave_one_out": [{"seed": seed, "verdict": v} for seed, v in self.left_out]}


def judge_all(runs: SweepRuns, metric: str, history: pd.DataFrame | None = None,
              claims: list[paper.Claim] | None = None, family: int | None = None) -> list[ClaimResult]:
    """Every claim of the sweep on `metric`: its anytime-valid interval at alpha / K (Bonferroni over the K claims,
    a claim missing a cell included: the family is what the sweep set out to test), power, trend; beside it the
    sign verdict at the same alpha / K, the shape of the differences and the seeds the verdict hangs on.
    `family`: K where the family is larger than these claims (every score judged: claims x scores)."""
    claims = claims_for(runs) if claims is None else claims
    values = [(runs.values(c.better, metric), runs.values(c.worse, metric)) for c in claims]
    diffs = [compare(a, b) for a, b in values]
    adjusted = holm([d.p for d in diffs])
    k = family or len(claims)
    effect = load_effect_sizes().get(metric, math.nan)
    sign = -1 if contract.lower_is_better(metric) else 1
    added = any(s not in runs.seeds for s in runs.finished["seed"])  # --until-resolved went past the spec's seeds
    fixed = fixed_looks(runs, metric, claims) if added else [None] * k
    results = []
    for claim, diff, p_holm, look, (a, b) in zip(claims, diffs, adjusted, fixed, values):
        interval = interval_for(diff, ALPHA / k)
        over = trend(history, claim.better, claim.worse, sign, ALPHA / k) if history is not None else None
        found = verdict(diff, interval, sign, effect, claim.stated)
        differences = tuple((seed, a[seed] - b[seed]) for seed in sorted(set(a) & set(b)))
        d = [x for _, x in differences]
        results.append(ClaimResult(claim, metric, diff, p_holm, interval, found, k,
                                   effect, seeds_needed(diff, diff.mean, ALPHA / k),
                                   seeds_needed(diff, effect, ALPHA / k), power_now(diff, effect, ALPHA / k), over,
                                   look, differences, sign_verdict(d, ALPHA / k) if d else None, check_shape(d),
                                   leave_one_out(a, b, found, sign, effect, claim.stated, ALPHA / k)))
    return results


def leave_one_out(a: dict[int, float], b: dict[int, float], found: str, sign: int, effect: float, stated: bool,
                  alpha: float) -> tuple[tuple[int, str], ...]:
    """(seed, verdict) for each common seed whose leaving out changes the mean verdict: a verdict that hangs on one
    seed. A change is one of what the verdict settles (reproduced, reversed, negligible, higher, lower, or none of
    them): an open claim that only leans the other way without a seed has not changed. Descriptive: it names the
    seed to look at, it is not another test."""
    common = sorted(set(a) & set(b))
    if len(common) < 3:  # without one of 2 seeds there is no interval to read
        return ()
    changed = []
    for seed in common:
        diff = compare({s: v for s, v in a.items() if s != seed}, {s: v for s, v in b.items() if s != seed})
        without = verdict(diff, interval_for(diff, alpha), sign, effect, stated)
        if _settled(without) != _settled(found):
            changed.append((seed, without))
    return tuple(changed)


def _settled(verdict_text: str) -> str:
    return verdict_text if verdict_text in RESOLVED else "not resolved"


def flagged_seeds(runs: SweepRuns, metrics: list[str]) -> list[Flag]:
    """Every cell's seeds that the outlier rule (analysis/outliers.py, fixed before any result) flags, on each score."""
    return [flag for metric in metrics for cell in runs.cells
            for flag in flag_cell(cell, metric, runs.values(cell, metric), contract.lower_is_better(metric))]


def every_score(runs: SweepRuns, headline: str, metrics: list[str]) -> list[ClaimResult]:
    """The claims judged on each other logged score: a second family, Bonferroni over claims x scores at a
    family-wise ALPHA of its own (the headline family keeps its alpha / K)."""
    claims = claims_for(runs)
    others = [m for m in metrics if m != headline and runs.finished[m].notna().any()]
    family = len(claims) * len(others)
    return [r for m in others for r in judge_all(runs, m, claims=claims, family=family)]


def open_cells(results: list[ClaimResult]) -> set[str]:
    """The cells that the claims not yet resolved compare: where more seeds could still settle something.

    A pure function of the judged claims (judge_all), for a driver that adds seeds until every claim is
    resolved: the cells of resolved claims need no more seeds for them (a cell in both kinds of claim is
    still open). The verdicts stay valid however often this is asked: they come from confidence sequences.
    """
    return {cell for r in results if not r.resolved for cell in (r.claim.better, r.claim.worse)}


def method_summary(results: list[ClaimResult]) -> str:
    """How the differences were judged, for the report's header."""
    paired = sorted({r.diff.n for r in results if r.diff.method == "paired"})
    welch = [r.text for r in results if r.diff.method == "welch"]
    untested = [r for r in results if r.diff.method == "none"]
    parts = []
    if paired:
        seeds = str(paired[0]) if len(paired) == 1 else f"{paired[0]}-{paired[-1]}"
        parts.append(f"the per-seed differences over the {seeds} common seeds of the two cells, judged by a "
                     f"{METHOD}, prior precision c = {MIXTURE_PRECISION:g}")
    if welch:
        parts.append(f"no anytime-valid interval where the cells share fewer than 2 seeds (Welch's t-test "
                     f"describes them: {len(welch)} of {len(results)} claims)")
    if untested:
        parts.append(f"no test where a cell has fewer than 2 seeds ({len(untested)} claims)")
    return "; ".join(parts) if parts else "no test yet"


def digits(metric: str) -> int:
    return contract.digits(metric)




# ---------------------------------------------------------------- for `p2p sweep` (--dry-run, --until-resolved)


def read_findings(spec, scale: str) -> Findings:
    """What the sweep's finished runs say about its claims, for `p2p sweep` (its dry run and --until-resolved):
    every claim open (no lines) while no run has finished. A grid spec only."""
    from analysis.load import load_sweep  # lazy: the dry run imports this module without MLflow
    from p2p import tracking  # lazy, as load_sweep

    if tracking.store_exists() and tracking.experiment_exists(spec.name):
        runs = load_sweep(spec.name, scale, spec=spec)
    else:  # nothing tracked yet: read nothing (and create no store)
        runs = SweepRuns(spec.name, scale, None, [c.name for c in spec.cells], list(spec.seeds_for(scale)),
                         spec.objective, spec.direction, pd.DataFrame(columns=["cell", "seed", "status"]))
    if runs.finished.empty:
        claims = claims_for(runs)
        return Findings(len(claims), frozenset(c for claim in claims for c in (claim.better, claim.worse)), ())
    metric = comparison_metric(runs)
    results = judge_all(runs, metric)
    return Findings(len(results), frozenset(open_cells(results)),
                    tuple(findings_lines(results, metric, len(runs.finished))))


def findings_lines(results: list[ClaimResult], metric: str, finished: int) -> list[str]:
    """The dry run's lines: the verdicts counted, then per claim its verdict, interval and the seeds power asks for."""
    if not results:
        return ["  findings so far: no claims"]
    k = len(results)
    lines = [f"  findings so far on {contract.label(metric)} ({finished} finished runs): "
             f"{tally([r.verdict for r in results])}; anytime-valid intervals at alpha {ALPHA:g}/{k} "
             f"(negligible within +-{results[0].effect:g}); seeds a fixed design needs for 80% power at alpha "
             f"{ALPHA:g}/{k} (observed difference, smallest effect)"]
    for r in results:
        need = f"seeds needed {r.observed.text()}, {r.smallest.text()}" if r.diff.method != "none" else \
            "seeds needed: n/a (fewer than 2 seeds)"
        shown = r.interval.text(digits(metric)) if r.diff.method == "paired" else "no interval"
        lines.append(f"    {r.claim.better} vs {r.claim.worse}: {r.verdict}, {r.diff.mean:+.{digits(metric)}f} "
                     f"{shown} ({r.diff.describe()}); {need}")
    return lines

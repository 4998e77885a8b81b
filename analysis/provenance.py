"""Where a report's numbers come from: commits, machine, dates, wall time, and the command that reproduces them."""

from __future__ import annotations

import math
import re
import statistics
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from analysis.load import SweepRuns
from p2p.contract import Tag

MAKE_SWEEPS = ("patchsize", "loss", "generator", "tricks")  # the Makefile's sweep-<name> targets
DEFAULT_OUT = Path("reports")  # what `make report` writes to
PAUSE_FACTOR, PAUSE_MIN_MS = 3.0, 5 * 60 * 1000  # a gap between epochs this long is a pause, not work

Span = tuple[int, int]  # [start, end] in ms since the epoch


def active_spans(start: int, end: int, stamps: list[int]) -> list[Span]:
    """A run's [start, end] without its pauses.

    A run whose worker died continues in the same MLflow run when the sweep is resumed, maybe
    the next day, so its [start, end] spans the gap. Epochs are logged at `stamps`: a gap
    between two of them longer than 3x the run's median gap (and over 5 min) is a pause, and
    counts as one median gap (the epoch redone after resuming).
    """
    points = sorted({start, end, *(s for s in stamps if start <= s <= end)})
    gaps = [b - a for a, b in zip(points, points[1:])]
    if len(gaps) < 3:  # too few epochs to tell a pause from a long epoch
        return [(start, end)]
    typical = statistics.median(gaps)
    spans, begin = [], points[0]
    for a, b in zip(points, points[1:]):
        if b - a > max(PAUSE_FACTOR * typical, PAUSE_MIN_MS):
            spans.append((begin, a))
            begin = int(b - typical)
    spans.append((begin, points[-1]))
    return spans


def union_ms(spans: list[Span]) -> int:
    """Total length of the union of intervals (overlaps counted once, gaps not at all)."""
    total, reach = 0, None
    for a, b in sorted(spans):
        if reach is None or a > reach:
            total += b - a
            reach = b
        elif b > reach:
            total += b - reach
            reach = b
    return total


def split_set_tag(tag: str) -> list[str]:
    """The parent run's set tag (the --set values joined by spaces) back into key=value items."""
    return [item for item in re.split(r"\s+(?=[A-Za-z_][\w.]*=)", tag.strip()) if item]


def reproduce_commands(runs: SweepRuns, out_root: Path) -> list[str]:
    """The commands that rerun the sweep and rewrite this report."""
    name, scale = runs.name, runs.scale
    sets = split_set_tag(runs.parent_tags.get(Tag.SET, ""))
    added = runs.added_seeds
    if added and runs.spec_path is not None:  # --until-resolved: its seeds again, up to the most a cell reached
        most = max(runs.seeds_per_cell().values())
        sweep = (f".venv/bin/p2p sweep sweeps/{name}.yaml --scale {scale}" + "".join(f" --set {_quote(s)}" for s in sets)
                 + f" --until-resolved --max-seeds {most}")
    elif name in MAKE_SWEEPS and not sets and runs.spec_path is not None:
        sweep = f"make sweep-{name} SCALE={scale}"
    else:  # make passes no --set (and knows only the four sweeps): the p2p command itself
        spec = f"sweeps/{name}.yaml" if runs.spec_path is not None else f"SPEC --name {name}"
        sweep = f".venv/bin/p2p sweep {spec} --scale {scale}" + "".join(f" --set {_quote(s)}" for s in sets)
    report = f"make report SWEEP={name} SCALE={scale}"
    if Path(out_root) != DEFAULT_OUT:
        report = f".venv/bin/p2p report {name} --scale {scale} --out {out_root}"
    return [sweep, report]


def _quote(item: str) -> str:
    return f"'{item}'" if re.search(r"[\s\[\]{}*?'\"$]", item) else item


@dataclass(frozen=True)
class Provenance:
    commits: list[tuple[str, int]]  # (commit, finished runs), most runs first
    machines: list[tuple[str, int]]
    first_start: int | None  # ms
    last_end: int | None
    wall_ms: int
    commands: list[str]

    def lines(self) -> list[str]:
        commits = ", ".join(f"`{c[:12]}` ({n} run{'s' if n > 1 else ''})" for c, n in self.commits) or "unknown"
        machines = "; ".join(f"{m} ({n} run{'s' if n > 1 else ''})" for m, n in self.machines) or \
            f"unknown (the runs carry no {Tag.MACHINE} tag)"
        dates = f"{_date(self.first_start)} to {_date(self.last_end)} UTC" if self.first_start else "no runs yet"
        return [f"Code: git commit {commits}.", f"Machine: {machines}.",
                f"Runs: {dates}; wall time {_duration(self.wall_ms)} (the union of the runs' active time: "
                "a pause between sittings does not count).",
                "Reproduce: " + ", then ".join(f"`{c}`" for c in self.commands) + "."]

    def record(self) -> dict:
        return {"commits": [c for c, _ in self.commits], "machines": [m for m, _ in self.machines],
                "first_start": _date(self.first_start) if self.first_start else None,
                "last_end": _date(self.last_end) if self.last_end else None, "wall_time_s": self.wall_ms / 1000,
                "commands": self.commands}


def provenance(runs: SweepRuns, out_root: Path, stamps: dict[str, list[int]] | None = None) -> Provenance:
    """From the child runs: their commits and machines (finished runs), dates and wall time (all runs)."""
    finished, trials = runs.finished, runs.trials
    stamps = stamps or {}
    spans, starts, ends = [], [], []
    for run in trials.itertuples():
        if _missing(run.start_time):
            continue
        marks = stamps.get(run.run_id, [])
        end = int(run.end_time) if not _missing(run.end_time) else max([int(run.start_time), *marks])
        spans += active_spans(int(run.start_time), end, marks)
        starts.append(int(run.start_time))
        ends.append(end)
    machines = [f"{m}, {p}" if isinstance(p, str) and p else m for m, p in zip(finished["machine"], finished["precision"])] \
        if "precision" in finished else finished["machine"]
    return Provenance(_counts(finished["git_commit"]), _counts(pd.Series(machines, dtype=object)), min(starts, default=None),
                      max(ends, default=None), union_ms(spans), reproduce_commands(runs, out_root))


def _counts(column: pd.Series) -> list[tuple[str, int]]:
    return Counter(v for v in column if isinstance(v, str) and v).most_common()


def _missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _date(ms: int | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.gmtime(ms / 1000)) if ms else "-"


def _duration(ms: int) -> str:
    s = ms / 1000
    if s < 90:
        return f"{s:.0f} s"
    if s < 3 * 3600:
        return f"{s / 60:.0f} min"
    return f"{s / 3600:.1f} h"

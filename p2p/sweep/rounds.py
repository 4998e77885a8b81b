"""`p2p sweep SPEC --until-resolved`: seeds in rounds until every claim of the sweep is settled.

After each round every claim is judged again. The verdicts come from anytime-valid confidence sequences
(analysis/sequential.py), so reading them after every round keeps their stated error rate. A claim
reproduced, reversed or negligible is settled; the next round gives seeds only to the cells that open
claims compare, each up to the same count (a claim pairs the seeds its two cells share). The command stops
when every claim is settled, when the open cells have --max-seeds seeds, or before a round that would end
past --budget (each round's time is estimated first: from the cell's finished trials, else measured).

Everything lives in the sweep's study (the queued trials) and the tracking store (the finished runs), so
it resumes like any sweep: run the same command again and it finishes the round under way, then goes on.
"""

from __future__ import annotations

import math
import re
import statistics
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

from p2p.errors import UserError
from p2p.sweep.claims import FindingsReader
from p2p.sweep.driver import (
    Plan,
    SweepOptions,
    default_storage_url,
    describe,
    make_plan,
    resolve_pack,
    resolve_scale,
    resolve_workers,
    run_trials,
)
from p2p.sweep.progress import Progress
from p2p.sweep.spec import SweepSpec, TrialKey, load_spec

ROUND_SEEDS = 2  # seeds each open cell gains per round: a look every 2 seeds (the verdicts allow any number)
DEFAULT_MAX_SEEDS = 30  # per cell: the simulation tests check the error rate with a look at every seed up to 30

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|min|h)?\s*$")
_UNIT_S = {"s": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0, None: 60.0}


@dataclass(frozen=True)
class Rounds:
    max_seeds: int = DEFAULT_MAX_SEEDS  # per cell (the spec's own seeds always run)
    budget_s: float | None = None  # wall time of the whole command; None: no limit


def parse_duration(text: str, where: str) -> float:
    """Seconds in '150m', '2.5h', '900s' or '90' (minutes)."""
    match = _DURATION.match(text)
    if match is None or float(match[1]) <= 0:
        raise UserError(f"{where} {text}: expected a duration such as 150m, 2.5h or 900s")
    return float(match[1]) * _UNIT_S[match[2]]


def seed_sequence(spec: SweepSpec, scale: str, count: int) -> list[int]:
    """A cell's first `count` seeds: the spec's own, then the integers after the largest of them."""
    own = list(spec.seeds_for(scale))
    return own[:count] + list(range(max(own) + 1, max(own) + 1 + count - len(own)))


def next_round(spec: SweepSpec, scale: str, keys: list[TrialKey], open_cells: set[str] | frozenset[str],
               max_seeds: int, step: int = ROUND_SEEDS) -> list[TrialKey]:
    """The trials of the next round: every open cell up to one count of seeds, `step` more than the most any
    open cell has (at most `max_seeds`); seed-major, so a round cut short leaves whole seeds."""
    cells = [c.name for c in spec.cells if c.name in open_cells]
    if not cells:
        return []
    have = max(sum(1 for k in keys if k.cell == cell) for cell in cells)
    target = min(max_seeds, have + step)
    queued = set(keys)
    return [TrialKey(cell, seed) for seed in seed_sequence(spec, scale, target) for cell in cells
            if TrialKey(cell, seed) not in queued]


def run_until_resolved(spec_path: str | Path, options: SweepOptions, rounds: Rounds, findings: FindingsReader,
                       dry_run: bool = False) -> int:
    from p2p.sweep import study as studies  # lazy: optuna, only when a round runs
    from p2p.sweep.estimate import wall_time_text  # lazy: torch (p2p.data); p2p --help reads this module

    started = time.monotonic()
    spec = load_spec(spec_path, options.name)
    if spec.search is not None:
        raise UserError(f"{spec.path}: --until-resolved needs a grid of cells to compare; this spec is a search")
    plan = make_plan(spec, resolve_scale(options.scale), list(options.overrides))
    cells = {c.name for c in spec.cells}
    url = options.storage or default_storage_url()
    look = 0
    while True:
        study = studies.find(url, spec, plan.scale)
        queued = [k for k in studies.queued_keys(study) if k.cell in cells] if study is not None else []
        keys = list(dict.fromkeys(plan.keys + queued))
        states = studies.key_states(study, keys) if study is not None else {}
        todo = [k for k in keys if k not in states or not states[k].state.settled]
        if not todo:  # every queued trial has ended: judge the claims, and plan the next round
            look += 1
            found = findings(spec, plan.scale)
            print("\n".join(found.lines), flush=True)
            open_cells = set(found.open_cells) - set(plan.invalid)
            if not open_cells:
                print(f"p2p: sweep {spec.name}: every claim is resolved ({found.claims} claims)", flush=True)
                return 0
            todo = next_round(spec, plan.scale, keys, open_cells, rounds.max_seeds)
            if not todo:
                print(f"p2p: sweep {spec.name}: --max-seeds {rounds.max_seeds} reached with claims still open "
                      f"(cells {', '.join(sorted(open_cells))})", flush=True)
                return 0
            keys += todo
        round_plan = replace(plan, keys=keys)
        what = _round_text(todo)
        if dry_run:
            print(f"until resolved: the next round runs {what} (its time is the estimate below)")
            print(describe(round_plan, options, findings))
            return 0
        seconds = round_seconds(round_plan, states, todo, options)
        spent = time.monotonic() - started
        if rounds.budget_s is not None and spent + seconds > rounds.budget_s:
            print(f"p2p: sweep {spec.name}: stopping before a round of {what}: it would take about "
                  f"{wall_time_text(seconds)} and {wall_time_text(max(0.0, rounds.budget_s - spent))} of --budget is left",
                  flush=True)
            return 0
        print(f"p2p: sweep {spec.name}: round of {what}, about {wall_time_text(seconds)}", file=sys.stderr, flush=True)
        code = run_trials(spec_path, round_plan, options)
        if code != 0:
            return code
        after = studies.key_states(studies.find(url, spec, plan.scale), todo)
        if not any(state.state == Progress.DONE for state in after.values()):
            print(f"p2p: sweep {spec.name}: a round of {what} finished no trial; stopping (see the failures above)",
                  file=sys.stderr)
            return 1


def round_seconds(plan: Plan, states: dict, todo: list[TrialKey], options: SweepOptions) -> float:
    """The round's wall time: each trial as long as its cell's finished trials took (their median), else as
    long as a step measured now says; scheduled on the workers the round would start."""
    from p2p.sweep import study as studies  # lazy: optuna, only when a round runs
    from p2p.sweep.estimate import measure_step_seconds, run_seconds, schedule_seconds  # lazy, as above

    pack = resolve_pack(options.pack)
    workers, threads = resolve_workers(options.workers, math.ceil(len(todo) / pack), options.per_gpu)
    per_cell: dict[str, float] = {}
    for cell in {k.cell for k in todo}:
        taken = [t for key, state in states.items() if key.cell == cell
                 if (t := studies.seconds_taken(state)) is not None]
        if taken:
            per_cell[cell] = statistics.median(taken)
        elif cell in plan.configs:
            per_cell[cell] = run_seconds(plan.configs[cell], measure_step_seconds(plan.configs[cell], threads))
        else:  # an invalid cell: its trials fail at once
            per_cell[cell] = 0.0
    return schedule_seconds([per_cell[k.cell] for k in todo], workers)


def _round_text(todo: list[TrialKey]) -> str:
    """'4 trials: seeds 4-5 of 1x1, 70x70'."""
    seeds = sorted({k.seed for k in todo})
    cells = list(dict.fromkeys(k.cell for k in todo))
    shown = f"{seeds[0]}" if len(seeds) == 1 else f"{seeds[0]}-{seeds[-1]}"
    return f"{len(todo)} trial{'s' if len(todo) > 1 else ''}: seed{'s' if len(seeds) > 1 else ''} {shown} of " \
           f"{', '.join(cells)}"


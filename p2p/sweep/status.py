"""`p2p sweep SPEC --status`: where a sweep stands, read from its study, whatever started its workers.

Per cell: trials done, running, failed and queued; then each running trial with its epoch, its worker
(host:pid) and how long ago it last beat (a trial silent for 3 heartbeats is taken over by another worker).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from p2p.errors import UserError
from p2p.sweep.driver import SweepOptions, default_storage_url, resolve_scale
from p2p.sweep.progress import Progress
from p2p.sweep.spec import load_spec

COLUMNS = ("done", "running", "failed", "queued")
# A key's state (study.key_states) as a column: a (cell, seed) without a live trial is waiting for one.
COLUMN_OF = {Progress.DONE: "done", Progress.RUNNING: "running", Progress.FAILED: "failed", Progress.WAITING: "queued",
             Progress.MISSING: "queued"}


def sweep_status(spec_path: str | Path, options: SweepOptions) -> int:
    from p2p.sweep import study as studies

    spec = load_spec(spec_path, options.name)
    scale = resolve_scale(options.scale)
    url = options.storage or default_storage_url()
    study = studies.find(url, spec, scale)
    if study is None:
        raise UserError(f"{spec.path}: no sweep '{studies.study_name(spec.name, scale)}' in {studies.redact(url)} "
                        "(a sweep on another storage or scale: pass its --storage and --scale)")
    trials = studies.records(study)
    if spec.search is None:
        rows = cell_counts(studies.key_states(trials, studies.queued_keys(study)).values())
    else:
        column = {studies.COMPLETE: "done", studies.PRUNED: "done", studies.RUNNING: "running",
                  studies.FAILED: "failed", studies.WAITING: "queued"}
        replaced = studies.retried_numbers(trials)  # a dead worker's trial counts once, as its retry copy
        rows = {"search": Counter(column[t.state] for t in trials if t.number not in replaced)}
    running = [t for t in trials if t.state == studies.RUNNING]
    print(format_status(f"{spec.name} ({scale})", studies.redact(url), rows, running, studies.heartbeat_ages(study)))
    return 0


def cell_counts(states) -> dict[str, Counter]:
    rows: dict[str, Counter] = {}
    for state in states:
        rows.setdefault(state.key.cell, Counter())[COLUMN_OF[state.state]] += 1
    return rows


def format_status(title: str, storage: str, rows: dict[str, Counter], running: list, ages: dict[int, float]) -> str:
    total = Counter()
    for counts in rows.values():
        total.update(counts)
    lines = [f"sweep {title}: {total['done']} done, {total['running']} running, {total['failed']} failed, "
             f"{total['queued']} queued; storage {storage}",
             f"  {'cell':28s} " + " ".join(f"{c:>8s}" for c in COLUMNS)]
    for cell, counts in rows.items():
        lines.append(f"  {cell:28s} " + " ".join(f"{counts[c]:>8d}" for c in COLUMNS))
    if running:
        lines.append("  running:")
    for trial in running:
        age = ages.get(trial.number)
        beat = f"last heartbeat {age:.0f}s ago" if age is not None else "no heartbeat yet"
        lines.append(f"    {trial.label:28s} epoch {trial.epoch:<4d} worker {trial.worker or '?':24s} {beat}")
    return "\n".join(lines)

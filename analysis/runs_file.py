"""A sweep's per-seed data as files a reader can keep: `runs.csv` (one row per trial) and `epochs.csv` (every
per-epoch point), written beside each published report and read back by `p2p report SWEEP --runs runs.csv`
to rebuild the report and findings.json without the MLflow store.

runs.csv holds, per trial: the sweep (name, scale, parent run, --set values, objective), the cell and seed
(and whether the seed is one of the spec's own: `--until-resolved` adds others), the run (id, name, status,
failure, start and end in ms since the epoch, wall seconds), where it ran (commit, machine, precision), the
scoring settings the report quotes, and every final score under its MLflow name (`eval/fcn_iou`, ...). Rows
are in the spec's cell order, then by seed. Status FINISHED marks the finished trials; the others are kept
so that the Progress section and the wall time read the same as from MLflow.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from analysis.load import EPOCH_COLUMNS, EVAL_PARAMS, SCORES, SweepRuns, epoch_points, spec_file, stated_claims
from analysis.provenance import _missing  # one rule for a time MLflow may not have
from p2p import contract
from p2p.contract import Tag
from p2p.errors import UserError

RUNS_CSV = "runs.csv"
EPOCHS_CSV = "epochs.csv"  # beside runs.csv
SWEEP_COLUMNS = ["sweep", "scale", "sweep_run_id", "sweep_set", "objective"]
TRIAL_COLUMNS = ["cell", "seed", "spec_seed", "run_id", "run_name", "status", "failure", "start_time", "end_time",
                 "wall_s", "git_commit", "machine", "precision"]
PARAM_COLUMNS = list(EVAL_PARAMS.values())  # dataset, every, ..., epochs, decay_epochs: as MLflow holds them (text)
RUNS_COLUMNS = SWEEP_COLUMNS + TRIAL_COLUMNS + PARAM_COLUMNS + SCORES
TEXT_COLUMNS = ["sweep", "scale", "sweep_run_id", "sweep_set", "objective", "cell", "run_id", "run_name", "status",
                "failure", "git_commit", "machine", "precision", *PARAM_COLUMNS]


def write_runs(runs: SweepRuns, folder: Path) -> tuple[Path, Path]:
    """runs.csv and epochs.csv of `runs` in `folder`; returns their paths."""
    folder.mkdir(parents=True, exist_ok=True)
    order = {c: i for i, c in enumerate(runs.cells)}
    trials = runs.trials.sort_values(["cell", "seed"], key=lambda col: col.map(order) if col.name == "cell" else col,
                                     kind="stable")
    own = set(runs.seeds)
    frame = trials.assign(sweep=runs.name, scale=runs.scale, sweep_run_id=runs.parent_run_id or "",
                          sweep_set=runs.parent_tags.get(Tag.SET, ""), objective=runs.objective,
                          spec_seed=[int(s) in own for s in trials["seed"]],
                          wall_s=[_wall_s(a, b) for a, b in zip(trials["start_time"], trials["end_time"])])
    runs_path, epochs_path = folder / RUNS_CSV, folder / EPOCHS_CSV
    _write_atomic(frame[RUNS_COLUMNS], runs_path)
    points = epoch_points(runs)
    keep = points["run_id"].isin(frame["run_id"])
    _write_atomic(points[keep].sort_values(["run_id", "metric", "time_ms", "epoch"], kind="stable")[EPOCH_COLUMNS],
                  epochs_path)
    return runs_path, epochs_path


def read_runs(path: Path, sweep: str | None = None, root: Path = Path(".")) -> SweepRuns:
    """The SweepRuns a runs.csv (and the epochs.csv beside it) describes: what `load_sweep` reads from MLflow."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"--runs {path}: no such file (a sweep's runs.csv, e.g. results/cpu/loss/runs.csv)")
    try:
        frame = pd.read_csv(path, dtype={c: str for c in TEXT_COLUMNS}, keep_default_na=False, na_values={
            c: [""] for c in RUNS_COLUMNS if c not in ("failure", "sweep_set", "sweep_run_id")})
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as exc:
        raise UserError(f"--runs {path}: not a runs.csv ({type(exc).__name__}: {str(exc).splitlines()[0]})") from None
    missing = [c for c in RUNS_COLUMNS if c not in frame.columns]
    if missing:
        raise UserError(f"--runs {path}: not a runs.csv written by `p2p report --out` (no column "
                        f"{', '.join(missing[:3])}{'...' if len(missing) > 3 else ''})")
    names = sorted(set(frame["sweep"]))
    if len(names) != 1 or len(set(frame["scale"])) != 1:
        raise UserError(f"--runs {path}: expected the trials of one sweep at one scale (found sweeps "
                        f"{', '.join(names) or 'none'})")
    name, scale = names[0], str(frame["scale"].iloc[0])
    if sweep is not None and sweep != name:
        raise UserError(f"--runs {path}: holds the sweep {name!r}, not {sweep!r}")
    epochs_path = path.parent / EPOCHS_CSV
    if not epochs_path.is_file():
        raise UserError(f"--runs {path}: no {EPOCHS_CSV} beside it (the per-epoch scores and losses)")
    epochs = pd.read_csv(epochs_path, dtype={"run_id": str, "cell": str, "metric": str})
    if list(epochs.columns) != EPOCH_COLUMNS:
        raise UserError(f"{epochs_path}: expected the columns {', '.join(EPOCH_COLUMNS)}")

    frame["seed"] = frame["seed"].astype(int)
    frame["spec_seed"] = frame["spec_seed"].astype(str).str.lower() == "true"
    for column in ("start_time", "end_time"):
        frame[column] = [None if _missing(v) else int(v) for v in frame[column]]
    frame["parent"] = frame["sweep_run_id"].replace("", None)
    cells = list(dict.fromkeys(frame["cell"]))
    seeds = sorted({int(s) for s, own in zip(frame["seed"], frame["spec_seed"]) if own})
    objective = str(frame["objective"].iloc[0])
    parent_run_id = str(frame["sweep_run_id"].iloc[0]) or None
    sweep_set = str(frame["sweep_set"].iloc[0])
    trials = frame.drop(columns=[*SWEEP_COLUMNS, "spec_seed", "wall_s"]).reset_index(drop=True)
    spec_path = spec_file(name, root)
    return SweepRuns(name, scale, parent_run_id, cells, seeds, objective, contract.score(objective).direction, trials,
                     spec_path, [], {Tag.SET: sweep_set} if sweep_set else {},
                     epochs.astype({"seed": int, "epoch": int, "time_ms": "int64"}), str(path), stated_claims(spec_path))


def _write_atomic(frame: pd.DataFrame, path: Path) -> None:
    """Whole or not at all: a report stopped half-way leaves the previous file."""
    tmp = path.with_name(path.name + ".tmp")
    frame.to_csv(tmp, index=False, float_format="%.17g")
    tmp.replace(path)


def _wall_s(start, end) -> float | None:
    return None if _missing(start) or _missing(end) else (int(end) - int(start)) / 1000


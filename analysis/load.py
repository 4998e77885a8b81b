"""A sweep's runs from MLflow as pandas frames (through p2p.tracking; no trainer imports)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from p2p import contract, tracking
from p2p.contract import Tag
from p2p.errors import UserError
from p2p.sweep.spec import load_spec
from p2p.tracking_protocol import RunStatus

SCORES = [s.key for s in contract.REPORTED]  # the scores a report tabulates (what a default run logs)
# The per-epoch metrics a report reads: the scores over training, the losses, and the learning rate (logged once
# per epoch, so its timestamps say when each epoch ended).
EPOCH_METRICS = [*SCORES, *(loss.key for loss in contract.LOSSES), contract.LR]
EPOCH_COLUMNS = ["run_id", "cell", "seed", "metric", "epoch", "value", "time_ms"]
# Run params the report reads: how many test images each scoring pass used.
EVAL_PARAMS = {"data.dataset": "dataset", "eval.every": "every", "eval.every_max_images": "every_max_images",
               "eval.max_images": "max_images",
               "optim.epochs": "epochs", "optim.decay_epochs": "decay_epochs"}


@dataclass
class SweepRuns:
    """What MLflow holds for one sweep at one scale."""

    name: str
    scale: str
    parent_run_id: str | None
    cells: list[str]  # expected, in the spec's order
    seeds: list[int]  # expected
    objective: str
    direction: str
    trials: pd.DataFrame  # one row per child run: run_id, cell, seed, status, failure, times, tags, SCORES
    spec_path: Path | None = None
    notes: list[str] = field(default_factory=list)
    parent_tags: dict[str, str] = field(default_factory=dict)
    # Every logged point of the per-epoch metrics (EPOCH_METRICS) of every trial: run_id, cell, seed, metric, epoch,
    # value, time_ms. None until asked for (`epoch_points`): read from MLflow then, or given by runs.csv's epochs.csv.
    epochs: pd.DataFrame | None = None
    source: str | None = None  # the runs.csv the runs were read from; None: the MLflow store
    stated: tuple = ()  # the spec's own claims (p2p.sweep.spec.StatedClaim), judged like the paper's

    def values(self, cell: str, metric: str) -> dict[int, float]:
        """{seed: final score} of a cell's finished runs."""
        part = self.finished[self.finished["cell"] == cell][["seed", metric]].dropna()
        return {int(s): float(v) for s, v in zip(part["seed"], part[metric])}

    @property
    def finished(self) -> pd.DataFrame:
        return self.trials[self.trials["status"] == RunStatus.FINISHED]

    def seeds_per_cell(self) -> dict[str, int]:
        """Finished seeds of each cell (the spec's, and any `--until-resolved` added)."""
        return {cell: int((self.finished["cell"] == cell).sum()) for cell in self.cells}

    @property
    def added_seeds(self) -> list[int]:
        """Seeds of finished runs beyond the spec's own: `--until-resolved` ran them."""
        return sorted({int(s) for s in self.finished["seed"]} - set(self.seeds))

    def trials_planned(self) -> int:
        """The trials the sweep set out to run: the spec's cells x seeds, and the seeds `--until-resolved` added."""
        queued = set(zip(self.trials["cell"], (int(s) for s in self.trials["seed"])))
        return len(queued | {(c, s) for c in self.cells for s in self.seeds})

    def missing(self) -> list[tuple[str, int]]:
        """(cell, seed) pairs of the spec without a finished run."""
        done = set(zip(self.finished["cell"], self.finished["seed"]))
        return [(c, s) for s in self.seeds for c in self.cells if (c, s) not in done]

    def failed(self) -> pd.DataFrame:
        """Runs that ended FAILED or KILLED and were not redone by a finished run of the same trial."""
        done = set(zip(self.finished["cell"], self.finished["seed"]))
        bad = self.trials[self.trials["status"].isin([RunStatus.FAILED, RunStatus.KILLED])]
        return bad[[(c, s) not in done for c, s in zip(bad["cell"], bad["seed"])]]


def spec_file(sweep: str, root: Path = Path(".")) -> Path | None:
    path = root / "sweeps" / f"{sweep}.yaml"
    return path if path.is_file() else None


def load_sweep(sweep: str, scale: str | None = None, root: Path = Path("."), spec=None) -> SweepRuns:
    """Runs of the sweep named `sweep` (its MLflow experiment) at `scale` (default: the newest parent's).

    `spec` (a loaded SweepSpec) gives the expected cells and seeds; without it, sweeps/<sweep>.yaml does.
    """
    path = spec.path if spec is not None else spec_file(sweep, root)
    exists = tracking.experiment_exists(sweep)
    if path is None and not exists:
        known = sorted(p.stem for p in (root / "sweeps").glob("*.yaml")) if (root / "sweeps").is_dir() else []
        raise UserError(f"sweep '{sweep}': no sweeps/{sweep}.yaml and no MLflow experiment of that name "
                        f"in {tracking.tracking_uri()} (sweeps: {', '.join(known) or 'none'})")
    records = tracking.find_runs(contract.sweep_experiment(sweep)) if exists else []
    parents = [r for r in records if r.tags.get(Tag.ROLE) == contract.ROLE_SWEEP or
               (Tag.PARENT not in r.tags and r.tags.get(Tag.CELL) is None)]
    if scale is None:
        scales = [p.tags.get(Tag.SCALE) for p in parents if p.tags.get(Tag.SCALE)]
        scales += [r.tags.get(Tag.SCALE) for r in records if r.tags.get(Tag.SCALE)]
        scale = scales[0] if scales else "cpu"  # records come newest first
    parent = next((p for p in parents if p.tags.get(Tag.SCALE) == scale), None)

    cells, seeds, objective, direction, notes = [], [], contract.HEADLINE.key, contract.HEADLINE.direction, []
    stated = ()
    if path is not None:
        spec = spec or load_spec(path)
        cells = [c.name for c in spec.cells]
        seeds = list(spec.seeds_for(scale))
        objective, direction = spec.objective, spec.direction
        stated = spec.claims
    elif parent is not None and parent.tags.get(Tag.CELLS):  # the spec's cells, in its order, as the sweep logged them
        cells = [c for c in parent.tags[Tag.CELLS].split(",") if c]
        notes.append(f"no sweeps/{sweep}.yaml here: the cells are those the sweep's parent run lists")
    else:
        notes.append(f"no sweeps/{sweep}.yaml here: the expected cells are those with runs")

    rows = []
    for r in records:
        tags = r.tags
        if Tag.CELL not in tags or tags.get(Tag.SCALE, scale) != scale:
            continue
        row = {"run_id": r.run_id, "run_name": r.run_name, "cell": tags[Tag.CELL],
               "seed": int(tags.get(Tag.SEED, 0)), "status": r.status, "failure": tags.get(Tag.FAILURE, ""),
               "start_time": r.start_time, "end_time": r.end_time, "parent": tags.get(Tag.PARENT),
               "git_commit": tags.get(Tag.GIT_COMMIT), "machine": tags.get(Tag.MACHINE),
               "precision": tags.get(Tag.PRECISION) or _unresolved(r.params.get("runtime.precision"))}
        row.update({short: r.params.get(key) for key, short in EVAL_PARAMS.items()})
        row.update({k: r.metrics.get(k) for k in SCORES})
        rows.append(row)
    trials = pd.DataFrame(rows, columns=["run_id", "run_name", "cell", "seed", "status", "failure", "start_time",
                                         "end_time", "parent", "git_commit", "machine", "precision", *EVAL_PARAMS.values(),
                                         *SCORES])
    # A trial may have several runs (a worker died and it started again): keep the newest per status.
    trials = trials.sort_values("start_time", ascending=False)
    finished = trials[trials["status"] == RunStatus.FINISHED].drop_duplicates(["cell", "seed"])
    others = trials[trials["status"] != RunStatus.FINISHED].drop_duplicates(["cell", "seed"])
    trials = pd.concat([finished, others], ignore_index=True)
    for cell in trials.sort_values("start_time", kind="stable")["cell"].unique():  # no spec: the order they ran in
        if cell not in cells:
            cells.append(cell)
    if not seeds:
        seeds = sorted(trials["seed"].unique().tolist())
    order = {c: i for i, c in enumerate(cells)}
    trials = trials.sort_values(["cell", "seed"], key=lambda col: col.map(order) if col.name == "cell" else col)
    return SweepRuns(sweep, scale, parent.run_id if parent else None, cells, seeds, objective, direction,
                     trials.reset_index(drop=True), path, notes, dict(parent.tags) if parent else {}, stated=stated)


def stated_claims(path: Path | None) -> tuple:
    """The `claims:` of the spec at `path` (none without one)."""
    if path is None:
        return ()

    return load_spec(path).claims


def _unresolved(precision: str | None) -> str | None:
    """A run from before the precision tag: its configured precision, saying when 'auto' was not recorded resolved."""
    if precision == "auto":
        return "precision auto (resolved value not recorded)"
    return precision


def epoch_points(runs: SweepRuns) -> pd.DataFrame:
    """Every logged point of EPOCH_METRICS of every trial, as a long frame (EPOCH_COLUMNS), read once."""
    if runs.epochs is None:
        rows = [(run.run_id, run.cell, int(run.seed), key, int(point.step), float(point.value), int(point.timestamp))
                for run in runs.trials.itertuples() for key in EPOCH_METRICS
                for point in tracking.metric_points(run.run_id, key)]
        runs.epochs = pd.DataFrame(rows, columns=EPOCH_COLUMNS)
    return runs.epochs


def _finished_history(runs: SweepRuns, metric: str) -> pd.DataFrame:
    """One metric's points of the finished runs, one per (run, epoch): the last logged wins (a resumed run logs an
    epoch again), as `tracking.metric_history` reads them."""
    points = epoch_points(runs)
    part = points[(points["metric"] == metric) & points["run_id"].isin(runs.finished["run_id"])]
    return part.sort_values("time_ms", kind="stable").drop_duplicates(["run_id", "epoch"], keep="last")


def loss_curves(runs: SweepRuns) -> pd.DataFrame:
    """Long frame of per-epoch training losses of the finished runs: cell, seed, epoch, loss, value."""
    parts = [_finished_history(runs, loss.key).assign(loss=loss.name) for loss in contract.LOSSES]
    frame = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=[*EPOCH_COLUMNS, "loss"])
    frame = frame.sort_values(["run_id", "epoch"], kind="stable")
    return frame[["cell", "seed", "epoch", "loss", "value"]].reset_index(drop=True)


def eval_history(runs: SweepRuns, metric: str) -> pd.DataFrame:
    """Long frame of a score over training for the finished runs: cell, seed, epoch, value (step = epoch)."""
    frame = _finished_history(runs, metric).sort_values(["run_id", "epoch"], kind="stable")
    return frame[["cell", "seed", "epoch", "value"]].astype({"seed": int, "epoch": int}).reset_index(drop=True)


def epoch_stamps(runs: SweepRuns) -> dict[str, list[int]]:
    """When (ms) each epoch of each run was logged: the learning rate is logged once per epoch."""
    points = epoch_points(runs)
    lr = points[points["metric"] == contract.LR]
    stamps = {run_id: sorted(int(t) for t in part["time_ms"]) for run_id, part in lr.groupby("run_id")}
    return {run_id: stamps.get(run_id, []) for run_id in runs.trials["run_id"]}

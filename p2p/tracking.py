"""MLflow tracking: the only module that imports mlflow.

Names (experiments, params, tags, metrics, artifacts) follow DESIGN.md's
contract. Everything goes through an explicit `MlflowClient` and run ids, never
mlflow's global "active run", so several runs can be tracked from one process.
"""

from __future__ import annotations

import logging
import os
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any, Iterable

import mlflow
from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

logging.getLogger("mlflow").setLevel(logging.WARNING)
logging.getLogger("alembic").setLevel(logging.WARNING)

PARENT_TAG = "mlflow.parentRunId"
FAILURE_TAG = "p2p.failure"
DEFAULT_DB = "mlflow.db"


def tracking_uri() -> str:
    """`MLFLOW_TRACKING_URI`, else the sqlite file `mlflow.db` in the current folder (the project root)."""
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return uri
    return "sqlite:///" + str(Path(DEFAULT_DB).resolve())


def client(uri: str | None = None) -> MlflowClient:
    return MlflowClient(tracking_uri=uri or tracking_uri())


def ensure_store(uri: str | None = None) -> None:
    """Create the store's tables once, before several processes open it (a fresh sqlite store can race)."""
    client(uri).search_experiments(max_results=1)


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0:
        return None
    return out.stdout.strip() or None


def experiment_id(name: str, uri: str | None = None) -> str:
    """Get or create an experiment by name; safe when several workers create it at once."""
    c = client(uri)
    for attempt in range(5):
        exp = c.get_experiment_by_name(name)
        if exp is not None:
            if exp.lifecycle_stage == "deleted":
                c.restore_experiment(exp.experiment_id)
            return exp.experiment_id
        try:
            return c.create_experiment(name)
        except MlflowException:
            time.sleep(0.2 * (attempt + 1))  # another worker created it first
    raise RuntimeError(f"could not create MLflow experiment {name!r}")


class RunTracker:
    """One MLflow run: params, tags, metrics by step, artifacts, and how it ended."""

    def __init__(self, run_id: str, uri: str | None = None):
        self.uri = uri or tracking_uri()
        self.client = client(self.uri)
        self.run_id = run_id

    @classmethod
    def start(cls, experiment: str, run_name: str, params: dict[str, Any] | None = None,
              tags: dict[str, str] | None = None, parent_run_id: str | None = None,
              uri: str | None = None) -> "RunTracker":
        uri = uri or tracking_uri()
        tags = dict(tags or {})
        commit = git_commit()
        if commit:
            tags.setdefault("mlflow.source.git.commit", commit)
            tags.setdefault("p2p.git_commit", commit)
        if parent_run_id:
            tags[PARENT_TAG] = parent_run_id
        run = client(uri).create_run(experiment_id(experiment, uri), run_name=run_name,
                                     tags={k: str(v) for k, v in tags.items()})
        tracker = cls(run.info.run_id, uri)
        if params:
            tracker.log_params(params)
        return tracker

    @classmethod
    def resume(cls, run_id: str, uri: str | None = None) -> "RunTracker":
        """Continue a run: RUNNING again, and no longer carrying the reason it stopped (`p2p.failure`)."""
        tracker = cls(run_id, uri)
        tracker.client.update_run(run_id, status="RUNNING")
        if FAILURE_TAG in tracker.client.get_run(run_id).data.tags:
            tracker.client.delete_tag(run_id, FAILURE_TAG)
        return tracker

    def log_params(self, params: dict[str, Any]) -> None:
        existing = self.client.get_run(self.run_id).data.params
        items = [Param(k, _param_value(v)) for k, v in params.items() if k not in existing]
        for i in range(0, len(items), 100):  # MLflow's batch limit
            self.client.log_batch(self.run_id, params=items[i : i + 100])

    def set_tags(self, tags: dict[str, Any]) -> None:
        self.client.log_batch(self.run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        now = int(time.time() * 1000)
        items = [Metric(k, float(v), now, step) for k, v in metrics.items()]
        for i in range(0, len(items), 1000):
            self.client.log_batch(self.run_id, metrics=items[i : i + 1000])

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        self.client.log_artifact(self.run_id, str(path), artifact_path)

    def log_text(self, text: str, artifact_file: str) -> None:
        self.client.log_text(self.run_id, text, artifact_file)

    def finish(self) -> None:
        self.client.set_terminated(self.run_id, "FINISHED")

    def fail(self, reason: str) -> None:
        self.set_tags({FAILURE_TAG: reason[:4000]})
        self.client.set_terminated(self.run_id, "FAILED")

    def kill(self, reason: str) -> None:
        self.set_tags({FAILURE_TAG: reason[:4000]})
        self.client.set_terminated(self.run_id, "KILLED")

    def status(self) -> str:
        return self.client.get_run(self.run_id).info.status

    def experiment_name(self) -> str:
        run = self.client.get_run(self.run_id)
        return self.client.get_experiment(run.info.experiment_id).name

    def params(self) -> dict[str, str]:
        return dict(self.client.get_run(self.run_id).data.params)

    def download_artifact(self, artifact_path: str, dst: str | Path | None = None) -> Path:
        dst = Path(dst or tempfile.mkdtemp(prefix="p2p-artifact-"))
        return Path(self.client.download_artifacts(self.run_id, artifact_path, str(dst)))


def run_exists(run_id: str, uri: str | None = None) -> bool:
    try:
        client(uri).get_run(run_id)
        return True
    except MlflowException:
        return False


def find_runs(experiment: str, filter_string: str = "", uri: str | None = None) -> list:
    """Runs of an experiment (all pages), newest first; empty if the experiment does not exist."""
    c = client(uri)
    exp = c.get_experiment_by_name(experiment)
    if exp is None:
        return []
    runs, token = [], None
    while True:
        page = c.search_runs([exp.experiment_id], filter_string=filter_string, max_results=1000, page_token=token,
                             order_by=["attributes.start_time DESC"])
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def find_tagged_runs(experiment: str, tags: dict[str, Any], statuses: Iterable[str] = (),
                     uri: str | None = None) -> list:
    """Runs of an experiment that carry all these tags (and, if given, one of these statuses), newest first."""
    for value in tags.values():
        if "'" in str(value):
            raise ValueError(f"tag value {value!r}: quotes cannot be matched in an MLflow filter")
    filter_string = " and ".join(f"tags.`{key}` = '{value}'" for key, value in tags.items())
    runs = find_runs(experiment, filter_string, uri)
    wanted = set(statuses)
    return [r for r in runs if not wanted or r.info.status in wanted]


def find_or_start_run(experiment: str, run_name: str, tags: dict[str, Any], uri: str | None = None) -> RunTracker:
    """The newest run carrying these tags, set RUNNING again; or a new one (a sweep's parent run)."""
    existing = find_tagged_runs(experiment, tags, uri=uri)
    if existing:
        return RunTracker.resume(existing[0].info.run_id, uri)
    return RunTracker.start(experiment, run_name, tags=tags, uri=uri)


def child_runs(parent_run_id: str, experiment: str, uri: str | None = None) -> list:
    """The runs whose parent is this run (a sweep's trials), newest first."""
    return find_tagged_runs(experiment, {PARENT_TAG: parent_run_id}, uri=uri)


# ---------------------------------------------------------------- reading (for analysis)


def run_records(experiment: str, uri: str | None = None) -> list[dict[str, Any]]:
    """Every run of an experiment as a plain dict: ids, name, status, times, tags, params, latest metrics."""
    return [{"run_id": r.info.run_id, "run_name": r.info.run_name, "status": r.info.status,
             "start_time": r.info.start_time, "end_time": r.info.end_time, "tags": dict(r.data.tags),
             "params": dict(r.data.params), "metrics": dict(r.data.metrics)}
            for r in find_runs(experiment, uri=uri)]


def experiment_exists(name: str, uri: str | None = None) -> bool:
    return client(uri).get_experiment_by_name(name) is not None


def metric_history(run_id: str, key: str, uri: str | None = None) -> list[tuple[int, float]]:
    """(step, value) pairs of one metric, in step order; the last value wins where a step repeats."""
    by_step = {m.step: m.value for m in sorted(client(uri).get_metric_history(run_id, key), key=lambda m: m.timestamp)}
    return sorted(by_step.items())


def download_artifact(run_id: str, artifact_path: str, dst: str | Path, uri: str | None = None) -> Path:
    return RunTracker(run_id, uri).download_artifact(artifact_path, dst)


def log_artifacts(run_id: str, local_dir: str | Path, artifact_path: str | None = None, uri: str | None = None) -> None:
    client(uri).log_artifacts(run_id, str(local_dir), artifact_path)


def _param_value(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_param_value(v) for v in value) + "]"
    return str(value)[:6000]


__all__: Iterable[str] = ["RunTracker", "tracking_uri", "ensure_store", "experiment_id", "run_exists", "find_runs",
                          "find_tagged_runs", "find_or_start_run", "child_runs", "mlflow"]

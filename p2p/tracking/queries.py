"""Reading a store back as plain records (`RunRecord`, metric histories): runs by experiment and tags, a
sweep's trials, metrics and artifacts."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

from mlflow.exceptions import MlflowException

from p2p.contract import Tag
from p2p.tracking.mlflow_tracker import MlflowTracker
from p2p.tracking.store import NOT_FOUND, STORE_ERRORS, client, guarded, tracking_uri
from p2p.tracking.views import prepare_sweep_experiment
from p2p.tracking_protocol import MetricPoint, RunRecord


def run_exists(run_id: str, uri: str | None = None) -> bool:
    """Whether the store holds this run; a store that does not answer is a TrackingError, never "no"
    (a sweep would move a checkpoint aside as orphaned)."""
    uri = uri or tracking_uri()
    try:
        client(uri).get_run(run_id)
        return True
    except MlflowException as exc:
        if exc.error_code in NOT_FOUND:
            return False
        failure: BaseException = exc
    except STORE_ERRORS as exc:
        failure = exc
    return guarded(uri, f"looking up run {run_id}", lambda: _reraise(failure))


def _reraise(exc: BaseException):
    raise exc


def _record(run) -> RunRecord:
    return RunRecord(run_id=run.info.run_id, run_name=run.info.run_name, status=run.info.status,
                     start_time=run.info.start_time, end_time=run.info.end_time,
                     experiment_id=run.info.experiment_id, tags=dict(run.data.tags), params=dict(run.data.params),
                     metrics=dict(run.data.metrics))


def run_record(run_id: str, uri: str | None = None) -> RunRecord:
    uri = uri or tracking_uri()
    return _record(guarded(uri, f"reading run {run_id}", lambda: client(uri).get_run(run_id)))


def find_runs(experiment: str, filter_string: str = "", uri: str | None = None) -> list[RunRecord]:
    """Runs of an experiment (all pages), newest first; empty if the experiment does not exist."""
    uri = uri or tracking_uri()
    c = client(uri)
    exp = guarded(uri, f"looking up experiment {experiment!r}", lambda: c.get_experiment_by_name(experiment))
    if exp is None:
        return []
    runs, token = [], None
    while True:
        page = guarded(uri, f"searching the runs of {experiment!r}",
                       lambda token=token: c.search_runs([exp.experiment_id], filter_string=filter_string,
                                                         max_results=1000, page_token=token,
                                                         order_by=["attributes.start_time DESC"]))
        runs.extend(_record(r) for r in page)
        token = page.token
        if not token:
            return runs


def find_tagged_runs(experiment: str, tags: dict[str, Any], statuses: Iterable[str] = (),
                     uri: str | None = None) -> list[RunRecord]:
    """Runs of an experiment that carry all these tags (and, if given, one of these statuses), newest first."""
    for value in tags.values():
        if "'" in str(value):
            raise ValueError(f"tag value {value!r}: quotes cannot be matched in an MLflow filter")
    filter_string = " and ".join(f"tags.`{key}` = '{value}'" for key, value in tags.items())
    runs = find_runs(experiment, filter_string, uri)
    wanted = set(statuses)
    return [r for r in runs if not wanted or r.status in wanted]


def find_or_start_run(experiment: str, run_name: str, tags: dict[str, Any], uri: str | None = None) -> MlflowTracker:
    """The newest run carrying these tags, set RUNNING again; or a new one (a sweep's parent run)."""
    prepare_sweep_experiment(experiment, uri)  # every worker that joins: the UI opens on the trials
    existing = find_tagged_runs(experiment, tags, uri=uri)
    tracker = MlflowTracker(uri)
    if existing:
        tracker.resume(existing[0].run_id)
    else:
        tracker.start(experiment, run_name, tags=tags)
    return tracker


def child_runs(parent_run_id: str, experiment: str, uri: str | None = None) -> list[RunRecord]:
    """The runs whose parent is this run (a sweep's trials), newest first."""
    return find_tagged_runs(experiment, {Tag.PARENT: parent_run_id}, uri=uri)


def metric_points(run_id: str, key: str, uri: str | None = None) -> list[MetricPoint]:
    """Every logged value of one metric, in the order logged."""
    history = sorted(client(uri).get_metric_history(run_id, key), key=lambda m: m.timestamp)
    return [MetricPoint(m.step, m.value, m.timestamp) for m in history]


def metric_history(run_id: str, key: str, uri: str | None = None) -> list[tuple[int, float]]:
    """(step, value) pairs of one metric, in step order; the last value wins where a step repeats."""
    return sorted({m.step: m.value for m in metric_points(run_id, key, uri)}.items())


def list_artifacts(run_id: str, path: str | None = None, uri: str | None = None) -> list[str]:
    """The artifact paths of a run under `path` (one level)."""
    return [a.path for a in client(uri).list_artifacts(run_id, path)]


def download_artifact(run_id: str, artifact_path: str, dst: str | Path, uri: str | None = None) -> Path:
    return MlflowTracker.of(run_id, uri).download_artifact(artifact_path, dst)


def log_artifacts(run_id: str, local_dir: str | Path, artifact_path: str | None = None, uri: str | None = None) -> None:
    client(uri).log_artifacts(run_id, str(local_dir), artifact_path)

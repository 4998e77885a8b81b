"""MLflow tracking: the only module that imports mlflow.

Names (experiments, params, tags, metrics, artifacts) follow DESIGN.md's
contract. Everything goes through an explicit `MlflowClient` and run ids, never
mlflow's global "active run", so several runs can be tracked from one process.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, TypeVar

import mlflow
import requests
import sqlalchemy.exc
from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from p2p.errors import UserError, first_line, redact_url, scrub

logging.getLogger("mlflow").setLevel(logging.WARNING)
logging.getLogger("alembic").setLevel(logging.WARNING)

PARENT_TAG = "mlflow.parentRunId"
FAILURE_TAG = "p2p.failure"
DEFAULT_DB = "mlflow.db"
URI_ENV = "MLFLOW_TRACKING_URI"
# What a store that is down, refuses the credentials or lost its database raises through MLflow's client.
STORE_ERRORS = (MlflowException, requests.exceptions.RequestException, sqlalchemy.exc.SQLAlchemyError, OSError)
NOT_FOUND = ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE")  # error codes of a run id the store lacks
T = TypeVar("T")


class TrackingError(UserError):
    """The tracking store did not answer or refused a call: one line naming it, its password redacted."""


def tracking_uri() -> str:
    """`MLFLOW_TRACKING_URI`, else the sqlite file `mlflow.db` in the current folder (the project root)."""
    uri = os.environ.get(URI_ENV)
    if uri:
        return uri
    return "sqlite:///" + str(Path(DEFAULT_DB).resolve())


def store_name(uri: str | None = None) -> str:
    """How messages name the store: the variable that chose it and its URL, password redacted."""
    uri = uri or tracking_uri()
    return f"{URI_ENV} {redact_url(uri)}" if os.environ.get(URI_ENV) else f"MLflow tracking store {redact_url(uri)}"


def _summary(exc: BaseException, uri: str) -> str:
    """The useful part of a client error: MLflow wraps the socket's reason deep inside a long message."""
    text = str(exc)
    errno = re.search(r"\[Errno -?\d+\] ([^'\"()\]]+)", text)
    if errno:
        return errno.group(1).strip().rstrip(".")
    return scrub(first_line(exc), uri)


def guarded(uri: str, what: str, call: Callable[[], T]) -> T:
    """`call()`, with a failure of the store turned into one line that says what was being done and where.

    A stop signal waits for the call to end (p2p.signals.held): cut in half, a sqlite write keeps its lock
    and the run could not be marked KILLED.
    """
    from p2p import signals

    try:
        with signals.held():
            return call()
    except TrackingError:
        raise
    except STORE_ERRORS as exc:
        raise TrackingError(f"{store_name(uri)}: {what} failed ({_summary(exc, uri)})") from None


def check_store(uri: str | None = None) -> None:
    """Before anything trains: the store answers. A closed port, a wrong password, a missing database or a
    folder that cannot hold the sqlite file is one line naming the URL (no training, nothing written)."""
    uri = uri or tracking_uri()
    try:
        if uri.startswith(("http://", "https://")):
            with _one_quick_try():
                client(uri).search_experiments(max_results=1)
        elif uri.startswith("sqlite:"):
            _check_sqlite(uri)
        elif "://" in uri and not uri.startswith(("file:", "databricks")):
            _check_database(uri)
    except UserError:
        raise
    except Exception as exc:  # anything the client or the driver raises means the same to the user
        raise UserError(f"{store_name(uri)}: cannot reach the MLflow tracking store ({_summary(exc, uri)})") from None


def _one_quick_try() -> contextlib.AbstractContextManager:
    """MLflow's client retries a dead server for minutes (right mid-run, not for a first look)."""
    return _environ({"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "15"})


@contextlib.contextmanager
def _environ(values: dict[str, str]) -> Iterator[None]:
    """These variables for the block: MLflow reads its settings from the environment at each call."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _check_sqlite(uri: str) -> None:
    """An existing file must be a database; a new one must have a folder it can be made in. Creates nothing."""
    from sqlalchemy.engine import make_url

    database = make_url(uri).database
    if not database or database == ":memory:":
        return
    path = Path(database)
    if path.exists():
        _check_database(uri, "SELECT count(*) FROM sqlite_master")  # reads the header: a foreign file fails
        return
    folder = path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir() or not os.access(folder, os.W_OK):
        raise UserError(f"{store_name(uri)}: cannot create {path} ({folder} is not a writable folder)")


def _check_database(uri: str, probe: str = "SELECT 1") -> None:
    """Connect once, straight through SQLAlchemy: MLflow's own engine retries a refused login for ~100 s."""
    import sqlalchemy

    args = {"connect_timeout": 10} if uri.startswith("postgres") else {}
    engine = sqlalchemy.create_engine(uri, poolclass=sqlalchemy.pool.NullPool, connect_args=args)
    try:
        with engine.connect() as conn:
            conn.execute(sqlalchemy.text(probe))
    finally:
        engine.dispose()


def client(uri: str | None = None) -> MlflowClient:
    return MlflowClient(tracking_uri=uri or tracking_uri())


def ensure_store(uri: str | None = None) -> None:
    """Create the store's tables once, before several processes open it (a fresh sqlite store can race)."""
    uri = uri or tracking_uri()
    guarded(uri, "opening the store", lambda: client(uri).search_experiments(max_results=1))


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
    """One MLflow run: params, tags, metrics by step, artifacts, and how it ended.

    A store that fails a call raises `TrackingError` (one line naming the store and the call).
    """

    def __init__(self, run_id: str, uri: str | None = None):
        self.uri = uri or tracking_uri()
        self.client = client(self.uri)
        self.run_id = run_id

    def _do(self, what: str, call: Callable[[], T]) -> T:
        return guarded(self.uri, f"{what} (run {self.run_id})", call)

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
        run = guarded(uri, f"creating a run in experiment {experiment!r}",
                      lambda: client(uri).create_run(experiment_id(experiment, uri), run_name=run_name,
                                                     tags={k: str(v) for k, v in tags.items()}))
        tracker = cls(run.info.run_id, uri)
        try:
            if params:
                tracker.log_params(params)
        except BaseException as exc:  # a stop or a fault before the caller has the run: end it here, with why
            tracker.end_quietly(exc)
            raise
        return tracker

    @classmethod
    def resume(cls, run_id: str, uri: str | None = None) -> "RunTracker":
        """Continue a run: RUNNING again, and no longer carrying the reason it stopped (`p2p.failure`)."""
        tracker = cls(run_id, uri)
        tracker._do("resuming", lambda: tracker.client.update_run(run_id, status="RUNNING"))
        if FAILURE_TAG in tracker._do("reading", lambda: tracker.client.get_run(run_id)).data.tags:
            tracker._do("resuming", lambda: tracker.client.delete_tag(run_id, FAILURE_TAG))
        return tracker

    def log_params(self, params: dict[str, Any]) -> None:
        existing = self._do("reading the params", lambda: self.client.get_run(self.run_id)).data.params
        items = [Param(k, _param_value(v)) for k, v in params.items() if k not in existing]
        for i in range(0, len(items), 100):  # MLflow's batch limit
            self._do("logging the params", lambda: self.client.log_batch(self.run_id, params=items[i : i + 100]))

    def set_tags(self, tags: dict[str, Any]) -> None:
        self._do("setting tags", lambda: self.client.log_batch(self.run_id,
                                                               tags=[RunTag(k, str(v)) for k, v in tags.items()]))

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        now = int(time.time() * 1000)
        items = [Metric(k, float(v), now, step) for k, v in metrics.items()]
        for i in range(0, len(items), 1000):
            self._do(f"logging the metrics of step {step}",
                     lambda: self.client.log_batch(self.run_id, metrics=items[i : i + 1000]))

    def logged_steps(self, key: str) -> set[int]:
        """The steps at which this metric has a value (a resumed run logs an epoch its stop left unlogged)."""
        return {m.step for m in self._do(f"reading {key}", lambda: self.client.get_metric_history(self.run_id, key))}

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        self._do(f"uploading {Path(path).name}", lambda: self.client.log_artifact(self.run_id, str(path), artifact_path))

    def log_text(self, text: str, artifact_file: str) -> None:
        self._do(f"uploading {artifact_file}", lambda: self.client.log_text(self.run_id, text, artifact_file))

    def finish(self) -> None:
        self._do("marking it FINISHED", lambda: self.client.set_terminated(self.run_id, "FINISHED"))

    def fail(self, reason: str) -> None:
        self.set_tags({FAILURE_TAG: reason[:4000]})
        self._do("marking it FAILED", lambda: self.client.set_terminated(self.run_id, "FAILED"))

    def kill(self, reason: str) -> None:
        self.set_tags({FAILURE_TAG: reason[:4000]})
        self._do("marking it KILLED", lambda: self.client.set_terminated(self.run_id, "KILLED"))

    def end_quietly(self, exc: BaseException) -> None:
        """KILLED for a stop (a signal, Ctrl-C), FAILED otherwise, with the reason; a store that is down is left as is."""
        from p2p import signals

        with contextlib.suppress(Exception):
            if isinstance(exc, KeyboardInterrupt):
                self.kill(signals.reason(exc))
            elif not isinstance(exc, TrackingError):
                self.fail(first_line(exc, 4000))

    def status(self) -> str:
        return self._do("reading", lambda: self.client.get_run(self.run_id)).info.status

    def experiment_name(self) -> str:
        run = self._do("reading", lambda: self.client.get_run(self.run_id))
        return self._do("reading", lambda: self.client.get_experiment(run.info.experiment_id)).name

    def params(self) -> dict[str, str]:
        return dict(self._do("reading the params", lambda: self.client.get_run(self.run_id)).data.params)

    def latest_metrics(self) -> dict[str, float]:
        return dict(self._do("reading the metrics", lambda: self.client.get_run(self.run_id)).data.metrics)

    def download_artifact(self, artifact_path: str, dst: str | Path | None = None) -> Path:
        """The artifact in `dst` (default: a new folder named after the run, so that a message about the
        file names the run too); quietly: MLflow's bar would be lines on stderr for one small file."""
        dst = Path(dst or tempfile.mkdtemp(prefix=f"p2p-run-{self.run_id}-"))
        with _environ({"MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}):
            return Path(self._do(f"downloading {artifact_path}",
                                 lambda: self.client.download_artifacts(self.run_id, artifact_path, str(dst))))


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
        return guarded(uri, f"looking up run {run_id}", lambda: _reraise(exc))
    except STORE_ERRORS as exc:
        return guarded(uri, f"looking up run {run_id}", lambda: _reraise(exc))


def _reraise(exc: BaseException):
    raise exc


def find_runs(experiment: str, filter_string: str = "", uri: str | None = None) -> list:
    """Runs of an experiment (all pages), newest first; empty if the experiment does not exist."""
    uri = uri or tracking_uri()
    c = client(uri)
    exp = guarded(uri, f"looking up experiment {experiment!r}", lambda: c.get_experiment_by_name(experiment))
    if exp is None:
        return []
    runs, token = [], None
    while True:
        page = guarded(uri, f"searching the runs of {experiment!r}",
                       lambda: c.search_runs([exp.experiment_id], filter_string=filter_string, max_results=1000,
                                             page_token=token, order_by=["attributes.start_time DESC"]))
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

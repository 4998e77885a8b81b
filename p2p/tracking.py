"""MLflow tracking: the only module that imports mlflow.

`MlflowTracker` is the `p2p.tracker.Tracker` that `p2p train`, `p2p eval` and sweeps record runs
through; the functions below read a store back as plain records (`RunRecord`, metric histories),
never MLflow's own objects. Names (experiments, tags, metrics, artifacts) come from p2p.contract.
Everything goes through an explicit `MlflowClient` and run ids, never mlflow's global "active
run", so several runs can be tracked from one process.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, TypeVar

import requests
import sqlalchemy.exc
from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from p2p import contract
from p2p.contract import Tag
from p2p.errors import UserError, first_line, redact_url, scrub
from p2p.tracker import FAILED, FINISHED, KILLED, RUNNING, MetricPoint, RunRecord, TrackingError

logging.getLogger("mlflow").setLevel(logging.WARNING)
logging.getLogger("alembic").setLevel(logging.WARNING)

PARENT_TAG, FAILURE_TAG = Tag.PARENT, Tag.FAILURE
DEFAULT_DB, URI_ENV = contract.DEFAULT_STORE, contract.URI_ENV
# What a store that is down, refuses the credentials or lost its database raises through MLflow's client.
STORE_ERRORS = (MlflowException, requests.exceptions.RequestException, sqlalchemy.exc.SQLAlchemyError, OSError)
NOT_FOUND = ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE")  # error codes of a run id the store lacks
T = TypeVar("T")


def tracking_uri() -> str:
    """`MLFLOW_TRACKING_URI`, else the sqlite file `mlflow.db` in the current folder (the project root)."""
    uri = os.environ.get(URI_ENV)
    if uri:
        return uri
    return "sqlite:///" + str(Path(DEFAULT_DB).resolve())


def store_exists(uri: str | None = None) -> bool:
    """Whether there is a store to read (opening a sqlite file that is not there would create it)."""
    uri = uri or tracking_uri()
    return not uri.startswith("sqlite:///") or Path(uri.removeprefix("sqlite:///")).is_file()


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
    """MLflow's client on the store (for this module, and tests that look at a store as MLflow does)."""
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
            _set_experiment_kind(c, exp.experiment_id, exp.tags)  # an experiment made before p2p set it
            return exp.experiment_id
        try:
            return c.create_experiment(name, tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND})
        except MlflowException:
            time.sleep(0.2 * (attempt + 1))  # another worker created it first
    raise RuntimeError(f"could not create MLflow experiment {name!r}")


class MlflowTracker:
    """The `Tracker` of p2p.tracker on an MLflow store: one run's params, tags, metrics by step, artifacts,
    and how it ended; reading that run back as plain values.

    A store that fails a call raises `TrackingError` (one line naming the store and the call).
    """

    def __init__(self, uri: str | None = None, run_id: str | None = None):
        self.uri = uri or tracking_uri()
        self.run_id = run_id
        self._client: MlflowClient | None = None

    @property
    def client(self) -> MlflowClient:
        """Made on first use: a tracker that records nothing (a run that stops first) opens no store."""
        if self._client is None:
            self._client = client(self.uri)
        return self._client

    @classmethod
    def of(cls, run_id: str, uri: str | None = None) -> MlflowTracker:
        """A tracker on an existing run, as it is."""
        return cls(uri, run_id)

    def _do(self, what: str, call: Callable[[], T]) -> T:
        return guarded(self.uri, f"{what} (run {self.run_id})", call)

    def start(self, experiment: str, run_name: str, params: dict[str, Any] | None = None,
              tags: dict[str, Any] | None = None, parent_run_id: str | None = None) -> str:
        tags = dict(tags or {})
        commit = git_commit()
        if commit:
            tags.setdefault(Tag.MLFLOW_GIT_COMMIT, commit)
            tags.setdefault(Tag.GIT_COMMIT, commit)
        if parent_run_id:
            tags[Tag.PARENT] = parent_run_id
        run = guarded(self.uri, f"creating a run in experiment {experiment!r}",
                      lambda: self.client.create_run(experiment_id(experiment, self.uri), run_name=run_name,
                                                     tags={k: str(v) for k, v in tags.items()}))
        self.run_id = run.info.run_id
        try:
            if params:
                self.log_params(params)
        except BaseException as exc:  # a stop or a fault before the caller has the run: end it here, with why
            self.end_quietly(exc)
            raise
        return self.run_id

    def resume(self, run_id: str) -> str:
        """Continue a run: RUNNING again, and no longer carrying the reason it stopped (its failure tag).
        Returns the status it had; a FINISHED run is left as it is."""
        self.run_id = run_id
        run = self._do("reading", lambda: self.client.get_run(run_id))
        if run.info.status == FINISHED:
            return FINISHED
        self._do("resuming", lambda: self.client.update_run(run_id, status=RUNNING))
        if Tag.FAILURE in run.data.tags:
            self._do("resuming", lambda: self.client.delete_tag(run_id, Tag.FAILURE))
        return run.info.status

    def open(self, run_id: str) -> None:
        self.run_id = run_id

    def log_params(self, params: dict[str, Any]) -> None:
        existing = self._do("reading the params", lambda: self.client.get_run(self.run_id)).data.params
        items = [Param(k, _param_value(v)) for k, v in params.items() if k not in existing]
        for i in range(0, len(items), 100):  # MLflow's batch limit
            batch = items[i : i + 100]
            self._do("logging the params", lambda batch=batch: self.client.log_batch(self.run_id, params=batch))

    def set_tags(self, tags: dict[str, Any]) -> None:
        self._do("setting tags", lambda: self.client.log_batch(self.run_id,
                                                               tags=[RunTag(k, str(v)) for k, v in tags.items()]))

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        now = int(time.time() * 1000)
        items = [Metric(k, float(v), now, step) for k, v in metrics.items()]
        for i in range(0, len(items), 1000):
            batch = items[i : i + 1000]
            self._do(f"logging the metrics of step {step}",
                     lambda batch=batch: self.client.log_batch(self.run_id, metrics=batch))

    def logged_steps(self, key: str) -> set[int]:
        """The steps at which this metric has a value (a resumed run logs an epoch its stop left unlogged)."""
        return {m.step for m in self._do(f"reading {key}", lambda: self.client.get_metric_history(self.run_id, key))}

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        self._do(f"uploading {Path(path).name}", lambda: self.client.log_artifact(self.run_id, str(path), artifact_path))

    def log_text(self, text: str, artifact_file: str) -> None:
        self._do(f"uploading {artifact_file}", lambda: self.client.log_text(self.run_id, text, artifact_file))

    def finish(self) -> None:
        self._do("marking it FINISHED", lambda: self.client.set_terminated(self.run_id, FINISHED))

    def fail(self, reason: str) -> None:
        self.set_tags({Tag.FAILURE: reason[:4000]})
        self._do("marking it FAILED", lambda: self.client.set_terminated(self.run_id, FAILED))

    def kill(self, reason: str) -> None:
        self.set_tags({Tag.FAILURE: reason[:4000]})
        self._do("marking it KILLED", lambda: self.client.set_terminated(self.run_id, KILLED))

    def end_quietly(self, exc: BaseException) -> None:
        """KILLED for a stop (a signal, Ctrl-C), FAILED otherwise, with the reason; a store that is down is left as is."""
        from p2p import signals

        with contextlib.suppress(Exception):
            if isinstance(exc, KeyboardInterrupt):
                self.kill(signals.reason(exc))
            elif not isinstance(exc, TrackingError):
                self.fail(first_line(exc, 4000))

    # ------------------------------------------------ reading the run back

    def status(self) -> str:
        return self._do("reading", lambda: self.client.get_run(self.run_id)).info.status

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


# ---------------------------------------------------------------- reading (for analysis)


def experiment_exists(name: str, uri: str | None = None) -> bool:
    return client(uri).get_experiment_by_name(name) is not None


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


# ---------------------------------------------------------------- how the MLflow UI opens an experiment
#
# MLflow 3 shows an experiment as "GenAI" (an overview of traces, latency and tokens) or as "model
# training" (the runs table). `mlflow.experimentKind` records which one an experiment is; MLflow 3.17's UI
# follows its own GenAI / Model training switch instead (kept per browser, `workflowType` in the URL), so the
# runs table a researcher needs is also saved as a view of the experiment (its "Views" menu) and `ui_url`
# links to it. Only absent (or UI-inferred) values are set: a kind or a view a person chose is kept.

EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"
VIEW_TAG_PREFIX = "mlflow.sharedViewState."  # + the view's id: {name, createdAt, updatedAt, state (JSON)}
SWEEP_VIEW = "p2p-trials"
SWEEP_VIEW_NAME = "p2p: trials by cell"
UI_BASE = "http://127.0.0.1:5000"  # what `make ui` serves


def _set_experiment_kind(c: MlflowClient, experiment_id: str, tags: dict[str, str]) -> None:
    kind = tags.get(EXPERIMENT_KIND_TAG)
    if kind is None or kind.endswith("_inferred") or kind == "no_inferred_type":
        c.set_experiment_tag(experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)


def sweep_view_state() -> dict[str, Any]:
    """The runs table of a sweep: trials grouped by cell (a group row holds the cell's mean), their cell and
    seed, and the scores a run logs by default, best FCN IoU first. Grouping also lifts the trials out from
    under the collapsed parent run, which MLflow otherwise lists alone."""
    from p2p import contract

    columns = [f"tags.`{contract.Tag.CELL}`", f"tags.`{contract.Tag.SEED}`",
               *(f"metrics.`{key}`" for key in contract.DEFAULT_KEYS)]
    return {"searchFilter": "", "orderByKey": f"metrics.`{contract.HEADLINE.key}`", "orderByAsc": False,
            "startTime": "ALL", "lifecycleFilter": "Active", "datasetsFilter": [], "modelVersionFilter": "All Runs",
            "selectedColumns": columns, "columnOrder": columns, "runsHiddenMode": "SHOW_ALL",
            "groupBy": {"aggregateFunction": "average",
                        "groupByKeys": [{"mode": "tag", "groupByData": contract.Tag.CELL}]}}


def prepare_sweep_experiment(experiment: str, uri: str | None = None) -> str:
    """A sweep's experiment (made if missing) as the UI should open it: the model-training kind and the
    trials view. Best effort: a store that refuses a tag leaves the UI as it was, the sweep goes on."""
    uri = uri or tracking_uri()
    exp_id = guarded(uri, f"opening experiment {experiment!r}", lambda: experiment_id(experiment, uri))
    with contextlib.suppress(*STORE_ERRORS):
        c = client(uri)
        key = VIEW_TAG_PREFIX + SWEEP_VIEW
        if key not in c.get_experiment(exp_id).tags:
            now = int(time.time() * 1000)
            c.set_experiment_tag(exp_id, key, json.dumps({"name": SWEEP_VIEW_NAME, "createdAt": now,
                                                          "updatedAt": now, "state": json.dumps(sweep_view_state())}))
    return exp_id


def ui_url(experiment_id: str, base: str = UI_BASE) -> str:
    """Where the UI opens an experiment on its runs table and the sweep's trials view, whatever the browser's
    GenAI / Model training switch says."""
    return f"{base}/#/experiments/{experiment_id}/runs?workflowType=machine_learning&viewStateShareKey={SWEEP_VIEW}"


def _param_value(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_param_value(v) for v in value) + "]"
    return str(value)[:6000]


__all__ = ["MlflowTracker", "TrackingError", "RunRecord", "MetricPoint", "tracking_uri", "store_exists", "check_store",
           "ensure_store", "experiment_id", "run_exists", "run_record", "find_runs", "find_tagged_runs",
           "find_or_start_run", "child_runs", "experiment_exists", "metric_points", "metric_history", "list_artifacts",
           "download_artifact", "log_artifacts"]

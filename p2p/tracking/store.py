"""Which MLflow store, whether it answers, and calls to it that fail as one line: the store's URL, its checks
before anything trains, the client, and getting (or making) an experiment.

An experiment p2p makes is marked as model training (`mlflow.experimentKind`), so the UI opens it on its runs
table (p2p.tracking.views says why).
"""

from __future__ import annotations

import contextlib
import os
import re
import time
from pathlib import Path
from typing import Callable, Iterator, TypeVar

import requests
import sqlalchemy
import sqlalchemy.exc
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from sqlalchemy.engine import make_url

from p2p import contract, signals
from p2p.errors import UserError, first_line, redact_url, scrub
from p2p.tracking_protocol import TrackingError

DEFAULT_TRACKING_DB, URI_ENV = contract.DEFAULT_STORE, contract.URI_ENV
# What a store that is down, refuses the credentials or lost its database raises through MLflow's client.
STORE_ERRORS = (MlflowException, requests.exceptions.RequestException, sqlalchemy.exc.SQLAlchemyError, OSError)
NOT_FOUND = ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE")  # error codes of a run id the store lacks
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"
T = TypeVar("T")


def tracking_uri() -> str:
    """`MLFLOW_TRACKING_URI`, else the sqlite file `mlflow.db` in the current folder (the project root)."""
    uri = os.environ.get(URI_ENV)
    if uri:
        return uri
    return "sqlite:///" + str(Path(DEFAULT_TRACKING_DB).resolve())


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


def _set_experiment_kind(c: MlflowClient, experiment_id: str, tags: dict[str, str]) -> None:
    kind = tags.get(EXPERIMENT_KIND_TAG)
    if kind is None or kind.endswith("_inferred") or kind == "no_inferred_type":
        c.set_experiment_tag(experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)


def experiment_exists(name: str, uri: str | None = None) -> bool:
    return client(uri).get_experiment_by_name(name) is not None

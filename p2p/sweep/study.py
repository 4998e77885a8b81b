"""The Optuna side of a sweep: storage, the study, its queue of trials, heartbeats.

This package is the only place that imports optuna, and this module the only one that touches
Optuna's private parts (`trial_id`, `retry_history`). A grid sweep enqueues each (cell, seed)
as one fixed trial, keyed by its cell and seed user attrs (p2p.contract.Attr); workers claim WAITING
trials one at a time (the storage switches WAITING -> RUNNING for exactly one of them), and
heartbeats let any worker notice a trial whose worker died, fail it and queue a copy, which
then resumes from the trial's checkpoint. A search spec asks Optuna for new trials instead.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import warnings
import zlib
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Iterator

import optuna
from filelock import FileLock
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.trial import FrozenTrial, Trial, TrialState

from p2p import contract
from p2p.contract import Attr
from p2p.errors import UserError, first_line, redact_url, scrub
from p2p.sweep.spec import SweepSpec, TrialKey

optuna.logging.set_verbosity(optuna.logging.WARNING)

STALE_RETRIES = 3  # a trial whose worker dies this many times is left failed (it may be what kills them)
DEFAULT_HEARTBEAT_S = 10

# Trial user attrs.
CELL, SEED, FAILURE, RUN_ID, EPOCH, WORKER = Attr.CELL, Attr.SEED, Attr.FAILURE, Attr.RUN_ID, Attr.EPOCH, Attr.WORKER
SECONDS = Attr.SECONDS
# Study user attrs.
SWEEP, SCALE, KIND, OVERRIDES, PARENT_RUN = Attr.SWEEP, Attr.SCALE, Attr.KIND, Attr.SET, Attr.PARENT_RUN
study_name = contract.study_name


# ---------------------------------------------------------------- Optuna's private parts, wrapped here only


def trial_id(trial: Trial | FrozenTrial) -> int:
    """The storage's id of a trial: the storage API takes it, and Optuna has no public accessor (stable
    across its versions)."""
    return trial._trial_id


def retry_history(trial: FrozenTrial) -> list[int]:
    """Numbers of the trials this one is a retry copy of (set by Optuna's heartbeat retry callback)."""
    return list(trial.system_attrs.get("retry_history", []))


def retried_numbers(trials: list[FrozenTrial]) -> set[int]:
    """Trials that a retry copy replaced (their worker died and the trial was queued again)."""
    return {n for t in trials for n in retry_history(t)}


def engine_url(url: str) -> str:
    """`postgresql://` through psycopg2 (the driver installed here; SQLAlchemy 2.1 would look for psycopg 3)."""
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        return "postgresql+psycopg2://" + url.split("://", 1)[1]
    return url


def open_storage(url: str, heartbeat_s: int = DEFAULT_HEARTBEAT_S, check_schema: bool = True) -> RDBStorage:
    """The shared storage with heartbeats on: a RUNNING trial silent for 3 heartbeats is stale.

    `check_schema=False` skips creating and checking the tables (a worker: its sweep command did that).
    """
    url = engine_url(url)
    if url.startswith("sqlite:"):
        kwargs: dict[str, Any] = {"connect_args": {"timeout": 60}}  # several local workers wait their turn
    else:
        kwargs = {"pool_pre_ping": True}
    try:
        with _settled_api():
            return RDBStorage(url, engine_kwargs=kwargs, heartbeat_interval=heartbeat_s, grace_period=3 * heartbeat_s,
                              heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=STALE_RETRIES),
                              skip_compatibility_check=not check_schema, skip_table_creation=not check_schema)
    except Exception as exc:  # a bad URL, an unreachable server, a missing driver
        raise storage_error(url, exc) from None


def check_storage(url: str) -> None:
    """Before any worker starts: a server storage answers (a closed port, a wrong password or a missing
    database is one line naming the URL, its password redacted). A sqlite file is created when needed."""
    url = engine_url(url)
    if url.startswith("sqlite:"):
        return
    import sqlalchemy

    try:
        args = {"connect_timeout": 10} if url.startswith("postgresql") else {}
        engine = sqlalchemy.create_engine(url, poolclass=sqlalchemy.pool.NullPool, connect_args=args)
        try:
            with engine.connect() as conn:
                conn.execute(sqlalchemy.text("SELECT 1"))
        finally:
            engine.dispose()
    except Exception as exc:
        raise storage_error(url, exc) from None


def storage_error(url: str, exc: BaseException) -> UserError:
    return UserError(f"--storage {redact(url)}: cannot open the Optuna storage ({scrub(first_line(exc), url)})")


@contextlib.contextmanager
def _settled_api() -> Iterator[None]:
    """Heartbeats and their retry callback are labelled experimental since Optuna 2.8, unchanged since."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        yield


def redact(url: str) -> str:
    """A storage URL without its password, for messages."""
    return redact_url(url)


def sqlite_path(url: str) -> Path | None:
    if not url.startswith("sqlite:"):
        return None
    from sqlalchemy.engine import make_url

    database = make_url(url).database
    return Path(database) if database and database != ":memory:" else None


def storage_exists(url: str) -> bool:
    """Whether there may be a study to read (a sqlite file that exists, or any server)."""
    path = sqlite_path(url)
    return path is None or path.is_file()


@contextlib.contextmanager
def storage_lock(url: str, name: str) -> Iterator[None]:
    """One preparer at a time per study (creating it, enqueueing cells, the MLflow parent run).

    sqlite: a lock file beside the database; PostgreSQL: an advisory lock, so drivers on
    several machines take turns. Other databases go without (claiming trials stays atomic).
    """
    path = sqlite_path(url)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(path.with_name(path.name + ".lock")):
            yield
        return
    if url.startswith("postgres"):
        import sqlalchemy

        engine = sqlalchemy.create_engine(engine_url(url), poolclass=sqlalchemy.pool.NullPool)
        key = zlib.crc32(f"p2p-sweep:{name}".encode()) - 2**31
        try:
            with engine.connect() as conn:
                conn.execute(sqlalchemy.text("SELECT pg_advisory_lock(:k)"), {"k": key})
                try:
                    yield
                finally:
                    conn.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:k)"), {"k": key})
        finally:
            engine.dispose()
        return
    yield


def _claim_lock(storage: RDBStorage) -> contextlib.AbstractContextManager:
    """Around read-then-write state changes. A server database locks the trial's row (SELECT ...
    FOR UPDATE); sqlite through pysqlite reads outside any transaction, so two processes could
    both see WAITING and both claim: there a lock file serialises them."""
    path = sqlite_path(storage.url)
    return FileLock(path.with_name(path.name + ".claim.lock")) if path is not None else contextlib.nullcontext()


# ---------------------------------------------------------------- the study


def make_sampler(spec: SweepSpec) -> optuna.samplers.BaseSampler:
    if spec.search is not None and spec.search.sampler == "tpe":
        return optuna.samplers.TPESampler(n_startup_trials=spec.search.startup_trials)
    return optuna.samplers.RandomSampler()


def make_pruner(spec: SweepSpec) -> optuna.pruners.BasePruner:
    if spec.search is not None and spec.search.pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=spec.search.startup_trials,
                                           n_warmup_steps=spec.search.warmup_epochs)
    return optuna.pruners.NopPruner()


def create_or_load(storage: RDBStorage, spec: SweepSpec, scale: str, overrides: list[str]) -> optuna.Study:
    """The sweep's study, created on first use; a re-run must use the same (non-runtime) --set values."""
    name = study_name(spec.name, scale)
    study = optuna.create_study(storage=storage, study_name=name, direction=spec.direction, load_if_exists=True,
                                sampler=make_sampler(spec), pruner=make_pruner(spec))
    attrs = study.user_attrs
    if SWEEP not in attrs:
        for key, value in ((SWEEP, spec.name), (SCALE, scale), (KIND, spec.kind), (OVERRIDES, overrides)):
            study.set_user_attr(key, value)
        return study
    if attrs.get(KIND) != spec.kind:
        raise UserError(f"{spec.path}: the study '{name}' in {redact(storage.url)} is a {attrs.get(KIND)}, "
                        f"this spec is a {spec.kind} (use --name to start a new sweep)")
    if study.direction.name.lower() != spec.direction:
        raise UserError(f"{spec.path}: key 'objective.direction' is {spec.direction} but the study '{name}' "
                        f"{study.direction.name.lower()}s (use --name to start a new sweep)")
    before, now = _learning_overrides(attrs.get(OVERRIDES, [])), _learning_overrides(overrides)
    if before != now:
        raise UserError(f"--set: sweep '{name}' was started with --set {before or 'none'} and this command has "
                        f"{now or 'none'}; resume it with the same values, or use --name to start another sweep")
    return study


def load(storage: RDBStorage, spec: SweepSpec, scale: str) -> optuna.Study:
    return optuna.load_study(study_name=study_name(spec.name, scale), storage=storage,
                             sampler=make_sampler(spec), pruner=make_pruner(spec))


def find(url: str, spec: SweepSpec, scale: str) -> optuna.Study | None:
    """The study if it exists (for --dry-run); never creates a storage or a study."""
    if not storage_exists(url):
        return None
    storage = open_storage(url)
    try:
        return load(storage, spec, scale)
    except KeyError:
        return None


def _learning_overrides(overrides: list[str]) -> list[str]:
    # runtime.* says how and where a run executes (threads, device), which may differ per machine
    return sorted(o for o in overrides if not o.strip().startswith("runtime."))


# ---------------------------------------------------------------- the queue (grid sweeps)


@dataclass(frozen=True)
class KeyState:
    """Where one (cell, seed) stands, from all the trials that carry its key."""

    key: TrialKey
    state: str  # done | running | waiting | failed | missing
    trial: FrozenTrial | None  # the trial that decides the state
    reason: str = ""


def key_of(trial: FrozenTrial) -> TrialKey | None:
    if CELL not in trial.user_attrs or SEED not in trial.user_attrs:
        return None
    return TrialKey(str(trial.user_attrs[CELL]), int(trial.user_attrs[SEED]))


def queued_keys(study: optuna.Study) -> list[TrialKey]:
    """Every (cell, seed) some trial of the study carries, in the order first queued (rounds of seeds add keys
    beyond the spec's grid)."""
    keys = (key_of(t) for t in study.get_trials(deepcopy=False))
    return list(dict.fromkeys(k for k in keys if k is not None))


def seconds_taken(state: KeyState) -> float | None:
    """How long a done trial took in its worker (None if not done or not recorded)."""
    took = state.trial.user_attrs.get(SECONDS) if state.state == "done" and state.trial is not None else None
    return float(took) if took is not None else None


def failure_reason(trial: FrozenTrial) -> str:
    """Why a FAIL trial failed: the recorded reason, or its worker having stopped."""
    if FAILURE in trial.user_attrs:
        return str(trial.user_attrs[FAILURE])
    return "its worker stopped responding (no heartbeat)"


def stale_retries_exhausted(trial: FrozenTrial) -> bool:
    return len(retry_history(trial)) >= STALE_RETRIES


def key_states(trials: optuna.Study | list[FrozenTrial], keys: list[TrialKey]) -> dict[TrialKey, KeyState]:
    """The state of each key, from a study or from a list of its trials already read."""
    if isinstance(trials, optuna.Study):
        trials = trials.get_trials(deepcopy=False)
    by_key: dict[TrialKey, list[FrozenTrial]] = {k: [] for k in keys}
    for trial in trials:
        key = key_of(trial)
        if key in by_key:
            by_key[key].append(trial)
    return {key: _state_of(key, trials) for key, trials in by_key.items()}


def _state_of(key: TrialKey, trials: list[FrozenTrial]) -> KeyState:
    for state, label in ((TrialState.COMPLETE, "done"), (TrialState.PRUNED, "done"), (TrialState.RUNNING, "running"),
                         (TrialState.WAITING, "waiting")):
        found = [t for t in trials if t.state == state]
        if found:
            return KeyState(key, label, found[-1])
    failed = [t for t in trials if t.state == TrialState.FAIL]
    # A real failure (NaN, bad config) or a trial that kept killing its worker stays failed;
    # a stale trial whose retry copy was never queued (its finder died) is simply missing.
    decided = [t for t in failed if FAILURE in t.user_attrs or stale_retries_exhausted(t)]
    if decided:
        return KeyState(key, "failed", decided[-1], failure_reason(decided[-1]))
    return KeyState(key, "missing", failed[-1] if failed else None)


def enqueue_grid(study: optuna.Study, keys: list[TrialKey], retry_failed: bool = False) -> list[TrialKey]:
    """Queue every (cell, seed) that has no trial yet (and failed ones with `retry_failed`). Call under storage_lock."""
    states = key_states(study, keys)
    queued = []
    for key in keys:
        state = states[key]
        if state.state == "missing" or (retry_failed and state.state == "failed"):
            study.enqueue_trial({}, user_attrs={CELL: key.cell, SEED: key.seed})
            queued.append(key)
    return queued


def claim_waiting(study: optuna.Study, storage: RDBStorage) -> Trial | None:
    """Claim one queued trial, or None when the queue is empty.

    Not `study.ask()`: when the queue empties between looking and claiming, ask() makes a
    fresh trial, which a grid sweep must never run. The WAITING -> RUNNING switch succeeds
    for exactly one claimant (the same call Optuna's own queue uses).
    """
    with _claim_lock(storage):
        for frozen in study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
            try:
                if storage.set_trial_state_values(trial_id(frozen), state=TrialState.RUNNING):
                    storage.record_heartbeat(trial_id(frozen))
                    return Trial(study, trial_id(frozen))
            except optuna.exceptions.UpdateFinishedTrialError:
                continue
    return None


def next_search_trial(study: optuna.Study, storage: RDBStorage, budget: int) -> Trial | None:
    """A retried trial if one is queued, else a new one from the sampler while the budget lasts."""
    trial = claim_waiting(study, storage)
    if trial is not None:
        return trial
    if search_slots_used(study) >= budget:
        return None
    with _claim_lock(storage), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "heartbeat is supposed to be used with optimize": we beat ourselves
        trial = study.ask()
        storage.record_heartbeat(trial_id(trial))
    return trial


def search_slots_used(study: optuna.Study) -> int:
    """Trials that count against a search's budget: all but those replaced by a retry copy.

    Workers that ask at the same moment may overshoot the budget by one trial each.
    """
    trials = study.get_trials(deepcopy=False)
    replaced = retried_numbers(trials)
    return sum(1 for t in trials if t.number not in replaced)


def recover_stale(study: optuna.Study, storage: RDBStorage) -> None:
    """Fail the RUNNING trials whose worker stopped beating (their callback queues a copy)."""
    with _claim_lock(storage):
        _recover_stale(study, storage)


def _recover_stale(study: optuna.Study, storage: RDBStorage) -> None:
    with _settled_api():
        optuna.storages.fail_stale_trials(study)
    # A worker killed between claiming a trial and its first heartbeat leaves a RUNNING trial
    # that Optuna never sees as stale: treat it like one once it is old enough.
    grace = timedelta(seconds=4 * 3 * (storage.get_heartbeat_interval() or DEFAULT_HEARTBEAT_S))
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if WORKER not in trial.user_attrs and trial.datetime_start and datetime.now() - trial.datetime_start > grace:
            try:
                if storage.set_trial_state_values(trial_id(trial), state=TrialState.FAIL):
                    with _settled_api():
                        storage.get_heartbeat_stale_trial_callback()(study, storage.get_trial(trial_id(trial)))
            except optuna.exceptions.UpdateFinishedTrialError:
                pass


def has_unfinished(study: optuna.Study) -> bool:
    return bool(study.get_trials(deepcopy=False, states=(TrialState.WAITING, TrialState.RUNNING)))


def release(storage: RDBStorage, trial: Trial) -> None:
    """Put an interrupted trial back in the queue (Ctrl-C): the next worker resumes it at once."""
    with contextlib.suppress(Exception):
        storage.set_trial_state_values(trial_id(trial), state=TrialState.WAITING)


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


@contextlib.contextmanager
def heartbeat(storage: RDBStorage, trial: Trial) -> Iterator[None]:
    """Beat for the trial from a thread while the body runs (torch releases the GIL in its kernels)."""
    stop = threading.Event()
    interval = storage.get_heartbeat_interval() or DEFAULT_HEARTBEAT_S

    def beat() -> None:
        while not stop.wait(interval):
            with contextlib.suppress(Exception):  # a missed beat is retried; 3 in a row mean stale
                storage.record_heartbeat(trial_id(trial))

    storage.record_heartbeat(trial_id(trial))
    thread = threading.Thread(target=beat, name="p2p-heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


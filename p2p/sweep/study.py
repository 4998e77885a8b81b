"""The Optuna side of a sweep: storage, the study, its queue of trials, heartbeats.

The only module that imports optuna (the trial seam, as p2p/tracking/ is MLflow's): the rest of the
sweep reads trials as plain `TrialRecord`s and acts on the trials it claimed through `ClaimedTrial`;
a study is an opaque handle to them. Optuna's private parts (`trial_id`, `retry_history`, the heartbeat
base class and table) are touched here only. A grid sweep enqueues each (cell, seed)
as one fixed trial, keyed by its cell and seed user attrs (p2p.contract.Attr); workers claim WAITING
trials one at a time (the storage switches WAITING -> RUNNING for exactly one of them), and
heartbeats let any worker notice a trial whose worker died, fail it and queue a copy, which
then resumes from the trial's checkpoint. A search spec asks Optuna for new trials instead.

Storages: a database URL (sqlite for one machine, postgresql for many), or `journal:///abs/path/sweep.log`:
Optuna's journal storage, one append-only file on a filesystem every node mounts (a cluster without a
database server), given here the heartbeats Optuna only has on its RDB storage.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
import warnings
import zlib
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Iterator

import optuna
from filelock import FileLock
from optuna.storages import BaseStorage, JournalStorage, RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.storages._heartbeat import BaseHeartbeat
from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock
from optuna.trial import FrozenTrial, Trial, TrialState

from p2p import contract
from p2p.contract import Attr
from p2p.errors import UserError, first_line, redact_url, scrub
from p2p.sweep.progress import Progress
from p2p.sweep.spec import SearchParam, SweepSpec, TrialKey

optuna.logging.set_verbosity(optuna.logging.WARNING)

Study = optuna.Study  # the handle the driver and the workers pass around (they never call it)

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


def retried_numbers(trials: list[TrialRecord]) -> set[int]:
    """Trials that a retry copy replaced (their worker died and the trial was queued again)."""
    return {n for t in trials for n in t.retry_of}


def engine_url(url: str) -> str:
    """`postgresql://` through psycopg2 (the driver installed here; SQLAlchemy 2.1 would look for psycopg 3)."""
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        return "postgresql+psycopg2://" + url.split("://", 1)[1]
    return url


JOURNAL = "journal://"
HEARTBEAT_ATTR = "p2p.heartbeat"  # a journal trial's last heartbeat (seconds since the epoch, the beating node's clock)


def journal_path(url: str) -> Path | None:
    """The log file of a `journal:///abs/path` URL (None for any other storage)."""
    if not url.startswith("journal:"):
        return None
    path = url[len(JOURNAL):] if url.startswith(JOURNAL) else ""
    if not path.startswith("/"):
        raise UserError(f"--storage {url}: expected journal:///absolute/path/sweep.log (a file every node sees)")
    return Path(path)


class JournalHeartbeatStorage(JournalStorage, BaseHeartbeat):
    """Optuna's journal storage with heartbeats, as its RDB storage has them: a beat is a trial system attr holding
    the beating node's clock (cluster nodes keep theirs in step with NTP), a RUNNING trial silent for 3 is stale."""

    def __init__(self, path: Path, heartbeat_s: int):
        super().__init__(JournalFileBackend(str(path)))
        self.path, self.heartbeat_s = path, heartbeat_s
        with _settled_api():
            self._stale_callback = RetryHeartbeatStaleTrialCallback(max_retry=STALE_RETRIES)

    def record_heartbeat(self, trial_id: int) -> None:
        self.set_trial_system_attr(trial_id, HEARTBEAT_ATTR, time.time())

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        limit = time.time() - 3 * self.heartbeat_s
        return [trial_id(t) for t in self.get_all_trials(study_id, deepcopy=False, states=(TrialState.RUNNING,))
                if t.system_attrs.get(HEARTBEAT_ATTR, limit) < limit]

    def get_heartbeat_interval(self) -> int:
        return self.heartbeat_s

    def get_heartbeat_stale_trial_callback(self):
        return self._stale_callback


def open_storage(url: str, heartbeat_s: int = DEFAULT_HEARTBEAT_S, check_schema: bool = True) -> BaseStorage:
    """The shared storage with heartbeats on: a RUNNING trial silent for 3 heartbeats is stale.

    `check_schema=False` skips creating and checking the tables (a worker: its sweep command did that).
    """
    journal = journal_path(url)
    if journal is not None:
        check_storage(url)
        try:
            return JournalHeartbeatStorage(journal, heartbeat_s)
        except Exception as exc:  # unreadable, not a journal
            raise storage_error(url, exc) from None
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
    database is one line naming the URL, its password redacted). A sqlite file or a journal is created when
    needed, in a folder that must exist."""
    journal = journal_path(url)
    if journal is not None:
        if not journal.parent.is_dir() or not os.access(journal.parent, os.W_OK):
            raise storage_error(url, f"no writable folder {journal.parent}")
        if journal.exists() and not os.access(journal, os.R_OK | os.W_OK):
            raise storage_error(url, f"{journal} cannot be read and written")
        return
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


def storage_error(url: str, exc: BaseException | str) -> UserError:
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
    """Whether there may be a study to read (a sqlite file or journal that exists, or any server)."""
    path = sqlite_path(url) or journal_path(url)
    return path is None or path.is_file()


@contextlib.contextmanager
def storage_lock(url: str, name: str) -> Iterator[None]:
    """One preparer at a time per study (creating it, enqueueing cells, the MLflow parent run).

    sqlite: a lock file beside the database; PostgreSQL: an advisory lock, so drivers on
    several machines take turns; a journal: Optuna's lock file for network filesystems beside it (one
    left by a holder that died is broken after 2 minutes). Other databases go without (claiming trials
    stays atomic).
    """
    journal = journal_path(url)
    if journal is not None:
        lock = JournalFileOpenLock(f"{journal}.p2p", grace_period=120)
        lock.acquire()
        try:
            yield
        finally:
            lock.release()
        return
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


def _claim_lock(storage: BaseStorage) -> contextlib.AbstractContextManager:
    """Around read-then-write state changes. A server database locks the trial's row (SELECT ...
    FOR UPDATE), a journal's log decides which claim came first; sqlite through pysqlite reads outside
    any transaction, so two processes could both see WAITING and both claim: there a lock file
    serialises them."""
    path = sqlite_path(storage.url) if isinstance(storage, RDBStorage) else None
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


def create_or_load(storage: BaseStorage, spec: SweepSpec, scale: str, overrides: list[str]) -> optuna.Study:
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


def load(storage: BaseStorage, spec: SweepSpec, scale: str) -> optuna.Study:
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


# A trial's state, as the rest of the sweep reads it.
WAITING, RUNNING, COMPLETE, PRUNED, FAILED = "waiting", "running", "complete", "pruned", "failed"
_STATE_NAMES = {TrialState.WAITING: WAITING, TrialState.RUNNING: RUNNING, TrialState.COMPLETE: COMPLETE,
                TrialState.PRUNED: PRUNED, TrialState.FAIL: FAILED}


@dataclass(frozen=True)
class TrialRecord:
    """One trial of the study, in plain terms."""

    number: int
    state: str  # WAITING | RUNNING | COMPLETE | PRUNED | FAILED
    key: TrialKey | None  # (cell, seed); None for a search trial not yet started
    value: float | None  # the objective, once complete
    params: dict[str, Any]  # a search trial's sampled values
    epoch: int  # the last epoch it finished
    seconds: float | None  # how long it took in its worker, once complete
    failure: str | None  # the recorded reason it failed or was pruned (None for a worker that vanished)
    worker: str  # host:pid of the worker that claimed it
    run_id: str | None  # its MLflow run, once finished
    retry_of: tuple[int, ...]  # the numbers of the trials this one is a retry copy of (their worker died)

    @property
    def finished(self) -> bool:
        return self.state in (COMPLETE, PRUNED, FAILED)

    @property
    def label(self) -> str:
        return self.key.label if self.key is not None else f"t{self.number:03d} seed?"


def _key_of(attrs: dict[str, Any]) -> TrialKey | None:
    if CELL not in attrs or SEED not in attrs:
        return None
    return TrialKey(str(attrs[CELL]), int(attrs[SEED]))


def _record(trial: FrozenTrial) -> TrialRecord:
    attrs = trial.user_attrs
    return TrialRecord(trial.number, _STATE_NAMES[trial.state], _key_of(attrs), trial.value, dict(trial.params),
                       int(attrs.get(EPOCH, 0)), float(attrs[SECONDS]) if SECONDS in attrs else None,
                       str(attrs[FAILURE]) if FAILURE in attrs else None, str(attrs.get(WORKER, "")),
                       attrs.get(RUN_ID), tuple(retry_history(trial)))


def records(study: optuna.Study) -> list[TrialRecord]:
    """Every trial of the study, oldest first."""
    return [_record(t) for t in study.get_trials(deepcopy=False)]


def parent_run(study: optuna.Study) -> str | None:
    """The sweep's MLflow parent run (set by the first worker)."""
    return study.user_attrs.get(PARENT_RUN)


def set_parent_run(study: optuna.Study, run_id: str) -> None:
    study.set_user_attr(PARENT_RUN, run_id)


@dataclass(frozen=True)
class KeyState:
    """Where one (cell, seed) stands, from all the trials that carry its key."""

    key: TrialKey
    state: Progress
    trial: TrialRecord | None  # the trial that decides the state
    reason: str = ""


def queued_keys(study: optuna.Study) -> list[TrialKey]:
    """Every (cell, seed) some trial of the study carries, in the order first queued (rounds of seeds add keys
    beyond the spec's grid)."""
    return list(dict.fromkeys(r.key for r in records(study) if r.key is not None))


def seconds_taken(state: KeyState) -> float | None:
    """How long a done trial took in its worker (None if not done or not recorded)."""
    return state.trial.seconds if state.state == Progress.DONE and state.trial is not None else None


def failure_reason(trial: TrialRecord) -> str:
    """Why a failed trial failed: the recorded reason, or its worker having stopped."""
    return trial.failure if trial.failure is not None else "its worker stopped responding (no heartbeat)"


def stale_retries_exhausted(trial: TrialRecord) -> bool:
    return len(trial.retry_of) >= STALE_RETRIES


def key_states(trials: optuna.Study | list[TrialRecord], keys: list[TrialKey]) -> dict[TrialKey, KeyState]:
    """The state of each key, from a study or from its trials already read (`records`)."""
    if isinstance(trials, optuna.Study):
        trials = records(trials)
    by_key: dict[TrialKey, list[TrialRecord]] = {k: [] for k in keys}
    for trial in trials:
        if trial.key in by_key:
            by_key[trial.key].append(trial)
    return {key: _state_of(key, trials) for key, trials in by_key.items()}


def _state_of(key: TrialKey, trials: list[TrialRecord]) -> KeyState:
    for state, label in ((COMPLETE, Progress.DONE), (PRUNED, Progress.DONE), (RUNNING, Progress.RUNNING),
                         (WAITING, Progress.WAITING)):
        found = [t for t in trials if t.state == state]
        if found:
            return KeyState(key, label, found[-1])
    failed = [t for t in trials if t.state == FAILED]
    # A real failure (NaN, bad config) or a trial that kept killing its worker stays failed;
    # a stale trial whose retry copy was never queued (its finder died) is simply missing.
    decided = [t for t in failed if t.failure is not None or stale_retries_exhausted(t)]
    if decided:
        return KeyState(key, Progress.FAILED, decided[-1], failure_reason(decided[-1]))
    return KeyState(key, Progress.MISSING, failed[-1] if failed else None)


def enqueue_grid(study: optuna.Study, keys: list[TrialKey], retry_failed: bool = False) -> list[TrialKey]:
    """Queue every (cell, seed) that has no trial yet (and failed ones with `retry_failed`). Call under storage_lock."""
    states = key_states(study, keys)
    queued = []
    for key in keys:
        state = states[key]
        if state.state == Progress.MISSING or (retry_failed and state.state == Progress.FAILED):
            study.enqueue_trial({}, user_attrs={CELL: key.cell, SEED: key.seed})
            queued.append(key)
    return queued


class ClaimedTrial:
    """A trial this worker claimed (RUNNING), and everything a worker records on it."""

    def __init__(self, study: optuna.Study, trial: Trial):
        self._study, self._trial = study, trial
        trial.set_user_attr(WORKER, worker_name())

    @property
    def number(self) -> int:
        return self._trial.number

    @property
    def id(self) -> int:
        return trial_id(self._trial)

    @property
    def key(self) -> TrialKey | None:
        return _key_of(self._trial.user_attrs)

    def name(self, key: TrialKey) -> None:
        """Give a new search trial its (cell, seed): copied to a retry, which then finds this trial's checkpoint."""
        self._trial.set_user_attr(CELL, key.cell)
        self._trial.set_user_attr(SEED, key.seed)

    def suggest(self, params: tuple[SearchParam, ...]) -> dict[str, Any]:
        """A search trial's values, sampled by the study's sampler."""
        values: dict[str, Any] = {}
        for p in params:
            if p.choices is not None:
                values[p.key] = self._trial.suggest_categorical(p.key, list(p.choices))
            elif p.integer:
                values[p.key] = self._trial.suggest_int(p.key, int(p.low), int(p.high), log=p.log)
            else:
                values[p.key] = self._trial.suggest_float(p.key, p.low, p.high, log=p.log)
        return values

    def reached_epoch(self, epoch: int, value: float | None = None) -> bool:
        """Record a finished epoch; with the objective's `value` (a search), whether the pruner stops the trial."""
        self._trial.set_user_attr(EPOCH, epoch)
        if value is None:
            return False
        self._trial.report(value, epoch)
        return self._trial.should_prune()

    def complete(self, value: float, run_id: str, seconds: float) -> None:
        self._ran(run_id, seconds)
        self._study.tell(self._trial, value)

    def fail(self, reason: str, run_id: str | None = None, seconds: float | None = None) -> None:
        self._ran(run_id, seconds)
        self._trial.set_user_attr(FAILURE, reason[:2000])
        self._study.tell(self._trial, state=TrialState.FAIL)

    def prune(self, reason: str) -> None:
        self._trial.set_user_attr(FAILURE, reason[:2000])
        self._study.tell(self._trial, state=TrialState.PRUNED)

    def _ran(self, run_id: str | None, seconds: float | None) -> None:
        if run_id is not None:
            self._trial.set_user_attr(RUN_ID, run_id)
        if seconds is not None:
            self._trial.set_user_attr(SECONDS, round(seconds, 1))


def claim_waiting(study: optuna.Study, storage: BaseStorage) -> ClaimedTrial | None:
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
                    return ClaimedTrial(study, Trial(study, trial_id(frozen)))
            except optuna.exceptions.UpdateFinishedTrialError:
                continue
    return None


def next_search_trial(study: optuna.Study, storage: BaseStorage, budget: int) -> ClaimedTrial | None:
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
    return ClaimedTrial(study, trial)


def search_slots_used(study: optuna.Study) -> int:
    """Trials that count against a search's budget: all but those replaced by a retry copy.

    Workers that ask at the same moment may overshoot the budget by one trial each.
    """
    trials = records(study)
    replaced = retried_numbers(trials)
    return sum(1 for t in trials if t.number not in replaced)


def recover_stale(study: optuna.Study, storage: BaseStorage) -> None:
    """Fail the RUNNING trials whose worker stopped beating (their callback queues a copy)."""
    with _claim_lock(storage):
        _recover_stale(study, storage)


def _recover_stale(study: optuna.Study, storage: BaseStorage) -> None:
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


def running_workers(study: optuna.Study) -> set[str]:
    """The workers (host:pid) of the trials running now, on every machine."""
    return {str(t.user_attrs.get(WORKER, "")) for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))}


def release(storage: BaseStorage, trial: ClaimedTrial) -> None:
    """Put an interrupted trial back in the queue (Ctrl-C): the next worker resumes it at once."""
    with contextlib.suppress(Exception):
        storage.set_trial_state_values(trial.id, state=TrialState.WAITING)


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


@contextlib.contextmanager
def heartbeat(storage: BaseStorage, trial: ClaimedTrial) -> Iterator[None]:
    """Beat for the trial from a thread while the body runs (torch releases the GIL in its kernels)."""
    stop = threading.Event()
    interval = storage.get_heartbeat_interval() or DEFAULT_HEARTBEAT_S

    def beat() -> None:
        while not stop.wait(interval):
            with contextlib.suppress(Exception):  # a missed beat is retried; 3 in a row mean stale
                storage.record_heartbeat(trial.id)

    storage.record_heartbeat(trial.id)
    thread = threading.Thread(target=beat, name="p2p-heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()



def heartbeat_ages(study: optuna.Study) -> dict[int, float]:
    """Seconds since each RUNNING trial's last heartbeat, by trial number (a trial not yet beating is left out).

    A database's beats carry its own clock (compared with its own now); a journal's, the beating node's.
    """
    storage = study._storage
    running = {trial_id(t): t for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))}
    if isinstance(storage, JournalHeartbeatStorage):
        now = time.time()
        return {t.number: max(0.0, now - t.system_attrs[HEARTBEAT_ATTR])
                for t in running.values() if HEARTBEAT_ATTR in t.system_attrs}
    storage = getattr(storage, "_backend", storage)  # an RDB storage comes wrapped in Optuna's cache
    if not isinstance(storage, RDBStorage) or not running:
        return {}
    import sqlalchemy
    from optuna.storages._rdb.models import TrialHeartbeatModel

    session = storage.scoped_session()
    try:
        now = session.execute(sqlalchemy.select(sqlalchemy.func.now(type_=sqlalchemy.DateTime()))).scalar()
        rows = session.query(TrialHeartbeatModel).filter(TrialHeartbeatModel.trial_id.in_(list(running))).all()
        now = now.replace(tzinfo=None) if now.tzinfo is not None else now  # stored without a zone, as Optuna does
        return {running[r.trial_id].number: max(0.0, (now - r.heartbeat).total_seconds()) for r in rows}
    finally:
        session.close()

"""`MlflowTracker`: the `p2p.tracking_protocol.Tracker` that `p2p train`, `p2p eval` and sweeps record a run through,
on an MLflow store; it reads that run back as plain values, never MLflow's own objects."""

from __future__ import annotations

import contextlib
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient

from p2p import signals
from p2p.contract import Tag
from p2p.errors import first_line
from p2p.tracking.store import T, _environ, client, experiment_id, guarded, tracking_uri
from p2p.tracking_protocol import RunStatus, TrackingError


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0:
        return None
    return out.stdout.strip() or None


class MlflowTracker:
    """The `Tracker` of p2p.tracking_protocol on an MLflow store: one run's params, tags, metrics by step, artifacts,
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
        if run.info.status == RunStatus.FINISHED:
            return RunStatus.FINISHED
        self._do("resuming", lambda: self.client.update_run(run_id, status=RunStatus.RUNNING))
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
        self._do("marking it FINISHED", lambda: self.client.set_terminated(self.run_id, RunStatus.FINISHED))

    def fail(self, reason: str) -> None:
        self.set_tags({Tag.FAILURE: reason[:4000]})
        self._do("marking it FAILED", lambda: self.client.set_terminated(self.run_id, RunStatus.FAILED))

    def kill(self, reason: str) -> None:
        self.set_tags({Tag.FAILURE: reason[:4000]})
        self._do("marking it KILLED", lambda: self.client.set_terminated(self.run_id, RunStatus.KILLED))

    def end_quietly(self, exc: BaseException) -> None:
        """KILLED for a stop (a signal, Ctrl-C), FAILED otherwise, with the reason; a store that is down is left as is."""
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


def _param_value(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_param_value(v) for v in value) + "]"
    return str(value)[:6000]

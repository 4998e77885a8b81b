"""What a run is recorded through: the `Tracker` interface that `p2p.tracking` implements on MLflow, a
`NullTracker`, the statuses a tracked run ends with (`RunStatus`), and plain records.

`p2p.trainer.train` and `p2p.evaluate` take a tracker and never know what is behind it: the
MLflow store (`p2p.tracking.MlflowTracker`, what `p2p train`, `p2p eval` and sweeps use) or
nothing (`NullTracker`, for tests and benchmarks). Reading a store returns the records below,
never a tracking library's own objects. Standard library only (not in the `tracking` package, whose import
brings MLflow: the trainer records through this interface without importing it).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from p2p.contract import Tag
from p2p.errors import UserError


class RunStatus:
    """A tracked run's status, as MLflow spells it (not a sweep trial's state: those are p2p.sweep.study's)."""

    RUNNING = "RUNNING"
    FINISHED = "FINISHED"
    FAILED = "FAILED"
    KILLED = "KILLED"


class TrackingError(UserError):
    """The tracking store did not answer or refused a call: one line naming it, its password redacted."""


class Tracker(Protocol):
    """One tracked run at a time: started or resumed, then recorded into, then ended."""

    run_id: str | None

    def start(self, experiment: str, run_name: str, params: dict[str, Any] | None = None,
              tags: dict[str, Any] | None = None, parent_run_id: str | None = None) -> str:
        """A new run (its id); params and tags logged with it."""

    def resume(self, run_id: str) -> str:
        """Continue a run: RUNNING again, without the reason it stopped. Returns its status before;
        a FINISHED run is left FINISHED (there is nothing to continue)."""

    def open(self, run_id: str) -> None:
        """An existing run, as it is (to log more scores to it)."""

    def log_params(self, params: dict[str, Any]) -> None: ...

    def set_tags(self, tags: dict[str, Any]) -> None: ...

    def log_metrics(self, metrics: dict[str, float], step: int) -> None: ...

    def logged_steps(self, key: str) -> set[int]:
        """The steps at which this metric has a value."""

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None: ...

    def log_text(self, text: str, artifact_file: str) -> None: ...

    def finish(self) -> None: ...

    def fail(self, reason: str) -> None: ...

    def kill(self, reason: str) -> None: ...


@dataclass
class NullTracker:
    """Records nowhere but in memory: a run needs no store (tests, benchmarks, library use)."""

    run_id: str | None = None
    status: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, dict[int, float]] = field(default_factory=dict)  # key -> step -> value
    artifacts: list[str] = field(default_factory=list)

    def start(self, experiment: str, run_name: str, params: dict[str, Any] | None = None,
              tags: dict[str, Any] | None = None, parent_run_id: str | None = None) -> str:
        self.run_id, self.status = uuid.uuid4().hex, RunStatus.RUNNING
        self.log_params(params or {})
        self.set_tags(tags or {})
        return self.run_id

    def resume(self, run_id: str) -> str:
        before = self.status if self.run_id == run_id else None
        self.run_id = run_id
        self.status = RunStatus.FINISHED if before == RunStatus.FINISHED else RunStatus.RUNNING
        return before or RunStatus.RUNNING

    def open(self, run_id: str) -> None:
        self.run_id = run_id

    def log_params(self, params: dict[str, Any]) -> None:
        self.params.update(params)

    def set_tags(self, tags: dict[str, Any]) -> None:
        self.tags.update({k: str(v) for k, v in tags.items()})

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        for key, value in metrics.items():
            self.metrics.setdefault(key, {})[step] = float(value)

    def logged_steps(self, key: str) -> set[int]:
        return set(self.metrics.get(key, {}))

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        self.artifacts.append(f"{artifact_path}/{Path(path).name}" if artifact_path else Path(path).name)

    def log_text(self, text: str, artifact_file: str) -> None:
        self.artifacts.append(artifact_file)

    def finish(self) -> None:
        self.status = RunStatus.FINISHED

    def fail(self, reason: str) -> None:
        self.tags[Tag.FAILURE] = reason
        self.status = RunStatus.FAILED

    def kill(self, reason: str) -> None:
        self.tags[Tag.FAILURE] = reason
        self.status = RunStatus.KILLED


@dataclass(frozen=True)
class RunRecord:
    """A run as a tracking store holds it: ids, times (ms), tags, params, latest metrics."""

    run_id: str
    run_name: str
    status: str
    start_time: int | None
    end_time: int | None
    experiment_id: str
    tags: dict[str, str]
    params: dict[str, str]
    metrics: dict[str, float]


@dataclass(frozen=True)
class MetricPoint:
    step: int
    value: float
    timestamp: int  # ms

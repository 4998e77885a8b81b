"""MLflow tracking: the only package that imports mlflow, one module a job.

- `store`: which store (`MLFLOW_TRACKING_URI`, else `mlflow.db` in the project root), whether it answers
  (checked before anything trains), the client, calls that fail as one line naming the store, experiments;
- `mlflow_tracker`: `MlflowTracker`, the `p2p.tracking_protocol.Tracker` that `p2p train`, `p2p eval` and sweeps
  record runs through;
- `queries`: a store read back as plain records (`RunRecord`, metric histories), never MLflow's own objects;
- `views`: how the MLflow UI opens a sweep's experiment (its runs table, the trials by cell).

Names (experiments, tags, metrics, artifacts) come from p2p.contract. Everything goes through an explicit
`MlflowClient` and run ids, never mlflow's global "active run", so several runs can be tracked from one
process. What callers use is imported here: `from p2p import tracking`, then `tracking.find_runs(...)`.
"""

from __future__ import annotations

import logging

from p2p.contract import Tag
from p2p.tracking.mlflow_tracker import MlflowTracker, git_commit
from p2p.tracking.queries import (
    child_runs,
    download_artifact,
    find_or_start_run,
    find_runs,
    find_tagged_runs,
    list_artifacts,
    log_artifacts,
    metric_history,
    metric_points,
    run_exists,
    run_record,
)
from p2p.tracking.store import (
    DEFAULT_TRACKING_DB,
    EXPERIMENT_KIND,
    EXPERIMENT_KIND_TAG,
    NOT_FOUND,
    STORE_ERRORS,
    URI_ENV,
    check_store,
    client,
    ensure_store,
    experiment_exists,
    experiment_id,
    guarded,
    store_exists,
    store_name,
    tracking_uri,
)
from p2p.tracking.views import (
    SWEEP_VIEW,
    SWEEP_VIEW_NAME,
    UI_BASE,
    VIEW_TAG_PREFIX,
    prepare_sweep_experiment,
    sweep_view_state,
    ui_url,
)
from p2p.tracking_protocol import MetricPoint, RunRecord, TrackingError

logging.getLogger("mlflow").setLevel(logging.WARNING)
logging.getLogger("alembic").setLevel(logging.WARNING)

PARENT_TAG, FAILURE_TAG = Tag.PARENT, Tag.FAILURE

__all__ = ["MlflowTracker", "TrackingError", "RunRecord", "MetricPoint", "tracking_uri", "store_exists", "store_name",
           "check_store", "client", "ensure_store", "guarded", "experiment_id", "experiment_exists", "git_commit",
           "run_exists", "run_record", "find_runs", "find_tagged_runs", "find_or_start_run", "child_runs",
           "metric_points", "metric_history", "list_artifacts", "download_artifact", "log_artifacts",
           "prepare_sweep_experiment", "sweep_view_state", "ui_url", "DEFAULT_TRACKING_DB", "URI_ENV", "STORE_ERRORS",
           "NOT_FOUND", "EXPERIMENT_KIND", "EXPERIMENT_KIND_TAG", "VIEW_TAG_PREFIX", "SWEEP_VIEW", "SWEEP_VIEW_NAME",
           "UI_BASE", "PARENT_TAG", "FAILURE_TAG"]

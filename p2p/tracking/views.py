"""How the MLflow UI opens a sweep's experiment: on its runs table, the trials grouped by cell (a saved view).

MLflow 3 shows an experiment as "GenAI" (an overview of traces, latency and tokens) or as "model
training" (the runs table). `mlflow.experimentKind` records which one an experiment is; MLflow 3.17's UI
follows its own GenAI / Model training switch instead (kept per browser, `workflowType` in the URL), so the
runs table a researcher needs is also saved as a view of the experiment (its "Views" menu) and `ui_url`
links to it. Only absent (or UI-inferred) values are set: a kind or a view a person chose is kept.
"""

from __future__ import annotations

import contextlib
import json
import time
from typing import Any

from p2p import contract
from p2p.tracking.store import STORE_ERRORS, client, experiment_id, guarded, tracking_uri

VIEW_TAG_PREFIX = "mlflow.sharedViewState."  # + the view's id: {name, createdAt, updatedAt, state (JSON)}
SWEEP_VIEW = "p2p-trials"
SWEEP_VIEW_NAME = "p2p: trials by cell"
UI_BASE = "http://127.0.0.1:5000"  # what `make ui` serves


def sweep_view_state() -> dict[str, Any]:
    """The runs table of a sweep: trials grouped by cell (a group row holds the cell's mean), their cell and
    seed, and the scores a run logs by default, best FCN IoU first. Grouping also lifts the trials out from
    under the collapsed parent run, which MLflow otherwise lists alone."""
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

"""`make ui` in a real browser: a sweep's experiment opens on its trials, with their cell, seed and scores.

MLflow 3.17 opens an experiment as "GenAI" (traces, latency, tokens) unless told otherwise, and lists a
sweep as one collapsed parent run. p2p marks each experiment as model training and saves a view of a
sweep's runs table (p2p/tracking/views.py); `tracking.ui_url` is the link
the README and docs/reports.md give. The screenshot of what a person sees first is saved beside the test's files.
"""

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from p2p import tracking
from tests.test_report import IOU, make_sweep

pytestmark = pytest.mark.slow  # a server and a browser

CHROMIUM, CHROMEDRIVER = shutil.which("chromium") or "/usr/bin/chromium", shutil.which("chromedriver") or "/usr/bin/chromedriver"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--window-size=1920,1080"]
PARENT_TAGS = {"p2p.sweep": "patchsize", "p2p.scale": "paper", "p2p.role": "sweep"}
TRIALS = [(cell, seed) for cell, values in IOU.items() for seed in range(len(values))]  # 4 cells x 3 seeds


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(url: str, timeout: float = 180) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"{url} did not answer within {timeout} s")


@pytest.fixture
def ui(mlflow_uri, tiny_overrides, tmp_path):
    """A sweep in a fresh store, joined as a sweep worker joins it, and `make ui` serving it."""
    make_sweep(tiny_overrides, tmp_path, with_generators=False)
    tracking.find_or_start_run("patchsize", "patchsize-paper", PARENT_TAGS)  # what each worker does first
    port = free_port()
    # One server worker (MLflow starts four): on a busy 2-core machine four can miss uvicorn's start-up check.
    env = {**os.environ, "MLFLOW_TRACKING_URI": mlflow_uri, "PORT": str(port), "MLFLOW_WORKERS": "1"}
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    proc = subprocess.Popen(["make", "-s", "-C", root, "ui"], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_for(f"http://127.0.0.1:{port}/health")
        yield f"http://127.0.0.1:{port}"
    finally:
        os.killpg(proc.pid, 9)
        proc.wait()


def test_an_experiment_p2p_made_or_a_sweep_joined_is_marked_for_the_runs_view(mlflow_uri):
    c = tracking.client()
    made = c.get_experiment(tracking.experiment_id("single-runs"))
    assert made.tags[tracking.EXPERIMENT_KIND_TAG] == "custom_model_development"
    assert tracking.VIEW_TAG_PREFIX + tracking.SWEEP_VIEW not in made.tags  # a view of trials is for sweeps

    older = c.create_experiment("patchsize", tags={tracking.EXPERIMENT_KIND_TAG: "genai_development_inferred"})
    tracking.find_or_start_run("patchsize", "patchsize-cpu", {**PARENT_TAGS, "p2p.scale": "cpu"})
    tags = c.get_experiment(older).tags
    assert tags[tracking.EXPERIMENT_KIND_TAG] == "custom_model_development"  # the UI's guess is replaced
    view = json.loads(tags[tracking.VIEW_TAG_PREFIX + tracking.SWEEP_VIEW])
    state = json.loads(view["state"])
    assert view["name"] == tracking.SWEEP_VIEW_NAME and isinstance(view["createdAt"], int)
    assert state["selectedColumns"][:3] == ["tags.`p2p.cell`", "tags.`p2p.seed`", "metrics.`eval/fcn_pixel_acc`"]
    assert state["groupBy"]["groupByKeys"] == [{"mode": "tag", "groupByData": "p2p.cell"}]

    # What a person chose is kept: another kind, a view saved over p2p's.
    c.set_experiment_tag(older, tracking.EXPERIMENT_KIND_TAG, "genai_development")
    c.set_experiment_tag(older, tracking.VIEW_TAG_PREFIX + tracking.SWEEP_VIEW, "{}")
    tracking.find_or_start_run("patchsize", "patchsize-cpu", {**PARENT_TAGS, "p2p.scale": "cpu"})
    tags = c.get_experiment(older).tags
    assert tags[tracking.EXPERIMENT_KIND_TAG] == "genai_development"
    assert tags[tracking.VIEW_TAG_PREFIX + tracking.SWEEP_VIEW] == "{}"
    assert tracking.ui_url(older, "http://h:1") == (f"http://h:1/#/experiments/{older}/runs?workflowType=machine_learning"
                                                    "&viewStateShareKey=p2p-trials")


def test_ui_opens_a_sweep_on_its_trials_with_cell_seed_and_scores(ui, tmp_path):
    if not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)):
        pytest.fail("chromium and chromium-driver are needed (.ci/run installs them: apt-get install chromium chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.support.ui import WebDriverWait

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS + [f"--user-data-dir={tmp_path / 'chrome'}"]:  # a fresh browser: MLflow's GenAI default
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    shot = tmp_path / "mlflow-ui.png"
    cell_col, seed_col, iou_col = "tags.`p2p.cell`", "tags.`p2p.seed`", "metrics.`eval/fcn_iou`"
    read_rows = """return Array.from(document.querySelectorAll('.ag-center-cols-container .ag-row')).map(row => {
        const cell = key => { const c = row.querySelector(`[col-id="${key}"]`); return c ? c.innerText.trim() : null; };
        return [cell(arguments[0]), cell(arguments[1]), cell(arguments[2])]; });"""
    try:
        experiment = tracking.client().get_experiment_by_name("patchsize").experiment_id
        driver.get(tracking.ui_url(experiment, ui))
        names = [f"{cell} seed{seed}" for cell, seed in TRIALS]
        text = lambda: driver.find_element("tag name", "body").text  # noqa: E731
        WebDriverWait(driver, 120).until(lambda d: all(name in text() for name in names))
        headers = dict(driver.execute_script(
            "return Array.from(document.querySelectorAll('.ag-header-cell')).map(e => [e.getAttribute('col-id'), e.innerText])"))
        assert {cell_col: "p2p.cell", seed_col: "p2p.seed", iou_col: "eval/fcn_iou"}.items() <= headers.items(), headers
        rows = driver.execute_script(read_rows, cell_col, seed_col, iou_col)
        trials = {(cell, int(seed)): iou for cell, seed, iou in rows if cell}  # group rows have no cell of their own
        assert set(trials) == set(TRIALS), rows  # every trial in sight, none under a collapsed parent
        for (cell, seed), iou in trials.items():
            expected = IOU[cell][seed]
            assert iou == ("-" if expected is None else f"{expected:g}"), (cell, seed, iou)
        body = text()
        assert "Group: 70x70" in body and "p2p: trials by cell" in body  # grouped by cell, the saved view
        assert "Token Usage" not in body and "/runs" in driver.current_url  # not the GenAI overview
        driver.save_screenshot(str(shot))
        assert shot.stat().st_size > 20_000
        print(f"screenshot: {shot}", file=sys.stderr)
    except Exception:
        driver.save_screenshot(str(shot))  # what the page showed, for the failure report
        print(f"page text:\n{driver.find_element('tag name', 'body').text[:2000]}\nscreenshot: {shot}", file=sys.stderr)
        raise
    finally:
        driver.quit()

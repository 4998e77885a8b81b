"""`make ui` in a real browser: the MLflow UI lists a sweep's runs and their cells."""

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

CHROMIUM, CHROMEDRIVER = shutil.which("chromium") or "/usr/bin/chromium", shutil.which("chromedriver") or "/usr/bin/chromedriver"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--window-size=1600,1000"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(url: str, timeout: float = 90) -> None:
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
    """A sweep in a fresh store and `make ui` serving it."""
    make_sweep(tiny_overrides, tmp_path, with_generators=False)
    port = free_port()
    env = {**os.environ, "MLFLOW_TRACKING_URI": mlflow_uri, "PORT": str(port)}
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    proc = subprocess.Popen(["make", "-s", "-C", root, "ui"], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_for(f"http://127.0.0.1:{port}/health")
        yield f"http://127.0.0.1:{port}"
    finally:
        os.killpg(proc.pid, 9)
        proc.wait()


def test_ui_lists_the_sweeps_runs_and_cells(ui, tmp_path):
    if not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)):
        pytest.fail("chromium and chromium-driver are needed (.ci/run installs them: apt-get install chromium chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.support.ui import WebDriverWait

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS + [f"--user-data-dir={tmp_path / 'chrome'}"]:
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    shot = tmp_path / "mlflow-ui.png"
    try:
        experiment = tracking.client().get_experiment_by_name("patchsize").experiment_id
        driver.get(f"{ui}/#/experiments/{experiment}/runs")
        names = [f"{cell} seed{seed}" for cell, seed in IOU]
        # the runs table lists the parent run; its trials show under it (expanded) or in the flat list
        WebDriverWait(driver, 60).until(lambda d: "patchsize-cpu" in d.page_source)
        text = lambda: driver.find_element("tag name", "body").text  # noqa: E731
        if not all(name in text() for name in names):
            # the sweep's parent run is collapsed: its expander is the button in the run-name cell
            for toggle in driver.find_elements("css selector", "button[data-component-id*='runnamecellrenderer']"):
                toggle.click()
            WebDriverWait(driver, 30).until(lambda d: all(name in text() for name in names))
        body = text()
        assert "patchsize" in body
        for name in names + ["286x286 seed1"]:
            assert name in body, name
        driver.save_screenshot(str(shot))
        assert shot.stat().st_size > 20_000
        print(f"screenshot: {shot}", file=sys.stderr)
    except Exception:
        driver.save_screenshot(str(shot))  # what the page showed, for the failure report
        print(f"page text:\n{driver.find_element('tag name', 'body').text[:2000]}\nscreenshot: {shot}", file=sys.stderr)
        raise
    finally:
        driver.quit()

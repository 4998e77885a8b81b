"""Many machines: a real PostgreSQL server (Optuna's storage and MLflow's backend), an `mlflow server`,
and two sweep commands as two machines would run them; one is SIGKILLed mid-trial and restarted."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import urllib.request

import pytest

from tests.helpers import (
    OK_CELLS,
    check_completed_once,
    free_port,
    kill_mid_trial,
    postgres_server,
    start,
    sweep_command,
    sweep_env,
    wait_until,
)
from tests.helpers import write_sweep_spec as write_spec


@pytest.fixture
def postgres():
    """A throwaway server on a free port of 127.0.0.1 with databases `optuna` and `mlflow`; yields its base URL."""
    with postgres_server("p2p-pg-", settings=("synchronous_commit=off", "full_page_writes=off")) as url:
        yield url


@pytest.fixture
def mlflow_server(postgres, tmp_path):
    """`mlflow server` on the PostgreSQL backend, serving artifacts itself; yields (URL, wait until healthy).

    A sweep checks its tracking store before any training (an unreachable one is a one-line error), so
    the test waits until the server is healthy before starting them.
    """
    port, log = free_port(), tmp_path / "mlflow-server.log"
    server = subprocess.Popen([sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"{postgres}/mlflow",
                               "--artifacts-destination", str(tmp_path / "artifacts"), "--host", "127.0.0.1",
                               "--port", str(port), "--workers", "1"], stdout=open(log, "w"),
                              stderr=subprocess.STDOUT, start_new_session=True, cwd=tmp_path)
    url = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        assert server.poll() is None, log.read_text()[-3000:]
        try:
            return urllib.request.urlopen(f"{url}/health", timeout=2).status == 200
        except OSError:
            return False

    try:
        yield url, lambda: wait_until(healthy, 120, "mlflow server", log)
    finally:
        os.killpg(server.pid, signal.SIGKILL)  # a throwaway: no need for a graceful stop
        server.wait(timeout=30)


@pytest.mark.slow
def test_two_machines_on_postgres_and_an_mlflow_server_finish_every_trial_once(tmp_path, data_root, postgres,
                                                                              mlflow_server):
    spec_path = write_spec(tmp_path, "machines", OK_CELLS, seeds=2)
    storage = f"{postgres}/optuna"
    tracking_uri, wait_for_server = mlflow_server
    env = sweep_env(tracking_uri)

    def machine(name: str) -> list[str]:  # each machine trains into its own disk
        return sweep_command(spec_path, storage, workers=1) + ["--set", f"runtime.out_dir={tmp_path / name}"]

    wait_for_server()
    first = start(machine("a"), tmp_path, env, tmp_path / "a.log")
    second = start(machine("b"), tmp_path, env, tmp_path / "b.log")
    killed = kill_mid_trial(first, spec_path, storage, set(OK_CELLS), tmp_path / "a.log", out_dir=tmp_path / "a")
    restarted = start(machine("a"), tmp_path, env, tmp_path / "a2.log")
    for proc, log in ((second, "b.log"), (restarted, "a2.log")):
        assert proc.wait(timeout=240) == 0, (tmp_path / log).read_text()
    # The killed trial came back once: on machine a from its checkpoint, or on b from scratch.
    check_completed_once(spec_path, storage, tracking_uri, killed, OK_CELLS, seeds=2, out_dirs=[tmp_path / "a",
                                                                                               tmp_path / "b"])

"""A real sweep end to end on local files: two workers, a NaN cell and an invalid cell, a worker
SIGKILLed mid-trial, and the same command again, which resumes the killed trial from its checkpoint."""

from __future__ import annotations

import subprocess

import pytest

from p2p.sweep import study as studies
from p2p.sweep.spec import grid, load_spec
from tests.helpers import OK_CELLS, check_completed_once, kill_mid_trial, start, sweep_command, sweep_env
from tests.helpers import write_sweep_spec as write_spec


@pytest.mark.slow
def test_two_local_workers_survive_a_kill_and_a_rerun_finishes_every_trial_once(tmp_path, data_root):
    cells = {**OK_CELLS, "nan": {"loss.l1": 1.0e39}, "huge": {"model.discriminator.patch": 286}}
    spec_path = write_spec(tmp_path, "local", cells, seeds=1)
    storage, tracking_uri = f"sqlite:///{tmp_path / 'optuna.db'}", f"sqlite:///{tmp_path / 'mlflow.db'}"
    cmd, env = sweep_command(spec_path, storage, workers=2), sweep_env(tracking_uri)

    killed = kill_mid_trial(start(cmd, tmp_path, env, tmp_path / "first.log"), spec_path, storage, set(OK_CELLS),
                            tmp_path / "first.log")
    assert killed["epoch"] >= 1
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout + proc.stderr

    children = check_completed_once(spec_path, storage, tracking_uri, killed, OK_CELLS, seeds=1)
    # The failing cells: failed with their reasons, in Optuna and on their MLflow runs, and the sweep went on.
    spec = load_spec(spec_path)
    states = studies.key_states(studies.load(studies.open_storage(storage), spec, "cpu"), grid(spec, "cpu"))
    nan, huge = states[studies.TrialKey("nan", 0)], states[studies.TrialKey("huge", 0)]
    assert nan.state == "failed" and "non-finite loss" in nan.reason
    assert huge.state == "failed" and "at least 128 for a 286x286 discriminator" in huge.reason
    failed = {r.tags["p2p.cell"]: r for r in children if r.status == "FAILED"}
    assert set(failed) == {"nan", "huge"}
    assert "non-finite loss" in failed["nan"].tags["p2p.failure"]
    assert "286x286" in failed["huge"].tags["p2p.failure"]
    assert "failed trials (run again with --retry-failed" in proc.stdout
    assert f"done    {killed['cell']} seed{killed['seed']}" in proc.stdout

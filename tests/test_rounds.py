"""`p2p sweep --until-resolved`: which trials each round adds, when it stops, and that it resumes after kill -9."""

from __future__ import annotations

import subprocess

import pytest

from p2p.errors import UserError
from p2p.sweep import study as studies
from p2p.sweep.claims import Findings
from p2p.sweep.driver import SweepOptions
from p2p.sweep.rounds import Rounds, next_round, parse_duration, run_until_resolved, seed_sequence
from p2p.sweep.spec import TrialKey, load_spec
from tests.helpers import OK_CELLS, check_completed_once, kill_mid_trial, start, sweep_command, sweep_env
from tests.helpers import write_sweep_spec as write_spec


def keys(cells: str, seeds: range) -> list[TrialKey]:
    return [TrialKey(cell, seed) for seed in seeds for cell in cells.split()]


@pytest.fixture
def three_cells(tmp_path):
    return load_spec(write_spec(tmp_path, "three", {"a": {}, "b": {"loss.gan": "lsgan"}, "c": {"loss.l1": 10.0}},
                                seeds=4))


def test_durations():
    assert [parse_duration(t, "--budget") for t in ("150m", "2.5h", "900s", "90", "45 min")] == \
        [9000.0, 9000.0, 900.0, 5400.0, 2700.0]
    for bad in ("", "-5m", "0h", "2 days", "h"):
        with pytest.raises(UserError, match=f"--budget {bad}: expected a duration such as 150m, 2.5h or 900s"):
            parse_duration(bad, "--budget")


def test_seeds_continue_after_the_specs_own(three_cells, tmp_path):
    assert seed_sequence(three_cells, "cpu", 6) == [0, 1, 2, 3, 4, 5]
    assert seed_sequence(three_cells, "cpu", 3) == [0, 1, 2]
    listed = load_spec(write_spec(tmp_path, "listed", {"a": {}}, seeds=[3, 7]))
    assert seed_sequence(listed, "cpu", 5) == [3, 7, 8, 9, 10]


def test_a_round_gives_seeds_only_to_open_cells_up_to_one_count(three_cells):
    done = keys("a b c", range(4))
    assert next_round(three_cells, "cpu", done, {"a", "c"}, max_seeds=30) == keys("a c", range(4, 6))
    assert next_round(three_cells, "cpu", done, {"a", "c"}, max_seeds=5) == keys("a c", range(4, 5))
    assert next_round(three_cells, "cpu", done, {"a", "c"}, max_seeds=4) == []  # at --max-seeds: no round
    assert next_round(three_cells, "cpu", done, set(), max_seeds=30) == []  # every claim resolved
    # b stopped at 4 seeds while a went on to 8: b reopened catches up, so the claim a-b pairs 10 seeds
    uneven = done + keys("a", range(4, 8))
    assert next_round(three_cells, "cpu", uneven, {"a", "b"}, max_seeds=30) == \
        keys("b", range(4, 8)) + keys("a b", range(8, 10))


def test_dry_run_prints_the_first_round_and_creates_nothing(tmp_path, data_root, mlflow_uri, capsys):
    path = write_spec(tmp_path, "dry", dict(OK_CELLS), seeds=2)
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    fresh = Findings(1, frozenset(OK_CELLS), ())
    code = run_until_resolved(path, SweepOptions(scale="cpu", workers=1, storage=storage), Rounds(max_seeds=6),
                              lambda spec, scale: fresh, dry_run=True)
    out = capsys.readouterr().out
    assert code == 0
    assert out.startswith("until resolved: the next round runs 4 trials: seeds 0-1 of a, lsgan")
    assert "estimate: 4 trials to run on 1 worker" in out
    assert not (tmp_path / "optuna.db").exists()


def test_the_cli_checks_the_round_options(tmp_path):
    from p2p.cli import main

    path = write_spec(tmp_path, "flags", dict(OK_CELLS))
    assert main(["sweep", str(path), "--max-seeds", "8"]) == 2
    assert main(["sweep", str(path), "--until-resolved", "--max-seeds", "1"]) == 2
    assert main(["sweep", str(path), "--until-resolved", "--budget", "soon"]) == 2


@pytest.mark.slow
def test_rounds_stop_open_cells_only_and_when_all_claims_are_resolved(tmp_path, data_root, mlflow_uri, capsys):
    """A closed cell gets no more seeds; the command stops once the findings say every claim is settled."""
    path = write_spec(tmp_path, "closing", {"a": {}, "b": {"loss.gan": "lsgan"}, "c": {"loss.l1": 10.0}}, seeds=1)
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    looks = []

    def findings(spec, scale):  # the claim a-b stays open for one look; a-c is settled at once
        looks.append(scale)
        return Findings(2, frozenset({"a", "b"}) if len(looks) == 1 else frozenset(), (f"look {len(looks)}",))

    options = SweepOptions(scale="cpu", workers=1, storage=storage, progress=False)
    assert run_until_resolved(path, options, Rounds(max_seeds=30), findings) == 0
    out = capsys.readouterr().out
    assert "look 1" in out and "look 2" in out and "every claim is resolved (2 claims)" in out
    spec = load_spec(path)
    study = studies.load(studies.open_storage(storage), spec, "cpu")
    queued = studies.queued_keys(study)
    assert sorted(queued, key=lambda k: (k.seed, k.cell)) == keys("a b c", range(1)) + keys("a b", range(1, 3))
    assert {s.state for s in studies.key_states(study, queued).values()} == {"done"}


@pytest.mark.slow
def test_until_resolved_survives_kill_9_mid_round_and_runs_nothing_twice(tmp_path, data_root):
    """Killed in its second round and run again: it finishes that round and stops at --max-seeds (or resolved);
    every (cell, seed) of both rounds finishes exactly once, the killed trial resuming its MLflow run."""
    spec_path = write_spec(tmp_path, "rounds", dict(OK_CELLS), seeds=2)
    storage, tracking_uri = f"sqlite:///{tmp_path / 'optuna.db'}", f"sqlite:///{tmp_path / 'mlflow.db'}"
    cmd = sweep_command(spec_path, storage, workers=1) + ["--until-resolved", "--max-seeds", "4"]
    env = sweep_env(tracking_uri)
    killed = kill_mid_trial(start(cmd, tmp_path, env, tmp_path / "first.log"), spec_path, storage, set(OK_CELLS),
                            tmp_path / "first.log", timeout=240, min_seed=2)
    assert "round of 4 trials: seeds 2-3 of a, lsgan" in (tmp_path / "first.log").read_text()
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "--max-seeds 4 reached" in proc.stdout or "every claim is resolved" in proc.stdout
    check_completed_once(spec_path, storage, tracking_uri, killed, OK_CELLS, seeds=4)

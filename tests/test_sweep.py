"""Sweep specs, cells and the trial queue: validation, the paper's cells, complete-once claiming, stale trials."""

import subprocess
import sys
import threading
import time

import pytest
import yaml

from p2p.errors import UserError
from p2p.sweep import study as studies
from p2p.sweep.spec import TrialKey, check_cli_overrides, grid, load_spec, run_dir, trial_config
from tests.helpers import ROOT, SHARED, TINY

SWEEPS = ROOT / "sweeps"
FACADES = ROOT / "experiments" / "facades.yaml"


def write_spec(tmp_path, body: dict, name="spec.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump({"base": str(FACADES), "objective": {"metric": "eval/ssim"}, **body}, sort_keys=False))
    return path


def tiny_spec(tmp_path, cells, seeds=2, name="tiny", extra=None):
    """A grid over named cells at tiny sizes (the `cpu` scale entry holds the tiny settings)."""
    tiny = {k: v for k, v in TINY.items() if k != "model.discriminator.patch"}
    return write_spec(tmp_path, {"name": name, "cells": cells, "seeds": seeds,
                                 "scales": {"cpu": {"set": {**tiny, "runtime.out_dir": str(tmp_path / "runs"),
                                                            **(extra or {})}}}}, f"{name}.yaml")


# ---------------------------------------------------------------- the four ablations


def test_sweep_cells_are_the_papers_table_rows(data_root):
    paper = yaml.safe_load((SHARED / "data" / "paper" / "pix2pix-tables.yaml").read_text())["tables"]
    names = {p.stem: [c.name for c in load_spec(p).cells] for p in SWEEPS.glob("*.yaml")}
    assert names["patchsize"] == ["1x1", "16x16", "70x70", "286x286"] == list(paper["patchsize"])
    assert names["loss"] == ["L1", "GAN", "cGAN", "L1+GAN", "L1+cGAN", "cLSGAN", "L1+cLSGAN"]
    assert set(paper["loss"]) - {"ground_truth"} <= set(names["loss"])
    assert names["generator"] == list(paper["generator"])
    assert names["tricks"] == ["none", "label_smoothing", "label_flip", "instance_noise", "all"]
    search = load_spec(SWEEPS / "search-lr-l1.yaml")
    assert search.kind == "search" and [p.key for p in search.search.params] == ["optim.lr", "loss.l1"]


def resolved(sweep: str, scale: str = "cpu") -> dict:
    spec = load_spec(SWEEPS / f"{sweep}.yaml")
    return {c.name: trial_config(spec, scale, c.overrides, 0) for c in spec.cells}


def test_cells_resolve_to_the_papers_settings():
    loss = {name: (c.loss.gan, c.loss.conditional, c.loss.l1) for name, c in resolved("loss").items()}
    assert loss == {"L1": ("none", True, 100.0), "GAN": ("vanilla", False, 0.0), "cGAN": ("vanilla", True, 0.0),
                    "L1+GAN": ("vanilla", False, 100.0), "L1+cGAN": ("vanilla", True, 100.0),
                    "cLSGAN": ("lsgan", True, 0.0), "L1+cLSGAN": ("lsgan", True, 100.0)}
    patch = resolved("patchsize")
    assert {n: c.model.discriminator.patch for n, c in patch.items()} == {"1x1": 1, "16x16": 16, "70x70": 70,
                                                                          "286x286": 286}
    cfg = patch["70x70"]  # the cpu scale under the cells: 128 crops, half widths, 3 + 3 epochs
    assert (cfg.data.crop_size, cfg.model.generator.ngf, cfg.optim.epochs, cfg.optim.decay_epochs) == (128, 32, 3, 3)
    assert resolved("patchsize", "paper")["70x70"].data.crop_size == 256
    gen = {n: (c.model.generator.arch, c.loss.gan) for n, c in resolved("generator").items()}
    assert gen == {"encoder_decoder/L1": ("encoder_decoder", "none"), "encoder_decoder/L1+cGAN": ("encoder_decoder", "vanilla"),
                   "unet/L1": ("unet", "none"), "unet/L1+cGAN": ("unet", "vanilla")}
    tricks = resolved("tricks")
    t = tricks["all"].tricks
    assert (t.label_smoothing, t.label_flip, t.instance_noise) == ((0.8, 1.0), 0.05, 0.1)
    assert tricks["none"].tricks.label_flip == 0.0 and tricks["label_flip"].tricks.label_smoothing is None
    spec = load_spec(SWEEPS / "patchsize.yaml")
    assert spec.seeds_for("cpu") == (0, 1, 2, 3) and spec.seeds_for("paper") == (0, 1, 2)  # the CPU protocol: 4


def test_trial_config_layers_base_scale_cell_seed_then_set(tmp_path):
    path = write_spec(tmp_path, {"cells": {"a": {"optim": {"lr": 1e-3}}}, "seeds": [5, 7],
                                 "scales": {"cpu": {"set": {"optim.lr": 5e-4, "optim.epochs": 2}}}})
    spec = load_spec(path)
    cfg = trial_config(spec, "cpu", spec.cell("a").overrides, 7, ["optim.epochs=1"], threads=3)
    assert (cfg.optim.lr, cfg.optim.epochs, cfg.seed, cfg.data.crop_size) == (1e-3, 1, 7, 128)
    assert cfg.runtime.threads == 3  # each worker's share of the cores, unless a layer sets it
    assert trial_config(spec, "cpu", {}, 7, ["runtime.threads=1"], threads=3).runtime.threads == 1
    assert grid(spec, "cpu") == [TrialKey("a", 5), TrialKey("a", 7)]


def test_grid_is_seed_major_and_run_dirs_are_fixed():
    spec = load_spec(SWEEPS / "generator.yaml")
    keys = grid(spec, "cpu")
    assert [k.label for k in keys[:5]] == ["encoder_decoder/L1 seed0", "encoder_decoder/L1+cGAN seed0",
                                           "unet/L1 seed0", "unet/L1+cGAN seed0", "encoder_decoder/L1 seed1"]
    assert run_dir("runs", "generator", "cpu", "unet/L1+cGAN", 1).as_posix() == "runs/sweeps/generator/cpu/unet__L1+cGAN/seed1"


# ---------------------------------------------------------------- validation


@pytest.mark.parametrize("body, message", [
    ({"cells": [1, 2], "colour": 1}, "unknown key 'colour'"),
    ({"cells": [1, 2]}, "key 'factor.key' is needed"),
    ({"cells": {"a": 3}}, "key 'cells.a' expected a mapping"),
    ({"cells": {"a": {}}, "seeds": 0}, "key 'seeds' expected a count >= 1"),
    ({"cells": {"a": {}}, "seeds": [1, 1]}, "key 'seeds' expected a count >= 1 or a list of distinct seeds"),
    ({"cells": {"a": {}}, "objective": {"metric": "eval/fid"}}, "key 'objective.metric' expected one of"),
    ({"cells": {"a": {}}, "objective": {"metric": "eval/ssim", "direction": "up"}}, "key 'objective.direction'"),
    ({"cells": {"a": {}}, "scales": {"cpu": {"sedes": 2}}}, "unknown key 'scales.cpu.sedes'"),
    ({"cells": {"a": {}}, "search": {"params": {}, "trials": 2}}, "either 'cells'"),
    ({"search": {"params": {"optim.lr": {"low": 1, "high": 0}}, "trials": 2}}, "key 'search.params.optim.lr'"),
    ({"search": {"params": {"optim.lr": {"low": 0, "high": 1, "log": True}}, "trials": 2}}, "for a log range"),
    ({"search": {"params": {"loss.l1": [1, 10]}, "trials": 0}}, "key 'search.trials'"),
    ({"search": {"params": {"loss.l1": [1, 10]}, "trials": 2}, "seeds": 2}, "one seed for a search"),
    ({"cells": {"a": {}}, "base": "nowhere.yaml"}, "key 'base': no run config"),
])
def test_spec_errors_name_the_file_and_key(tmp_path, body, message):
    path = write_spec(tmp_path, body)
    with pytest.raises(UserError, match=None) as err:
        load_spec(path)
    assert message in str(err.value) and str(path) in str(err.value)


def test_cli_reports_spec_errors_in_one_line_and_refuses_to_vary_the_factor(tmp_path):
    path = write_spec(tmp_path, {"cells": {"a": {}}, "seed": 1})
    proc = subprocess.run([sys.executable, "-m", "p2p", "sweep", str(path), "--dry-run"], capture_output=True,
                          text=True, cwd=tmp_path)
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [
        f"p2p: error: {path}: unknown key 'seed' (expected one of: base, cells, claims, description, factor, name, "
        "objective, scales, search, seeds)"]
    spec = load_spec(SWEEPS / "patchsize.yaml")
    with pytest.raises(UserError, match="'model.discriminator.patch' is what this sweep varies"):
        check_cli_overrides(spec, ["model.discriminator.patch=16"])
    check_cli_overrides(spec, ["optim.epochs=1"])


def test_invalid_cells_are_reported_and_an_all_invalid_sweep_stops(tmp_path, data_root):
    from p2p.sweep.driver import make_plan

    path = tiny_spec(tmp_path, {"ok": {}, "huge_patch": {"model.discriminator.patch": 286}})
    plan = make_plan(load_spec(path), "cpu", [])
    assert list(plan.configs) == ["ok"] and "at least 128 for a 286x286 discriminator" in plan.invalid["huge_patch"]
    with pytest.raises(UserError, match="key 'optim.lr' expected a learning rate > 0"):
        make_plan(load_spec(path), "cpu", ["optim.lr=-1"])
    with pytest.raises(UserError, match="needs 'lpips' in eval.metrics"):
        make_plan(load_spec(write_spec(tmp_path, {"cells": {"a": {}}, "objective": {"metric": "eval/lpips"}})),
                  "cpu", ["eval.metrics=[ssim]"])


# ---------------------------------------------------------------- the queue


def open_study(tmp_path, spec_path, heartbeat_s=10):
    spec = load_spec(spec_path)
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    storage = studies.open_storage(url, heartbeat_s)
    return spec, storage, studies.create_or_load(storage, spec, "cpu", [])


@pytest.mark.slow
def test_each_cell_and_seed_is_claimed_exactly_once_by_concurrent_workers(tmp_path):
    spec, storage, study = open_study(tmp_path, tiny_spec(tmp_path, {f"c{i}": {} for i in range(6)}, seeds=2))
    keys = grid(spec, "cpu")
    assert len(studies.enqueue_grid(study, keys)) == 12
    assert studies.enqueue_grid(study, keys) == []  # a re-run queues nothing twice
    claimed, lock = [], threading.Lock()

    def worker():
        own = studies.open_storage(storage.url)
        own_study = studies.load(own, spec, "cpu")
        while (trial := studies.claim_waiting(own_study, own)) is not None:
            with lock:
                claimed.append(trial.key)
            trial.complete(0.5, "run", 1.0)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(claimed, key=str) == sorted(keys, key=str)  # every key once, none twice
    states = studies.key_states(study, keys)
    assert {s.state for s in states.values()} == {"done"} and not studies.has_unfinished(study)


@pytest.mark.slow
def test_failed_trials_stay_failed_unless_retried_and_dead_workers_trials_come_back(tmp_path):
    spec, storage, study = open_study(tmp_path, tiny_spec(tmp_path, {"a": {}, "b": {}}, seeds=1), heartbeat_s=1)
    keys = grid(spec, "cpu")
    studies.enqueue_grid(study, keys)
    first = studies.claim_waiting(study, storage)
    first.fail("non-finite loss")
    assert studies.enqueue_grid(study, keys) == []  # a real failure is not retried by a plain re-run
    assert studies.key_states(study, keys)[keys[0]].reason == "non-finite loss"
    assert studies.enqueue_grid(study, keys, retry_failed=True) == [keys[0]]

    # A claimed trial whose worker stops beating: after 3 heartbeats it fails and a copy is queued.
    second = studies.claim_waiting(study, storage)
    storage.set_trial_user_attr(second.id, studies.WORKER, "dead:1")
    assert second.key == keys[1]
    time.sleep(4.5)  # sqlite keeps heartbeats to the second
    studies.recover_stale(study, storage)
    assert storage.get_trial(second.id).state == studies.TrialState.FAIL
    state = studies.key_states(study, keys)[keys[1]]
    assert state.state == "waiting" and state.trial.worker == "dead:1" and state.trial.retry_of == (second.number,)
    again = [studies.claim_waiting(study, storage) for _ in range(2)]
    assert sorted(str(t.key) for t in again) == sorted(map(str, keys))
    assert studies.claim_waiting(study, storage) is None


@pytest.mark.slow
def test_a_resumed_sweep_must_keep_its_set_values(tmp_path):
    spec, storage, study = open_study(tmp_path, tiny_spec(tmp_path, {"a": {}}))
    studies.create_or_load(storage, spec, "cpu", ["runtime.threads=2"])  # how a run executes may differ
    with pytest.raises(UserError, match="was started with --set none and this command has"):
        studies.create_or_load(storage, spec, "cpu", ["optim.epochs=3"])


# ---------------------------------------------------------------- dry run and search


@pytest.mark.slow
def test_dry_run_prints_the_trials_and_a_measured_estimate(tmp_path, data_root, mlflow_uri, capsys):
    from p2p.sweep.driver import SweepOptions, run_sweep

    path = tiny_spec(tmp_path, {"ok": {}, "huge_patch": {"model.discriminator.patch": 286}}, seeds=[0, 3])
    assert run_sweep(path, SweepOptions(scale="cpu", workers=2), dry_run=True) == 0
    out = capsys.readouterr().out
    assert "2 cells x 2 seeds = 4 trials" in out and "no study yet" in out
    row = next(line for line in out.splitlines() if line.strip().startswith("ok "))
    assert row.split()[1:3] == ["todo", "todo"] and " ms" in row and "min" in row
    assert "INVALID: " in out and "estimate: 4 trials to run on 2 workers x 1 thread: about" in out
    assert "measured just now on this machine" in out
    assert not (tmp_path / "optuna.db").exists()  # a dry run creates nothing


@pytest.mark.slow
def test_search_trials_sample_in_range_and_stop_at_the_budget(tmp_path, data_root, mlflow_uri):
    from p2p import tracking
    from p2p.sweep.driver import _prepare, make_plan
    from p2p.sweep.spec import SweepJob
    from p2p.sweep.worker import run_worker

    tiny = dict(TINY)
    path = write_spec(tmp_path, {"name": "search", "seeds": 1, "search": {
        "params": {"optim.lr": {"low": 1e-4, "high": 1e-3, "log": True}, "loss.l1": {"low": 10, "high": 100, "int": True}},
        "trials": 3, "pruner": "median", "startup_trials": 1, "warmup_epochs": 1},
        "scales": {"cpu": {"set": {**tiny, "eval.every": 1, "runtime.out_dir": str(tmp_path / "runs")}}}})
    spec = load_spec(path)
    plan = make_plan(spec, "cpu", [])
    job = SweepJob(spec, "cpu", f"sqlite:///{tmp_path / 'optuna.db'}", threads=1)
    tracking.ensure_store()
    study = _prepare(plan, job, False)
    assert run_worker(job) == 0
    trials = study.get_trials()
    assert len(trials) == 3 and all(t.state.name in ("COMPLETE", "PRUNED") for t in trials)
    assert trials[0].state.name == "COMPLETE"  # the first trial has nothing to be compared with
    for t in trials:
        assert 1e-4 <= t.params["optim.lr"] <= 1e-3 and t.params["loss.l1"] in range(10, 101)
        # eval/ssim reported after each epoch; a pruned trial stopped after the first (warmup_epochs 1)
        assert sorted(t.intermediate_values) == ([1, 2] if t.state.name == "COMPLETE" else [1])
    runs = tracking.find_tagged_runs("search", {"p2p.sweep": "search"})
    children = [r for r in runs if r.tags.get("p2p.role") != "sweep"]
    assert sorted(r.tags["p2p.cell"] for r in children) == ["t000", "t001", "t002"]
    assert {r.params["optim.lr"] for r in children} == {str(t.params["optim.lr"]) for t in trials}

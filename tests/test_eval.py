"""`p2p eval`: a trained run's generator scored again logs all seven eval/* metrics, with the same numbers."""

import json

import pytest

from p2p import checkpoint
from p2p.cli import main
from p2p.contract import DEFAULT_KEYS as SCORE_KEYS
from p2p.errors import UserError
from p2p.evaluate import evaluate_generator, evaluate_saved
from p2p.models import create_generator
from p2p.tracking import MlflowTracker, client
from p2p.trainer import train
from tests.helpers import TINY_FCN_SIZE, WEIGHTS_DIR, facades_config

pytestmark = pytest.mark.slow  # end to end: each test trains, runs a command or builds a report


@pytest.fixture
def scored_overrides(tiny_overrides, tiny_fcn_cache):
    """Tiny runs at the tiny FCN scorer's resolution, scoring everything."""
    return {**tiny_overrides, "data.crop_size": TINY_FCN_SIZE, "data.load_size": 72,
            "eval.metrics": ["fcn", "lpips", "ssim", "psnr", "l1"], "eval.cache_dir": str(tiny_fcn_cache),
            "eval.weights_dir": str(WEIGHTS_DIR), "eval.fcn_fit_missing": False, "eval.max_images": 6}


def history(run_id, key):
    return [(m.step, m.value) for m in client().get_metric_history(run_id, key)]


def test_eval_of_a_trained_run_logs_all_seven_scores_and_reproduces_training(mlflow_uri, scored_overrides, capsys):
    cfg = facades_config(scored_overrides)  # eval.g_mode: train, the paper's test-time mode
    result = train(cfg, tracker=MlflowTracker(), progress=False)
    assert set(result.scores) == set(SCORE_KEYS)
    assert 0 < result.scores["eval/fcn_pixel_acc"] < 1 and result.scores["eval/lpips"] > 0

    assert main(["eval", result.run_id, "--json", "--no-progress"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["run_id"] == result.run_id
    assert printed["scores"] == result.scores  # dropout and batch statistics, seeded: the same numbers
    for key in SCORE_KEYS:
        assert history(result.run_id, key) == [(2, result.scores[key])] * 2  # logged again, at the final epoch

    # The checkpoint path works too and logs to the run the checkpoint names.
    scores, run_id = evaluate_saved(str(result.run_dir / checkpoint.CHECKPOINT), progress=False)
    assert run_id == result.run_id and scores == result.scores
    # Another split is logged under its own prefix, never over the test scores.
    scores, _ = evaluate_saved(result.run_id, split="train", overrides=["eval.max_images=2"], progress=False)
    assert set(scores) == {key.replace("eval/", "eval_train/") for key in SCORE_KEYS}
    assert len(history(result.run_id, "eval/lpips")) == 3


def test_generator_file_outside_the_store_is_scored_and_printed(mlflow_uri, scored_overrides, tmp_path, capsys):
    cfg = facades_config({**scored_overrides, "eval.metrics": ["ssim", "psnr", "l1"], "optim.decay_epochs": 0})
    result = train(cfg, tracker=MlflowTracker(), progress=False)
    moved = tmp_path / "elsewhere" / "generator.pt"
    moved.parent.mkdir()
    moved.write_bytes((result.run_dir / checkpoint.GENERATOR).read_bytes())
    assert main(["eval", str(moved), "--set", "eval.g_mode=eval", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("not logged") and "eval/ssim" in out and "eval/fcn" not in out


def test_fcn_is_skipped_with_a_note_when_outputs_are_not_photos_from_labels(scored_overrides, capsys):
    cfg = facades_config({**scored_overrides, "data.direction": "AtoB", "eval.max_images": 2})
    G = create_generator(cfg)
    import torch

    scores, grid = evaluate_generator(G, cfg, torch.device("cpu"))
    assert set(scores) == set(SCORE_KEYS) - {"eval/fcn_pixel_acc", "eval/fcn_class_acc", "eval/fcn_iou"}
    assert "FCN scores skipped: data.direction is AtoB" in capsys.readouterr().err
    assert grid.shape == (3, 2 * (TINY_FCN_SIZE + 2) + 2, 3 * (TINY_FCN_SIZE + 2) + 2)


def test_eval_errors_are_one_line(mlflow_uri, tmp_path, capsys):
    assert main(["eval", "0123456789abcdef0123456789abcdef"]) == 2
    assert main(["eval", str(tmp_path / "missing" / "generator.pt")]) == 2
    (tmp_path / "junk.pt").write_bytes(b"junk")
    assert main(["eval", str(tmp_path / "junk.pt")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and all(line.startswith("p2p: error: ") for line in err)
    assert "neither a checkpoint file nor a run id" in err[0] and "checkpoint not found" in err[1]
    with pytest.raises(UserError):
        evaluate_saved("no-such-run")

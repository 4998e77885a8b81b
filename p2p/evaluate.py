"""Apply a generator to a split and score its outputs: what training calls, and `p2p eval`."""

from __future__ import annotations

import copy
import functools
import sys
from pathlib import Path

import torch
import torch.nn as nn
from torchvision.io import write_png as _write_png
from torchvision.utils import make_grid
from tqdm import tqdm

from p2p import checkpoint, contract, data, images, runtime
from p2p.config import DataConfig, RunConfig, parse_override, replace
from p2p.errors import UserError
from p2p.metrics import ScoreSettings, score_images
from p2p.metrics.distribution import fid_warning
from p2p.metrics.fcn_fit import fcn_skip_reason, scorer_for_run
from p2p.models import generator_from_saved
from p2p.tracking_protocol import Tracker


@functools.lru_cache(maxsize=4)
def eval_pairs(cfg: DataConfig, split: str, max_images: int | None) -> data.PairSet:
    """Decoded once per process: training scores every `eval.every` epochs on the same images."""
    return data.load_eval(cfg, split, max_images)


@torch.no_grad()
def generate(G: nn.Module, inputs: torch.Tensor, cfg: RunConfig, device: torch.device,
             seed: int | None = None, progress: bool = False) -> torch.Tensor:
    """uint8 outputs for uint8 inputs.

    `eval.g_mode: train` is the paper's test-time mode: batch statistics and dropout,
    one image at a time (as its batch-1 test). It runs on a copy (train-mode batch norm
    would move the running statistics) under a fixed seed, so re-scoring gives the same numbers.
    """
    train_mode = cfg.eval.g_mode == "train"
    net = copy.deepcopy(G) if train_mode else G
    was_training = G.training
    net.train(train_mode)
    batch = 1 if train_mode else cfg.eval.batch_size
    outputs = []
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(cfg.seed if seed is None else seed)
        for start in tqdm(range(0, len(inputs), batch), desc="generate", unit="batch", disable=not progress,
                          leave=False):
            x = images.to_float(inputs[start : start + batch]).to(device)
            with runtime.autocast(device, cfg.runtime.precision):
                y = net(x)
            outputs.append(images.to_uint8(y).cpu())
    G.train(was_training)
    return torch.cat(outputs)


def evaluate_generator(G: nn.Module, cfg: RunConfig, device: torch.device, split: str | None = None,
                       progress: bool = False, max_images: int | None = None,
                       ) -> tuple[dict[str, float], torch.Tensor | None]:
    """(scores keyed as in p2p.contract, a sample grid input | output | target or None), on the first
    `max_images` images of the split (default: `eval.max_images`)."""
    scorer_for_run(cfg, progress=True)  # a missing scorer: fitted (or the error) before generating, not after
    pairs = eval_pairs(cfg.data, split or cfg.eval.split, max_images or cfg.eval.max_images)
    inputs, targets = pairs.split(pairs.pairs)
    outputs = generate(G, inputs, cfg, device, progress=progress)
    scores = score_outputs(outputs, targets, inputs, cfg, device, progress=progress)
    grid = sample_grid(inputs[: cfg.eval.samples], outputs[: cfg.eval.samples], targets[: cfg.eval.samples]) \
        if cfg.eval.samples else None
    return scores, grid


def score_outputs(outputs: torch.Tensor, targets: torch.Tensor, inputs: torch.Tensor, cfg: RunConfig,
                  device: torch.device, progress: bool = False) -> dict[str, float]:
    """The run's `eval.metrics` for generated images; FCN scores where the inputs are label maps."""
    # A missing scorer is fitted here once (eval.fcn_fit_missing), with its bar: minutes of work, never silent.
    scorer = scorer_for_run(cfg, progress=True)
    if "fcn" in cfg.eval.metrics and scorer is None:
        _note_once(f"p2p: note: FCN scores skipped: {fcn_skip_reason(cfg.data)}; they apply to labels -> photo "
                   "on a dataset with a palette (e.g. facades BtoA)")
    settings = ScoreSettings(metrics=cfg.eval.metrics, batch_size=cfg.eval.batch_size, device=str(device),
                             weights_dir=cfg.eval.weights_dir, fcn_scorer=str(scorer) if scorer else None)
    scores = score_images(outputs, targets, settings, labels=inputs if scorer is not None else None, progress=progress)
    if contract.FID.key in scores:
        warning = fid_warning(len(outputs))
        if warning:
            _note_once(f"p2p: note: {warning}")
    return scores


@functools.lru_cache(maxsize=None)
def _note_once(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def sample_grid(inputs: torch.Tensor, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """One row per image: input | output | target (uint8, 3 x H x W)."""
    if inputs.shape[1] == 1:
        inputs = inputs.expand(-1, 3, -1, -1)
    rows = torch.stack([inputs, outputs, targets], 1).flatten(0, 1)
    return make_grid(rows, nrow=3, padding=2, pad_value=255)


def write_png(image: torch.Tensor, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    _write_png(image.contiguous(), str(path))


# ---------------------------------------------------------------- p2p eval


def score_saved(state: dict, path: Path, split: str | None = None, overrides: list[str] | None = None,
                progress: bool = True, tracker: Tracker | None = None) -> dict[str, float]:
    """Score the generator of a loaded generator.pt / checkpoint.pt (`state`, read from `path`).

    `tracker` (opened on the run the weights come from, if any) gets the scores at the step of their
    epoch: as `eval/*` for the run's own `eval.split`, as `eval_<split>/*` for another split (so train
    scores never overwrite test scores).
    """
    saved, G = generator_from_saved(state, str(path))
    # --set may change how and what is scored (eval.*, runtime.*, data.root), not the weights' architecture.
    cfg = replace(saved, dict(parse_override(o) for o in overrides), source="--set") if overrides else saved
    split = split or cfg.eval.split
    epoch = int(state.get("epoch") or saved.optim.total_epochs)

    device = runtime.configure(cfg.runtime, cfg.seed)
    scores, _ = evaluate_generator(G.to(device), cfg, device, split=split, progress=progress)
    if split != saved.eval.split:
        scores = {f"eval_{split}/" + key.removeprefix(contract.EVAL_PREFIX): value for key, value in scores.items()}
    if tracker is not None and tracker.run_id is not None:
        tracker.log_metrics(scores, step=epoch)
    return scores


def evaluate_saved(target: str, split: str | None = None, overrides: list[str] | None = None,
                   progress: bool = True) -> tuple[dict[str, float], str | None]:
    """`p2p eval`: score a run's generator (by MLflow run id, or a generator.pt / checkpoint.pt path) and log
    the scores to its run, when that is in the tracking store. Returns (scores, the run id logged to or None)."""
    from p2p import tracking  # lazy: MLflow's import, only where a run is read from its store

    path = Path(target)
    if path.is_file():
        run_id = None
    elif path.suffix == ".pt" or "/" in target:
        raise UserError(f"{target}: checkpoint not found")
    elif tracking.store_exists() and tracking.run_exists(target):
        run_id, path = target, _run_generator(target)
    else:
        raise UserError(f"{target}: neither a checkpoint file nor a run id in the tracking store "
                        f"{tracking.tracking_uri()}")
    state = checkpoint.load(path)
    run_id = run_id or _stored_run_id(state, path)
    tracker = tracking.MlflowTracker.of(run_id) if run_id is not None else None
    return score_saved(state, path, split, overrides, progress, tracker), run_id


def _run_generator(run_id: str) -> Path:
    """A run's generator.pt: in its run folder if that is here, else downloaded from its artifacts."""
    from p2p import tracking  # lazy: MLflow's import, only where a run is read from its store

    tracker = tracking.MlflowTracker.of(run_id)
    params = tracker.params()
    local = Path(params.get("runtime.out_dir", "runs")) / params.get("name", "") / run_id / contract.GENERATOR_FILE
    if local.is_file():
        return local
    try:
        return tracker.download_artifact(contract.GENERATOR_FILE)
    except Exception as exc:  # mlflow raises several types for a missing artifact
        raise UserError(f"run {run_id}: no {contract.GENERATOR_FILE} in {local.parent} or in its artifacts "
                        f"(an unfinished run? evaluate its checkpoint.pt instead) ({type(exc).__name__})") from None


def _stored_run_id(state: dict, path: Path) -> str | None:
    """The run a checkpoint belongs to: stored in checkpoint.pt, or the run folder generator.pt sits in."""
    from p2p import tracking  # lazy: MLflow's import, only where a run is read from its store

    if not tracking.store_exists():
        return None
    for candidate in (state.get("run_id"), path.resolve().parent.name):
        if candidate and tracking.run_exists(candidate):
            return candidate
    return None


def format_scores(scores: dict[str, float]) -> str:
    order = {s.name: i for i, s in enumerate(contract.SCORES)}
    keys = sorted(scores, key=lambda k: (order.get(k.split("/", 1)[-1], len(order)), k))
    return "\n".join(f"  {key:22s} {scores[key]:.4f}" for key in keys)

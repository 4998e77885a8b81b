"""Scoring a run while it trains: the epoch's scores and sample grid, drawn from no training stream."""

from __future__ import annotations

from pathlib import Path

import torch

from p2p import contract, runtime
from p2p.models.layers import set_dropout_generator
from p2p.tracking_protocol import Tracker
from p2p.training_state import TrainingState


def score(state: TrainingState, tracker: Tracker, run_dir: Path) -> dict[str, float]:
    """Scores at this epoch: on `eval.max_images` at the end, on `eval.every_max_images` (cheaper) before.

    Under a forked RNG: building and running the metric networks draws nothing from the training
    streams, so a run scored every epoch trains exactly as one scored only at the end.
    """
    from p2p import evaluate  # imported late: scoring pulls in the metric networks

    cfg, device, final = state.cfg, state.device, state.epoch == state.total_epochs
    max_images = cfg.eval.max_images if final or cfg.eval.every_max_images is None else cfg.eval.every_max_images
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        # Test-time dropout (eval.g_mode train) draws from torch's global generator, set to where the run's
        # dropout stream stands: the masks continue that stream, and the stream itself does not move.
        runtime.set_global_rng_state(device, state.dropout.get_state())
        set_dropout_generator(state.G, None)
        try:
            scores, grid = evaluate.evaluate_generator(state.G, cfg, device, max_images=max_images)
        finally:
            set_dropout_generator(state.G, state.dropout)
    if grid is not None:
        path = run_dir / contract.SAMPLES_DIR / contract.sample_name(state.epoch)
        evaluate.write_png(grid, path)
        tracker.log_artifact(path, contract.SAMPLES_DIR)
    return scores

"""The same test inputs through each cell's generator, for the qualitative figure."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass

import torch

from analysis.load import SweepRuns
from p2p import checkpoint, data, tracking
from p2p.errors import UserError
from p2p.evaluate import generate
from p2p.translate import load_generator


@dataclass
class CellSamples:
    inputs: torch.Tensor  # uint8 (N, C, H, W)
    targets: torch.Tensor  # uint8 (N, 3, H, W)
    outputs: dict[str, torch.Tensor]  # cell -> uint8 (N, 3, H, W)
    seeds: dict[str, int]  # the seed whose generator is shown, per cell
    names: list[str]  # test file names


def cell_samples(runs: SweepRuns, count: int = 4) -> CellSamples | None:
    """Translate the first `count` test images with one finished run per cell (its lowest seed)."""
    finished = runs.finished.sort_values("seed")
    chosen = {cell: finished[finished["cell"] == cell].iloc[0] for cell in runs.cells
              if (finished["cell"] == cell).any()}
    if not chosen:
        return None
    outputs, seeds, inputs, targets, names = {}, {}, None, None, []
    with tempfile.TemporaryDirectory(prefix="p2p-report-") as tmp:
        for cell, run in chosen.items():
            try:
                path = tracking.download_artifact(run.run_id, checkpoint.GENERATOR, f"{tmp}/{run.run_id}")
            except Exception:  # an artifact store that lost it: skip the cell rather than the report
                continue
            cfg, G = load_generator(path)
            if inputs is None:
                try:
                    pairs = data.load_eval(cfg.data, cfg.eval.split, max_images=count)
                except UserError:
                    return None  # the data is not here: the report goes on without pictures
                inputs, targets = pairs.split(pairs.pairs)
                names = pairs.names
            outputs[cell] = generate(G, inputs, cfg, torch.device("cpu"))
            seeds[cell] = int(run.seed)
    if inputs is None:
        return None
    return CellSamples(inputs, targets, outputs, seeds, names)

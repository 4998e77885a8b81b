"""Training one run, top to bottom: set-up, resume, for each epoch its steps, scores and checkpoint; export.

`train()` is the whole loop of one run. Each part has a module of its own: the step (`p2p.step`), the epoch's
pass over the data (`p2p.epoch`), the state a checkpoint holds (`p2p.training_state`), the optimisers
(`p2p.optimizers`), scoring (`p2p.scoring`), the files a run writes (`p2p.checkpoint`), the checks a resume
makes (`p2p.resume`), and the run's course around the loop, the same for packed runs (`p2p.lifecycle`).
Several runs trained in one process, a step of each in turn, are `p2p.packing.train_together`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from p2p import runtime
from p2p.config import RunConfig
from p2p.lifecycle import Run, RunRequest, TrainResult, progress_bar
from p2p.tracking_protocol import Tracker

__all__ = ["train"]


def train(cfg: RunConfig, *, tracker: Tracker | None = None, run_dir: Path | None = None, resume: bool = False,
          experiment: str | None = None, tags: dict[str, str] | None = None, parent_run_id: str | None = None,
          progress: bool = True, on_epoch: Callable[[int, dict[str, float]], None] | None = None,
          run_name: str | None = None) -> TrainResult:
    """Train, resume or complete one run (see `p2p.lifecycle.RunRequest`). What stopped it (a non-finite loss,
    `StopTraining` from `on_epoch`, a fault, a stop signal) is marked on its tracked run, then raised."""
    device = runtime.configure(cfg.runtime, cfg.seed)  # threads, allocator, determinism, seeds
    run = Run(RunRequest(cfg, tracker, run_dir, resume, experiment, tags, parent_run_id, on_epoch, run_name), device,
              progress)
    try:
        with run.guard():  # what stops the run becomes its outcome, marked on its tracked run
            run.start()  # the state built from the config, or resumed from the checkpoint; the tracked run started
            with progress_bar([run], progress) as bar:
                while run.training:  # each epoch: its steps, then its scores and its checkpoint, written meanwhile
                    for _ in run.epoch(bar):  # one step
                        run.settle(wait=False)  # once the last epoch's checkpoint has landed: its metrics logged
            run.finish()  # the last checkpoint landed, the generator exported, the tracked run finished
    finally:
        run.writer.close()  # a checkpoint still in flight lands, however the run ended
    if isinstance(run.outcome, BaseException):
        raise run.outcome
    return run.outcome

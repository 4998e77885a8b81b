"""Packed runs: several runs trained in one process, a step of each in turn (packed trials: `p2p sweep --pack`).

Each run is a `p2p.lifecycle.Run`, as a run alone is (p2p.trainer): this module only takes turns between
them, and on CUDA gives each a stream of its own so that the GPU overlaps them.
"""

from __future__ import annotations

import contextlib

import torch

from p2p import runtime, signals
from p2p.lifecycle import Run, RunRequest, TrainResult, end_run, progress_bar

_EPOCH_DONE = object()  # what next() gives once a run's epoch generator is exhausted


def train_together(requests: list[RunRequest], *, progress: bool = True) -> list[TrainResult | Exception]:
    """Train the requested runs in this process, a step of each in turn, and return how each ended: its
    result, or what stopped it (a non-finite loss, an early stop, a fault), recorded on its tracked run.

    Each run trains exactly as it would alone: its own state, random streams, optimisers, checkpoint
    and tracked run; on CUDA each runs on a stream of its own, so the GPU overlaps them. One that fails
    ends alone; a stop signal (SIGINT/SIGTERM) marks every unfinished one KILLED, all resumable.
    The runs share `runtime.*` settings (threads, determinism): the first request's are applied.
    """
    device = runtime.configure(requests[0].cfg.runtime, requests[0].cfg.seed)
    runs = [Run(request, device, progress) for request in requests]
    streams = {run: torch.cuda.Stream(device) for run in runs} if len(runs) > 1 and device.type == "cuda" else {}
    try:
        for run in runs:
            with run.guard():
                run.start()
            if run in streams:  # its stream starts after the weights were built and loaded on the default one
                streams[run].wait_stream(torch.cuda.current_stream(device))
        with progress_bar(runs, progress) as bar:
            while training := [run for run in runs if run.training]:
                epochs = {run: run.epoch(bar) for run in training}  # each: a step per next(), then its epoch's end
                while epochs:
                    for run, steps in list(epochs.items()):
                        with run.guard(), on_stream(streams.get(run)):
                            if next(steps, _EPOCH_DONE) is _EPOCH_DONE:  # scored, its checkpoint on its way
                                del epochs[run]
                            run.settle(wait=False)  # the last epoch's checkpoint landed: log its metrics
                        if not run.live:
                            epochs.pop(run, None)
        for run in runs:
            with run.guard(), on_stream(streams.get(run)):
                run.finish()
    except KeyboardInterrupt as stop:  # Ctrl-C, or SIGINT/SIGTERM through p2p.signals: every open run KILLED
        for run in runs:
            if run.live:
                end_run(run.tracker, "kill", signals.reason(stop))
        raise
    finally:
        for run in runs:  # a checkpoint still in flight lands, however the runs ended
            run.writer.close()
    return [run.outcome for run in runs]


def on_stream(stream: torch.cuda.Stream | None) -> contextlib.AbstractContextManager:
    return torch.cuda.stream(stream) if stream is not None else contextlib.nullcontext()

"""`p2p sweep SPEC --dry-run`: the cells x seeds table and an estimate of the sweep's time.

Training time is measured here and now: a few real training steps (G and D, forward and
backward, the trainer's own step functions) per cell on random images of the cell's size,
with the thread count each worker will have. Start-up and scoring per run come from the
measured constants below, scaled by image area and the number of scored images.
"""

from __future__ import annotations

import heapq
import math
import time

import torch

from p2p import runtime, step
from p2p.config import RunConfig, with_worker_threads
from p2p.data import list_images, split_dir
from p2p.models import channels
from p2p.sweep.spec import TrialKey
from p2p.training_state import TrainingState

# Measured on the 2-core AMD EPYC CPU of this lab, one thread per process (docs/sweeps.md):
WORKER_START_S = 10.0  # a worker process: imports (torch, mlflow, optuna, torchmetrics), opening the stores
TRIAL_SETUP_S = 3.0  # per trial: decoding the train split, building the nets, creating the MLflow run
EPOCH_OVERHEAD_S = 1.0  # per epoch: the checkpoint and the MLflow metrics
STEP_LOOP_FACTOR = 1.16  # a step inside the training loop (data, jitter, loss checks): 178 ms vs 153 ms bare at 70x70
SCORE_S_PER_IMAGE_128 = 0.2  # per test image at 128x128: generate, FCN, LPIPS, SSIM, PSNR, L1 (21.8 s for 106)
MEASURE_STEPS, MEASURE_BUDGET_S = 3, 3.0  # at least 3 steps; up to 10 while they take under 1 s in all


def describe_plan(plan, study, url: str, workers: int, threads: int, pack: int = 1,
                  findings: list[str] | None = None) -> str:
    """The table of trials (with their state when the study exists), the findings so far (lines the caller
    read) and the estimated wall time."""
    from p2p.sweep import study as studies  # lazy: optuna, only with a study

    spec = plan.spec
    lines = [f"sweep {spec.name} ({plan.scale}): {spec.description}".rstrip(": "),
             f"  base {spec.base} + scale {plan.scale}; objective {spec.objective} ({spec.direction})",
             f"  storage {studies.redact(url)}: " + ("study found, states below" if study else "no study yet")]
    step_s = {cell: measure_step_seconds(cfg, threads) for cell, cfg in plan.configs.items()}
    run_s = {cell: run_seconds(cfg, step_s[cell]) for cell, cfg in plan.configs.items()}
    if spec.search is None:
        seeds = sorted({key.seed for key in plan.keys})  # the spec's, and any that rounds of seeds added
        states = studies.key_states(study, plan.keys) if study is not None else {}
        lines.append(f"  {len(spec.cells)} cells x {len(seeds)} seeds = {len(plan.keys)} trials"
                     if len(plan.keys) == len(spec.cells) * len(seeds) else
                     f"  {len(spec.cells)} cells, {len(plan.keys)} trials over seeds {seeds[0]}-{seeds[-1]}")
        planned = set(plan.keys)
        width = max(len(c.name) for c in spec.cells) + 2
        header = f"  {'cell':{width}s}" + "".join(f"{'seed' + str(s):>8s}" for s in seeds)
        lines.append(header + f"{'step':>9s}{'run':>9s}  overrides")
        todo: list[float] = []
        for cell in spec.cells:
            row = f"  {cell.name:{width}s}"
            for seed in seeds:
                if TrialKey(cell.name, seed) not in planned:
                    row += f"{'-':>8s}"
                    continue
                state = states.get(TrialKey(cell.name, seed))
                label = state.state if state is not None else "todo"
                row += f"{label.replace('missing', 'todo'):>8s}"
                if state is None or not state.state.settled:
                    todo.append(run_s.get(cell.name, 0.0))
            overrides = ", ".join(f"{k}={v}" for k, v in cell.overrides.items()) or "(the base config)"
            if cell.name in plan.invalid:
                lines.append(row + f"{'-':>9s}{'-':>9s}  INVALID: {plan.invalid[cell.name]}")
            else:
                lines.append(row + f"{step_s[cell.name] * 1000:>6.0f} ms{run_s[cell.name] / 60:>6.1f} min  {overrides}")
    else:
        search = spec.search
        params = ", ".join(f"{p.key} in {list(p.choices) if p.choices else f'[{p.low:g}, {p.high:g}]'}"
                           + (" (log)" if p.log else "") for p in search.params)
        done = sum(1 for t in studies.records(study) if t.finished) if study else 0
        lines.append(f"  search: {search.trials} trials ({done} finished) of {params}; sampler {search.sampler}, "
                     f"pruner {search.pruner}")
        lines.append(f"  one run: {step_s['base'] * 1000:.0f} ms a step, {run_s['base'] / 60:.1f} min unpruned")
        todo = [run_s["base"]] * max(0, search.trials - done)
    lines += findings or []
    # A pack's trials are counted as if they ran in turn (true on the CPU; a GPU overlaps them: faster)
    wall = schedule_seconds(todo, workers)
    packing = f" x {pack} trials packed (timed as if in turn)" if pack > 1 else ""
    lines.append(f"estimate: {len(todo)} trials to run on {workers} worker{'s' if workers > 1 else ''}{packing} x "
                 f"{threads} thread{'s' if threads > 1 else ''}: about {wall_time_text(wall)}")
    lines.append(f"  (training steps measured just now on this machine, one process at a time, {MEASURE_STEPS}+ per "
                 f"cell at {threads} thread{'s' if threads > 1 else ''}; plus start-up and scoring per run from "
                 f"constants measured on a 2-core CPU, {SCORE_S_PER_IMAGE_128:.2f} s per scored 128x128 image)")
    return "\n".join(lines)


def run_seconds(cfg: RunConfig, step_s: float) -> float:
    """One run: its training steps, plus set-up and the scoring passes (every eval.every epochs and at the end)."""
    epochs = cfg.optim.total_epochs
    images = _count(cfg, "train", cfg.data.max_images)
    steps = epochs * math.ceil(images / cfg.optim.batch_size)
    passes = cfg.eval.passes(epochs)
    scored = _count(cfg, cfg.eval.split, cfg.eval.max_images)
    per_image = SCORE_S_PER_IMAGE_128 * (cfg.data.crop_size / 128) ** 2
    return TRIAL_SETUP_S + steps * step_s * STEP_LOOP_FACTOR + epochs * EPOCH_OVERHEAD_S + passes * scored * per_image


def _count(cfg: RunConfig, split: str, cap: int | None) -> int:
    try:
        count = len(list_images(split_dir(cfg.data, split)))
    except Exception:  # no data here (yet): the estimate assumes the cap, or facades' 400
        count = 400
    return min(count, cap) if cap else count


def schedule_seconds(runs: list[float], workers: int) -> float:
    """Wall time of runs on `workers` parallel workers, longest first onto the least busy worker."""
    if not runs:
        return 0.0
    loads = [WORKER_START_S] * max(1, workers)
    heapq.heapify(loads)
    for run in sorted(runs, reverse=True):
        heapq.heappush(loads, heapq.heappop(loads) + run)
    return max(loads)


def measure_step_seconds(cfg: RunConfig, threads: int) -> float:
    """Median seconds of one training step (`p2p.step.train_step`, as the trainer runs it: eager or one CUDA
    graph) on random images of the config's size."""
    cfg = with_worker_threads(cfg, threads)  # as each worker's trial config has it
    device = runtime.configure(cfg.runtime, cfg.seed)  # the set-up training runs under: threads, cuDNN, TF32, ...
    state = TrainingState(cfg, device, with_data=False)
    in_ch, out_ch = channels(cfg)
    size, batch = cfg.data.crop_size, cfg.optim.batch_size
    x = torch.rand(batch, in_ch, size, size, device=device) * 2 - 1
    y = torch.rand(batch, out_ch, size, size, device=device) * 2 - 1

    def one() -> None:
        state.stepper(x, y, 0.0)
        if device.type == "cuda":
            torch.cuda.synchronize()

    for _ in range(step.STEPS_TO_CAPTURE if state.graphed else 1):  # allocations, kernel choice (and the capture)
        one()
    times: list[float] = []
    while len(times) < MEASURE_STEPS or (sum(times) < MEASURE_BUDGET_S / 3 and len(times) < 10):
        t = time.perf_counter()
        one()
        times.append(time.perf_counter() - t)
    return sorted(times)[len(times) // 2]


def wall_time_text(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 3 * 3600:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"

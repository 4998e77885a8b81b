"""The CPU protocol's rules, applied to the pilot runs: `python -m analysis.protocol`.

The rules were written down (docs/protocol.md) before any of the four sweeps ran;
this module only applies them to what the pilot measured, so the decision can be checked
and repeated. The pilot: L1+cGAN with the 70x70 PatchGAN (the paper's baseline), seeds 0
and 1 side by side (one thread each), constant learning rate, scored every epoch; MLflow
experiment `protocol-pilot`, run names `pilot-<size> seed<k>`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import stats

from analysis.findings import ALPHA, claims_of
from analysis.power import FEWEST_SEEDS, MAX_SEEDS, TARGET_POWER, first_reaching, paired_power
from p2p import command, contract, tracking
from p2p.errors import UserError
from p2p.metrics.fcn import load_scorer
from p2p.metrics.fcn_fit import scorer_path
from p2p.sweep.estimate import EPOCH_OVERHEAD_S, TRIAL_SETUP_S, WORKER_START_S
from p2p.sweep.spec import load_spec
from p2p.tracking_protocol import RunStatus

PLATEAU_GAIN = 0.005  # FCN IoU gained over the next two epochs below which the curve has levelled off
SMALLEST_EFFECT = contract.FCN_IOU.effect  # the FCN IoU difference a sweep should be able to detect (0.01)
# Rule 3's floor: a cell runs at least 4 seeds, a choice of the protocol. Not analysis.power.FEWEST_SEEDS (2),
# another fact: the fewest seeds a paired t-test can use, where the search for a power's n starts.
MIN_SEEDS, MIN_EPOCHS = 4, 4
BUDGET_S = 60 * 60  # per sweep, on this 2-core machine
WORKERS = 2
SWEEPS = ("patchsize", "loss", "generator", "tricks")  # their specs, sweeps/<name>.yaml, give the counts (`shape`)
SPECS = Path(__file__).resolve().parents[1] / "sweeps"
IMAGEGAN_PATCH = 286  # the paper's ImageGAN: a discriminator whose receptive field is the whole 256x256 image
SMALL, LARGE = 64, 128  # resolutions: a sweep without the ImageGAN may train at SMALL (rule 1)
SMALL_MIN_IOU = 0.15  # ... if the FCN scorer at SMALL scores the real test photos at least this class IoU
TEST_IMAGES = 106
SUBSETS = (106, 53, 32)  # images scored at intermediate epochs: the largest whose cost fits
EVAL_SHARE = 0.12  # of an epoch's training time (the issue allows 15% of a run)
# A run's set-up and per-epoch overhead, and a worker's start, are p2p.sweep.estimate's constants (measured on
# this lab's 2-core CPU, as `p2p sweep --dry-run` counts them). The 15 s per run this module used before cited
# a measurement the README never gave; the measured constants leave the rules' decisions as they were.


@dataclass(frozen=True)
class Pilot:
    size: int
    iou: dict[int, list[float]]  # epoch -> per-seed FCN IoU (intermediate points: `subset` images)
    # Costs are the fastest seen (epochs, seeds): other work may share the machine during a pilot,
    # and the quietest epoch is the closest to what a sweep alone on it pays.
    epoch_s: float  # one training epoch with two runs side by side
    eval_s: float  # one intermediate scoring pass
    final_eval_s: float  # the scoring of the full test split (at the pilot's last epoch)
    subset: int | None


def load_pilot(size: int, experiment: str = "protocol-pilot") -> Pilot:
    runs = [r for r in tracking.find_runs(experiment) if r.run_name.startswith(f"pilot-{size} ")
            or r.params.get("name") == f"pilot-{size}"]
    runs = [r for r in runs if r.status == RunStatus.FINISHED]
    if len(runs) < 2:
        raise UserError(f"experiment '{experiment}': {len(runs)} finished pilot-{size} runs in "
                        f"{tracking.tracking_uri()} (expected 2: run the pilot first)")
    iou: dict[int, list[float]] = {}
    epoch_s, eval_s, final_eval_s = [], [], []
    for run in runs[:2]:
        images = int(float(run.params.get("data.max_images", "null").replace("null", "400") or 400))
        history = dict(tracking.metric_history(run.run_id, contract.FCN_IOU.key))
        last = max(history)
        for epoch, value in history.items():
            iou.setdefault(epoch, []).append(value)
        epoch_s += [images / rate for _, rate in tracking.metric_history(run.run_id, contract.IMG_PER_S)]
        costs = dict(tracking.metric_history(run.run_id, contract.EVAL_S))
        eval_s += [c for e, c in costs.items() if e != last]
        final_eval_s.append(costs[last])
    subset = runs[0].params.get("eval.every_max_images")
    return Pilot(size, iou, min(epoch_s), min(eval_s), min(final_eval_s),
                 None if subset in (None, "null") else int(subset))


def plateau_epoch(iou: dict[int, list[float]]) -> tuple[int, bool]:
    """The first epoch whose seed-mean FCN IoU gains less than PLATEAU_GAIN over the next two epochs
    (and whether the curve levelled off within the pilot at all)."""
    means = {e: _mean(v) for e, v in iou.items()}
    last = max(means)
    for epoch in sorted(means):
        if epoch + 2 in means and means[epoch + 2] - means[epoch] < PLATEAU_GAIN:
            return epoch, True
    return last, False


def seeds_for_power(sd_difference: float, effect: float, alpha: float, power: float = TARGET_POWER) -> int | None:
    """Seeds a paired t-test (two-sided, level alpha) needs to detect `effect` with `power` (noncentral t)."""
    if not sd_difference > 0:
        return None
    n = np.arange(FEWEST_SEEDS, MAX_SEEDS + 1)
    return first_reaching(paired_power(effect, sd_difference, n, alpha), power)


def sweep_seconds(cells: int, seeds: int, epochs: int, pilot: Pilot, subset_eval_s: float) -> float:
    """Wall time of cells x seeds runs on two workers, each run `epochs` epochs scored every epoch."""
    run = (TRIAL_SETUP_S + epochs * (pilot.epoch_s + EPOCH_OVERHEAD_S) + (epochs - 1) * subset_eval_s
           + pilot.final_eval_s)
    return WORKER_START_S + math.ceil(cells * seeds / WORKERS) * run


@dataclass(frozen=True)
class Decision:
    sweep: str
    size: int
    plateau: int
    levelled: bool
    epochs: int
    seeds: int
    seeds_for_power: int | None
    subset: int
    eval_share: float
    minutes: float
    minutes_at_plateau: float
    note: str


@dataclass(frozen=True)
class SweepShape:
    """What the rules need of a sweep's spec. Cells without a discriminator (L1) train faster; the estimate counts
    every cell at the pilot's (L1+cGAN) cost."""

    cells: int
    claims: int  # the claims its report tests (analysis.findings.claims_of)
    imagegan: bool  # a cell trains the 286x286 ImageGAN


def shape(sweep: str) -> SweepShape:
    spec = load_spec(SPECS / f"{sweep}.yaml")
    names = [cell.name for cell in spec.cells]
    return SweepShape(len(names), len(claims_of(spec.name, spec.claims, names)),
                      any(cell.overrides.get("model.discriminator.patch") == IMAGEGAN_PATCH for cell in spec.cells))


def resolution(sweep: str, small_scorer_iou: float | None) -> int:
    """Rule 1: the ImageGAN needs LARGE; the others SMALL, if the FCN can still tell real photos' classes there."""
    if shape(sweep).imagegan or small_scorer_iou is None or small_scorer_iou < SMALL_MIN_IOU:
        return LARGE
    return SMALL


def scorer_iou(size: int) -> float | None:
    """The cached facades FCN scorer's class IoU on the real test photos at this size (None: not fitted)."""
    path = scorer_path("facades", size)
    return float(load_scorer(path).info["ground_truth"]["iou"]) if path.is_file() else None


def decide(sweep: str, pilot: Pilot) -> Decision:
    counts = shape(sweep)
    cells, claims = counts.cells, counts.claims
    size = pilot.size
    # Intermediate scoring: cost scales with the images scored; the largest subset within EVAL_SHARE.
    per_image = pilot.eval_s / (pilot.subset or TEST_IMAGES)
    subset = next((k for k in SUBSETS if k * per_image <= EVAL_SHARE * pilot.epoch_s), SUBSETS[-1])
    subset_eval_s = subset * per_image
    plateau, levelled = plateau_epoch(pilot.iou)
    target = max(MIN_EPOCHS, plateau + plateau % 2)  # even: half at the constant rate, half decaying
    # The seed spread at the plateau; a paired difference of two cells spreads at most sqrt(2) times as much.
    at = pilot.iou[min(plateau, max(pilot.iou))]
    sd = stats.tstd(at) if len(at) > 1 else float("nan")
    needed = seeds_for_power(math.sqrt(2) * sd, SMALLEST_EFFECT, ALPHA / claims)
    fits = [n for n in range(MIN_SEEDS, 41) if sweep_seconds(cells, n, target, pilot, subset_eval_s) <= BUDGET_S]
    seeds = max(MIN_SEEDS, min(needed or MIN_SEEDS, max(fits) if fits else MIN_SEEDS))
    epochs, note = target, "the plateau length fits the budget"
    if sweep_seconds(cells, seeds, epochs, pilot, subset_eval_s) > BUDGET_S:
        shorter = [e for e in range(2, target + 1, 2) if sweep_seconds(cells, seeds, e, pilot, subset_eval_s) <= BUDGET_S]
        epochs = max(shorter) if shorter else 2
        note = (f"the budget cuts the length from {target} to {epochs} epochs: reaching the plateau with "
                f"{seeds} seeds takes {sweep_seconds(cells, seeds, target, pilot, subset_eval_s) / 60:.0f} min")
    return Decision(sweep, size, plateau, levelled, epochs, seeds, needed, subset,
                    subset_eval_s / pilot.epoch_s, sweep_seconds(cells, seeds, epochs, pilot, subset_eval_s) / 60,
                    sweep_seconds(cells, seeds, target, pilot, subset_eval_s) / 60, note)


def _mean(values) -> float:
    values = list(values)
    return sum(values) / len(values) if values else float("nan")


def main(argv: list[str] | None = None) -> int:
    parser = command.Parser(prog="python -m analysis.protocol", description=__doc__.splitlines()[0])
    parser.add_argument("--experiment", default="protocol-pilot")
    args = parser.parse_args(argv)
    return command.run(lambda: apply_rules(args.experiment))


def apply_rules(experiment: str) -> int:
    """Print what the rules give for the pilot runs in `experiment`."""
    small_iou = scorer_iou(SMALL)
    sizes = {sweep: resolution(sweep, small_iou) for sweep in SWEEPS}
    print(f"rule 1: the FCN scorer at {SMALL}x{SMALL} scores real photos at class IoU "
          f"{'(not fitted)' if small_iou is None else f'{small_iou:.3f}'} (needs {SMALL_MIN_IOU}): "
          + ", ".join(f"{sweep} at {size}" for sweep, size in sizes.items()))
    pilots = {size: load_pilot(size, experiment) for size in sorted(set(sizes.values()))}
    for size, pilot in pilots.items():
        curve = "  ".join(f"{e}:{_mean(v):.3f}" for e, v in sorted(pilot.iou.items()))
        print(f"pilot {size}x{size}: FCN IoU by epoch (mean of 2 seeds): {curve}")
        print(f"  epoch {pilot.epoch_s:.0f} s (2 runs side by side); scoring {pilot.eval_s:.1f} s on "
              f"{pilot.subset or TEST_IMAGES} images, {pilot.final_eval_s:.1f} s on all {TEST_IMAGES}")
    print("| sweep | size | plateau epoch | epochs | seeds (power asks) | intermediate images (cost) | est. wall | note |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for sweep, size in sizes.items():
        d = decide(sweep, pilots[size])
        plateau = f"{d.plateau}" + ("" if d.levelled else " (still rising)")
        print(f"| {sweep} | {size} | {plateau} | {d.epochs} | {d.seeds} ({d.seeds_for_power or '>1000'}) | "
              f"{d.subset} ({100 * d.eval_share:.0f}% of an epoch) | {d.minutes:.0f} min | {d.note} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

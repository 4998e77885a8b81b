"""The names p2p shares with its users, reports and checks, each defined once.

Users read them in docs/sweeps.md (the tags and trial attributes of a sweep's runs), docs/scores.md
(the scores) and the README's "Changing the code" (how to add a score).

Scores (key, label, direction, the `eval.metrics` entry that computes it), training losses, tags
and trial attributes, artifact names, and how experiments, runs and studies are named. Standard
library only (no torch, no mlflow, no optuna): the config schema, the trainer, the metrics,
tracking, the sweeps and the reports all import their names from here, so adding or renaming a
score, a loss or a tag is a change in this file.
"""

from __future__ import annotations

from dataclasses import dataclass

# ---------------------------------------------------------------- scores

EVAL_PREFIX = "eval/"  # a run's scores on its own `eval.split`; `p2p eval` on another split logs eval_<split>/


@dataclass(frozen=True)
class Score:
    """One number a run is scored by, as logged to MLflow (`key`) and read by the reports."""

    key: str  # the MLflow metric: eval/<name>
    label: str  # how reports and figures name it
    direction: str | None  # "maximize" or "minimize"; None for a spread, which ranks nothing
    metric: str  # the `eval.metrics` entry that computes it (one pass may compute several scores)
    part: str | None = None  # which of that computation's values it is (FCN: pixel_acc/class_acc/iou)
    default: bool = True  # computed unless `eval.metrics` says otherwise
    objective: bool = True  # a sweep may optimise it (`objective.metric`)
    effect: float | None = None  # the smallest effect of interest: a difference a sweep should detect
    digits: int = 3  # decimals in reports
    paper: str | None = None  # its column in the paper's tables (analysis/data/pix2pix-tables.yaml)

    @property
    def name(self) -> str:
        return self.key.removeprefix(EVAL_PREFIX)

    @property
    def lower_is_better(self) -> bool:
        return self.direction == "minimize"


# The smallest effects of interest are choices fixed before looking at results, not estimates
# (reports and `p2p sweep --dry-run` print the seeds that detect them with 80% power):
# - FCN scores are fractions in [0, 1]; the paper's Tables 1-3 print two decimals, so a difference
#   under 0.01 is below anything the paper reports. LPIPS and SSIM are read on [0, 1] too.
# - PSNR is in dB; 0.25 dB is about 2% of the 13 dB a CPU-scale facades run scores (docs/configs.md, "Scales").
# - L1 is the mean absolute error on the generator's [-1, 1] scale (a range of 2); 0.005 is a quarter
#   of a percent of that range: L1 moves little between cells (every cell but GAN-only trains on it).
# KID and FID are off by default (an Inception pass over outputs and targets, slow on a CPU) and are
# compared, not optimised: FID is biased at small N, and kid_std is KID's spread over its subsets.
FCN_PIXEL_ACC = Score("eval/fcn_pixel_acc", "FCN per-pixel acc.", "maximize", "fcn", "pixel_acc", effect=0.01,
                      paper="per_pixel_acc")
FCN_CLASS_ACC = Score("eval/fcn_class_acc", "FCN per-class acc.", "maximize", "fcn", "class_acc", effect=0.01,
                      paper="per_class_acc")
FCN_IOU = Score("eval/fcn_iou", "FCN class IoU", "maximize", "fcn", "iou", effect=0.01, paper="class_iou")
LPIPS = Score("eval/lpips", "LPIPS", "minimize", "lpips", effect=0.01)
SSIM = Score("eval/ssim", "SSIM", "maximize", "ssim", effect=0.01)
PSNR = Score("eval/psnr", "PSNR (dB)", "maximize", "psnr", effect=0.25, digits=2)
L1 = Score("eval/l1", "L1", "minimize", "l1", effect=0.005)
KID = Score("eval/kid", "KID", "minimize", "kid", "mean", default=False, objective=False)
KID_STD = Score("eval/kid_std", "KID sd over subsets", None, "kid", "std", default=False, objective=False)
FID = Score("eval/fid", "FID", "minimize", "fid", default=False, objective=False)

SCORES = (FCN_PIXEL_ACC, FCN_CLASS_ACC, FCN_IOU, LPIPS, SSIM, PSNR, L1, KID, KID_STD, FID)  # logging order
HEADLINE = FCN_IOU  # the paper's headline score: what reports compare cells on where a run has it
BY_KEY = {s.key: s for s in SCORES}
METRICS = tuple(dict.fromkeys(s.metric for s in SCORES))  # the `eval.metrics` entries, in order
DEFAULT_METRICS = tuple(dict.fromkeys(s.metric for s in SCORES if s.default))
DEFAULT_KEYS = tuple(s.key for s in SCORES if s.default)  # what a default `eval.metrics` logs
OBJECTIVES = tuple(s.key for s in SCORES if s.objective)
REPORTED = tuple(s for s in SCORES if s.default)  # the report's score table and figure


def score(key: str) -> Score:
    """The score logged as `key` (KeyError for a key that is not one)."""
    return BY_KEY[key]


def label(key: str) -> str:
    """How reports name a score (a key that is none of these: the key itself)."""
    return BY_KEY[key].label if key in BY_KEY else key


def digits(key: str) -> int:
    return BY_KEY[key].digits if key in BY_KEY else 3


def lower_is_better(key: str) -> bool:
    return key in BY_KEY and BY_KEY[key].lower_is_better


def scores_of(metric: str) -> tuple[Score, ...]:
    """The scores one `eval.metrics` entry computes."""
    return tuple(s for s in SCORES if s.metric == metric)


def only_score_of(metric: str) -> Score:
    """The one score an `eval.metrics` entry computes (lpips, ssim, psnr, l1, fid)."""
    (found,) = scores_of(metric)
    return found


# ---------------------------------------------------------------- training metrics

TRAIN_PREFIX = "train/"


@dataclass(frozen=True)
class Loss:
    """A training loss, logged per epoch as its mean over the epoch's steps."""

    name: str  # loss_<net>_<term>
    short: str  # in the progress bar
    needs_discriminator: bool  # logged only by runs that train a D (not `loss.gan: none`)

    @property
    def key(self) -> str:
        return TRAIN_PREFIX + self.name


D_REAL = Loss("loss_D_real", "D_real", True)
D_FAKE = Loss("loss_D_fake", "D_fake", True)
G_GAN = Loss("loss_G_GAN", "G_GAN", True)
G_L1 = Loss("loss_G_L1", "G_L1", False)
LOSSES = (D_REAL, D_FAKE, G_GAN, G_L1)
LR = TRAIN_PREFIX + "lr"  # the generator's learning rate during the epoch (logged once per epoch)
IMG_PER_S = TRAIN_PREFIX + "img_per_s"  # training throughput of the epoch
EVAL_S = TRAIN_PREFIX + "eval_s"  # seconds the epoch's scoring pass took


# ---------------------------------------------------------------- tags and trial attributes


class Tag:
    """MLflow run tags."""

    SWEEP = "p2p.sweep"  # the sweep a run belongs to (its parent run's too)
    CELL = "p2p.cell"  # the cell's readable name, e.g. 70x70 or L1+cGAN
    SEED = "p2p.seed"
    SCALE = "p2p.scale"  # cpu, paper, or custom
    TRIAL = "p2p.trial"  # the Optuna trial number of the attempt
    FAILURE = "p2p.failure"  # why a run ended FAILED or KILLED
    MACHINE = "p2p.machine"  # CPU model, cores, SIMD level, GPUs
    PRECISION = "p2p.precision"  # what runtime.precision resolved to on that machine (auto: bf16 or fp32)
    GIT_COMMIT = "p2p.git_commit"
    ROLE = "p2p.role"  # ROLE_SWEEP on a sweep's parent run
    # On a sweep's parent run: what the sweep tests.
    OBJECTIVE = "p2p.objective"
    DIRECTION = "p2p.direction"
    KIND = "p2p.kind"  # grid or search
    FACTOR = "p2p.factor"
    CELLS = "p2p.cells"
    SET = "p2p.set"  # the sweep's --set values, joined by spaces
    # MLflow's own.
    PARENT = "mlflow.parentRunId"
    MLFLOW_GIT_COMMIT = "mlflow.source.git.commit"


ROLE_SWEEP = "sweep"
CUSTOM_SCALE = "custom"  # the p2p.scale of a run trained without --scale


class Attr:
    """Optuna user attrs: a trial's (cell, seed) and what became of it; a study's sweep."""

    CELL, SEED, FAILURE = Tag.CELL, Tag.SEED, Tag.FAILURE
    RUN_ID = "p2p.run_id"  # the MLflow run of the attempt that finished
    EPOCH = "p2p.epoch"  # epochs done
    WORKER = "p2p.worker"  # host:pid of the worker that claimed it
    SECONDS = "p2p.seconds"
    SWEEP, SCALE, KIND, SET = Tag.SWEEP, Tag.SCALE, Tag.KIND, Tag.SET
    PARENT_RUN = "p2p.parent_run_id"


# ---------------------------------------------------------------- artifacts and files

CONFIG_ARTIFACT = "config.yaml"  # the resolved run config
SAMPLES_DIR = "samples"  # sample grids, input | output | target
GENERATOR_FILE = "generator.pt"  # the final generator with its config (an artifact and a file in the run folder)
CHECKPOINT_FILE = "checkpoint.pt"  # in the run folder only: written after every epoch
SPEC_ARTIFACT = "sweep.yaml"  # the spec, on a sweep's parent run
REPORT_DIR = "report"  # a sweep's report, on its parent run


def sample_name(epoch: int) -> str:
    return f"epoch_{epoch:03d}.png"


# ---------------------------------------------------------------- MLflow and Optuna naming

URI_ENV = "MLFLOW_TRACKING_URI"
DEFAULT_STORE = "mlflow.db"  # sqlite in the project root when URI_ENV is unset


def sweep_experiment(sweep: str) -> str:
    """One MLflow experiment per sweep, named after it (single runs: their config's `experiment`)."""
    return sweep


def parent_run_name(sweep: str, scale: str) -> str:
    return f"{sweep}-{scale}"


def trial_run_name(cell: str, seed: int) -> str:
    return f"{cell} seed{seed}"


def study_name(sweep: str, scale: str) -> str:
    """One Optuna study per sweep and scale."""
    return f"{sweep}-{scale}"

"""The outlier rule (analysis/outliers.py) on golden cells: values worked out by hand from the rule's definition."""

import math

import numpy as np
import pytest

from analysis.misbehaving import BY_NAME, COLLAPSED
from analysis.outliers import MIN_SEEDS, OUTLIER_Z, flag_cell, modified_z, robust_sd, unchecked_text


def test_a_collapsed_seed_is_flagged_with_its_z_and_side():
    # Median 0.104; absolute deviations 0, 0.006, 0.006, 0.002, 0.003, 0.092, 0.004: MAD 0.004 (their median).
    values = {0: 0.104, 1: 0.110, 2: 0.098, 3: 0.106, 4: 0.101, 5: 0.012, 6: 0.108}
    [flag] = flag_cell("70x70", "eval/fcn_iou", values, lower_is_better=False)
    assert (flag.cell, flag.seed, flag.value, flag.median, flag.side) == ("70x70", 5, 0.012, 0.104, "worse")
    assert flag.z == pytest.approx(0.6745 * (0.012 - 0.104) / 0.004)  # -15.5
    assert flag.why() == "15.5 robust SDs below the cell's median 0.104 (worse side)"
    assert flag.text() == "seed 5 of 70x70 (FCN class IoU 0.012): 15.5 robust SDs below the cell's median 0.104 (worse side)"
    record = flag.record()
    assert record["seed"] == 5 and record["side"] == "worse" and record["z"] == pytest.approx(-15.5135)
    assert "Iglewicz & Hoaglin 1993" in record["rule"]
    # The next farthest, seed 2 (0.098), is 1.0 robust SD out: far inside 3.5.


def test_the_side_follows_the_scores_direction():
    # LPIPS: lower is better, so a high seed is on the worse side and its signed z is negative.
    values = {1: 0.30, 2: 0.31, 3: 0.29, 4: 0.306, 5: 0.295, 6: 0.60}
    [flag] = flag_cell("unet", "eval/lpips", values, lower_is_better=True)
    assert flag.seed == 6 and flag.side == "worse" and flag.z < -OUTLIER_Z
    assert flag.why().endswith("robust SDs above the cell's median 0.303 (worse side)")
    # The same far value on a higher-is-better score is on the better side, z positive.
    [better] = flag_cell("unet", "eval/ssim", values, lower_is_better=False)
    assert better.side == "better" and better.z == pytest.approx(-flag.z)


def test_just_inside_and_just_outside_the_threshold():
    # Median 0, MAD 1 (deviations 0, 1, 1, 1, 1, 3, ...): z = 0.6745 x. 5.18 -> 3.494 (kept); 5.19 -> 3.501 (flagged).
    base = {0: 0.0, 1: 1.0, 2: -1.0, 3: 1.0, 4: -1.0}
    assert flag_cell("a", "eval/l1", {**base, 5: 5.18, 6: -5.18}, lower_is_better=True) == []
    flags = flag_cell("a", "eval/l1", {**base, 5: 5.19, 6: -5.19}, lower_is_better=True)
    assert [(f.seed, f.side) for f in flags] == [(5, "worse"), (6, "better")]


def test_four_seeds_are_not_checked_and_the_report_can_say_so():
    wild = {0: 0.10, 1: 0.11, 2: 0.10, 3: -5.0}
    assert MIN_SEEDS == 5 and flag_cell("1x1", "eval/fcn_iou", wild, lower_is_better=False) == []
    assert unchecked_text("1x1", 4) == "1x1: 4 seeds, too few to check for outliers (5 needed)"
    assert unchecked_text("1x1", 5) is None
    # A missing score does not count towards the five.
    assert flag_cell("1x1", "eval/fcn_iou", {**wild, 4: math.nan, 5: None}, lower_is_better=False) == []
    assert len(flag_cell("1x1", "eval/fcn_iou", {**wild, 4: 0.105}, lower_is_better=False)) == 1


def test_mad_zero_falls_back_to_the_mean_absolute_deviation():
    # Four seeds share 0.1 (MAD 0); mean absolute deviation 0.2 / 5 = 0.04, robust sd 1.253314 x 0.04 = 0.0501.
    values = {0: 0.1, 1: 0.1, 2: 0.1, 3: 0.1, 4: 0.3}
    assert robust_sd(np.array(list(values.values()))) == pytest.approx(1.253314 * 0.04)
    [flag] = flag_cell("resnet", "eval/fcn_iou", values, lower_is_better=False)
    assert flag.seed == 4 and flag.side == "better" and flag.z == pytest.approx(0.2 / (1.253314 * 0.04))  # 3.99
    # With six seeds, two apart: 0.04 and 0.2 from the median; mean deviation 0.04, z 0.8 and 3.99: one flagged.
    six = {0: 0.1, 1: 0.1, 2: 0.1, 3: 0.1, 4: 0.14, 5: -0.1}
    [low] = flag_cell("resnet", "eval/fcn_iou", six, lower_is_better=False)
    assert low.seed == 5 and low.side == "worse" and low.z == pytest.approx(-0.2 / (1.253314 * 0.04))
    # Every seed equal: no spread at all, and no seed differs from the median.
    assert flag_cell("resnet", "eval/fcn_iou", dict.fromkeys(range(8), 0.2), lower_is_better=False) == []


def test_how_often_it_flags_well_behaved_and_collapsed_seeds():
    # 20,000 simulated cells per size (a rate is known to about +-0.5%). A flag asks for a look at the run, and
    # Gaussian cells get some: the MAD of a few values is itself noisy, so a seed is flagged in about a fifth of
    # 5-seed cells with nothing wrong, fewer with more seeds. A seed collapsed 0.2 below the rest (their sd 0.02)
    # is flagged 4 times in 5 at 5 seeds and nearly always from 10 on.
    rng = np.random.default_rng(2941)
    cells = 20_000
    measured = {}
    for seeds, gaussian_low, gaussian_high, caught in ((5, 0.18, 0.24, 0.75), (8, 0.11, 0.16, 0.88), (10, 0.10, 0.15, 0.92),
                                                       (30, 0.07, 0.11, 0.998)):
        flagged = np.abs(modified_z(rng.normal(0.0, 1.0, (cells, seeds)))) > OUTLIER_Z
        collapse = BY_NAME["10% collapse"].draw(rng, (cells, seeds))
        collapse_flags = np.abs(modified_z(collapse)) > OUTLIER_Z
        measured[seeds] = (flagged.any(axis=1).mean(), collapse_flags[collapse == COLLAPSED].mean())
        assert gaussian_low <= measured[seeds][0] <= gaussian_high, (seeds, measured[seeds])
        assert measured[seeds][1] >= caught, (seeds, measured[seeds])
    print({n: f"Gaussian cells flagged {100 * g:.1f}%, collapsed seeds flagged {100 * c:.1f}%" for n, (g, c) in measured.items()})
    # measured: 5 seeds 21.1% / 79.7%; 8: 13.6% / 91.1%; 10: 12.3% / 94.7%; 30: 8.8% / 99.9%
    # flag_cell reads the same z, seed by seed.
    x = rng.normal(0.0, 1.0, 9)
    x[4] = 6.0
    flags = flag_cell("c", "eval/fcn_iou", dict(enumerate(x)), lower_is_better=False)
    assert [f.seed for f in flags] == list(np.flatnonzero(np.abs(modified_z(x)) > OUTLIER_Z))
    assert flags[0].z == pytest.approx(modified_z(x)[4])

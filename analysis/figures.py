"""The report's figures (seaborn/matplotlib), each saved as a PNG."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from analysis.samples import CellSamples  # noqa: E402
from analysis.stats import t_interval  # noqa: E402
from p2p import contract  # noqa: E402


def scores_figure(trials: pd.DataFrame, cells: list[str], metrics: list[str], path: Path) -> Path | None:
    """One panel per score: each seed as a dot, the mean with its 95% t-interval as a bar."""
    metrics = [m for m in metrics if m in trials and trials[m].notna().any()]
    if not metrics or trials.empty:
        return None
    sns.set_theme(style="whitegrid", context="notebook")
    cols = min(4, len(metrics))
    rows = (len(metrics) + cols - 1) // cols
    width = max(3.2, 0.9 * len(cells) + 1.2)
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, 3.4 * rows), squeeze=False)
    palette = dict(zip(cells, sns.color_palette("colorblind", len(cells))))
    for ax, metric in zip(axes.flat, metrics):
        part = trials[["cell", "seed", metric]].dropna()
        sns.stripplot(data=part, x="cell", y=metric, order=cells, hue="cell", palette=palette, legend=False,
                      ax=ax, size=5, alpha=0.6, jitter=0.12)
        for i, cell in enumerate(cells):
            interval = t_interval(part.loc[part["cell"] == cell, metric].tolist())
            if interval.n:
                err = 0 if interval.n < 2 else interval.half_width
                ax.errorbar(i, interval.mean, yerr=err, fmt="D", color="black", markersize=6, capsize=6, lw=1.5)
        arrow = "lower is better" if contract.lower_is_better(metric) else "higher is better"
        ax.set_title(f"{contract.label(metric)} ({arrow})", fontsize=11)
        ax.set_xlabel("")
        ax.set_ylabel("")
        ax.tick_params(axis="x", rotation=30 if max(len(c) for c in cells) > 6 else 0)
    for ax in list(axes.flat)[len(metrics):]:
        ax.set_visible(False)
    fig.suptitle("Scores per cell: dots are seeds, black diamonds the mean with its 95% t-interval", fontsize=12)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def curves_figure(curves: pd.DataFrame, cells: list[str], path: Path) -> Path | None:
    """Training losses per epoch: the mean over seeds as a line, their range as a band."""
    if curves.empty:
        return None
    sns.set_theme(style="whitegrid", context="notebook")
    losses = [loss.name for loss in contract.LOSSES if loss.name in set(curves["loss"])]
    grid = sns.relplot(data=curves, x="epoch", y="value", hue="cell", hue_order=[c for c in cells if c in set(curves["cell"])],
                       col="loss", col_order=losses, col_wrap=min(4, len(losses)), kind="line",
                       errorbar=("pi", 100), height=3.2, aspect=1.15, facet_kws={"sharey": False},
                       palette="colorblind", marker="o", markersize=4)
    grid.set_titles("{col_name}")
    for ax in grid.axes.flat:
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    grid.set_axis_labels("epoch", "loss")
    grid.figure.suptitle("Training losses per epoch (line: mean over seeds, band: their range)", y=1.03, fontsize=12)
    grid.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(grid.figure)
    return path


def samples_figure(samples: CellSamples, cells: list[str], path: Path) -> Path | None:
    """Rows: test images; columns: input, each cell's output, target (as the paper's figures)."""
    cells = [c for c in cells if c in samples.outputs]
    if not cells:
        return None
    columns = ["input"] + [f"{c}\n(seed {samples.seeds[c]})" for c in cells] + ["target"]
    n = samples.inputs.shape[0]
    fig, axes = plt.subplots(n, len(columns), figsize=(1.9 * len(columns), 1.9 * n + 0.5), squeeze=False)
    for row in range(n):
        images = [samples.inputs[row]] + [samples.outputs[c][row] for c in cells] + [samples.targets[row]]
        for col, image in enumerate(images):
            ax = axes[row, col]
            picture = image.permute(1, 2, 0).numpy()
            ax.imshow(picture[..., 0] if picture.shape[-1] == 1 else picture, cmap="gray" if picture.shape[-1] == 1 else None)
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(columns[col], fontsize=10)
        axes[row, 0].set_ylabel(samples.names[row], fontsize=9)
    fig.suptitle("The same test inputs through each cell's generator", fontsize=12)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def trends_figure(trends: list[tuple[str, str, "object"]], path: Path) -> Path | None:
    """One panel per claim: the paired difference over training, its anytime-valid band (valid across the epochs), and 0.

    `trends` holds (title, y label, analysis.findings.Trend); claims without a scored epoch are left out.
    An epoch whose interval is unbounded (too few seeds for its level) has no band there.
    """
    trends = [(title, label, t) for title, label, t in trends if t is not None and t.epochs]
    if not trends:
        return None
    sns.set_theme(style="whitegrid", context="notebook")
    cols = min(3, len(trends))
    rows = (len(trends) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4.6 * cols, 3.4 * rows), squeeze=False)
    for ax, (title, label, t) in zip(axes.flat, trends):
        ax.axhline(0, color="black", lw=1)
        lows, highs = (np.where(np.isfinite(v), v, np.nan) for v in (t.lows, t.highs))  # unbounded: no band
        ax.fill_between(t.epochs, lows, highs, color="C0", alpha=0.25, lw=0,
                        label=f"anytime-valid, alpha {t.epoch_alpha:.2g} per epoch")
        ax.plot(t.epochs, t.means, "o-", color="C0", label="mean paired difference")
        # The last point scores eval.max_images; the earlier ones may score fewer (eval.every_max_images).
        ax.plot(t.epochs[-1:], t.means[-1:], "s", color="C0", markersize=8, label="last epoch")
        ax.set_title("\n".join(_wrap(title, 44)), fontsize=10)
        ax.set_xlabel("epoch")
        ax.set_ylabel(label, fontsize=9)
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    for ax in list(axes.flat)[len(trends):]:
        ax.set_visible(False)
    axes.flat[0].legend(fontsize=8, loc="best")
    title = "Each claim over training: per-seed differences of the common seeds"
    fig.suptitle("\n".join(_wrap(title, 60 * cols)), fontsize=12)
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")  # a one-panel figure is narrower than its title
    plt.close(fig)
    return path


def _wrap(text: str, width: int) -> list[str]:
    lines, line = [], ""
    for word in text.split():
        if line and len(line) + 1 + len(word) > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}".strip()
    return lines + [line] if line else lines


def differences_figure(claims: list, path: Path, flagged: frozenset = frozenset()) -> Path | None:
    """One row per claim: each seed's paired difference as a dot (seed numbers beside the ones a flag or the
    leave-one-seed-out check names), the anytime-valid interval the verdict reads as a bar, the mean, 0 and the
    negligible band. `claims` holds analysis.findings.ClaimResult; those without common seeds are left out.
    `flagged`: the (cell, seed) pairs the outlier rule flags on this score.
    """
    claims = [c for c in claims if c.differences]
    if not claims:
        return None
    sns.set_theme(style="whitegrid", context="notebook")
    fig, ax = plt.subplots(figsize=(9, 0.75 * len(claims) + 1.6))
    rng = np.random.default_rng(0)  # the same jitter every time the report is built
    for row, claim in enumerate(claims):
        y = len(claims) - 1 - row
        seeds = [s for s, _ in claim.differences]
        d = np.array([x for _, x in claim.differences])
        named = {seed for seed, _ in claim.left_out} | {
            seed for seed in seeds if (claim.claim.better, seed) in flagged or (claim.claim.worse, seed) in flagged}
        heights = y + rng.uniform(-0.18, 0.18, len(d))
        ax.scatter(d, heights, s=16, color="C0", alpha=0.65, zorder=3)
        for seed, x, height in zip(seeds, d, heights):
            if seed in named:
                ax.annotate(f"seed {seed}", (x, height), xytext=(0, 7), textcoords="offset points", fontsize=7,
                            color="C3", ha="center")
                ax.scatter([x], [height], s=40, facecolors="none", edgecolors="C3", zorder=4)
        low, high = claim.interval.low, claim.interval.high
        if np.isfinite(low) and np.isfinite(high):
            ax.plot([low, high], [y, y], color="black", lw=2.5, zorder=2, solid_capstyle="butt")
        ax.plot([d.mean()], [y], "D", color="black", markersize=6, zorder=4)
        if np.isfinite(claim.effect):
            ax.fill_between([-claim.effect, claim.effect], y - 0.4, y + 0.4, color="0.85", zorder=1, lw=0)
    ax.axvline(0, color="black", lw=1)
    ax.set_yticks(range(len(claims)))
    ax.set_yticklabels(["\n".join(_wrap(f"{c.claim.better} - {c.claim.worse}: {c.verdict}", 38))
                        for c in reversed(claims)], fontsize=8)
    ax.set_xlabel(f"per-seed difference in {contract.label(claims[0].metric)} (better - worse as claimed)")
    title = ("Each claim's per-seed differences (dots), the mean (diamond), the anytime-valid interval its verdict "
             "reads (bar) and the negligible band (grey); red: seeds the verdict hangs on or the outlier rule flags")
    ax.set_title("\n".join(_wrap(title, 90)), fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path

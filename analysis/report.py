"""A sweep's report: what it found, with intervals, pictures and the paper's numbers beside ours.

Writes `reports/<sweep>/report.md` (with its PNG figures beside it) and one self-contained
`reports/<sweep>/report.html` (figures embedded), and logs both on the sweep's parent run.
"""

from __future__ import annotations

import base64
import html
import math
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from analysis import figures, paper
from analysis.load import LOWER_IS_BETTER, SCORES, SweepRuns, load_sweep, loss_curves
from analysis.stats import Interval, kendall_tau, t_interval, welch_difference


@dataclass
class Finding:
    text: str
    verdict: str
    difference: Interval


def score_table(runs: SweepRuns) -> pd.DataFrame:
    """One row per cell: seeds finished, then each score as 'mean ± half-width' (95% t-interval)."""
    finished = runs.finished
    rows = []
    for cell in runs.cells:
        part = finished[finished["cell"] == cell]
        row = {"cell": cell, "seeds": f"{len(part)}/{len(runs.seeds)}"}
        for metric in SCORES:
            if finished[metric].notna().any():
                row[figures.LABELS[metric]] = t_interval(part[metric].dropna().tolist()).text(
                    2 if metric == "eval/psnr" else 3)
        rows.append(row)
    return pd.DataFrame(rows)


def cell_means(runs: SweepRuns, metric: str) -> dict[str, float]:
    finished = runs.finished
    return {cell: t_interval(finished.loc[finished["cell"] == cell, metric].dropna().tolist()).mean
            for cell in runs.cells}


def comparison_metric(runs: SweepRuns) -> str:
    """FCN class IoU (the paper's headline score) where we have it, else the sweep's objective."""
    if runs.finished.get("eval/fcn_iou") is not None and runs.finished["eval/fcn_iou"].notna().any():
        return "eval/fcn_iou"
    return runs.objective


def judge(better: str, worse: str, runs: SweepRuns, metric: str) -> Finding:
    """Does `better` score above `worse` here? reproduced / same direction / not reproduced / reversed."""
    finished = runs.finished
    a = finished.loc[finished["cell"] == better, metric].dropna().tolist()
    b = finished.loc[finished["cell"] == worse, metric].dropna().tolist()
    name = figures.LABELS.get(metric, metric)
    claim = f"{better} scores {'below' if metric in LOWER_IS_BETTER else 'above'} {worse} on {name}"
    if not a or not b:
        return Finding(f"{claim}: cannot tell yet (no finished run of {better if not a else worse})", "missing",
                       Interval(math.nan, math.nan, 0))
    diff = welch_difference(a, b)
    sign = -1 if metric in LOWER_IS_BETTER else 1
    good, low, high = sign * diff.mean, sign * diff.low, sign * diff.high
    if math.isnan(diff.half_width):
        verdict = "same direction, no interval (one seed)" if good > 0 else "not reproduced, no interval (one seed)"
    elif min(low, high) > 0:
        verdict = "reproduced"
    elif max(low, high) < 0:
        verdict = "reversed"
    elif good > 0:
        verdict = "same direction, not significant"
    else:
        verdict = "not reproduced"
    shown = diff.text(3) if not math.isnan(diff.half_width) else f"{diff.mean:.3f}"
    return Finding(f"{claim}: {verdict}, difference {shown} ({len(a)} vs {len(b)} seeds)", verdict, diff)


def findings(runs: SweepRuns, metric: str) -> list[Finding]:
    claims = paper.CLAIMS.get(runs.name)
    if claims is not None:
        return [judge(c.better, c.worse, runs, metric) for c in claims]
    # No claims from the paper (e.g. the tricks sweep): every cell against the first one.
    baseline = runs.cells[0] if runs.cells else None
    return [judge(cell, baseline, runs, metric) for cell in runs.cells[1:]] if baseline else []


def paper_frame(runs: SweepRuns) -> tuple[pd.DataFrame | None, list[str]]:
    """The paper's table beside our means, and one line of Kendall's tau per score."""
    table = paper.paper_table(runs.name)
    if table is None:
        return None, []
    rows, taus = [], []
    for cell, values in table.items():
        row = {"cell": cell}
        for ours in paper.PAPER_METRICS.values():
            label = figures.LABELS[ours]
            row[f"paper {label}"] = f"{values[ours]:.2f}"
            if cell in runs.cells:
                part = runs.finished.loc[runs.finished["cell"] == cell, ours].dropna().tolist()
                row[f"ours {label}"] = t_interval(part).text(3)
            else:
                row[f"ours {label}"] = "(not in sweep)" if cell != "ground_truth" else "(real photos)"
        rows.append(row)
    for ours in paper.PAPER_METRICS.values():
        theirs = {cell: values[ours] for cell, values in table.items() if cell != "ground_truth"}
        tau, p, n = kendall_tau(cell_means(runs, ours), theirs)
        label = figures.LABELS[ours]
        if math.isnan(tau):
            taus.append(f"{label}: Kendall's tau needs at least 2 cells scored by both ({n} now)")
        else:
            taus.append(f"{label}: Kendall's tau = {tau:+.2f} over {n} cells (p = {p:.2f}; +1 = the paper's ranking)")
    return pd.DataFrame(rows), taus


def status_lines(runs: SweepRuns) -> tuple[list[str], list[str]]:
    missing = [f"{cell} seed {seed}" for cell, seed in runs.missing()]
    failed = [f"{r.cell} seed {r.seed}: {r.status} — {(r.failure or 'no reason recorded').splitlines()[0]}"
              for r in runs.failed().itertuples()]
    return missing, failed


def build_report(sweep: str, scale: str | None = None, out_root: Path = Path("reports"), log: bool = True,
                 samples: int = 4, root: Path = Path(".")) -> Path:
    """Write the report of a sweep (finished or not) and return its folder."""
    runs = load_sweep(sweep, scale, root)
    out = out_root / sweep
    out.mkdir(parents=True, exist_ok=True)
    metric = comparison_metric(runs)
    scores = score_table(runs)
    compared, taus = paper_frame(runs)
    found = findings(runs, metric)
    missing, failed = status_lines(runs)

    images: dict[str, Path] = {}
    path = figures.scores_figure(runs.finished, runs.cells, SCORES, out / "scores.png")
    if path:
        images["Scores per cell"] = path
    curves = loss_curves(runs)
    path = figures.curves_figure(curves, runs.cells, out / "training_curves.png")
    if path:
        images["Training curves"] = path
    if samples:
        from analysis.samples import cell_samples

        picked = cell_samples(runs, samples)
        path = figures.samples_figure(picked, runs.cells, out / "samples.png") if picked else None
        if path:
            images["Qualitative comparison"] = path

    doc = ReportDoc(runs, metric, scores, compared, taus, found, missing, failed, images)
    (out / "report.md").write_text(doc.markdown())
    (out / "report.html").write_text(doc.html())
    if log and runs.parent_run_id:
        from p2p import tracking

        tracking.log_artifacts(runs.parent_run_id, out, "report")
    return out


@dataclass
class ReportDoc:
    runs: SweepRuns
    metric: str
    scores: pd.DataFrame
    compared: pd.DataFrame | None
    taus: list[str]
    found: list[Finding]
    missing: list[str]
    failed: list[str]
    images: dict[str, Path]

    def header(self) -> list[str]:
        r = self.runs
        done = len(r.finished)
        total = len(r.cells) * len(r.seeds)
        lines = [f"Sweep `{r.name}` at the `{r.scale}` scale: {done} of {total} trials finished "
                 f"({len(r.cells)} cells x {len(r.seeds)} seeds), {time.strftime('%Y-%m-%d %H:%M')}.",
                 f"Intervals are 95% t-intervals over seeds; differences use Welch's t-interval."]
        if r.parent_run_id:
            lines.append(f"MLflow parent run: `{r.parent_run_id}`.")
        lines += r.notes
        return lines

    def sections(self) -> list[tuple[str, list]]:
        """(title, blocks) where a block is a str (paragraph), a list (bullets) or a DataFrame."""
        r = self.runs
        finding_text = paper.finding(r.name)
        paper_blocks: list = []
        if self.compared is not None:
            paper_blocks += [f"The paper's {paper.TABLE_NAMES.get(r.name, 'table')} ({paper.source()}) beside our "
                             "means. The paper scores Cityscapes with its own FCN; we score this dataset with ours, so "
                             "compare rankings, not absolute values.", self.compared, self.taus]
        else:
            paper_blocks.append("The paper has no table for this ablation; each cell is compared with "
                                f"`{r.cells[0] if r.cells else '-'}` instead.")
        found_title = f"Findings (on {figures.LABELS.get(self.metric, self.metric)})"
        found_blocks: list = [f"The paper: {finding_text}."] if finding_text else []
        found_blocks.append([f.text for f in self.found] or ["no comparisons yet"])
        status: list = [self.missing and f"Missing ({len(self.missing)}): " + ", ".join(self.missing)
                        or "Missing: none — every cell has all its seeds.",
                        ["Failed: " + line for line in self.failed] or ["Failed: none."]]
        return [("Scores per cell", [self.scores]), (found_title, found_blocks), ("The paper beside us", paper_blocks),
                ("Progress", status)]

    def markdown(self) -> str:
        out = [f"# {self.runs.name}: what the ablation found", "", *self.header(), ""]
        for title, blocks in self.sections():
            out += [f"## {title}", ""]
            for block in blocks:
                if isinstance(block, pd.DataFrame):
                    out += [block.to_markdown(index=False, disable_numparse=True), ""]
                elif isinstance(block, list):
                    out += [f"- {line}" for line in block] + [""]
                else:
                    out += [block, ""]
        out += ["## Figures", ""]
        for title, path in self.images.items():
            out += [f"### {title}", "", f"![{title}]({path.name})", ""]
        return "\n".join(out)

    def html(self) -> str:
        parts = [f"<h1>{html.escape(self.runs.name)}: what the ablation found</h1>"]
        parts += [f"<p>{_inline(line)}</p>" for line in self.header()]
        for title, blocks in self.sections():
            parts.append(f"<h2>{html.escape(title)}</h2>")
            for block in blocks:
                if isinstance(block, pd.DataFrame):
                    parts.append(block.to_html(index=False, border=0, classes="table"))
                elif isinstance(block, list):
                    parts.append("<ul>" + "".join(f"<li>{_inline(line)}</li>" for line in block) + "</ul>")
                else:
                    parts.append(f"<p>{_inline(block)}</p>")
        parts.append("<h2>Figures</h2>")
        for title, path in self.images.items():
            data = base64.b64encode(path.read_bytes()).decode()
            parts.append(f"<h3>{html.escape(title)}</h3><img alt='{html.escape(title)}' "
                         f"src='data:image/png;base64,{data}'>")
        style = ("body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}"
                 "table{border-collapse:collapse;margin:1em 0;font-size:0.9em}th,td{padding:4px 10px;"
                 "border-bottom:1px solid #ddd;text-align:left}th{background:#f4f4f4}img{max-width:100%}"
                 "code{background:#f4f4f4;padding:1px 4px}")
        return (f"<!doctype html><html><head><meta charset='utf-8'><title>p2p report: "
                f"{html.escape(self.runs.name)}</title><style>{style}</style></head><body>{''.join(parts)}"
                "</body></html>\n")


def _inline(text: str) -> str:
    """Escape, then turn `code` spans into <code>."""
    escaped = html.escape(text)
    pieces = escaped.split("`")
    return "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(pieces))

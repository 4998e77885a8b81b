"""A sweep's report: what it found, with intervals, pictures and the paper's numbers beside ours.

Writes `<out>/<sweep>/report.md` (with its PNG figures beside it), one self-contained
`report.html` (figures embedded) and `findings.json` (the claims, for `python -m analysis.summary`),
and logs them on the sweep's parent run.
"""

from __future__ import annotations

import base64
import html
import json
import math
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from analysis import figures, paper
from analysis.findings import ALPHA, ClaimResult, comparison_metric, every_score, flagged_seeds, judge_all, method_summary
from analysis.load import SCORES, SweepRuns, epoch_stamps, eval_history, load_sweep, loss_curves
from analysis.outliers import RULE as OUTLIER_RULE
from analysis.outliers import Flag, unchecked_text
from analysis.provenance import Provenance, provenance
from analysis.runs_file import EPOCHS_CSV, RUNS_CSV, read_runs, write_runs
from analysis.sequential import METHOD, MIXTURE_PRECISION, tally
from analysis.shape import RULE as SHAPE_RULE
from analysis.signs import METHOD as SIGN_METHOD
from analysis.stats import kendall_tau, t_interval
from p2p import contract, tracking
from p2p.errors import UserError
from p2p.sweep.spec import load_spec

__all__ = ["build_report", "comparison_metric", "score_table", "ReportDoc"]
TRENDS_PNG = "findings_over_training.png"
DIFFERENCES_PNG = "differences.png"


def score_table(runs: SweepRuns) -> pd.DataFrame:
    """One row per cell: seeds finished, then each score as 'mean ± half-width' (95% t-interval)."""
    finished = runs.finished
    rows = []
    for cell in runs.cells:
        part = finished[finished["cell"] == cell]
        planned = len(runs.seeds)  # the spec's; --until-resolved may have added more
        row = {"cell": cell, "seeds": f"{len(part)}/{planned}" if len(part) <= planned else str(len(part))}
        for metric in SCORES:
            if finished[metric].notna().any():
                row[contract.label(metric)] = t_interval(part[metric].dropna().tolist()).text(contract.digits(metric))
        rows.append(row)
    return pd.DataFrame(rows)


def cell_means(runs: SweepRuns, metric: str) -> dict[str, float]:
    finished = runs.finished
    return {cell: t_interval(finished.loc[finished["cell"] == cell, metric].dropna().tolist()).mean
            for cell in runs.cells}


def scoring_caption(runs: SweepRuns) -> str:
    """Which points of the findings-over-training figure score how many test images (from the runs' params)."""
    finished = runs.finished

    def values(column: str) -> list[str]:
        return list(dict.fromkeys(str(v) for v in finished[column] if v is not None and str(v) != "nan"))

    def images(value: str) -> str:
        return "all the test images" if value in ("null", "None", "") else f"the first {value} test images"

    every, final, partial = values("every"), values("max_images"), values("every_max_images")
    last = sorted({int(a) + int(b) for a, b in zip(finished["epochs"], finished["decay_epochs"])
                   if a is not None and b is not None and str(a).isdigit() and str(b).isdigit()})
    at_end = "/".join(images(v) for v in final) or "the test images"
    last_text = f" (epoch {'/'.join(map(str, last))})" if last else ""
    bands = (" Bands: anytime-valid intervals of the mean per-seed difference, valid across all the seeds and all the "
             "epochs scored together (each epoch at alpha / K / the epochs; none where the seeds are too few for that); a "
             "claim holds from epoch E when every interval from E on excludes 0 in the claimed direction.")
    period = "every epoch" if every == ["1"] else f"every {'/'.join(every)} epochs"
    if not every or every == ["0"]:
        return (f"The runs scored only at the end (`eval.every: 0`): one point per claim, on {at_end}{last_text}."
                f"{bands}")
    if not partial or partial == ["null"]:
        return (f"Every point ({period}, `eval.every`, and the last epoch{last_text}) scores {at_end} "
                f"(`eval.max_images`).{bands}")
    return (f"Points before the last epoch ({period}, `eval.every`) score "
            f"{'/'.join(images(v) for v in partial)} (`eval.every_max_images`); the last epoch "
            f"({'epoch ' + '/'.join(map(str, last)) + ', ' if last else ''}the square) scores {at_end} "
            f"(`eval.max_images`).{bands}")


def paper_frame(runs: SweepRuns) -> tuple[pd.DataFrame | None, list[str]]:
    """The paper's table beside our means, and one line of Kendall's tau per score."""
    table = paper.paper_table(runs.name)
    if table is None:
        return None, []
    rows, taus = [], []
    for cell, values in table.items():
        row = {"cell": cell}
        for ours in paper.PAPER_METRICS.values():
            label = contract.label(ours)
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
        label = contract.label(ours)
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
                 samples: int = 4, root: Path = Path("."), runs_csv: Path | None = None) -> Path:
    """Write the report of a sweep (finished or not) and return its folder.

    `sweep` is a sweep's name or its spec's path (sweeps/X.yaml). The runs come from the MLflow store, or with
    `runs_csv` from a runs.csv (and the epochs.csv beside it) that an earlier report wrote: the same report and
    verdicts without the store (no qualitative figure: the images are the runs' artifacts).
    """
    spec = _spec_argument(sweep)
    if spec is not None:
        sweep = spec.name
    if runs_csv is not None:
        runs = read_runs(runs_csv, sweep, root)
        if scale is not None and scale != runs.scale:
            raise UserError(f"--runs {runs_csv}: holds the {runs.scale} scale's runs, not {scale}'s")
        runs.notes.append(f"Read from `{Path(runs_csv).name}` and `{EPOCHS_CSV}` (the per-seed data published with the "
                          "report), not from an MLflow store; the qualitative comparison needs the runs' images and is "
                          "left out.")
        samples, log = 0, False
        if spec is not None:  # the spec named on the command line, not the one in sweeps/
            runs.spec_path, runs.stated = spec.path, spec.claims
    else:
        runs = load_sweep(sweep, scale, root, spec=spec)
    out = out_root / sweep
    out.mkdir(parents=True, exist_ok=True)
    metric = comparison_metric(runs)
    scores = score_table(runs)
    compared, taus = paper_frame(runs)
    found = judge_all(runs, metric, eval_history(runs, metric))
    logged = [m for m in SCORES if runs.finished[m].notna().any()]
    others = every_score(runs, metric, logged)
    flags = flagged_seeds(runs, logged)
    missing, failed = status_lines(runs)
    origin = provenance(runs, out_root, epoch_stamps(runs))
    if Path(runs_csv or "").resolve() != (out / RUNS_CSV).resolve():
        write_runs(runs, out)

    images: dict[str, tuple[Path, str]] = {}
    path = figures.scores_figure(runs.finished, runs.cells, SCORES, out / "scores.png")
    if path:
        images["Scores per cell"] = (path, "")
    path = figures.differences_figure(found, out / DIFFERENCES_PNG,
                                      frozenset((f.cell, f.seed) for f in flags if f.metric == metric))
    if path:
        images["Per-seed differences"] = (path, "")
    path = figures.trends_figure([(r.text, f"{r.claim.better} - {r.claim.worse}", r.trend) for r in found],
                                 out / TRENDS_PNG)
    if path:
        images["Findings over training"] = (path, scoring_caption(runs))
    curves = loss_curves(runs)
    path = figures.curves_figure(curves, runs.cells, out / "training_curves.png")
    if path:
        images["Training curves"] = (path, "")
    if samples:
        from analysis.samples import cell_samples  # lazy: torch and the networks, only for the samples figure

        picked = cell_samples(runs, samples)
        path = figures.samples_figure(picked, runs.cells, out / "samples.png") if picked else None
        if path:
            images["Qualitative comparison"] = (path, "")

    doc = ReportDoc(runs, metric, scores, compared, taus, found, missing, failed, images, origin, others, flags)
    (out / "report.md").write_text(doc.markdown())
    (out / "report.html").write_text(doc.html())
    (out / "findings.json").write_text(json.dumps(doc.record(), indent=2) + "\n")
    if log and runs.parent_run_id:
        tracking.log_artifacts(runs.parent_run_id, out, contract.REPORT_DIR)
    return out


def protocol_lines(found: list[ClaimResult]) -> list[str]:
    """How the findings were judged: the method and its reference, the correction, negligible, the power."""
    k = len(found)
    if not k:
        return ["No claims to test yet."]
    effect = found[0].effect
    negligible = (f"negligible = it lies within +-{effect:g} ({contract.label(found[0].metric)}'s smallest effect of "
                  "interest, `p2p/contract.py`), whichever side of 0" if not math.isnan(effect) else
                  "negligible = it lies within +-the score's smallest effect of interest (this score has none)")
    return [f"Differences between cells: {method_summary(found)}. The verdicts read its intervals, which are "
            "anytime-valid (a confidence sequence: Howard, Ramdas, McAuliffe & Sekhon 2021): they stay valid however "
            f"many seeds are added and however often the report is read before. Multiplicity: Bonferroni over the {k} "
            f"claim{'s' if k > 1 else ''} of this sweep, each interval at alpha = {ALPHA:g}/{k} = {ALPHA / k:.4g} "
            f"(family-wise error {ALPHA:.0%}). {_resolved_words(found)}; {negligible}; {_open_words(found)}. "
            "The fixed-n 95% t-interval and p beside each "
            "verdict describe the seeds at hand; read after more seeds were added they are not valid tests "
            "(docs/verdicts.md).",
            f"Power: seeds per cell a fixed design needs for 80% power (paired t-test, two-sided, exact noncentral "
            f"t) at the Bonferroni level alpha = {ALPHA:g}/{k} = {ALPHA / k:.4g}, for the observed difference and "
            "for the smallest effect of interest per score; the anytime-valid verdict pays for looking at every "
            "seed with more seeds on average (docs/verdicts.md)."] + ([
            "Beside each verdict where seeds were added: what the lab's earlier fixed protocol says at the spec's "
            "own seeds (a paired t-test per claim, Holm over the claims, p < 0.05): valid at that one look, so it "
            "shows what stopping there would have concluded."] if any(f.fixed is not None for f in found) else [])


def _resolved_words(found: list[ClaimResult]) -> str:
    if all(f.claim.stated for f in found):
        return "reproduced = the interval excludes 0 in the claimed direction, reversed = the other way"
    return ("nobody claimed these comparisons (each cell against the spec's first), so they read as what they found: "
            "higher / lower = the interval excludes 0 on that side")


def _open_words(found: list[ClaimResult]) -> str:
    if all(f.claim.stated for f in found):
        return ("any other claim is not resolved, and its verdict says which way the runs lean (same / other "
                "direction, not resolved)")
    return "any other is not resolved, and its verdict says which way the runs lean"


@dataclass
class ReportDoc:
    runs: SweepRuns
    metric: str
    scores: pd.DataFrame
    compared: pd.DataFrame | None
    taus: list[str]
    found: list[ClaimResult]
    missing: list[str]
    failed: list[str]
    images: dict[str, tuple[Path, str]]  # title -> (PNG, caption)
    origin: Provenance
    others: list[ClaimResult] = field(default_factory=list)  # the claims on every other score: the second family
    flags: list[Flag] = field(default_factory=list)  # seeds the outlier rule flags, on every score
    written: str = ""

    def __post_init__(self) -> None:
        self.written = self.written or time.strftime("%Y-%m-%d %H:%M")

    def header(self) -> list[str]:
        r = self.runs
        done = len(r.finished)
        total = len(r.cells) * len(r.seeds)
        if r.added_seeds:
            counts = ", ".join(f"{cell} {n}" for cell, n in r.seeds_per_cell().items())
            first = (f"Sweep `{r.name}` at the `{r.scale}` scale, run `--until-resolved`: {done} trials finished, the "
                     f"spec's {len(r.seeds)} seeds per cell, then seeds added in rounds to the cells of open claims "
                     f"(seeds per cell: {counts}); report written {self.written}.")
        else:
            first = (f"Sweep `{r.name}` at the `{r.scale}` scale: {done} of {total} trials finished "
                     f"({len(r.cells)} cells x {len(r.seeds)} seeds); report written {self.written}.")
        lines = [first, *self.origin.lines(), *protocol_lines(self.found)]
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
                             f"means. {paper.comparison_note(_dataset(r))}", self.compared, self.taus]
        else:
            paper_blocks.append("The paper has no table for this ablation; each cell is compared with "
                                f"`{r.cells[0] if r.cells else '-'}` instead.")
        found_title = f"Findings (on {contract.label(self.metric)})"
        found_blocks: list = [f"The paper: {finding_text}."] if finding_text else []
        if self.found:
            found_blocks.append(f"Verdicts: {tally([f.verdict for f in self.found])}.")
        found_blocks.append([f.line() for f in self.found] or ["no comparisons yet"])
        if "Findings over training" in self.images:
            caption = self.images["Findings over training"][1]
            found_blocks.append(f"Epochs as in the figure *Findings over training*: {caption[0].lower()}{caption[1:]}")
        status: list = [self.missing and f"Missing ({len(self.missing)}): " + ", ".join(self.missing)
                        or "Missing: none — every cell has all its seeds.",
                        ["Failed: " + line for line in self.failed] or ["Failed: none."], *self.flag_blocks()]
        sections = [("Scores per cell", [self.scores]), (found_title, found_blocks)]
        if self.others:
            sections.append(("Every score (a second family)", self.every_score_blocks()))
        return sections + [("The paper beside us", paper_blocks), ("Progress", status)]

    def flag_blocks(self) -> list:
        """The Progress section's misbehaving seeds: each flagged (cell, seed, score, how far), and the cells too
        small to check."""
        unchecked = [t for t in (unchecked_text(c, n) for c, n in self.runs.seeds_per_cell().items()) if t]
        head = (f"Misbehaving seeds (the rule, fixed before any result: {OUTLIER_RULE}): "
                + (f"{len(self.flags)} flagged." if self.flags else "none flagged."))
        blocks: list = [head]
        if self.flags:
            blocks.append([f"{f.cell} seed {f.seed}: {contract.label(f.metric)} "
                           f"{f.value:.{contract.digits(f.metric)}f}, {f.why()}" for f in self.flags])
        if unchecked:
            blocks.append(["Not checked: " + t for t in unchecked])
        return blocks

    def every_score_blocks(self) -> list:
        """Each claim on every other score: one table (verdict and difference per cell), and how it was judged."""
        k = self.others[0].claims
        metrics = list(dict.fromkeys(r.metric for r in self.others))
        rows = []
        for claim in dict.fromkeys(r.claim for r in self.others):
            row = {"claim": f"{claim.better} vs {claim.worse}"}
            for r in (r for r in self.others if r.claim == claim):
                row[contract.label(r.metric)] = (f"{r.verdict} ({r.diff.mean:+.{contract.digits(r.metric)}f})"
                                                 if r.verdict != "missing" else "missing")
            rows.append(row)
        scores = f"{len(metrics)} score{'s' if len(metrics) > 1 else ''}"
        how = (f"The same claims on each other score the runs logged ({scores}), judged like the headline "
               f"but as a family of their own: {k} tests (claims x scores), Bonferroni at a family-wise {ALPHA:g} "
               f"(each at alpha {ALPHA:g}/{k} = {ALPHA / k:.3g}), so the headline's verdicts above keep their alpha. "
               "The words read in each score's own direction (better = higher, or lower for LPIPS and L1); negligible "
               "only where the score has a smallest effect of interest (`p2p/contract.py`). This says on which score "
               "a part of pix2pix matters; the paper's claims are about FCN scores.")
        return [how, pd.DataFrame(rows)]

    def record(self) -> dict:
        """findings.json: the claims and how they were judged, with where the numbers come from."""
        r, k = self.runs, len(self.found)
        return {"sweep": r.name, "scale": r.scale, "written": self.written, "metric": self.metric,
                "trials_finished": len(r.finished), "trials_planned": r.trials_planned(),
                "trials_in_spec": len(r.cells) * len(r.seeds),
                "until_resolved": bool(r.added_seeds), "seeds_per_cell": r.seeds_per_cell(),
                "test": method_summary(self.found), "verdict_method": METHOD, "mixture_precision": MIXTURE_PRECISION,
                "correction": "bonferroni", "family_wise_alpha": ALPHA, "claims_tested": k,
                "claim_alpha": ALPHA / k if k else None, "verdicts": tally([f.verdict for f in self.found]),
                "intervals": "verdicts: anytime-valid intervals at alpha / K (anytime_valid); low/high: fixed-n 95% "
                             "t-intervals, descriptive", "power_alpha": ALPHA / k if k else None,
                "over_training_images": self.images.get("Findings over training", (None, None))[1],
                "provenance": self.origin.record(), "claims": [f.record() for f in self.found],
                "sign_test": {"method": SIGN_METHOD, "alpha": ALPHA / k if k else None,
                              "reads": "does one cell score better in more than half of the seeds (ties count "
                                       "against); anytime-valid, distribution-free"},
                "shape_rule": SHAPE_RULE, "outlier_rule": OUTLIER_RULE,
                "flagged_seeds": [f.record() for f in self.flags],
                "every_score": {"tests": self.others[0].claims if self.others else 0, "family_wise_alpha": ALPHA,
                                "correction": "bonferroni over claims x scores",
                                "claims": [r.record() for r in self.others]}}

    def markdown(self) -> str:
        out = [f"# {self.runs.name}: what the ablation found", ""]
        for line in self.header():
            out += [line, ""]
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
        for title, (path, caption) in self.images.items():
            out += [f"### {title}", "", f"![{title}]({path.name})", ""] + ([caption, ""] if caption else [])
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
        for title, (path, caption) in self.images.items():
            data = base64.b64encode(path.read_bytes()).decode()
            parts.append(f"<h3>{html.escape(title)}</h3><img alt='{html.escape(title)}' "
                         f"src='data:image/png;base64,{data}'>" + (f"<p>{_inline(caption)}</p>" if caption else ""))
        style = ("body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}"
                 "table{border-collapse:collapse;margin:1em 0;font-size:0.9em}th,td{padding:4px 10px;"
                 "border-bottom:1px solid #ddd;text-align:left}th{background:#f4f4f4}img{max-width:100%}"
                 "code{background:#f4f4f4;padding:1px 4px}")
        return (f"<!doctype html><html><head><meta charset='utf-8'><title>p2p report: "
                f"{html.escape(self.runs.name)}</title><style>{style}</style></head><body>{''.join(parts)}"
                "</body></html>\n")


def _inline(text: str) -> str:
    """Escape, then turn `code` spans into <code>, **bold** into <b> and *italics* into <i>."""
    escaped = html.escape(text)
    pieces = escaped.split("`")
    out = []
    for i, piece in enumerate(pieces):
        if i % 2:
            out.append(f"<code>{piece}</code>")
        else:
            piece = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", piece)
            out.append(re.sub(r"\*(\S.*?)\*", r"<i>\1</i>", piece))
    return "".join(out)


def _spec_argument(sweep: str):
    """The loaded spec where `sweep` is a spec's path (as `p2p sweep` takes it), else None (a sweep's name)."""
    if not sweep.endswith((".yaml", ".yml")) and "/" not in sweep:
        return None

    return load_spec(Path(sweep))


def _dataset(runs) -> str | None:
    """The dataset the sweep's runs trained on (their `data.dataset` param), for how to read the paper's table."""
    values = runs.trials["dataset"].dropna().unique() if "dataset" in runs.trials else []
    return str(values[0]) if len(values) else None

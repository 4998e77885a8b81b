"""The report command: its arguments and what it runs, defined once for `p2p report` (p2p.cli) and
`python -m analysis` (analysis/__main__.py).

Light on purpose (argparse only): p2p.cli builds every subcommand's parser at start-up, so the report's
pandas, matplotlib and MLflow are imported only when a report is written (`report`).
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_report_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("sweep", help="sweep name (the MLflow experiment; sweeps/<name>.yaml) or a spec's path")
    parser.add_argument("--scale", default=None, help="which scale's runs (default: the newest sweep's)")
    parser.add_argument("--runs", default=None, metavar="PATH",
                        help="rebuild from a published runs.csv (and the epochs.csv beside it) instead of the MLflow "
                             "store, e.g. results/cpu/loss/runs.csv")
    parser.add_argument("--out", default="reports", help="folder for <out>/<sweep>/ (default: reports; the published "
                        "copy: results/cpu)")
    parser.add_argument("--samples", type=int, default=4, help="test images in the qualitative figure (0: none)")
    parser.add_argument("--no-log", action="store_true", help="do not log the report on the sweep's parent run")


def report(args: argparse.Namespace) -> int:
    """Write the report that `add_report_arguments`' options ask for and say which files it wrote."""
    # lazy: pandas, matplotlib and MLflow, which only writing a report needs (see the module's docstring)
    from analysis.report import build_report

    out = build_report(args.sweep, args.scale, Path(args.out), log=not args.no_log, samples=args.samples,
                       runs_csv=Path(args.runs) if args.runs else None)
    print(f"wrote {out / 'report.md'} (figures beside it), {out / 'report.html'}, {out / 'findings.json'} and the "
          f"per-seed data {out / 'runs.csv'}, {out / 'epochs.csv'}")
    return 0

"""`python -m analysis SWEEP [--scale cpu|paper] [--out DIR]`: write a sweep's report (what `make report` runs).

`--out results/cpu` writes the published copy: results/cpu/SWEEP/report.md, its figures and findings.json.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from p2p.errors import UserError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m analysis", description="write the report of a sweep")
    parser.add_argument("sweep", help="sweep name (sweeps/<name>.yaml, the MLflow experiment)")
    parser.add_argument("--scale", default=None, help="which scale's runs (default: the newest sweep's)")
    parser.add_argument("--out", default="reports", help="folder for reports/<sweep>/ (default: reports)")
    parser.add_argument("--samples", type=int, default=4, help="test images in the qualitative figure (0: none)")
    parser.add_argument("--no-log", action="store_true", help="do not log the report on the sweep's parent run")
    args = parser.parse_args(argv)
    try:
        from analysis.report import build_report

        out = build_report(args.sweep, args.scale, Path(args.out), log=not args.no_log, samples=args.samples)
    except UserError as exc:
        print(f"p2p: error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {out / 'report.md'} (figures beside it), {out / 'report.html'} and {out / 'findings.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

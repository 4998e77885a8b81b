"""`python -m analysis SWEEP [--scale cpu|paper] [--out DIR]`: the same as `p2p report SWEEP ...` (what `make report` runs).

`--out results/cpu` writes the published copy: results/cpu/SWEEP/report.md, its figures and findings.json.
Its arguments and what it runs are analysis.command's, shared with `p2p report`; it ends through p2p.command.run
as every p2p command does.
"""

from __future__ import annotations

from analysis.command import add_report_arguments, report
from p2p.command import Parser, run


def main(argv: list[str] | None = None) -> int:
    parser = Parser(prog="python -m analysis", description="write a sweep's report: scores, findings, figures")
    add_report_arguments(parser)
    args = parser.parse_args(argv)
    return run(lambda: report(args))


if __name__ == "__main__":
    raise SystemExit(main())

"""`python -m analysis SWEEP [--scale cpu|paper] [--out DIR]`: the same as `p2p report SWEEP ...` (what `make report` runs).

`--out results/cpu` writes the published copy: results/cpu/SWEEP/report.md, its figures and findings.json.
"""

from __future__ import annotations

import sys

from p2p.cli import main as p2p_main


def main(argv: list[str] | None = None) -> int:
    return p2p_main(["report", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    raise SystemExit(main())

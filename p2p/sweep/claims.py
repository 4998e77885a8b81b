"""What the sweep knows of its claims: a plain record that `p2p sweep` is handed (the CLI reads it with
`analysis.findings.read_findings`; this package never imports `analysis`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from p2p.sweep.spec import SweepSpec


@dataclass(frozen=True)
class Findings:
    """The claims of a sweep as its finished runs judge them (anytime-valid verdicts: reading them after
    every round of seeds keeps their error rate)."""

    claims: int
    open_cells: frozenset[str]  # the cells that the claims not yet resolved compare: where more seeds could help
    lines: tuple[str, ...]  # for the dry run: the verdicts counted, then a line per claim


FindingsReader = Callable[[SweepSpec, str], Findings]  # (spec, scale) -> the findings so far

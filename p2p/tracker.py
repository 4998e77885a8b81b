"""Compatibility only: p2p/sweep/worker.py, being changed on another branch, still imports `FAILED` and `RUNNING`
from here. The interface is p2p.tracking_protocol (`RunStatus.FAILED`, `RunStatus.RUNNING`); delete this module
once worker.py imports from there (the import contract "Only the sweep worker uses p2p.tracker" keeps it so).
"""

from p2p.tracking_protocol import RunStatus

RUNNING, FAILED = RunStatus.RUNNING, RunStatus.FAILED

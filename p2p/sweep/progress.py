"""Where a (cell, seed) of a sweep stands: one name for each state, read by the driver, the rounds, the estimate and
`--status` (optuna-free: the study module reads the trials, these are the words for what it found)."""

from __future__ import annotations

from enum import StrEnum


class Progress(StrEnum):
    """Where a (cell, seed) stands, read from all its trials (KeyState.state): what the driver, the rounds, the
    estimate and `--status` compare. A trial's own state is one of the constants above."""

    DONE = "done"  # a trial completed (or was pruned)
    RUNNING = "running"
    WAITING = "waiting"  # queued, no worker yet
    FAILED = "failed"  # failed for a reason (NaN, bad config) or kept killing its worker
    MISSING = "missing"  # no trial to run: never queued, or its worker died and the retry was not queued

    @property
    def settled(self) -> bool:
        """Done or failed: no worker will take it up again unless asked (--retry-failed)."""
        return self in (Progress.DONE, Progress.FAILED)

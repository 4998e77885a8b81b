"""Whether and where a run can go on: the checkpoint checked against the config it resumes with, the newest
run folder of a config left unfinished, and the epoch a stop left saved but not logged."""

from __future__ import annotations

from pathlib import Path

from p2p import checkpoint, contract
from p2p.config import RunConfig, flatten, to_dict
from p2p.errors import UserError
from p2p.tracking_protocol import Tracker


def resumable_checkpoint(cfg: RunConfig, run_dir: Path) -> dict | None:
    """The checkpoint in `run_dir` if there is one, checked against `cfg`: what a run learns may not change
    between attempts (how and where it executes, `runtime.*` and `eval.every`, may). A key the checkpoint's
    config lacks (it predates the key) had the key's default value then."""
    path = run_dir / contract.CHECKPOINT_FILE
    if not path.is_file():
        return None
    state = checkpoint.load(path)
    saved, current = flatten(state["config"]), flatten(to_dict(cfg))
    defaults = flatten(to_dict(RunConfig()))
    for key in sorted(set(saved) | set(current)):
        if key.startswith("runtime.") or key in ("eval.every",):
            continue
        before = saved.get(key, defaults.get(key))
        if before != current.get(key):
            how = "" if key in saved else " (the default: the checkpoint predates the key)"
            raise UserError(f"{path}: cannot resume, config key '{key}' was {before!r}{how} "
                            f"and is now {current.get(key)!r}")
    return state


def find_resumable(out_dir: Path, name: str) -> Path | None:
    """Newest run folder of this config name whose checkpoint is not finished (or whose last epoch was saved
    but whose generator was not: a run stopped while ending)."""
    candidates = []
    for path in (out_dir / name).glob(f"*/{contract.CHECKPOINT_FILE}"):
        candidates.append((path.stat().st_mtime, path.parent))
    for _, folder in sorted(candidates, reverse=True):
        state = checkpoint.load(folder / contract.CHECKPOINT_FILE)
        if not state.get("finished") or not (folder / contract.GENERATOR_FILE).is_file():
            return folder
    return None


def log_unlogged_epoch(tracker: Tracker, saved: dict) -> None:
    """The checkpoint's epoch, logged if the run stopped between saving it and logging its metrics."""
    metrics = saved.get("metrics")
    if metrics and saved["epoch"] not in tracker.logged_steps(next(iter(metrics))):
        tracker.log_metrics(metrics, step=saved["epoch"])

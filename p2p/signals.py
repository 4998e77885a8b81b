"""Stop signals as exceptions: SIGINT and SIGTERM end a command through its cleanup.

Python turns only SIGINT into an exception (KeyboardInterrupt); SIGTERM, what `kill`, the sweep
command and most schedulers send, would end the process on the spot and leave its MLflow run
RUNNING. `install()` makes both raise `Stopped`, a KeyboardInterrupt that knows which signal it
was, so the trainer can mark its run KILLED with the reason and a sweep worker can put its trial
back in the queue.

Two rules keep that cleanup safe:
- Inside `held()` (every call to a tracking store or the sweep storage, a checkpoint being
  written) a stop waits until the block ends: an exception raised in the middle of a database
  transaction would leave its lock held, and the cleanup's own writes would then wait on it.
- Once stopping, another signal is ignored (Ctrl-C reaches a sweep and its workers at once, and
  the sweep then sends its workers SIGTERM), unless it is the same signal again: the user insists,
  and the process stops at once.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from typing import Callable, Iterator

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Stopped(KeyboardInterrupt):
    """A stop signal arrived; `reason` ("stopped by SIGTERM") is what the MLflow run's `p2p.failure` tag says."""

    def __init__(self, signum: int):
        self.signum = int(signum)
        self.reason = f"stopped by {signal.Signals(signum).name}"
        super().__init__(self.reason)


class _State:
    stopping: int | None = None  # the signal that is being acted on
    held: int = 0  # depth of `held()` blocks
    pending: int | None = None  # a signal that arrived inside one


def _on_signal(signum: int, frame) -> None:
    first = _State.stopping if _State.stopping is not None else _State.pending
    if first is not None:
        if signum != first:
            return  # another signal while stopping: let the cleanup finish
        _State.pending = None  # the same one again: stop at once, held or not
    elif _State.held:
        _State.pending = signum
        return
    _State.stopping = signum
    raise Stopped(signum)


def install() -> Callable[[], None]:
    """Make SIGINT and SIGTERM raise `Stopped` in the main thread; returns what puts the old handlers back."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None  # only the main thread may set handlers (and only it receives signals)
    previous = {s: signal.getsignal(s) for s in STOP_SIGNALS}
    _State.stopping, _State.held, _State.pending = None, 0, None
    for s in STOP_SIGNALS:
        signal.signal(s, _on_signal)

    def restore() -> None:
        for s, handler in previous.items():
            signal.signal(s, handler)
        _State.stopping, _State.held, _State.pending = None, 0, None

    return restore


@contextlib.contextmanager
def held() -> Iterator[None]:
    """A step that must not be cut in half (a store's transaction, a checkpoint): a stop waits until it is done.

    The stop is raised when the outermost block ends normally; a block that raises lets its own error go on.
    """
    _State.held += 1
    try:
        yield
    finally:
        _State.held -= 1
    if not _State.held and _State.pending is not None:
        signum, _State.pending = _State.pending, None
        _State.stopping = signum
        raise Stopped(signum)


def reason(stop: BaseException) -> str:
    """Why a run stopped, for its `p2p.failure` tag: the signal, or Ctrl-C's SIGINT for a plain KeyboardInterrupt."""
    return getattr(stop, "reason", "stopped by SIGINT")


def exit_status(stop: BaseException) -> int:
    """The shell's convention for a process ended by a signal: 128 + its number (130 for SIGINT, 143 for SIGTERM)."""
    return 128 + getattr(stop, "signum", int(signal.SIGINT))

"""How every p2p command parses its arguments and ends: `Parser` (argparse, its mistakes on one line) and `run`.

Shared by `p2p` (p2p.cli) and the `analysis` commands (`python -m analysis`, `analysis.summary`,
`analysis.protocol`), which sit below the CLI and so cannot import it. Torch-free: a command's start-up
pays for what the command itself imports.
"""

from __future__ import annotations

import argparse
import sys
from typing import Callable

from p2p import signals
from p2p.errors import TrainingFault, UserError

# Every character that ends a line for a terminal or str.splitlines, as the escape a reader can see.
LINE_BREAKS = {c: repr(c)[1:-1] for c in "\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029"}


def one_line(message: object) -> str:
    """A message as one line: a key or value quoted from a file may hold line breaks (shown escaped)."""
    return str(message).strip().translate(str.maketrans(LINE_BREAKS))


class Parser(argparse.ArgumentParser):
    """argparse, with its mistakes on one line like every other p2p error (the usage is one --help away)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {one_line(message)} (see {self.prog} --help)\n")


def run(command: Callable[[], int], quiet_stop: bool = False) -> int:
    """The one mapping from how a command ends to what the user sees and the exit status, for every p2p command
    (and `python -m analysis`, `python -m analysis.summary`, `python -m analysis.protocol`):

    a user error: one line on stderr, 2; SIGINT or SIGTERM (p2p.signals; the cleanup has run on the way here):
    "p2p: stopped by SIGTERM", 128 + the signal; a training fault (a non-finite loss): one line, 1.
    """
    restore = signals.install()
    try:
        return command()
    except UserError as exc:
        print(f"p2p: error: {one_line(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as stop:
        if not quiet_stop:
            print(f"p2p: {signals.reason(stop)}", file=sys.stderr)
        return signals.exit_status(stop)
    except TrainingFault as fault:
        print(f"p2p: training stopped: {one_line(fault)}", file=sys.stderr)
        return 1
    finally:
        restore()

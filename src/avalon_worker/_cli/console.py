"""What the commands tell the person at the terminal: one-line errors, notices, and the log.

The only place that configures logging. Errors a person can fix are printed as one line,
without a traceback (`errors.Error.diagnostics()`). Every command exits 0 when it did its job,
1 when something failed a check or could not be reached (a failed work order or verification,
an unreachable worker), 2 when the command or its set-up is wrong (a bad option or file).
"""

from __future__ import annotations

import logging
import sys

from ..errors import Error, SetupError
from ..orderlog import FORMAT

READY_PREFIX = "listening on "  # `serve` prints it and its endpoint on stdout once it serves


class UsageError(SetupError):
    """A setup problem the user can fix; printed as one line."""


def say(message: str) -> None:
    """A one-line notice for the person at the command line (stderr)."""
    print(f"avalon-worker: {message}", file=sys.stderr, flush=True)


def report(exc: Error) -> int:
    """Print `exc` as one line (with its hint) on stderr; return its exit status."""
    print(f"avalon-worker: {exc.diagnostics()}", file=sys.stderr)
    return exc.exit_status


def configure_logging(level: str) -> None:
    """Log records at `level` and above to stderr, in the format of the per-order line."""
    # The format uses no caller, thread or process fields: skip collecting them for every record
    # (the per-order line is on the hot path; see "Optimization" in the logging HOWTO).
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    logging.basicConfig(level=getattr(logging, level.upper(), logging.INFO), format=FORMAT, stream=sys.stderr)

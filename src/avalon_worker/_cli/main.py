"""The entry points: `avalon-worker COMMAND …` and `wo-processor …`.

Each parses its command line (with a `--config` file where the command takes one), then imports
the chosen command's module and runs it: only that command's code is ever loaded. An `Error`
is printed as one line with its exit status (`console`); Ctrl-C is exit status 130; a reader
that closed the pipe (`avalon-worker … | head`) ends the command silently, as `cat` does.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

from .. import defaults
from ..errors import Error
from . import parser as command_line
from .console import UsageError, report
from .options import parse_with_config

EXIT_CLOSED_PIPE = 128 + 13  # what a shell shows for `cat` killed by SIGPIPE


def main(argv: Sequence[str] | None = None) -> int:
    """`avalon-worker`: returns the exit status."""
    parser, serve, config = command_line.build()
    try:
        args = parse_with_config(parser, argv, serve, (serve, config))
    except Error as exc:
        return report(exc)
    except BrokenPipeError:  # `--help | head`
        return closed_pipe()
    return run(args)


def wo_processor_main(argv: Sequence[str] | None = None) -> int:
    """The original worker's command: `wo-processor --bind URL --workload FILE`."""
    parser = command_line.build_wo_processor()
    try:
        args = parse_with_config(parser, argv, parser, (parser,))
    except Error as exc:
        return report(exc)
    return run(args)


def run(args: argparse.Namespace) -> int:
    """Run the command `args` were parsed for: its module's `run(args)`."""
    try:
        if getattr(args, command_line.NEEDS_STORE, False) and not args.store:
            raise UsageError(f"no work-order store: give --store LOCATION, or set {defaults.STORE_ENV}")
        module = importlib.import_module(f"{__package__}.{getattr(args, command_line.RUNS)}")
        return int(module.run(args))
    except Error as exc:
        return report(exc)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return closed_pipe()


def closed_pipe() -> int:
    """The reader of our standard output has gone: say nothing (there is no one to tell), and
    point stdout at /dev/null so that the interpreter's last flush at exit does not fail too."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    return EXIT_CLOSED_PIPE

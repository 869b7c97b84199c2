"""The entry points: `avalon-worker COMMAND …` and `wo-processor …`.

Each parses its command line (with a `--config` file where the command takes one), then imports
the chosen command's module and runs it: only that command's code is ever loaded. An `Error`
is printed as one line with its exit status (`console`); Ctrl-C is exit status 130.
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Sequence

from ..errors import Error
from . import parser as command_line
from .console import report
from .options import parse_with_config


def main(argv: Sequence[str] | None = None) -> int:
    """`avalon-worker`: returns the exit status."""
    parser, serve, config = command_line.build()
    try:
        args = parse_with_config(parser, argv, serve, (serve, config))
    except Error as exc:
        return report(exc)
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
        module = importlib.import_module(f"{__package__}.{getattr(args, command_line.RUNS)}")
        return int(module.run(args))
    except Error as exc:
        return report(exc)
    except KeyboardInterrupt:
        return 130

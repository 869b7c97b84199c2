"""`avalon-worker run-workload NAME INPUT…`: run a workload here, on plain inputs, without a worker.

For workload authors: the registry is loaded as `serve` loads it (`--workloads FILE`, or the
built-in one), the workload runs in this process on the inputs, and each output is printed. A
workload that raises is shown with its message and traceback, which a worker never shows
(`serve --debug-workloads` logs them). Nothing is encrypted, signed or kept; a workload that
keeps files gets them in a temporary directory unless `--state-dir` is given.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ..workload.registry import WorkloadRegistry
from .console import UsageError, configure_logging
from .inputs import read_inputs


@dataclass(frozen=True)
class Item:
    """One input item, as the registry hands it to a workload."""

    index: int
    data: bytes


def run(args: argparse.Namespace) -> int:
    """Print each output of the workload on the inputs; exit 1 if it fails (with its traceback)."""
    configure_logging("INFO")
    with tempfile.TemporaryDirectory(prefix="avalon-worker-run-") as scratch:
        data_root = Path(args.state_dir or scratch) / "workloads"
        registry = WorkloadRegistry.from_file(args.workloads, data_root) if args.workloads \
            else WorkloadRegistry.builtin(data_root)
        if args.workload not in registry:
            raise UsageError(f"no workload {args.workload!r} in {args.workloads or 'the built-in registry'}; it has "
                             f"{', '.join(registry.names())}")
        inputs = read_inputs(args)
        registry.debug = True  # the author's own machine and data: show what it raised
        outputs = registry.run(args.workload, [Item(index, data) for index, data in enumerate(inputs)])
    for output in outputs:
        sys.stdout.write(output.decode("utf-8", errors="replace") + "\n")
    return 0

"""A work order's inputs from the command line: each INPUT one item (UTF-8 text), then each
`--input-file FILE` one more, its bytes as they are (`-`: standard input), for `submit` and
`run-workload`."""

from __future__ import annotations

import argparse
import sys

from .console import UsageError


def read_inputs(args: argparse.Namespace) -> list[bytes]:
    """The INPUT texts, then each --input-file's bytes (`-`: standard input, once)."""
    inputs = [text.encode("utf-8") for text in args.inputs]
    files = args.input_file or []
    if files.count("-") > 1:
        raise UsageError("--input-file - (standard input) can be given once")
    for name in files:
        if name == "-":
            inputs.append(sys.stdin.buffer.read())
            continue
        try:
            with open(name, "rb") as file:
                inputs.append(file.read())
        except OSError as exc:
            raise UsageError(f"--input-file: cannot read {name}: {exc.strerror}") from None
    if not inputs:
        raise UsageError("give the work order's inputs: INPUT text, or --input-file FILE (- for standard input)")
    return inputs

"""`avalon-worker submit`: run one work order and print its verified result."""

from __future__ import annotations

import argparse

from ..crypto import SigningKey
from .verify import attested_client


def run(args: argparse.Namespace) -> int:
    """Send the inputs to `--workload` (signed with a fresh key if `--sign`); print each output."""
    key = SigningKey.generate() if args.sign else None
    inputs = [text.encode("utf-8") for text in args.inputs]
    with attested_client(args) as client:
        outputs = client.submit(args.workload, inputs, requester_key=key, include_data_hash=not args.no_data_hash)
    for output in outputs:
        print(output.decode("utf-8", errors="replace"))
    return 0

"""`avalon-worker signup`: fetch a worker's signup and verify its encryption-key signature."""

from __future__ import annotations

import argparse
import json
import sys

from ..client import WorkerClient
from .console import say


def run(args: argparse.Namespace) -> int:
    """Print the signup (stdout) and what was verified (stderr)."""
    with WorkerClient(args.endpoint, args.timeout_s, on_wait=say) as client:
        worker = client.worker()
    print(json.dumps(dict(worker.signup), indent=2))
    print(f"encryption key signature: verified (worker id {worker.worker_id})", file=sys.stderr)
    return 0

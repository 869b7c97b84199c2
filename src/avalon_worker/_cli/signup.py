"""`avalon-worker signup`: fetch a worker's signup and verify its encryption-key signature."""

from __future__ import annotations

import argparse
import json
import sys

from ..front.listener_client import ListenerClient
from . import clients


def run(args: argparse.Namespace) -> int:
    """Print the signup (stdout) and what was verified (stderr). Through `--listener`, the
    signup is the worker's keys as `WorkerRetrieve` gives them, and its id."""
    with clients.open_client(args) as client:
        worker = client.worker()
    signup = dict(worker.signup)
    if isinstance(client, ListenerClient):
        signup["worker_id"] = client.worker_id
    print(json.dumps(signup, indent=2))
    print(f"encryption key signature: verified (worker id {worker.worker_id})", file=sys.stderr)
    return 0

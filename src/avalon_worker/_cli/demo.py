"""`avalon-worker demo`: a worker with a new identity, the nine sample work orders, verified.

`start_worker_process` starts `avalon-worker serve` on a free loopback port and waits until it
serves, and `read_ready` reads what a `serve --listen-http` says when it serves: the tests and
benchmarks start their workers with them too.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from importlib import resources

from ..client import WorkerClient
from ..front.door import READY_PREFIX as FRONT_READY_PREFIX
from .console import READY_PREFIX, UsageError
from .run_orders import load_work_orders, run_orders


def start_worker_process(
    state_dir: str, extra: Sequence[str] = (), timeout_s: float = 60.0, launcher: Sequence[str] = (sys.executable,),
    stderr: int | None = None,
) -> tuple[subprocess.Popen[str], str]:
    """Start `avalon-worker serve` on a free loopback port; return the process and its endpoint.

    `launcher` runs `-m avalon_worker`: this interpreter by default, or e.g. another one, or
    `gramine-direct MANIFEST`. Its log goes to our standard error unless `stderr` says otherwise.
    """
    command = [*launcher, "-m", "avalon_worker", "serve", "--bind", "tcp://127.0.0.1:*", "--state-dir", state_dir, *extra]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=stderr, text=True)
    assert process.stdout is not None
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if line.startswith(READY_PREFIX):
            return process, line[len(READY_PREFIX):].strip()
        if not line and process.poll() is not None:
            break
    process.kill()
    process.wait()
    raise UsageError("the demo worker did not start (see its log above)")


def read_ready(process: subprocess.Popen[str], endpoint_prefix: str = READY_PREFIX) -> tuple[str, str]:
    """(ZMQ endpoint, HTTP URL) from the standard output of a `serve --listen-http` process
    started with `stdout=PIPE, text=True`; RuntimeError if it stops first."""
    assert process.stdout is not None
    endpoint = url = ""
    while not url:
        line = process.stdout.readline()
        if not line:
            raise RuntimeError(f"the worker stopped before serving HTTP (exit status {process.wait()})")
        if line.startswith(endpoint_prefix):
            endpoint = line[len(endpoint_prefix):].strip()
        elif line.startswith(FRONT_READY_PREFIX):
            url = line[len(FRONT_READY_PREFIX):].strip() + "/"
    return endpoint, url


def run(args: argparse.Namespace) -> int:
    """Start a worker, run the sample orders against it, stop it."""
    orders_file = resources.files("avalon_worker").joinpath("data/test_work_orders.json")
    orders = load_work_orders(str(orders_file))
    with tempfile.TemporaryDirectory(prefix="avalon-worker-demo-") as state_dir:
        print("starting a worker with a new identity (this creates its RSA key) ...", flush=True)
        process, endpoint = start_worker_process(state_dir, ["--log-level", "ERROR", "--attestation", "none"])
        try:
            print(f"worker listening on {endpoint}; sending {len(orders)} work orders\n", flush=True)
            with WorkerClient(endpoint, args.timeout_s) as client:
                failures = run_orders(client, orders)
        finally:
            process.terminate()
            process.wait(timeout=30)
    return 1 if failures else 0

#!/usr/bin/env python3
"""Machine instructions per reused-key hello, counted by callgrind: steady on a noisy machine.

Two measures, each the same work at two order counts, the difference divided by the orders
between them, so that start-up, key generation and shut-down cancel out:
- `serve`: a real `avalon-worker serve --workers 1 --spare-workers 0` (RSA-2048, --log-level ERROR) under
  `valgrind --tool=callgrind --trace-children=yes`, driven by `throughput.py`'s load generator
  (4 connections × 4 orders in flight) for exactly N orders, then stopped; the supervisor's and
  the worker process's instructions each;
- `handle`: `Processor.handle` in this process (run again under callgrind) over N pre-built frames;
- `front`: a real `serve --workers 1 --listen-http` under callgrind, driven by `http_listener.py`'s
  HTTP load generator (8 keep-alive connections, each order a WorkOrderSubmit that waits for its
  result, then a WorkOrderGetResult, as Avalon's SDK does; a fresh session key per order) for
  exactly N orders: the front-door process's instructions (HTTP server, listener, pump, SQLite
  store and its thread).
Whichever `avalon_worker` this interpreter imports is measured (it prints where from: a tree's `src`
put first on PYTHONPATH measures that tree).

Run by hand (needs valgrind; minutes, callgrind runs code some fifty times slower):
`python benchmarks/instructions.py [--what serve|handle|front|all] [--orders 100,500]`.
"""

from __future__ import annotations

import argparse
import glob
import multiprocessing
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Callable
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import throughput  # noqa: E402

from avalon_worker._cli.demo import start_worker_process  # noqa: E402
from avalon_worker.identity import load_or_create  # noqa: E402

SERVE = ["--rsa-bits", "2048", "--workers", "1", "--spare-workers", "0", "--attestation", "none", "--log-level", "ERROR"]
HELLO = throughput.Scenario("hello 5 B, reused key", "python-hello", b"World", False)


def build() -> str:
    """Where the avalon_worker measured here is imported from."""
    import avalon_worker

    return os.path.dirname(avalon_worker.__file__)


def _callgrind(out_dir: str) -> list[str]:
    return ["valgrind", "-q", "--tool=callgrind", "--trace-children=yes",
            f"--callgrind-out-file={out_dir}/callgrind.%p"]


def _totals(out_dir: str) -> dict[int, tuple[str, int]]:
    """{pid: (command, instructions)} of every callgrind output file in `out_dir`."""
    found = {}
    for path in glob.glob(os.path.join(out_dir, "callgrind.*")):
        with open(path, errors="replace") as handle:
            text = handle.read()
        command = re.search(r"^cmd: (.*)$", text, re.M)
        total = re.search(r"^(?:summary|totals): (\d+)", text, re.M)
        if total:
            found[int(path.rsplit(".", 1)[1])] = (command.group(1) if command else "?", int(total.group(1)))
    return found


def _drive(start_method: str, load_generator: Callable[..., None], args: tuple[Any, ...], orders: int) -> None:
    """Run `load_generator(*args, ready, start, results)` (throughput.py's and http_listener.py's
    load generators share that form) in a process of its own for exactly `orders` orders."""
    ctx = multiprocessing.get_context(start_method)
    ready, start, results = ctx.Queue(), ctx.Event(), ctx.Queue()
    driver = ctx.Process(target=load_generator, args=(*args, ready, start, results))
    driver.start()
    ready.get(timeout=600)
    start.set()
    count, *_, ok, _ = results.get(timeout=3600)  # both put (count, …, verified, client CPU)
    driver.join()
    if count != orders or not ok:
        raise SystemExit(f"{orders} orders sent, {count} answered (verified: {ok})")


def serve_run(state: str, orders: int) -> tuple[int, int]:
    """(supervisor, worker process) instructions of one `serve` run that handled `orders` orders."""
    load = throughput.Load(clients=1, connections=4, depth=4, seconds=10_000.0, pin_cpus=False)
    with tempfile.TemporaryDirectory() as out:
        process, endpoint = start_worker_process(state, SERVE, timeout_s=600, launcher=[*_callgrind(out), sys.executable])
        try:
            _drive("fork", throughput._client, (endpoint, load, HELLO, orders), orders)
        finally:
            process.terminate()
            process.wait(timeout=600)
        totals = _totals(out)
    supervisor = totals.pop(process.pid)[1]
    workers = [total for command, total in totals.values() if "python" in command]
    if len(workers) != 1:
        raise SystemExit(f"expected one worker process under callgrind, found {sorted(totals.values())}")
    return supervisor, workers[0]


def front_run(state: str, orders: int) -> int:
    """The front-door process's instructions in one `serve --listen-http` run of `orders` orders."""
    import http_listener

    from avalon_worker._cli.demo import read_ready
    from avalon_worker.client import WorkerClient

    with tempfile.TemporaryDirectory() as out:
        command = [*_callgrind(out), sys.executable, "-m", "avalon_worker", "serve", "--bind", "tcp://127.0.0.1:*",
                   "--state-dir", state, *SERVE, "--listen-http", "127.0.0.1:0"]
        process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
        try:
            endpoint, url = read_ready(process)
            with WorkerClient(endpoint) as client:
                signup = dict(client.worker().signup)
            _drive("spawn", http_listener._http_client, (url, signup, orders, 8, 10_000.0), orders)
        finally:
            process.terminate()
            process.wait(timeout=600)
        fronts = [total for command, total in _totals(out).values() if "front_door" in command]
    if len(fronts) != 1:
        raise SystemExit(f"expected one front-door process under callgrind, found {len(fronts)}")
    return fronts[0]


def handle_run(state: str, orders: int) -> int:
    """Instructions of this script, run again under callgrind, handling `orders` frames in process."""
    with tempfile.TemporaryDirectory() as out:
        subprocess.run([*_callgrind(out), sys.executable, os.path.abspath(__file__), "--child", str(orders), state],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return sum(total for _, total in _totals(out).values())


def child(orders: int, state: str) -> None:
    import logging

    from _handle_floor import reused_key_hello

    logging.disable(logging.INFO)
    processor, frame = reused_key_hello(state)
    for _ in range(orders):  # the same frame, as throughput.py sends it: no replay guard here
        processor.handle(frame)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--what", choices=("serve", "handle", "front", "all"), default="all")
    parser.add_argument("--orders", default="100,500", help="the two order counts, LOW,HIGH")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        child(int(args.child[0]), args.child[1])
        return 0
    low, high = (int(n) for n in args.orders.split(","))
    print(f"avalon_worker: {build()}; reused-key hello; ({high} orders − {low}) ÷ {high - low}", flush=True)
    with tempfile.TemporaryDirectory() as state:
        # one RSA-2048 identity for every run: key generation's cost is random and would not cancel
        load_or_create(state, 2048)
        if args.what in ("serve", "all"):
            (s_low, w_low), (s_high, w_high) = serve_run(state, low), serve_run(state, high)
            print(f"serve --workers 1: supervisor {(s_high - s_low) / (high - low):,.0f} instructions/order, "
                  f"worker process {(w_high - w_low) / (high - low):,.0f}", flush=True)
        if args.what in ("handle", "all"):
            in_low, in_high = handle_run(state, low), handle_run(state, high)
            print(f"Processor.handle in process: {(in_high - in_low) / (high - low):,.0f} instructions/order")
        if args.what in ("front", "all"):
            f_low, f_high = front_run(state, low), front_run(state, high)
            print(f"serve --workers 1 --listen-http: front door {(f_high - f_low) / (high - low):,.0f} instructions/order "
                  "(HTTP submit + get-result, fresh session keys)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

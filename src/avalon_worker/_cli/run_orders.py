"""`avalon-worker run-orders`: every work order of a test_work_orders.json file, each result verified.

Through a worker's ZMQ endpoint, or through an HTTP listener (`--listener`) to one or every
worker it lists; rows are shown as orders complete (`order_table`).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..client import WorkerClient
from ..front.listener_client import ListenerClient
from ..requester import VerificationError, WorkOrderFailed
from .console import UsageError, say
from .order_table import JsonLines, Outcome, Table, terminal_width
from .verify import attested_client


def load_work_orders(path: str | Path) -> list[tuple[str, str]]:
    """(workloadId, params) pairs from a file shaped like the original tests/test_work_orders.json."""
    try:
        document = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror}") from None
    except ValueError as exc:
        raise UsageError(f"{path} is not valid JSON: {exc}") from None
    orders = document.get("workOrders") if isinstance(document, dict) else None
    if not isinstance(orders, list):
        raise UsageError(f'{path} must hold {{"workOrders": [{{"workloadId": ..., "params": ...}}, ...]}}')
    if not orders:
        raise UsageError(f"{path} has no work orders")
    pairs = []
    for number, order in enumerate(orders, 1):
        if not isinstance(order, dict) or not isinstance(order.get("workloadId"), str):
            raise UsageError(f"{path}: work order {number} has no workloadId")
        params = order.get("params", "")
        pairs.append((order["workloadId"], params if isinstance(params, str) else json.dumps(params)))
    return pairs


def run_orders(client: WorkerClient | ListenerClient, orders: Sequence[tuple[str, str]], out: Any = None, *,
               as_json: bool = False, attested_by: str | None = None) -> int:
    """Send each order and print its row as it completes (see `order_table`), then a summary
    that says what was verified; return how many failed. `attested_by`: the policy the worker
    passed, if it was checked."""
    out = out or sys.stdout
    client.worker()  # fetch and verify the signup before sending any input
    view = JsonLines(out, sys.stderr) if as_json else Table(out, orders, terminal_width(out))
    view.start()
    failures = 0
    started = time.perf_counter()
    for workload, params in orders:
        t0 = time.perf_counter()
        try:
            result = client.submit(workload, [params.encode("utf-8")])[0].decode("utf-8", errors="replace")
            ok = True
        except (WorkOrderFailed, VerificationError) as exc:
            result, ok = str(exc), False
            failures += 1
        view.row(Outcome(workload, params, ok, result, (time.perf_counter() - t0) * 1000))
    total = time.perf_counter() - started
    rate = len(orders) / total if total > 0 else 0.0
    view.summary(f"{len(orders) - failures} of {len(orders)} work orders verified in {total:.2f} s ({rate:.0f} work orders/s)")
    view.summary(_what_was_verified(client, attested_by))
    return failures


def _what_was_verified(client: WorkerClient | ListenerClient, attested_by: str | None) -> str:
    """One line: what "verified" covers for this worker, and what it does not."""
    checked = "signatures and encryption verified"
    if attested_by:
        return f"{checked}; the worker passed attestation policy {attested_by}"
    if not client.worker().signup.get("quote"):
        return f"{checked}; this worker runs without SGX attestation (nothing proves which code ran)"
    return f"{checked}; the worker's SGX quote was not checked (give --policy FILE)"


def run(args: argparse.Namespace) -> int:
    """`run-orders FILE`: over ZMQ (`--endpoint`, attested with `--policy`) or `--listener`."""
    orders = load_work_orders(args.file)
    if args.listener:
        return _run_orders_through_listener(args, orders)
    with attested_client(args) as client:
        failures = run_orders(client, orders, as_json=args.json, attested_by=args.policy)
    return 1 if failures else 0


def _run_orders_through_listener(args: argparse.Namespace, orders: Sequence[tuple[str, str]]) -> int:
    """The orders against `--worker-id`, or against every live worker the listener lists."""
    if args.policy:
        raise UsageError("--policy checks a worker's quote over ZMQ; it cannot be combined with --listener yet")
    ids = [args.worker_id] if args.worker_id else ListenerClient(args.listener, "", args.timeout_s).lookup()
    if not ids:
        raise UsageError(f"the listener {args.listener} lists no live worker")
    failures = 0
    for worker_id in ids:
        say(f"worker {worker_id} through {args.listener}")  # stderr: stdout is the table or the JSON
        with ListenerClient(args.listener, worker_id, args.timeout_s) as client:
            failures += run_orders(client, orders, as_json=args.json)
    return 1 if failures else 0

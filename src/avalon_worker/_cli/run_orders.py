"""`avalon-worker run-orders`: every work order of a test_work_orders.json file, each result verified.

Through a worker's ZMQ endpoint, or through an HTTP listener (`--listener`) to one or every
worker it lists; rows are shown as orders complete (`order_table`). An order's `params` is its
input: a string is one input item, a list of strings one item per string (in order), any other
JSON value one item holding its JSON text.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..front.listener_client import ListenerClient, StillPending
from ..requester import VerificationError, WorkOrderFailed
from . import clients
from .console import UsageError, say
from .order_table import JsonLines, Outcome, Table, terminal_width


@dataclass(frozen=True)
class SampleOrder:
    """A work order of the file: its workload and its input items (UTF-8 text)."""

    workload: str
    inputs: tuple[str, ...]

    @property
    def shown(self) -> str:
        """The inputs as the table shows them: the one input, or a JSON list of several."""
        return self.inputs[0] if len(self.inputs) == 1 else json.dumps(list(self.inputs), ensure_ascii=False)


def load_work_orders(path: str | Path) -> list[SampleOrder]:
    """The orders of a file shaped like the original tests/test_work_orders.json."""
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
    loaded = []
    for number, order in enumerate(orders, 1):
        if not isinstance(order, dict) or not isinstance(order.get("workloadId"), str):
            raise UsageError(f"{path}: work order {number} has no workloadId")
        loaded.append(SampleOrder(order["workloadId"], _inputs(order.get("params", ""), f"{path}: work order {number}")))
    return loaded


def _inputs(params: Any, where: str) -> tuple[str, ...]:
    if isinstance(params, str):
        return (params,)
    if isinstance(params, list):
        if not params or not all(isinstance(item, str) for item in params):
            raise UsageError(f'{where}: a list of params is one input item per string, e.g. ["a", "b"]; '
                             "give other JSON as a string")
        return tuple(params)
    return (json.dumps(params),)


def run_orders(client: clients.Client, orders: Sequence[SampleOrder], out: Any = None, *,
               as_json: bool = False, attested_by: str | None = None) -> int:
    """Send each order and print its row as it completes (see `order_table`), then a summary
    that says what was verified; return how many were not. `attested_by`: the policy the
    worker passed, if it was checked."""
    out = out or sys.stdout
    started = time.perf_counter()
    client.worker()  # fetch and verify the signup before sending any input
    view = JsonLines(out, sys.stderr) if as_json else Table(out, [(o.workload, o.shown) for o in orders],
                                                            terminal_width(out))
    view.start()
    verified = pending = 0
    for order in orders:
        t0 = time.perf_counter()
        work = client.prepare(order.workload, [text.encode("utf-8") for text in order.inputs])
        waiting = False
        try:
            outputs = clients.complete(client, work)
            result, ok = "\n".join(output.decode("utf-8", errors="replace") for output in outputs), True
            verified += 1
        except StillPending as exc:
            result, ok, waiting = str(exc), False, True
            pending += 1
        except (WorkOrderFailed, VerificationError) as exc:
            result, ok = str(exc), False
        view.row(Outcome(order.workload, order.shown, ok, result, (time.perf_counter() - t0) * 1000,
                         work.work_order_id, waiting))
    total = time.perf_counter() - started
    view.summary(f"{verified} of {len(orders)} work orders verified in {total:.2f} s ({pace(len(orders), total)})")
    if pending:
        url = client.url if isinstance(client, ListenerClient) else ""
        view.summary(f"{pending} still pending: read each later with avalon-worker result --listener {url} ID")
    if verified:
        view.summary(_what_was_verified(client, attested_by))
    return len(orders) - verified


def pace(count: int, seconds: float) -> str:
    """How fast `count` orders in `seconds` went, in words that stay true for slow orders."""
    if count <= 0 or seconds <= 0:
        return "no time measured"
    rate = count / seconds
    if rate >= 1:
        return f"{rate:.1f} work orders/s"
    return f"{seconds / count:.1f} s per work order"


def _what_was_verified(client: clients.Client, attested_by: str | None) -> str:
    """One line: what "verified" covers for this worker, and what it does not."""
    checked = "signatures and encryption verified"
    if attested_by:
        return f"{checked}; the worker passed attestation policy {attested_by}"
    if isinstance(client, ListenerClient):
        return f"{checked}; the worker's attestation was not checked (--policy needs --endpoint)"
    if not client.worker().signup.get("quote"):
        return f"{checked}; this worker runs without SGX attestation (nothing proves which code ran)"
    return f"{checked}; the worker's SGX quote was not checked (give --policy FILE)"


def run(args: argparse.Namespace) -> int:
    """`run-orders FILE`: over ZMQ (`--endpoint`, attested with `--policy`) or `--listener`."""
    clients.check(args)
    orders = load_work_orders(args.file)
    if args.listener:
        return _run_orders_through_listener(args, orders)
    with clients.open_client(args) as client:
        failures = run_orders(client, orders, as_json=args.json, attested_by=args.policy)
    return 1 if failures else 0


def _run_orders_through_listener(args: argparse.Namespace, orders: Sequence[SampleOrder]) -> int:
    """The orders against `--worker-id`, or against every live worker the listener lists."""
    failures = 0
    for worker_id in clients.listener_worker_ids(args):
        say(f"worker {worker_id} through {args.listener}")  # stderr: stdout is the table or the JSON
        with clients.open_client(args, worker_id) as client:
            failures += run_orders(client, orders, as_json=args.json)
    return 1 if failures else 0

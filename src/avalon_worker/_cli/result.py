"""`avalon-worker result ID`: read, verify and decrypt the result of an order sent earlier through
a listener (`WorkOrderGetResult`), waiting for it up to `--timeout-s`, with the keys `submit` or
`run-orders` kept for it (`kept_orders`)."""

from __future__ import annotations

import argparse

from ..front.listener_client import ListenerClient, StillPending
from ..requester import VerificationError, WorkOrderFailed
from . import kept_orders
from .console import UsageError, say


def run(args: argparse.Namespace) -> int:
    """Print each output of the order, once it is done; forget its keys."""
    if args.endpoint:
        raise UsageError("a result is read from a listener (--listener URL); over ZMQ, submit waits for it")
    kept = kept_orders.find(args.work_order_id)
    url = args.listener or kept.listener
    worker_id = args.worker_id or kept.worker_id
    client = ListenerClient(url, worker_id, args.timeout_s, on_wait=say, worker=kept.worker)
    try:
        outputs = client.result(kept.pending)
    except StillPending as exc:
        exc.hint = "ask again later"
        raise
    except (WorkOrderFailed, VerificationError):
        kept_orders.forget(kept.pending.work_order_id)
        raise
    kept_orders.forget(kept.pending.work_order_id)
    for output in outputs:
        print(output.decode("utf-8", errors="replace"))
    return 0

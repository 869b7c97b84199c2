"""The requester commands' transports: a worker's ZMQ endpoint (`--endpoint`) or an HTTP
listener (`--listener`), chosen and checked one way for `signup`, `submit`, `run-orders` and
`result`.
"""

from __future__ import annotations

import argparse

from .. import defaults
from ..client import WorkerClient
from ..front.listener_client import ListenerClient, StillPending
from ..requester import PendingWorkOrder, VerificationError, WorkOrderFailed
from . import kept_orders
from .console import UsageError, say
from .verify import attested_client

Client = WorkerClient | ListenerClient


def check(args: argparse.Namespace) -> None:
    """The options that need `--listener`, or cannot go with it; `--endpoint`'s default."""
    if args.listener is None:
        args.endpoint = args.endpoint or defaults.ENDPOINT
        if args.worker_id:
            raise UsageError("--worker-id chooses a worker behind a --listener; a ZMQ --endpoint is one worker")
    elif getattr(args, "policy", None):
        raise UsageError("--policy checks a worker's quote over ZMQ (--endpoint); it cannot be combined with "
                         "--listener yet")


def listener_worker_ids(args: argparse.Namespace) -> list[str]:
    """`--worker-id`, or the live workers the listener lists (at least one)."""
    if args.worker_id:
        return [args.worker_id]
    ids = ListenerClient(args.listener, "", args.timeout_s, on_wait=say).lookup()
    if not ids:
        raise UsageError(f"the listener {args.listener} lists no live worker")
    return ids


def one_worker_id(args: argparse.Namespace) -> str:
    """The worker behind `--listener` to use: `--worker-id`, or the only one it lists."""
    ids = listener_worker_ids(args)
    if len(ids) > 1:
        raise UsageError(f"the listener {args.listener} lists {len(ids)} live workers: choose one with --worker-id "
                         f"({', '.join(ids)})")
    return ids[0]


def open_client(args: argparse.Namespace, worker_id: str | None = None) -> Client:
    """A client for the one worker the options name (attested first with `--policy`)."""
    check(args)
    if args.listener is None:
        return attested_client(args)
    return ListenerClient(args.listener, worker_id or one_worker_id(args), args.timeout_s, on_wait=say)


def complete(client: Client, pending: PendingWorkOrder) -> list[bytes]:
    """Send `pending` and return its verified outputs. Through a listener, its keys are kept
    (`kept_orders`) until a result or an error comes back: an order still pending at the time
    limit, or whose answer was lost, can be read later with `avalon-worker result`."""
    if not isinstance(client, ListenerClient):
        return client.complete(pending)
    kept_orders.keep(pending, client.worker(), client.url, client.worker_id)
    try:
        outputs = client.complete(pending)
    except StillPending as exc:
        exc.hint = f"read it later: avalon-worker result --listener {client.url} {pending.work_order_id}"
        raise
    except (WorkOrderFailed, VerificationError):
        kept_orders.forget(pending.work_order_id)
        raise
    kept_orders.forget(pending.work_order_id)
    return outputs

"""The durable work-order store: what the HTTP listener and the pump need, and nothing else.

A store keeps five things: work orders (pending → leased → done), their outcomes (the worker's
result or error object, until the retention time has passed), leases (who runs an order, until
when), worker registrations (the signup document and a heartbeat) and work-order receipts (EEA
TC v1.1 §7: the requester's signed creation and the updates that follow it). The HTTP listener
writes orders and receipts and reads outcomes, receipts and registrations; the pump on a worker
host leases the orders addressed to its worker id, runs them, and writes outcomes back, with the
worker's signed update to the order's receipt.

Rules every backend keeps:
- `submit` returns only after the orders it accepted are committed: an order answered "pending"
  survives a crash of any process.
- An order has at most one stored outcome: `complete` stores the first outcome and ignores later
  ones, so an order run twice (its lease expired while a slow pump still held it) still has one
  result.
- A lease is exclusive until it expires; `lease` hands out pending orders and orders whose lease
  has expired, oldest first, and only those addressed to the given worker id (they are encrypted
  to its key).
- Times are seconds since the epoch passed in by the caller (`now`), so that tests drive the
  clock; a backend with a shared clock of its own may use that instead.
- Ids are compared in canonical form (`canonical_id`): the SDK sends upper-case hex, others
  lower-case, some with `0x`.
- Receipts: one per order, created only for an order the store keeps, and only with the order's
  request hash (kept from the submit: the request itself is dropped once the order is done).
  The worker's update (`Completion.receipt_update`) is kept with the outcome it came with and
  becomes the receipt's next update whichever comes first, the receipt or the outcome. Updates
  are numbered from 1 per receipt with no gap; `add_receipt_update` appends only if the receipt
  has the number of updates the caller saw. A receipt goes with its order when the order's
  outcome passes its retention time (`purge`).
- An order does not wait for ever for a worker that has gone: `expire` ends the orders that
  waited `pending_ttl_s` for a worker that has not sent a heartbeat for as long (or was never
  registered), and are under no live lease, with an error outcome (`expired_outcome`).

Methods are synchronous and may block on I/O; callers on an event loop run them in a thread.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any, Protocol, runtime_checkable

from ..errors import Error


class StoreError(Error):
    """The store cannot be opened or used (a message a person can act on); exit status 1: it
    could not be reached, or failed."""


class StoreSetupError(StoreError):
    """A store that no retry can make usable: a location of the wrong kind, a database that
    does not exist, credentials the server refuses, a schema newer than this program; exit
    status 2, as any set-up error."""

    exit_status = 2


class StoreRefused(StoreError):
    """The store refused the data of this call (too large, against a constraint, not storable):
    trying again cannot help. Anything else a store raises as a `StoreError` may pass (a lost
    connection, a full disk) and is worth trying again later."""


def canonical_id(value: str) -> str:
    """The form an id is stored and compared in: lower case, without `0x`."""
    text = value.strip().lower()
    return text[2:] if text.startswith("0x") else text


def expired_outcome(pending_ttl_s: float) -> tuple[str, str]:
    """The error object stored for an expired order, as the text before and after its id
    (stores build it in SQL, for many orders in one statement)."""
    message = (f"no worker took this work order within {pending_ttl_s:g} s: the worker it is addressed to has been "
               "off-line as long; submit it again, to a worker that WorkerLookUp lists")
    before = json.dumps({"code": 1, "message": message, "data": {"workOrderId": ""}}, separators=(",", ":"))
    cut = before.rindex('""') + 1
    return before[:cut], before[cut:]


class SubmitOutcome(Enum):
    """What `Store.submit` did with one order."""

    ACCEPTED = "accepted"  # committed as pending
    DUPLICATE = "duplicate"  # an order with this workOrderId exists (pending, leased or done)
    QUEUE_FULL = "queue_full"  # the worker's pending queue is at its limit


@dataclass(frozen=True)
class NewOrder:
    """A WorkOrderSubmit request to keep: `request` is the JSON-RPC request as received."""

    work_order_id: str  # canonical
    worker_id: str  # canonical
    request: bytes
    requester_id: str = ""  # canonical
    request_hash: bytes | None = None  # §6.6.1, for receipts (None: the request has no valid one)


@dataclass(frozen=True)
class ReceiptUpdate:
    """One update to a receipt: `params` are the update's as JSON."""

    updater_id: str  # canonical
    update_type: int
    params: bytes

    @staticmethod
    def from_params(params: bytes) -> ReceiptUpdate:
        """The update whose params (as `params` keeps them) these are."""
        fields = json.loads(params)
        return ReceiptUpdate(canonical_id(fields["updaterId"]), int(fields["updateType"]), params)


@dataclass(frozen=True)
class Handoff:
    """Lease accepted orders to a pump at once, in the submit's own transaction: up to `limit`
    of the orders addressed to `worker_id`, to `owner` for `lease_s`. A listener passes this for
    the pump in its own process, which then takes the orders from it directly: no `lease` query,
    no second transaction, no wait for the pump to look."""

    worker_id: str
    owner: str
    lease_s: float
    limit: int

    def taken(self, orders: Sequence[NewOrder], outcomes: Sequence[SubmitOutcome], now: float) -> list[LeasedOrder]:
        """The orders a submit with this hand-off leased to `owner`, given its outcomes."""
        chosen = [order for order, outcome in zip(orders, outcomes, strict=True)
                  if outcome is SubmitOutcome.ACCEPTED and order.worker_id == self.worker_id][: max(self.limit, 0)]
        return [LeasedOrder(order.work_order_id, order.request, 1, now + self.lease_s) for order in chosen]


@dataclass(frozen=True)
class LeasedOrder:
    """An order handed to a pump until `expires`; `attempts` counts leases, this one included."""

    work_order_id: str
    request: bytes
    attempts: int
    expires: float


@dataclass(frozen=True)
class Completion:
    """The worker's answer to an order: its `result` object, or its `error` object (`is_error`),
    as JSON bytes."""

    work_order_id: str
    outcome: bytes
    is_error: bool
    receipt_update: ReceiptUpdate | None = None  # the worker's signed update to the order's receipt


class OrderState(Enum):
    PENDING = "pending"  # waiting, or leased and running
    DONE = "done"


@dataclass(frozen=True)
class OrderStatus:
    """What a requester may learn about an order: pending, or done with its outcome."""

    state: OrderState
    outcome: bytes = b""
    is_error: bool = False


@dataclass(frozen=True)
class WorkerRecord:
    """A registered worker: its signup document (as `ProcessWorkerSignup` returns it) and when it
    last said it was alive."""

    worker_id: str  # canonical
    signup: dict[str, Any]
    registered: float
    heartbeat: float

    @staticmethod
    def signup_text(signup: dict[str, Any]) -> str:
        return json.dumps(signup, sort_keys=True, separators=(",", ":"))


class ReceiptOutcome(Enum):
    """What `Store.create_receipt` did."""

    CREATED = "created"
    UNKNOWN_ORDER = "unknown_order"  # no such order is kept
    DUPLICATE = "duplicate"  # the order has a receipt already
    NOT_THE_ORDER = "not_the_order"  # the request hash, workerId or requesterId is not the order's


@dataclass(frozen=True)
class NewReceipt:
    """A WorkOrderReceiptCreate to keep: `params` are its params as JSON (ids as sent)."""

    work_order_id: str  # canonical, and the three ids below too
    worker_service_id: str
    worker_id: str
    requester_id: str
    status: int  # receiptCreateStatus
    request_hash: bytes
    shown_id: str  # workOrderId as sent
    params: bytes


@dataclass(frozen=True)
class Receipt:
    """A receipt as kept: its create params, its current status (that of its last update that
    is a status, 0-255, else its create status) and its updates, first first."""

    work_order_id: str  # canonical
    requester_id: str  # canonical
    params: bytes
    status: int
    updates: tuple[ReceiptUpdate, ...]


@dataclass(frozen=True)
class ReceiptQuery:
    """A receipt lookup: every filter given must match (ids canonical; `status` the current)."""

    worker_service_id: str | None = None
    worker_id: str | None = None
    requester_id: str | None = None
    status: int | None = None


@dataclass(frozen=True)
class ReceiptPage:
    """One page of a lookup: `total` matches in all, the workOrderIds (as sent) of this page,
    and `last`, the position to continue after (None when this page is the last)."""

    total: int
    ids: tuple[str, ...]
    last: int | None


@runtime_checkable
class Store(Protocol):
    """A durable work-order store (see the module docstring for the rules)."""

    # A file of this process (short local calls, made on the event loop's thread), or a server
    # across the network (calls made from threads): `front.store_calls`.
    in_process: bool

    def submit(self, orders: Sequence[NewOrder], now: float, handoff: Handoff | None = None) -> list[SubmitOutcome]:
        """Keep new orders as pending, in one transaction; one outcome per order, in order. With
        `handoff`, the orders `handoff.taken` names are committed leased to its owner instead."""
        ...

    def lease(self, worker_id: str, owner: str, limit: int, lease_s: float, now: float) -> list[LeasedOrder]:
        """Lease up to `limit` runnable orders of `worker_id` to `owner`, oldest first."""
        ...

    def renew(self, owner: str, work_order_ids: Sequence[str], lease_s: float, now: float) -> int:
        """Extend `owner`'s leases on these orders; return how many it still held."""
        ...

    def release(self, owner: str, work_order_ids: Sequence[str]) -> int:
        """Give orders back to the queue unrun (e.g. the worker was busy); return how many."""
        ...

    def complete(self, completions: Sequence[Completion], now: float) -> list[bool]:
        """Store outcomes; False for an order that already had one (or is unknown)."""
        ...

    def status(self, work_order_id: str) -> OrderStatus | None:
        """The order's state and outcome, or None if no such order is kept."""
        ...

    def finished(self, work_order_ids: Sequence[str]) -> list[Completion]:
        """The outcomes of those of these orders that are done, in one read."""
        ...

    def register_worker(self, worker_id: str, signup: dict[str, Any], now: float) -> None:
        """Record (or replace) a worker's signup document; counts as a heartbeat."""
        ...

    def heartbeat(self, worker_id: str, now: float) -> None:
        """Record that the worker is alive."""
        ...

    def worker(self, worker_id: str) -> WorkerRecord | None:
        ...

    def workers(self) -> list[WorkerRecord]:
        ...

    def purge(self, result_ttl_s: float, now: float, limit: int) -> int:
        """Delete outcomes completed more than `result_ttl_s` ago, at most `limit` of them (the
        oldest), in one short transaction; return how many (`limit`: there may be more)."""
        ...

    def expire(self, pending_ttl_s: float, now: float) -> int:
        """End, with the error `expired_outcome` says, the orders submitted more than
        `pending_ttl_s` ago whose worker has sent no heartbeat for as long (or is not
        registered) and that no live lease holds; return how many."""
        ...

    def create_receipt(self, receipt: NewReceipt, now: float) -> ReceiptOutcome:
        """Keep a receipt for an order the store keeps, with the worker's update if the order is
        done already."""
        ...

    def add_receipt_update(self, work_order_id: str, update: ReceiptUpdate, seen: int) -> bool:
        """Append `update` to the receipt if it still has `seen` updates; False if not (or if
        there is no such receipt)."""
        ...

    def receipt(self, work_order_id: str) -> Receipt | None:
        ...

    def lookup_receipts(self, query: ReceiptQuery, after: int, limit: int) -> ReceiptPage:
        """The receipts that match `query`, in the order they were created, from the position
        after `after` (0: from the first), at most `limit` of them."""
        ...

    def close(self) -> None:
        ...

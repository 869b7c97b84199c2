"""Every decision of the pump, with no I/O (in the manner of `_internal/scheduler.py`).

`PumpCore` takes events — orders handed over, a wake-up, a reply from the worker, the connection
lost, a store call finished or failed, stop — each with the current time passed in, and answers
`next_action(now, connected)` with one thing for the shell (`front/pump.py`) to do: send
messages to the worker, make one store call, or wait until a time. It owns the orders in
flight, the orders handed over and not sent yet, the outcomes not stored yet, the orders to give
back and every timer; the shell owns the connection, the store's thread and the clock. Unit
tests drive it with a fake clock, no store and no worker.

Rules:
- At most one store call is out at a time (the store has one writer); the shell reports its
  end with `finished` or `failed` before asking for the next action.
- Orders handed over (or leased) are sent as soon as the worker has room: that needs no store.
  Of store calls, outcomes come first, so that outcomes kept while the store was away are
  stored before anything is leased (an order whose outcome is waiting is not leased and run
  again); answers that arrive while outcomes are being stored wait for one lease, if one is
  due, as the worker would otherwise wait for them. Then orders are given back (busy, lost
  with their connection, stuck); then leased; then leases renewed, the heartbeat sent, results
  purged and orders of silent workers expired, each when due.
- Up to `max_in_flight` orders are in flight. Orders handed over by the listener are sent
  before the store is asked for more; a lease that fills the room is followed at once by
  another, else the next waits for a wake-up or `poll_s`.
- A worker that answers BUSY (8) gets its order back in the queue and no new order for
  `busy_backoff_s` after the give-back.
- Leases of orders held (in flight, handed over, outcome not stored) are renewed every third of
  `lease_s`; an order unanswered for `stuck_after_s` is given back.
- A store call that fails (`StoreError`) keeps what it carried for the next try and pauses
  every store call for `store_retry_s`; a batch of outcomes the store refuses (`StoreRefused`)
  is split until the one it refuses is found, which is replaced by an error (`unstorable`); if
  even that is refused, the order is left to its lease.
- On stop, outcomes and give-backs still go to the store, nothing is sent or leased; `give_back`
  then returns what is still held to the queue.
"""

from __future__ import annotations

import hashlib
import logging
import struct
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Union

from .. import defaults, jsonio
from ..errors import ErrorCode
from ..store import Completion, Handoff, LeasedOrder, ReceiptUpdate, Store, StoreRefused, canonical_id

logger = logging.getLogger(__name__)

_TAG = struct.Struct(">Q")
SIGNUP_TAG = _TAG.pack(0)  # the orders' tags count from 1


@dataclass(frozen=True)
class PumpConfig:
    lease_s: float = defaults.LEASE_S  # a lease outlives the pump by at most this; renewed every third of it
    max_in_flight: int = defaults.FRONT_MAX_IN_FLIGHT  # orders sent to the worker and not yet answered
    poll_s: float = 0.5  # how often to look for orders when nothing wakes the pump
    heartbeat_s: float = defaults.HEARTBEAT_S
    purge_every_s: float = 60.0  # also how often orders of workers gone silent are expired (at most)
    purge_slice: int = 1000  # results deleted per store call: a purge never holds the store for long
    result_ttl_s: float = defaults.RESULT_TTL_S
    pending_ttl_s: float = defaults.PENDING_TTL_S
    stuck_after_s: float = 300.0  # an order unanswered this long is given back (the pool answers long before)
    busy_backoff_s: float = 0.05
    signup_timeout_s: float = 30.0
    max_reply_bytes: int = 1 << 30  # a reply larger than this breaks the connection
    store_retry_s: float = 1.0  # after a failed store call, how long until the next


def work_order_frame(request: bytes, outer_id: int) -> bytes:
    """`ProcessWorkOrder` with the WorkOrderSubmit request as its params string (PROTOCOL §1),
    asking the worker for its signed update to the order's receipt too (`receiptUpdate`)."""
    return jsonio.dumps({"jsonrpc": "2.0", "id": outer_id, "method": "ProcessWorkOrder",
                         "params": request.decode("utf-8"), "receiptUpdate": True})


def interpret_reply(work_order_id: str, frame: bytes) -> Completion | None:
    """The outcome to store for the worker's reply, with the worker's update to the order's
    receipt; or None if the worker was busy (8) and the order should go back to the queue."""
    try:
        reply = jsonio.loads(frame)
    except (ValueError, RecursionError):
        reply = None
    signed = _receipt_update(reply.get("receiptUpdate") if isinstance(reply, dict) else None)
    if isinstance(reply, dict) and isinstance(reply.get("result"), dict):
        return Completion(work_order_id, jsonio.dumps(reply["result"]), False, signed)
    error = reply.get("error") if isinstance(reply, dict) else None
    if isinstance(error, dict) and isinstance(error.get("code"), int):
        if error["code"] == ErrorCode.BUSY:
            return None
        return Completion(work_order_id, jsonio.dumps(error), True, signed)
    logger.error("work order %s: the worker's reply is not a JSON-RPC result or error", work_order_id)
    unreadable = {"code": int(ErrorCode.UNKNOWN_ERROR), "message": "the worker's reply could not be read"}
    return Completion(work_order_id, jsonio.dumps(unreadable), True)


def _receipt_update(update: Any) -> ReceiptUpdate | None:
    """The worker's signed update to the order's receipt, from its reply (`processor`)."""
    if not isinstance(update, dict):
        return None
    updater, kind = update.get("updaterId"), update.get("updateType")
    if not isinstance(updater, str) or not isinstance(kind, int) or isinstance(kind, bool):
        return None
    return ReceiptUpdate(canonical_id(updater), kind, jsonio.dumps(update))


def unstorable(work_order_id: str) -> Completion:
    """The outcome stored in place of one the store refused."""
    error = {"code": int(ErrorCode.UNKNOWN_ERROR), "message": "the worker's answer to this work order could not be "
             "stored (the operator's log says why); submit it again", "data": {"workOrderId": work_order_id}}
    return Completion(work_order_id, jsonio.dumps(error), True)


def worker_id_of(signup: dict[str, Any]) -> str:
    """The worker id a signup document stands for: hex SHA-256 of its verifying key PEM."""
    if isinstance(signup.get("worker_id"), str):
        return canonical_id(signup["worker_id"])
    return hashlib.sha256(signup["verifying_key"].encode("utf-8")).hexdigest()


def expiry_interval(purge_every_s: float, pending_ttl_s: float) -> float:
    """How often to look for orders to expire: every `purge_every_s`, or a quarter of a shorter
    pending time limit, so that an order ends at most that much past its limit."""
    return max(min(purge_every_s, pending_ttl_s / 4), 0.25)


def said_expired(count: int, pending_ttl_s: float) -> None:
    """Say in the log that `store.expire` ended `count` orders."""
    if count:
        logger.warning("%d work orders waited %.0f s for a worker that has been off-line as long: they end with an "
                       "error", count, pending_ttl_s)


# actions ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Send:
    """Send each `(tag, frame)` to the worker behind its routing frame; if the connection is
    gone, tell the core `connection_lost`."""

    messages: list[tuple[bytes, bytes]]


@dataclass(frozen=True)
class Wait:
    """Nothing to do until `until`, or until an event (orders, a reply, a wake-up)."""

    until: float


@dataclass(frozen=True)
class Lease:
    worker_id: str
    owner: str
    limit: int
    lease_s: float
    now: float

    def run(self, store: Store) -> list[LeasedOrder]:
        return store.lease(self.worker_id, self.owner, self.limit, self.lease_s, self.now)


@dataclass(frozen=True)
class Renew:
    owner: str
    ids: list[str]
    lease_s: float
    now: float

    def run(self, store: Store) -> int:
        return store.renew(self.owner, self.ids, self.lease_s, self.now)


@dataclass(frozen=True)
class Release:
    """Give orders back to the queue; `busy`: the worker said BUSY for some of them."""

    owner: str
    ids: list[str]
    busy: bool

    def run(self, store: Store) -> int:
        return store.release(self.owner, self.ids)


@dataclass(frozen=True)
class Complete:
    """Store outcomes; the shell tells the listener of those `finished` returns."""

    completions: list[Completion]
    now: float

    def run(self, store: Store) -> list[bool]:
        return store.complete(self.completions, self.now)


@dataclass(frozen=True)
class Heartbeat:
    worker_id: str
    now: float

    def run(self, store: Store) -> None:
        store.heartbeat(self.worker_id, self.now)


@dataclass(frozen=True)
class Purge:
    """Delete one slice of the results past their retention; a full slice means there may be more."""

    result_ttl_s: float
    now: float
    limit: int

    def run(self, store: Store) -> int:
        return store.purge(self.result_ttl_s, self.now, self.limit)


@dataclass(frozen=True)
class Expire:
    pending_ttl_s: float
    now: float

    def run(self, store: Store) -> int:
        return store.expire(self.pending_ttl_s, self.now)


StoreCall = Union[Lease, Renew, Release, Complete, Heartbeat, Purge, Expire]
Action = Union[Send, Wait, StoreCall]


# the state ----------------------------------------------------------------------------------------


@dataclass
class InFlight:
    order: LeasedOrder
    sent: float


@dataclass
class _Timers:
    poll: float
    renew: float
    heartbeat: float
    purge: float
    expire: float = float("inf")  # due right after a purge

    @classmethod
    def from_(cls, now: float, purge_every_s: float) -> _Timers:
        return cls(poll=now, renew=now, heartbeat=now, purge=now + purge_every_s)


@dataclass
class PumpCore:
    """The pump's state for one worker (`worker_id`, leases held as `owner`)."""

    config: PumpConfig
    owner: str
    worker_id: str = ""
    started: float = 0.0  # the first lease, renewal and heartbeat are due at once; the first purge later
    in_flight: dict[bytes, InFlight] = field(default_factory=dict)
    ready: deque[LeasedOrder] = field(default_factory=deque)  # handed over by the listener, not sent yet
    unsaved: list[Completion] = field(default_factory=list)  # outcomes not stored yet
    refused: deque[list[Completion]] = field(default_factory=deque)  # parts of a batch the store refused
    to_release: list[str] = field(default_factory=list)  # to give back to the queue
    stopping: bool = False

    def __post_init__(self) -> None:
        self._timers = _Timers.from_(self.started, self.config.purge_every_s)
        self._wake = False
        self._busy = False  # some of `to_release` came back BUSY
        self._backoff_until = 0.0
        self._store_paused_until = 0.0
        self._out: StoreCall | None = None
        self._lease_turn = False  # a lease (if due) goes before the next outcomes
        self._next_tag = 0
        self._purged = 0  # results deleted by the slices of the purge under way

    # events ---------------------------------------------------------------------------------------

    def wake(self) -> None:
        """New orders were submitted: look for them now."""
        self._wake = True

    def handoff(self) -> Handoff:
        """What a listener in this process may lease to this pump in its submit's transaction:
        enough to keep the worker busy for two rounds of `max_in_flight`."""
        room = 2 * self.config.max_in_flight - len(self.in_flight) - len(self.ready)
        return Handoff(self.worker_id, self.owner, self.config.lease_s, max(room, 0))

    def take(self, orders: Sequence[LeasedOrder]) -> None:
        """Orders a listener in this process committed leased to this pump."""
        self.ready.extend(orders)

    def answered(self, tag: bytes, frame: bytes) -> bool:
        """The worker replied `frame` to the order sent as `tag`; False if no order in flight
        has that tag (one given back already, or the signup's)."""
        flight = self.in_flight.pop(tag, None)
        if flight is None:
            return False
        outcome = interpret_reply(flight.order.work_order_id, frame)
        if outcome is None:
            self.to_release.append(flight.order.work_order_id)
            self._busy = True
        else:
            self.unsaved.append(outcome)
        return True

    def connection_lost(self) -> None:
        """The connection the orders in flight went out on is gone, and their replies with it:
        they go back to the queue."""
        self.to_release += [flight.order.work_order_id for flight in self.in_flight.values()]
        self.in_flight.clear()

    def stop(self) -> None:
        """Store outcomes and give orders back, but send and lease nothing more."""
        self.stopping = True

    def give_back(self) -> None:
        """On the way out: every order held and unanswered goes back to the queue."""
        self.connection_lost()
        self.to_release += [order.work_order_id for order in self.ready]
        self.ready.clear()

    # store calls ----------------------------------------------------------------------------------

    def finished(self, call: StoreCall, result: Any, now: float) -> list[Completion]:
        """`call` returned `result`. Returns the outcomes it stored as their order's first (for
        the listener's waiting submits); empty for any other call."""
        assert call is self._out, "a store call finished that the core did not ask for"
        self._out = None
        if isinstance(call, Complete):
            return [item for item, ok in zip(call.completions, result, strict=True) if ok]
        if isinstance(call, Lease):
            self._send_later(call, result, now)
        elif isinstance(call, Release) and call.busy:
            self._backoff_until = now + self.config.busy_backoff_s
        elif isinstance(call, Purge):
            self._purged += result
            if result >= call.limit:  # more past their time: the next slice after what else is due
                self._timers.purge = now
                return []
            if self._purged:
                logger.info("deleted %d work-order results older than %.0f s", self._purged, self.config.result_ttl_s)
            self._purged = 0
            self._timers.expire = now
        elif isinstance(call, Expire):
            said_expired(result, self.config.pending_ttl_s)
        return []

    def failed(self, call: StoreCall, exc: Exception, now: float) -> None:
        """`call` raised `exc` (a `StoreError`)."""
        assert call is self._out, "a store call failed that the core did not ask for"
        self._out = None
        self._lease_turn = False  # what failed to be stored goes first when the store is back
        if isinstance(call, Complete) and isinstance(exc, StoreRefused):
            self._refused(call.completions, exc)
            return
        if isinstance(call, Complete):
            self.refused.appendleft(call.completions)  # tried again first
        elif isinstance(call, Release) and not isinstance(exc, StoreRefused):
            self.to_release[:0] = call.ids  # (refused: left to their leases)
            self._busy = self._busy or call.busy
        # A shared database can be away for longer than the store retries (a fail-over, a long
        # restart): orders in flight keep running, their leases may lapse, and whichever outcome
        # is stored first counts.
        logger.error("the work-order store failed: %s; trying again in %g s", exc, self.config.store_retry_s)
        self._store_paused_until = now + self.config.store_retry_s
        self._timers = _Timers.from_(self._store_paused_until, self.config.purge_every_s)

    def _refused(self, batch: list[Completion], exc: Exception) -> None:
        if len(batch) > 1:
            half = len(batch) // 2
            self.refused.extendleft([batch[half:], batch[:half]])  # the first half first
            return
        [item] = batch
        if item == unstorable(item.work_order_id):
            logger.error("work order %s: the store refuses even an error as its outcome (%s)", item.work_order_id, exc)
            return
        logger.error("work order %s: the store refused its outcome (%s); it is answered with an error instead",
                     item.work_order_id, exc)
        self.refused.appendleft([unstorable(item.work_order_id)])

    # the decision ---------------------------------------------------------------------------------

    def next_action(self, now: float, connected: bool) -> Action:
        """The one thing to do now (see the module's rules)."""
        assert self._out is None, "the last store call has not been reported"
        action: Send | StoreCall | None = self._send_ready(now, connected)
        if action is None and now >= self._store_paused_until:
            turn, self._lease_turn = self._lease_turn, False
            action = ((self._lease(now, connected) if turn else None) or self._to_store(now)
                      or self._lease(now, connected) or (None if self.stopping else self._upkeep(now)))
        if action is None:
            return Wait(self._until(now, connected))
        if not isinstance(action, Send):
            self._out = action
        return action

    def _to_store(self, now: float) -> StoreCall | None:
        if self.refused or self.unsaved:
            self._lease_turn = True  # answers that come meanwhile wait for one lease (if one is due)
            if self.refused:
                return Complete(self.refused.popleft(), now)
            batch, self.unsaved = self.unsaved, []
            return Complete(batch, now)
        if self.to_release:
            ids, self.to_release = self.to_release, []
            busy, self._busy = self._busy, False
            return Release(self.owner, ids, busy)
        return None

    def _room(self, connected: bool) -> int:
        if not connected or self.stopping:
            return 0
        return self.config.max_in_flight - len(self.in_flight)

    def _send_ready(self, now: float, connected: bool) -> Send | None:
        """The orders handed over (or leased), as many as the worker has room for."""
        room = self._room(connected)
        if room <= 0 or now < self._backoff_until or not self.ready:
            return None
        return self._send([self.ready.popleft() for _ in range(min(room, len(self.ready)))], now)

    def _lease(self, now: float, connected: bool) -> Lease | None:
        room = self._room(connected)
        if room <= 0 or now < self._backoff_until or not (self._wake or now >= self._timers.poll):
            return None
        self._wake = False
        self._timers.poll = now + self.config.poll_s  # unless the lease fills the room (`_send_later`)
        return Lease(self.worker_id, self.owner, room, self.config.lease_s, now)

    def _send_later(self, call: Lease, leased: list[LeasedOrder], now: float) -> None:
        """Leased orders are sent by the next action; a full batch means more may be waiting:
        look again at once."""
        if len(leased) >= call.limit:
            self._timers.poll = now
        self.ready.extendleft(reversed(leased))

    def _send(self, orders: list[LeasedOrder], now: float) -> Send:
        messages = []
        for order in orders:
            self._next_tag += 1
            tag = _TAG.pack(self._next_tag)
            self.in_flight[tag] = InFlight(order, now)
            messages.append((tag, work_order_frame(order.request, self._next_tag)))
        return Send(messages)

    def _upkeep(self, now: float) -> StoreCall | None:
        timers = self._timers
        if now >= timers.renew:
            stuck = [tag for tag, flight in self.in_flight.items() if now - flight.sent > self.config.stuck_after_s]
            if stuck:
                logger.error("%d work orders unanswered for %.0f s were given back to the queue", len(stuck),
                             self.config.stuck_after_s)
                self.to_release += [self.in_flight.pop(tag).order.work_order_id for tag in stuck]
                return self._to_store(now)
            timers.renew = now + self.config.lease_s / 3
            ids = self.held()
            if ids:
                return Renew(self.owner, ids, self.config.lease_s, now)
        if now >= timers.heartbeat:
            timers.heartbeat = now + self.config.heartbeat_s
            return Heartbeat(self.worker_id, now)
        if now >= timers.purge:
            timers.purge = now + expiry_interval(self.config.purge_every_s, self.config.pending_ttl_s)
            return Purge(self.config.result_ttl_s, now, self.config.purge_slice)
        if now >= timers.expire:
            timers.expire = float("inf")
            return Expire(self.config.pending_ttl_s, now)
        return None

    def held(self) -> list[str]:
        """The orders this pump holds leased: in flight, handed over, or with an outcome not
        stored yet."""
        ids = [flight.order.work_order_id for flight in self.in_flight.values()]
        ids += [order.work_order_id for order in self.ready]
        ids += [item.work_order_id for item in self.unsaved]
        ids += [item.work_order_id for batch in self.refused for item in batch]
        return ids

    def _until(self, now: float, connected: bool) -> float:
        """When the next action is due, if no event comes first."""
        timers = self._timers
        store_until = float("inf") if self.stopping else min(timers.renew, timers.heartbeat, timers.purge, timers.expire)
        if self.refused or self.unsaved or self.to_release:  # only while the store is paused
            store_until = now
        room = self._room(connected)
        if room > 0:
            store_until = min(store_until, max(now if self._wake else timers.poll, self._backoff_until))
        store_until = max(store_until, self._store_paused_until)
        send_until = max(now, self._backoff_until) if room > 0 and self.ready else float("inf")
        return max(min(store_until, send_until), now)

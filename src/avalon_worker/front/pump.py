"""The pump: runs the stored work orders of one worker through its ZMQ endpoint.

It is an ordinary client of the worker, as Avalon's enclave manager is: it fetches the signup
(`ProcessWorkerSignup`) and registers it in the store with a heartbeat, then leases the pending
orders addressed to that worker id and sends each as `ProcessWorkOrder` with the stored
WorkOrderSubmit request as its params string. The worker's answer (result or error) is written
back as the order's outcome; BUSY (8) puts the order back in the queue instead. Leases of orders
in flight are renewed; when the pump or its host dies they expire and the orders are leased again
(the store keeps only the first outcome, so an order never ends with two).

One DEALER connection (`_internal.dealer`) carries every order in flight: each request goes
out behind a routing frame of its own (`[tag, "", frame]`), which the worker's ROUTER (or REP)
envelope hands back with the reply, so replies are matched to orders whatever order they arrive
in. If the connection drops, the orders it carried go back to the queue at once.

Outcomes the store cannot take while it is away are kept and stored first when it is back, so a
store restart makes no order run twice. An outcome the store refuses (`StoreRefused`) is found by
splitting its batch, and replaced by an error saying it could not be stored: that order ends
once, and the rest of its batch is stored.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import secrets
import struct
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any, TypeVar

from .. import defaults, jsonio
from .._internal.dealer import DealerConnection
from ..errors import ErrorCode
from ..store import (
    Completion,
    Handoff,
    LeasedOrder,
    Store,
    StoreError,
    StoreRefused,
    canonical_id,
)

logger = logging.getLogger(__name__)

_TAG = struct.Struct(">Q")
SIGNUP_FRAME = b'{"jsonrpc":"2.0","id":1,"method":"ProcessWorkerSignup","params":null}'
T = TypeVar("T")
STORE_RETRY_S = 1.0


@dataclass(frozen=True)
class PumpConfig:
    lease_s: float = defaults.LEASE_S  # a lease outlives the pump by at most this; renewed every third of it
    max_in_flight: int = defaults.FRONT_MAX_IN_FLIGHT  # orders sent to the worker and not yet answered
    poll_s: float = 0.5  # how often to look for orders when nothing wakes the pump
    heartbeat_s: float = defaults.HEARTBEAT_S
    purge_every_s: float = 60.0  # also how often orders of workers gone silent are expired (at most)
    result_ttl_s: float = defaults.RESULT_TTL_S
    pending_ttl_s: float = defaults.PENDING_TTL_S
    stuck_after_s: float = 300.0  # an order unanswered this long is given back (the pool answers long before)
    busy_backoff_s: float = 0.05
    signup_timeout_s: float = 30.0
    max_reply_bytes: int = 1 << 30  # a reply larger than this breaks the connection


def work_order_frame(request: bytes, outer_id: int) -> bytes:
    """`ProcessWorkOrder` with the WorkOrderSubmit request as its params string (PROTOCOL §1)."""
    return jsonio.dumps({"jsonrpc": "2.0", "id": outer_id, "method": "ProcessWorkOrder", "params": request.decode("utf-8")})


def interpret_reply(work_order_id: str, frame: bytes) -> Completion | None:
    """The outcome to store for the worker's reply, or None if the worker was busy (8) and the
    order should go back to the queue."""
    try:
        reply = jsonio.loads(frame)
    except (ValueError, RecursionError):
        reply = None
    if isinstance(reply, dict) and isinstance(reply.get("result"), dict):
        return Completion(work_order_id, jsonio.dumps(reply["result"]), False)
    error = reply.get("error") if isinstance(reply, dict) else None
    if isinstance(error, dict) and isinstance(error.get("code"), int):
        if error["code"] == ErrorCode.BUSY:
            return None
        return Completion(work_order_id, jsonio.dumps(error), True)
    logger.error("work order %s: the worker's reply is not a JSON-RPC result or error", work_order_id)
    unreadable = {"code": int(ErrorCode.UNKNOWN_ERROR), "message": "the worker's reply could not be read"}
    return Completion(work_order_id, jsonio.dumps(unreadable), True)


def expiry_interval(purge_every_s: float, pending_ttl_s: float) -> float:
    """How often to look for orders to expire: every `purge_every_s`, or a quarter of a shorter
    pending time limit, so that an order ends at most that much past its limit."""
    return max(min(purge_every_s, pending_ttl_s / 4), 0.25)


async def expire_pending(store: Store, executor: Executor, pending_ttl_s: float, now: float) -> int:
    """`store.expire` on `executor`, said in the log."""
    expired = await asyncio.get_running_loop().run_in_executor(executor, store.expire, pending_ttl_s, now)
    if expired:
        logger.warning("%d work orders waited %.0f s for a worker that has been off-line as long: they end with an error",
                       expired, pending_ttl_s)
    return expired


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


@dataclass
class _InFlight:
    order: LeasedOrder
    sent: float


@dataclass
class Pump:
    """Moves one worker's orders from `store` to its endpoint and outcomes back.

    Store calls run on `executor` (one thread: the store's single writer). `on_done` is told of
    every outcome stored, so that a listener in the same process can answer a waiting submit.
    """

    store: Store
    endpoint: str
    executor: Executor
    config: PumpConfig = field(default_factory=PumpConfig)
    on_done: Callable[[Sequence[Completion]], None] = lambda completions: None
    clock: Callable[[], float] = time.time
    worker_id: str = ""
    owner: str = field(default_factory=lambda: "pump-" + secrets.token_hex(8))

    def __post_init__(self) -> None:
        self._dealer = DealerConnection(self.endpoint, self._on_message, max_message_bytes=self.config.max_reply_bytes,
                                        on_reconnect=self._give_back_in_flight)
        self._signup_reply: asyncio.Future[bytes] | None = None
        self._signup_tag = b""
        self._lost: list[str] = []  # sent on a connection that dropped: back to the queue
        self._in_flight: dict[bytes, _InFlight] = {}
        self._ready: deque[LeasedOrder] = deque()  # handed over by the listener beside us, not sent yet
        self._answered: list[tuple[bytes, bytes]] = []
        self._unsaved: list[Completion] = []  # outcomes the store could not take yet (it was away)
        self._wake = asyncio.Event()  # orders were submitted: lease now
        self._work = asyncio.Event()  # answers arrived, or orders were submitted
        self._next_tag = 0
        self._stopping = False

    async def _store(self, method: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self.executor, method, *args)

    def wake(self) -> None:
        """New orders were submitted: look for them now."""
        self._wake.set()
        self._work.set()

    def handoff(self) -> Handoff:
        """What a listener in this process may lease to this pump in its submit's transaction:
        enough to keep the worker busy for two rounds of `max_in_flight`."""
        room = 2 * self.config.max_in_flight - len(self._in_flight) - len(self._ready)
        return Handoff(self.worker_id, self.owner, self.config.lease_s, max(room, 0))

    def take(self, orders: Sequence[LeasedOrder]) -> None:
        """Orders a listener in this process committed leased to this pump: send them as the
        worker has room, with no `lease` query."""
        self._ready.extend(orders)
        self._work.set()

    async def register(self) -> str:
        """Fetch the worker's signup over ZMQ and register it; return the worker id."""
        deadline = time.monotonic() + self.config.signup_timeout_s
        while not self._dealer.connected:  # the worker may still be starting
            try:
                await self._dealer.connect(max(deadline - time.monotonic(), 0.001))
            except (OSError, asyncio.TimeoutError):
                if time.monotonic() >= deadline:
                    raise TimeoutError(f"no worker answers at {self.endpoint}") from None
                await asyncio.sleep(0.1)
        self._signup_tag = self._tag()
        self._signup_reply = asyncio.get_running_loop().create_future()
        self._dealer.send([self._signup_tag, b"", SIGNUP_FRAME])
        try:
            frame = await asyncio.wait_for(self._signup_reply, max(deadline - time.monotonic(), 0.001))
        except asyncio.TimeoutError:
            raise TimeoutError(f"the worker at {self.endpoint} did not answer ProcessWorkerSignup") from None
        signup = jsonio.loads(frame)
        self.worker_id = worker_id_of(signup)
        await self._store(self.store.register_worker, self.worker_id, signup, self.clock())
        return self.worker_id

    def _tag(self) -> bytes:
        self._next_tag += 1
        return _TAG.pack(self._next_tag)

    def _on_message(self, parts: list[bytes]) -> None:
        if len(parts) < 3:
            return
        if parts[0] in self._in_flight:
            self._answered.append((parts[0], parts[-1]))
            self._work.set()
        elif parts[0] == self._signup_tag and self._signup_reply is not None and not self._signup_reply.done():
            self._signup_reply.set_result(parts[-1])

    def _give_back_in_flight(self) -> None:
        """The connection the orders in flight went out on is gone, and their replies with it:
        they go back to the queue (on reconnecting, or when a send finds no connection)."""
        self._lost += [flight.order.work_order_id for flight in self._in_flight.values()]
        self._in_flight.clear()
        self._work.set()

    async def run(self, stop: asyncio.Event) -> None:
        """Pump until `stop` is set, then wait briefly for answers and give back the rest."""
        try:
            while not stop.is_set():
                try:
                    await self._pump(stop)
                except StoreError as exc:
                    # A shared database can be away for longer than the store retries (a
                    # fail-over, a long restart): orders in flight keep running, their leases
                    # may lapse, and whichever outcome is stored first counts.
                    logger.error("the work-order store failed: %s; trying again in %g s", exc, STORE_RETRY_S)
                    await self._sleep(stop, STORE_RETRY_S)
        finally:
            self._stopping = True
            try:
                await self._drain()
            except StoreError as exc:
                logger.error("could not give back the orders in flight (%s); their leases will expire", exc)
            self._dealer.close()

    async def _pump(self, stop: asyncio.Event) -> None:
        now = self.clock()
        next_poll = next_renew = next_heartbeat = now
        next_purge = now + self.config.purge_every_s
        backoff_until = 0.0
        while not stop.is_set():
            now = self.clock()
            if self._answered or self._unsaved:
                backoff_until = max(backoff_until, await self._settle())
            if self._lost:
                lost, self._lost = self._lost, []
                await self._store(self.store.release, self.owner, lost)
            room = self.config.max_in_flight - len(self._in_flight) if self._dealer.connected else 0
            if room > 0 and now >= backoff_until and self._ready:
                self._send([self._ready.popleft() for _ in range(min(room, len(self._ready)))])
                room = self.config.max_in_flight - len(self._in_flight)
            if room > 0 and now >= backoff_until and (self._wake.is_set() or now >= next_poll):
                self._wake.clear()
                leased = await self._store(self.store.lease, self.worker_id, self.owner, room, self.config.lease_s, now)
                self._send(leased)
                # A full batch means more may be waiting: look again at once.
                next_poll = now if len(leased) == room else now + self.config.poll_s
            if now >= next_renew:
                await self._renew(now)
                next_renew = now + self.config.lease_s / 3
            if now >= next_heartbeat:
                await self._store(self.store.heartbeat, self.worker_id, now)
                next_heartbeat = now + self.config.heartbeat_s
            if now >= next_purge:
                await self._purge(now)
                next_purge = now + expiry_interval(self.config.purge_every_s, self.config.pending_ttl_s)
            self._work.clear()
            if self._answered or (room > 0 and (self._wake.is_set() or self._ready) and now >= backoff_until):
                continue
            until = min(next_renew, next_heartbeat, next_purge, next_poll if room > 0 else next_renew)
            if backoff_until > now:
                until = max(min(until, backoff_until), now)
            await self._sleep(stop, until - self.clock())

    async def _purge(self, now: float) -> None:
        """Delete the results past their retention time; expire the orders of workers gone silent
        (any worker's: the store is shared)."""
        purged = await self._store(self.store.purge, self.config.result_ttl_s, now)
        if purged:
            logger.info("deleted %d work-order results older than %.0f s", purged, self.config.result_ttl_s)
        await expire_pending(self.store, self.executor, self.config.pending_ttl_s, now)

    async def _sleep(self, stop: asyncio.Event, seconds: float) -> None:
        if seconds <= 0:
            return
        waits = [asyncio.ensure_future(self._work.wait()), asyncio.ensure_future(stop.wait())]
        try:
            await asyncio.wait(waits, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waits:
                waiter.cancel()

    def _send(self, leased: Sequence[LeasedOrder]) -> None:
        now = self.clock()
        messages = []
        for order in leased:
            tag = self._tag()
            self._in_flight[tag] = _InFlight(order, now)
            messages.append([tag, b"", work_order_frame(order.request, self._next_tag)])
        if messages and not self._dealer.send(*messages):
            self._give_back_in_flight()  # the connection dropped just now

    async def _settle(self) -> float:
        """Store the outcomes that arrived (and those the store could not take before); give
        busy orders back. Return when to lease again. A `StoreError` leaves the outcomes kept
        for the next try."""
        answered, self._answered = self._answered, []
        busy: list[str] = []
        for tag, frame in answered:
            flight = self._in_flight.pop(tag, None)
            if flight is None:
                continue
            outcome = interpret_reply(flight.order.work_order_id, frame)
            if outcome is None:
                busy.append(flight.order.work_order_id)
            else:
                self._unsaved.append(outcome)
        if self._unsaved:
            stored = await self._complete(self._unsaved)
            self._unsaved = []
            self.on_done(stored)
        if busy:
            await self._store(self.store.release, self.owner, busy)
            return self.clock() + self.config.busy_backoff_s
        return 0.0

    async def _complete(self, completions: list[Completion]) -> list[Completion]:
        """Store `completions`; return those stored as their order's first outcome. A batch
        the store refuses is split until the outcome it refuses is found, which is replaced by
        `unstorable` (if even that is refused, the order is left to its lease)."""
        try:
            stored = await self._store(self.store.complete, completions, self.clock())
        except StoreRefused as exc:
            if len(completions) > 1:
                half = len(completions) // 2
                return await self._complete(completions[:half]) + await self._complete(completions[half:])
            [item] = completions
            if item == unstorable(item.work_order_id):
                logger.error("work order %s: the store refuses even an error as its outcome (%s)", item.work_order_id, exc)
                return []
            logger.error("work order %s: the store refused its outcome (%s); it is answered with an error instead",
                         item.work_order_id, exc)
            return await self._complete([unstorable(item.work_order_id)])
        return [item for item, ok in zip(completions, stored, strict=True) if ok]

    async def _renew(self, now: float) -> None:
        stuck = [tag for tag, flight in self._in_flight.items() if now - flight.sent > self.config.stuck_after_s]
        if stuck:
            ids = [self._in_flight.pop(tag).order.work_order_id for tag in stuck]
            logger.error("%d work orders unanswered for %.0f s were given back to the queue", len(ids), self.config.stuck_after_s)
            await self._store(self.store.release, self.owner, ids)
        ids = [flight.order.work_order_id for flight in self._in_flight.values()]
        ids += [order.work_order_id for order in self._ready]
        ids += [item.work_order_id for item in self._unsaved]
        if ids:
            await self._store(self.store.renew, self.owner, ids, self.config.lease_s, now)

    async def _drain(self, grace_s: float = 2.0) -> None:
        """On stop: store what is answered within `grace_s`, give the rest back to the queue."""
        deadline = time.monotonic() + grace_s
        while self._in_flight and time.monotonic() < deadline:
            if self._answered:
                await self._settle()
            else:
                await asyncio.sleep(0.02)
        if self._answered or self._unsaved:
            await self._settle()
        ids = [flight.order.work_order_id for flight in self._in_flight.values()]
        ids += [order.work_order_id for order in self._ready]
        self._in_flight.clear()
        self._ready.clear()
        if ids:
            await self._store(self.store.release, self.owner, ids)

"""The pump: runs the stored work orders of one worker through its ZMQ endpoint.

It is an ordinary client of the worker, as Avalon's enclave manager is: it fetches the signup
(`ProcessWorkerSignup`) and registers it in the store with a heartbeat, then leases the pending
orders addressed to that worker id and sends each as `ProcessWorkOrder` with the stored
WorkOrderSubmit request as its params string. The worker's answer (result or error) is written
back as the order's outcome; BUSY (8) puts the order back in the queue instead. Leases of orders
in flight are renewed; when the pump or its host dies they expire and the orders are leased again
(the store keeps only the first outcome, so an order never ends with two).

Every decision is `PumpCore`'s (`pump_core.py`, no I/O); this module is its shell on the event
loop: it carries out the core's actions — messages to the worker, calls to the store on its
one thread — and tells the core what came of them, and of the connection.

One DEALER connection (`_internal.dealer`) carries every order in flight: each request goes
out behind a routing frame of its own (`[tag, "", frame]`), which the worker's ROUTER (or REP)
envelope hands back with the reply, so replies are matched to orders whatever order they arrive
in. If the connection drops, the orders it carried go back to the queue at once.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from .. import jsonio
from .._internal.dealer import DealerConnection
from ..store import Completion, Handoff, LeasedOrder, Store, StoreError
from .pump_core import SIGNUP_TAG, PumpConfig, PumpCore, Send, StoreCall, Wait, said_expired, worker_id_of
from .store_calls import StoreCalls

logger = logging.getLogger(__name__)

SIGNUP_FRAME = b'{"jsonrpc":"2.0","id":1,"method":"ProcessWorkerSignup","params":null}'
DRAIN_GRACE_S = 2.0  # on stop, how long answers to the orders in flight are waited for


async def expire_pending(store: Store, calls: StoreCalls, pending_ttl_s: float, now: float) -> int:
    """`store.expire` through `calls`, said in the log."""
    expired = await calls(store.expire, pending_ttl_s, now)
    said_expired(expired, pending_ttl_s)
    return expired


@dataclass
class Pump:
    """Moves one worker's orders from `store` to its endpoint and outcomes back.

    Store calls run through `calls` (`store_calls`: on the loop for SQLite, else on one thread,
    the store's single writer in this process). `on_done` is told of
    every outcome stored, so that a listener in the same process can answer a waiting submit.
    """

    store: Store
    endpoint: str
    calls: StoreCalls
    config: PumpConfig = field(default_factory=PumpConfig)
    on_done: Callable[[Sequence[Completion]], None] = lambda completions: None
    clock: Callable[[], float] = time.time
    owner: str = field(default_factory=lambda: "pump-" + secrets.token_hex(8))

    def __post_init__(self) -> None:
        self.core = PumpCore(self.config, self.owner, started=self.clock())
        self._dealer = DealerConnection(self.endpoint, self._on_message, max_message_bytes=self.config.max_reply_bytes,
                                        on_reconnect=self._connection_lost)
        self._signup_reply: asyncio.Future[bytes] | None = None
        self._work = asyncio.Event()  # something happened that the core may act on

    @property
    def worker_id(self) -> str:
        return self.core.worker_id

    def wake(self) -> None:
        """New orders were submitted: look for them now."""
        self.core.wake()
        self._work.set()

    def handoff(self) -> Handoff:
        """What a listener in this process may lease to this pump in its submit's transaction."""
        return self.core.handoff()

    def take(self, orders: Sequence[LeasedOrder]) -> None:
        """Orders a listener in this process committed leased to this pump: send them as the
        worker has room, with no `lease` query."""
        self.core.take(orders)
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
        self._signup_reply = asyncio.get_running_loop().create_future()
        self._dealer.send([SIGNUP_TAG, b"", SIGNUP_FRAME])
        try:
            frame = await asyncio.wait_for(self._signup_reply, max(deadline - time.monotonic(), 0.001))
        except asyncio.TimeoutError:
            raise TimeoutError(f"the worker at {self.endpoint} did not answer ProcessWorkerSignup") from None
        signup = jsonio.loads(frame)
        self.core.worker_id = worker_id_of(signup)
        await self.calls(self.store.register_worker, self.core.worker_id, signup, self.clock())
        return self.core.worker_id

    def _on_message(self, parts: list[bytes]) -> None:
        if len(parts) < 3:
            return
        if parts[0] == SIGNUP_TAG:
            if self._signup_reply is not None and not self._signup_reply.done():
                self._signup_reply.set_result(parts[-1])
        elif self.core.answered(parts[0], parts[-1]):
            self._work.set()

    def _connection_lost(self) -> None:
        self.core.connection_lost()
        self._work.set()

    async def run(self, stop: asyncio.Event) -> None:
        """Pump until `stop` is set, then wait briefly for answers and give back the rest."""
        stopper = asyncio.ensure_future(self._wake_on(stop))
        try:
            while not stop.is_set():
                action = self.core.next_action(self.clock(), self._dealer.connected)
                if isinstance(action, Wait):
                    self._work.clear()  # the core has seen every event so far
                    await self._sleep(action.until - self.clock())
                else:
                    await self._do(action)
        finally:
            stopper.cancel()
            await self._drain()
            self._dealer.close()

    async def _wake_on(self, stop: asyncio.Event) -> None:
        await stop.wait()
        self._work.set()

    async def _do(self, action: Send | StoreCall) -> None:
        if isinstance(action, Send):
            if not self._dealer.send(*[[tag, b"", frame] for tag, frame in action.messages]):
                self.core.connection_lost()  # the connection dropped just now
            return
        try:
            result = await self.calls(action.run, self.store)
        except StoreError as exc:
            self.core.failed(action, exc, self.clock())
            return
        stored = self.core.finished(action, result, self.clock())
        if stored:
            self.on_done(stored)

    async def _sleep(self, seconds: float) -> None:
        """Until `seconds` have passed or an event came (`_work`): one timer, no task."""
        if seconds <= 0:
            return
        timer = None if seconds == float("inf") else asyncio.get_running_loop().call_later(seconds, self._work.set)
        try:
            await self._work.wait()
        finally:
            if timer is not None:
                timer.cancel()

    async def _drain(self) -> None:
        """On stop: store what is answered within `DRAIN_GRACE_S`, give the rest back to the queue."""
        self.core.stop()
        deadline = time.monotonic() + DRAIN_GRACE_S
        while True:
            action = self.core.next_action(self.clock(), self._dealer.connected)
            if not isinstance(action, Wait):
                await self._do(action)
            elif self.core.in_flight and time.monotonic() < deadline:
                self._work.clear()
                await self._sleep(min(deadline - time.monotonic(), action.until - self.clock()))
            else:
                break
        self.core.give_back()
        while not isinstance(action := self.core.next_action(self.clock(), self._dealer.connected), Wait):
            await self._do(action)
        if self.core.to_release:
            logger.error("could not give back %d orders in flight; their leases will expire", len(self.core.to_release))

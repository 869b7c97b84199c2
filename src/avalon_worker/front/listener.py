"""The HTTP listener: Avalon's JSON-RPC listener API (`api`, `receipts`) over HTTP (`http_server`).

Every answer is HTTP 200 with `Content-Type: application/json` and a JSON-RPC body, whatever
went wrong; a request that breaks HTTP itself is answered 400 and its connection closed. Bodies
are bounded (`max_body_bytes`, checked from Content-Length before anything is read, and while
reading a chunked body), must arrive within `body_timeout_s`, and together within one budget
(`http_guard.BodyBudget`): a body still arriving that does not fit is answered BUSY (8) at once.
`http_server` words none of these answers itself: `Listener.refusal` does.

Submits are committed in batches: the calls that arrive while one commit runs (on the store's
thread, or, for the embedded store, on the event loop itself: `store_calls`) gather for the
next, so one fsync covers many orders. A submit whose order finishes within the call (its
`responseTimeoutMSecs`, at most `max_wait_s`) is answered with the result; otherwise with
"pending" (5), once the order is committed. That wait is the call's, not the order's: the order
is kept without it and runs under the worker operator's time limit (`api.submission`).
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from .. import defaults
from ..errors import ErrorCode
from ..store import (
    Completion,
    Handoff,
    LeasedOrder,
    OrderState,
    OrderStatus,
    Store,
    StoreError,
    StoreRefused,
    SubmitOutcome,
)
from . import api, receipts
from .http_guard import BodyBudget, HttpLimits
from .http_server import Refusal, serve_http
from .store_calls import StoreCalls

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ListenerConfig:
    max_body_bytes: int = defaults.MAX_REQUEST_BYTES
    body_timeout_s: float = 10.0  # the whole body must arrive within this
    body_budget_bytes: int = 0  # bodies held at once, all connections together (0: `HttpLimits.budget_for`)
    max_wait_s: float = defaults.SUBMIT_WAIT_S  # a submit waits at most this for its result
    stale_after_s: float = defaults.STALE_AFTER_S  # a worker without a heartbeat for this long is shown as off-line
    result_ttl_s: float = defaults.RESULT_TTL_S  # what the store keeps; outcomes remembered here expire with it
    recent_outcomes: int = 4096  # outcomes stored by the pump beside us, kept to answer GetResult without a read


class LocalPump(Protocol):
    """The pump in the listener's own process (`pump.Pump`): it takes the orders a submit leases
    to it in the same transaction, and is woken for the rest."""

    def handoff(self) -> Handoff: ...

    def take(self, orders: Sequence[LeasedOrder]) -> None: ...

    def wake(self) -> None: ...


@dataclass
class Listener:
    """The app `http_server` serves (`serve_on`): answers every POST body, and words its refusals."""

    store: Store
    calls: StoreCalls  # where the store's methods run
    config: ListenerConfig = field(default_factory=ListenerConfig)
    pump: LocalPump | None = None  # the pump in this process, if any
    clock: Callable[[], float] = time.time

    def __post_init__(self) -> None:
        self._known_workers: set[str] = set()
        self._batch: list[tuple[api.Submission, asyncio.Future[SubmitOutcome]]] = []
        self._flusher: asyncio.Task[None] | None = None
        self._waiters: dict[str, asyncio.Future[Completion | None]] = {}
        self._waiting_on: dict[str, str] = {}  # the worker id of each waiting submit's order
        self._recent: OrderedDict[str, tuple[Completion, float]] = OrderedDict()
        budget = self.config.body_budget_bytes or HttpLimits().budget_for(self.config.max_body_bytes)
        self.budget = BodyBudget(budget)

    async def serve_on(self, sock: socket.socket, limits: HttpLimits) -> Callable[[], Awaitable[None]]:
        """Serve HTTP on the bound, listening `sock` within `limits`; return what stops it."""
        busy = api.CallError(ErrorCode.BUSY, "the listener has as many connections as it serves; try again later")
        return await serve_http(sock, self, limits, max_body_bytes=self.config.max_body_bytes,
                                body_timeout_s=self.config.body_timeout_s, budget=self.budget, overloaded=busy.reply())

    def order_done(self, completions: Sequence[Completion]) -> None:
        """Outcomes just stored by the pump: answer the submits waiting for them, and remember
        the outcomes for the GetResult that Avalon's SDK sends next."""
        now = self.clock()
        for item in completions:
            waiter = self._waiters.pop(item.work_order_id, None)
            self._waiting_on.pop(item.work_order_id, None)
            if waiter is not None and not waiter.done():
                waiter.set_result(item)
            self._recent[item.work_order_id] = (item, now)
        while len(self._recent) > self.config.recent_outcomes:
            self._recent.popitem(last=False)

    async def _status(self, work_order_id: str) -> OrderStatus | None:
        remembered = self._recent.get(work_order_id)
        if remembered is not None and self.clock() - remembered[1] < self.config.result_ttl_s:
            return OrderStatus(OrderState.DONE, remembered[0].outcome, remembered[0].is_error)
        return await self.calls(self.store.status, work_order_id)

    async def outcomes_stored(self, worker_id: str | None) -> None:
        """Outcomes of `worker_id`'s orders stored by a pump in another process (None: of any
        worker, as after the store's notifications reconnect): answer the submits waiting for
        them."""
        keys = [key for key, worker in self._waiting_on.items() if worker_id in (None, worker)]
        if keys:
            self.order_done(await self.calls(self.store.finished, keys))

    async def answer(self, body: bytes) -> tuple[bytes, bool]:
        """The JSON answer to a POST's `body`, and whether the connection closes after it."""
        try:
            return await self._dispatch(api.parse_call(body)), False
        except api.CallError as exc:
            return exc.reply(), False
        except StoreRefused as exc:
            logger.warning("%s", exc)  # the store's words, which may name it: for the operator only
            return api.CallError(ErrorCode.INVALID_PARAMETER, "the work-order store refused this request "
                                 "(the operator's log says why); change it before sending it again").reply(), False
        except StoreError as exc:
            logger.error("%s", exc)
            return api.CallError(ErrorCode.BUSY, "the work-order store is not available right now; "
                                 "try again later").reply(), False
        except Exception:
            logger.exception("the listener failed on a request")
            return api.CallError(ErrorCode.UNKNOWN_ERROR, "the listener failed on this request; "
                                 "try again, and tell the operator if it persists").reply(), True

    def refusal(self, why: Refusal) -> bytes:
        """The JSON answer to a request the HTTP server refuses before its body is read whole."""
        if why is Refusal.NOT_POST:
            return api.CallError(ErrorCode.INVALID_PARAMETER, "send JSON-RPC requests with HTTP POST").reply()
        if why is Refusal.TOO_LARGE:
            return api.CallError(ErrorCode.INVALID_PARAMETER,
                                 f"the request body is larger than {self.config.max_body_bytes} bytes").reply()
        if why is Refusal.OVER_BUDGET:
            return api.CallError(ErrorCode.BUSY, "the listener is receiving as many large requests as it "
                                 "holds at once; try again later").reply()
        return api.CallError(ErrorCode.INVALID_PARAMETER,
                             f"the request body did not arrive within {self.config.body_timeout_s:g} s").reply()

    async def _dispatch(self, call: api.Call) -> bytes:
        now = self.clock()
        if call.method in receipts.METHODS:
            return await self._receipt(call, now)
        if call.method == "WorkOrderGetResult":
            canonical, as_sent = api.get_result_id(call)
            return api.outcome_reply(call.reply_id, as_sent, await self._status(canonical))
        if call.method == "WorkOrderSubmit":
            return await self._submit(call)
        if call.method == "WorkerLookUp":
            records = await self.calls(self.store.workers)
            return api.worker_lookup(call, records, now, self.config.stale_after_s)
        record = await self.calls(self.store.worker, api.retrieve_id(call))
        return api.worker_retrieve(call, record, now, self.config.stale_after_s)

    async def _receipt(self, call: api.Call, now: float) -> bytes:
        """The receipt methods: checked by `receipts`, kept in the store."""
        if call.method == receipts.CREATE:
            outcome = await self.calls(self.store.create_receipt, receipts.new_receipt(call), now)
            return receipts.created_reply(call, outcome)
        if call.method in (receipts.LOOKUP, receipts.LOOKUP_NEXT):
            query, after = receipts.lookup_query(call)
            page = await self.calls(self.store.lookup_receipts, query, after, receipts.PAGE_SIZE)
            return receipts.lookup_reply(call, page)
        key = receipts.receipt_id(call)
        kept = await self.calls(self.store.receipt, key)
        if call.method == receipts.RETRIEVE:
            return receipts.retrieve_reply(call, kept)
        if call.method == receipts.UPDATE_RETRIEVE:
            return receipts.update_retrieve_reply(call, kept)
        update, seen = receipts.new_update(call, kept)
        return receipts.updated_reply(call, await self.calls(self.store.add_receipt_update, key, update, seen))

    async def _submit(self, call: api.Call) -> bytes:
        ids = api.submit_ids(call)
        if ids.worker_id not in self._known_workers and await self.calls(self.store.worker, ids.worker_id) is not None:
            self._known_workers.add(ids.worker_id)
        item = api.submission(call, ids, self._known_workers, self.config.max_body_bytes, self.config.max_wait_s)
        loop = asyncio.get_running_loop()
        key = item.order.work_order_id
        waiter: asyncio.Future[Completion | None] | None = None
        if item.wait_s > 0 and key not in self._waiters:
            waiter = self._waiters[key] = loop.create_future()  # before the commit: the pump may be quick
            self._waiting_on[key] = item.order.worker_id
        accepted: asyncio.Future[SubmitOutcome] = loop.create_future()
        self._batch.append((item, accepted))
        if self._flusher is None:
            self._flusher = asyncio.create_task(self._flush())
        try:
            outcome = await accepted
        except BaseException:
            self._forget(key, waiter)
            raise
        refusal = api.submit_refusal(item, outcome)
        if refusal is not None:
            self._forget(key, waiter)
            return refusal
        if waiter is None:
            return api.pending_reply(call.reply_id, item.work_order_id)
        timer = loop.call_later(item.wait_s, self._give_up, key, waiter)
        done = await waiter
        timer.cancel()
        if done is None:
            return api.pending_reply(call.reply_id, item.work_order_id)
        return api.outcome_reply(call.reply_id, item.work_order_id, OrderStatus(OrderState.DONE, done.outcome, done.is_error))

    def _forget(self, key: str, waiter: asyncio.Future[Completion | None] | None) -> None:
        if waiter is not None and self._waiters.get(key) is waiter:
            del self._waiters[key]
            self._waiting_on.pop(key, None)

    def _give_up(self, key: str, waiter: asyncio.Future[Completion | None]) -> None:
        """A submit's wait is over: it answers "pending"."""
        self._forget(key, waiter)
        if not waiter.done():
            waiter.set_result(None)

    async def _flush(self) -> None:
        """Commit the gathered submits, batch after batch, until none are left."""
        try:
            while self._batch:
                batch, self._batch = self._batch, []
                orders = [item.order for item, _ in batch]
                handoff = self.pump.handoff() if self.pump is not None else None
                now = self.clock()
                try:
                    outcomes = await self.calls(self.store.submit, orders, now, handoff)
                except StoreRefused as exc:
                    if len(batch) > 1:
                        await self._submit_one_by_one(batch)
                    else:
                        batch[0][1].set_exception(exc)
                    continue
                except Exception as exc:
                    for _, future in batch:
                        future.set_exception(exc)
                    continue
                for (_, future), outcome in zip(batch, outcomes, strict=True):
                    future.set_result(outcome)
                if self.pump is not None and handoff is not None:
                    taken = handoff.taken(orders, outcomes, now)
                    if taken:
                        self.pump.take(taken)
                    if outcomes.count(SubmitOutcome.ACCEPTED) > len(taken):
                        self.pump.wake()  # the rest wait in the store, or are another worker's
        finally:
            self._flusher = None

    async def _submit_one_by_one(self, batch: list[tuple[api.Submission, asyncio.Future[SubmitOutcome]]]) -> None:
        """A batch the store refused: each order in a commit of its own, so that only the orders
        it refuses fail (as rare as a store that refuses what the listener has checked)."""
        for item, future in batch:
            try:
                [outcome] = await self.calls(self.store.submit, [item.order], self.clock(), None)
            except Exception as exc:
                future.set_exception(exc)
            else:
                future.set_result(outcome)
        if self.pump is not None:
            self.pump.wake()

"""What runs in the front door's processes: the front door of one worker host (pump + store +
HTTP listener, `serve_front_door`) and a stateless listener for every worker in a shared store
(`serve_listener`), each woken by the store's notifications (`follow_store`).

Any number of stateless listeners run side by side in front of one PostgreSQL database; worker hosts
(`avalon-worker serve --store postgresql://…`) register there and pull their orders from it, so
a listener needs no connection to any worker. It holds no secret and no state of its own: what
it accepts is committed before it answers, and a listener started later returns every stored
result. A submit that may wait for its result (`responseTimeoutMSecs`) is woken by the store's
notification that the outcome was stored, wherever the worker runs.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import time
from collections.abc import Callable

from .. import defaults
from ..store import Store, StoreError, describe_store, open_store
from .door import PARENT_CHECK_S, PUMP_READY_PREFIX, READY_PREFIX, FrontConfig, bind_listen
from .http_guard import HttpLimits
from .listener import Listener, ListenerConfig
from .pump import Pump, expire_pending
from .pump_core import PumpConfig, expiry_interval
from .store_calls import StoreCalls

logger = logging.getLogger(__name__)

# Store calls at once on a store across the network (PostgreSQL): a commit of batched submits
# beside a read, or the pump's lease beside its complete. Two cost less CPU per order than four
# (the threads' GIL hand-offs; docs/performance.md) and than one (the pump's calls wait in line).
STORE_THREADS = 2
PURGE_EVERY_S = 60.0


def follow_store(
    store: Store, loop: asyncio.AbstractEventLoop, *, pump: Pump | None = None, listener: Listener | None = None
) -> Callable[[], None] | None:
    """Wake `pump` when orders for its worker arrive and answer `listener`'s waiting submits
    when their outcomes are stored, from the store's notifications (a store shared between
    processes has them; the embedded one needs none). Returns the function that stops it."""
    subscribe = getattr(store, "subscribe", None)
    if subscribe is None:
        return None
    tasks: set[asyncio.Task[None]] = set()

    def on_loop(callback: Callable[[], None]) -> None:
        try:
            loop.call_soon_threadsafe(callback)
        except RuntimeError:  # the loop has closed: nobody is waiting any more
            pass

    def on_orders(worker_id: str | None) -> None:
        if pump is not None and worker_id in (None, pump.worker_id):
            on_loop(pump.wake)

    def on_results(worker_id: str | None) -> None:
        def answer() -> None:
            if listener is not None:
                task = loop.create_task(listener.outcomes_stored(worker_id))
                tasks.add(task)
                task.add_done_callback(tasks.discard)

        on_loop(answer)

    unsubscribe: Callable[[], None] = subscribe(
        on_orders=on_orders if pump is not None else None, on_results=on_results if listener is not None else None
    )
    return unsubscribe


async def expire_every(store: Store, calls: StoreCalls, pending_ttl_s: float, clock: Callable[[], float] = time.time) -> None:
    """Expire the orders of workers gone silent for `pending_ttl_s`, now and then, for ever (a
    task to cancel): with no worker host left to do it, the listeners do."""
    while True:
        try:
            await expire_pending(store, calls, pending_ttl_s, clock())
        except StoreError as exc:
            logger.error("could not expire old pending orders: %s", exc)
        await asyncio.sleep(expiry_interval(PURGE_EVERY_S, pending_ttl_s))


async def serve_listener(store: Store, sock: socket.socket, config: ListenerConfig, limits: HttpLimits,
                         pending_ttl_s: float = defaults.PENDING_TTL_S) -> None:
    """Serve the listener API on the bound `sock` for every worker in `store` until SIGTERM
    or SIGINT; expire the orders of workers gone silent for `pending_ttl_s`."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    calls = StoreCalls.for_store(store, STORE_THREADS)
    listener = Listener(store, calls, config)
    unfollow = follow_store(store, loop, listener=listener)
    close = None
    expiring = asyncio.create_task(expire_every(store, calls, pending_ttl_s))
    try:
        close = await listener.serve_on(sock, limits)
        bound = sock.getsockname()
        logger.info("listener on http://%s:%d for every worker in the store", bound[0], bound[1])
        print(f"{READY_PREFIX}http://{bound[0]}:{bound[1]}", flush=True)
        await stop.wait()
    finally:
        expiring.cancel()
        if unfollow is not None:
            unfollow()
        if close is not None:
            await close()
        calls.close()
        logger.info("listener stopped")


# the front-door process ----------------------------------------------------------------------------


def print_ready(line: str) -> None:
    print(line, flush=True)


async def serve_front_door(config: FrontConfig, parent_pid: int | None = None, sock: socket.socket | None = None,
                ready: Callable[[str], None] = print_ready) -> None:
    """Run the pump (and the HTTP listener on `sock`, if `config.listen`) until a signal, or
    until `parent_pid` is no longer our parent. `ready` is told the line that says it serves."""
    store = open_store(config.store, max_pending=config.max_pending, max_pending_bytes=64 * config.max_request_bytes)
    calls = StoreCalls.for_store(store, threads=1)  # one thread at most: the store's one writer
    stop_event = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop_event.set)
    pump = Pump(store, config.endpoint, calls, PumpConfig(
        lease_s=config.lease_s, max_in_flight=config.max_in_flight, result_ttl_s=config.result_ttl_s,
        heartbeat_s=config.heartbeat_s, pending_ttl_s=config.pending_ttl_s,
    ))
    listener_config = ListenerConfig(max_body_bytes=config.max_request_bytes, result_ttl_s=config.result_ttl_s,
                                     stale_after_s=config.stale_after_s, body_budget_bytes=config.limits.body_budget_bytes)
    listener = Listener(store, calls, listener_config, pump=pump)
    pump.on_done = listener.order_done
    unfollow = close = None
    try:
        worker_id = await pump.register()
        unfollow = follow_store(store, loop, pump=pump, listener=listener if config.listen else None)
        if config.listen:
            if sock is None:
                sock = bind_listen(config.listen)
            close = await listener.serve_on(sock, config.limits)
            bound = sock.getsockname()
            logger.info("listener for worker %s on http://%s:%d, store %s", worker_id[:16], bound[0], bound[1],
                        describe_store(config.store))
            ready(f"{READY_PREFIX}http://{bound[0]}:{bound[1]}")
        else:
            logger.info("worker %s pulls its orders from the store %s", worker_id[:16], describe_store(config.store))
            ready(f"{PUMP_READY_PREFIX}{worker_id}")
        watcher = asyncio.create_task(_watch_parent(parent_pid, stop_event))
        await pump.run(stop_event)
        watcher.cancel()
    finally:
        if unfollow is not None:
            unfollow()
        if close is not None:
            await close()
        await calls(store.close)
        calls.close()
        logger.info("the %s stopped", "listener and pump" if config.listen else "pump")


async def _watch_parent(parent_pid: int | None, stop_event: asyncio.Event) -> None:
    while parent_pid is not None and not stop_event.is_set():
        if os.getppid() != parent_pid:
            logger.warning("the worker process is gone; the listener stops")
            stop_event.set()
        await asyncio.sleep(PARENT_CHECK_S)

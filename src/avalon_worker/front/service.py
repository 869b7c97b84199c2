"""`avalon-worker listener`: a stateless HTTP listener for every worker in a shared store, and
`avalon-worker pump`: a worker's orders pulled from that store by a process of their own.

Any number of these run side by side in front of one PostgreSQL database; worker hosts
(`avalon-worker serve --store postgresql://…`) register there and pull their orders from it, so
a listener needs no connection to any worker. It holds no secret and no state of its own: what
it accepts is committed before it answers, and a listener started later returns every stored
result. A submit that may wait for its result (`responseTimeoutMSecs`) is woken by the store's
notification that the outcome was stored, wherever the worker runs.

`serve --store` starts its pump itself. `pump` is for a worker whose command line is fixed, as
under Gramine-SGX, where it is measured into the enclave: the pump runs beside it (a sidecar
container), reaches its ZMQ endpoint as any client does, and keeps the database credentials out
of the enclave.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from typing import Any

from ..cli_options import POSITIVE_COUNT, SECONDS, add_log_level_argument
from ..errors import SetupError
from ..pool import DEFAULT_MAX_REQUEST_BYTES
from ..store import (
    DEFAULT_MAX_PENDING,
    DEFAULT_PENDING_TTL_S,
    DEFAULT_RESULT_TTL_S,
    POSTGRES_SCHEMES,
    Store,
    StoreError,
    describe_store,
    open_store,
)
from ..store.cli import STORE_ENV, add_store_argument
from . import http_guard
from .door import PARENT_CHECK_S, PUMP_READY_PREFIX, READY_PREFIX, FrontConfig, bind_listen
from .http_guard import HttpLimits
from .listener import Listener, ListenerConfig
from .pump import Pump, PumpConfig, expire_pending, expiry_interval

logger = logging.getLogger(__name__)

STORE_THREADS = 4  # store calls at once: GetResult reads run beside the batched submits
PURGE_EVERY_S = 60.0


def add_pending_ttl_argument(parser: argparse.ArgumentParser) -> None:
    """`--pending-ttl`, for every command that keeps orders in a store."""
    parser.add_argument("--pending-ttl", type=SECONDS, default=DEFAULT_PENDING_TTL_S, metavar="S",
                        help="an order that waited this many seconds for a worker that has been off-line as long ends "
                        "with an error its requester reads (default %(default)g: an hour)")


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


async def expire_every(store: Store, executor: Executor, pending_ttl_s: float, clock: Callable[[], float] = time.time) -> None:
    """Expire the orders of workers gone silent for `pending_ttl_s`, now and then, for ever (a
    task to cancel): with no worker host left to do it, the listeners do."""
    while True:
        try:
            await expire_pending(store, executor, pending_ttl_s, clock())
        except StoreError as exc:
            logger.error("could not expire old pending orders: %s", exc)
        await asyncio.sleep(expiry_interval(PURGE_EVERY_S, pending_ttl_s))


async def serve_listener(store: Store, sock: socket.socket, config: ListenerConfig, limits: HttpLimits,
                         pending_ttl_s: float = DEFAULT_PENDING_TTL_S) -> None:
    """Serve the listener API on the bound `sock` for every worker in `store` until SIGTERM
    or SIGINT; expire the orders of workers gone silent for `pending_ttl_s`."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    executor = ThreadPoolExecutor(max_workers=STORE_THREADS, thread_name_prefix="store")
    listener = Listener(store, executor, config)
    unfollow = follow_store(store, loop, listener=listener)
    close = None
    expiring = asyncio.create_task(expire_every(store, executor, pending_ttl_s))
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
        executor.shutdown()


# the front-door process ----------------------------------------------------------------------------


def print_ready(line: str) -> None:
    print(line, flush=True)


async def serve_front_door(config: FrontConfig, parent_pid: int | None = None, sock: socket.socket | None = None,
                ready: Callable[[str], None] = print_ready) -> None:
    """Run the pump (and the HTTP listener on `sock`, if `config.listen`) until a signal, or
    until `parent_pid` is no longer our parent. `ready` is told the line that says it serves."""
    store = open_store(config.store, max_pending=config.max_pending, max_pending_bytes=64 * config.max_request_bytes)
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="store")  # the store's one writer
    stop_event = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop_event.set)
    pump = Pump(store, config.endpoint, executor, PumpConfig(
        lease_s=config.lease_s, max_in_flight=config.max_in_flight, result_ttl_s=config.result_ttl_s,
        heartbeat_s=config.heartbeat_s, pending_ttl_s=config.pending_ttl_s,
    ))
    listener_config = ListenerConfig(max_body_bytes=config.max_request_bytes, result_ttl_s=config.result_ttl_s,
                                     stale_after_s=config.stale_after_s, body_budget_bytes=config.limits.body_budget_bytes)
    listener = Listener(store, executor, listener_config, pump=pump)
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
        executor.submit(store.close).result()
        executor.shutdown()


async def _watch_parent(parent_pid: int | None, stop_event: asyncio.Event) -> None:
    while parent_pid is not None and not stop_event.is_set():
        if os.getppid() != parent_pid:
            logger.warning("the worker process is gone; the listener stops")
            stop_event.set()
        await asyncio.sleep(PARENT_CHECK_S)


def _status_writer(fd: int) -> Callable[[str, str], None]:
    """Tell `serve` (over the pipe `fd`) "ready" or "failed", with one line of text."""

    def say(kind: str, text: str) -> None:
        if fd < 0:
            if kind == "ready":
                print_ready(text)
            return
        try:
            os.write(fd, f"{kind}\t{' '.join(text.split())}\n".encode())
        except OSError:  # `serve` has gone; we stop with it
            pass

    return say


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m avalon_worker.front.service", description=__doc__)
    parser.add_argument("--endpoint", required=True)
    parser.add_argument("--listen-http", default="")
    parser.add_argument("--listen-fd", type=int, default=-1, help="the bound HTTP port, inherited from `serve`")
    parser.add_argument("--status-fd", type=int, default=-1, help="where to say ready or failed (a pipe to `serve`)")
    parser.add_argument("--store", default=os.environ.get(STORE_ENV), required=not os.environ.get(STORE_ENV))
    parser.add_argument("--max-request-bytes", type=int, required=True)
    parser.add_argument("--result-ttl", type=float, default=DEFAULT_RESULT_TTL_S)
    parser.add_argument("--lease-s", type=float, default=10.0)
    parser.add_argument("--max-in-flight", type=int, default=16)
    parser.add_argument("--max-pending", type=int, default=DEFAULT_MAX_PENDING)
    parser.add_argument("--log-level", default="INFO")
    parser.add_argument("--heartbeat-s", type=float, default=5.0)
    parser.add_argument("--stale-after-s", type=float, default=30.0)
    http_guard.add_arguments(parser)
    parser.add_argument("--pending-ttl", type=float, default=DEFAULT_PENDING_TTL_S)
    args = parser.parse_args(argv)
    logging.basicConfig(level=getattr(logging, args.log_level.upper(), logging.INFO),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    config = FrontConfig(args.endpoint, args.listen_http, args.store, args.max_request_bytes, args.result_ttl,
                         args.lease_s, args.max_in_flight, args.max_pending, args.log_level, args.heartbeat_s,
                         args.stale_after_s, http_guard.limits_from(args), args.pending_ttl)
    say = _status_writer(args.status_fd)
    sock = socket.socket(fileno=args.listen_fd) if args.listen_fd >= 0 else None
    if config.listen:
        http_guard.map_large_buffers()
    try:
        asyncio.run(serve_front_door(config, os.getppid(), sock, lambda line: say("ready", line)))
    except (StoreError, SetupError, OSError, TimeoutError, ValueError) as exc:
        if args.status_fd < 0:
            print(f"avalon-worker: the HTTP front door cannot serve: {exc}", file=sys.stderr)
        say("failed", str(exc))
        return 2
    return 0



# the commands ---------------------------------------------------------------------------------------


def add_listener_command(commands: Any) -> None:
    """Add `listener` to the `avalon-worker` subcommands."""
    parser = commands.add_parser(
        "listener", help="serve Avalon's listener API (JSON-RPC over HTTP) for every worker in a shared PostgreSQL store"
    )
    add_store_argument(parser, required=True)
    parser.add_argument("--listen-http", required=True, metavar="HOST:PORT", help="where to serve HTTP (port 0: any free port)")
    parser.add_argument("--max-request-bytes", type=POSITIVE_COUNT, default=DEFAULT_MAX_REQUEST_BYTES,
                        help="larger work orders are refused (default %(default)s); as the workers' own limit")
    parser.add_argument("--max-pending", type=POSITIVE_COUNT, default=DEFAULT_MAX_PENDING,
                        help="pending work orders per worker; more are answered BUSY (default %(default)s)")
    parser.add_argument("--stale-after-s", type=SECONDS, default=30.0,
                        help="a worker without a heartbeat for this long is shown as off-line and left out of "
                        "WorkerLookUp (default %(default)s)")
    http_guard.add_arguments(parser)
    add_pending_ttl_argument(parser)
    add_log_level_argument(parser)
    parser.set_defaults(func=run_listener)


def run_listener(args: argparse.Namespace) -> int:
    from ..cli import _configure_logging

    _configure_logging(args.log_level)
    if not str(args.store).startswith(POSTGRES_SCHEMES):
        print("avalon-worker: a listener of its own needs a store that worker hosts share: --store postgresql://…; "
              "on one host, use `avalon-worker serve --listen-http` instead", file=sys.stderr)
        return 2
    limits = http_guard.limits_from(args)
    http_guard.map_large_buffers()
    try:
        sock = bind_listen(args.listen_http)  # before the store: a port in use is said at once
    except SetupError as exc:
        print(f"avalon-worker: {exc}", file=sys.stderr)
        return 2
    try:
        store = open_store(args.store, max_pending=args.max_pending, max_pending_bytes=64 * args.max_request_bytes)
    except StoreError as exc:
        sock.close()
        print(f"avalon-worker: {exc}", file=sys.stderr)
        return 2
    logger.info("store %s", describe_store(args.store))
    config = ListenerConfig(max_body_bytes=args.max_request_bytes, stale_after_s=args.stale_after_s,
                            body_budget_bytes=limits.body_budget_bytes)
    try:
        asyncio.run(serve_listener(store, sock, config, limits, args.pending_ttl))
    except (OSError, ValueError) as exc:
        print(f"avalon-worker: the listener cannot serve: {exc}", file=sys.stderr)
        return 2
    finally:
        sock.close()
        store.close()
    return 0



def add_pump_command(commands: Any) -> None:
    """Add `pump` to the `avalon-worker` subcommands."""
    parser = commands.add_parser(
        "pump", help="pull one worker's orders from a shared store and run them through its ZMQ endpoint"
    )
    add_store_argument(parser, required=True)
    parser.add_argument("--endpoint", required=True, help="the worker's ZMQ endpoint, e.g. tcp://127.0.0.1:7777")
    parser.add_argument("--max-request-bytes", type=POSITIVE_COUNT, default=DEFAULT_MAX_REQUEST_BYTES,
                        help="as the worker's own limit (default %(default)s)")
    parser.add_argument("--max-in-flight", type=POSITIVE_COUNT, default=8,
                        help="orders sent to the worker and not yet answered (default %(default)s; about "
                        "twice its worker processes)")
    parser.add_argument("--result-ttl", type=SECONDS, default=DEFAULT_RESULT_TTL_S, metavar="S",
                        help="keep work-order results this many seconds (default: a day)")
    add_pending_ttl_argument(parser)
    parser.add_argument("--lease-s", type=SECONDS, default=10.0, help=argparse.SUPPRESS)
    parser.add_argument("--heartbeat-s", type=SECONDS, default=5.0, help=argparse.SUPPRESS)
    add_log_level_argument(parser)
    parser.set_defaults(func=run_pump)


def run_pump(args: argparse.Namespace) -> int:
    from ..cli import _configure_logging

    _configure_logging(args.log_level)
    config = FrontConfig(
        endpoint=args.endpoint, listen="", store=args.store, max_request_bytes=args.max_request_bytes,
        result_ttl_s=args.result_ttl, lease_s=args.lease_s, max_in_flight=args.max_in_flight,
        log_level=args.log_level, heartbeat_s=args.heartbeat_s, pending_ttl_s=args.pending_ttl,
    )
    try:
        asyncio.run(serve_front_door(config))
    except (StoreError, OSError, TimeoutError, ValueError) as exc:
        print(f"avalon-worker: the pump cannot run: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

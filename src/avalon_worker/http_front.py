"""The front door of one worker host: pump + store (+ HTTP listener), in a process of their own.

`avalon-worker serve --listen-http HOST:PORT` starts this process once its ZMQ endpoint is up
(`start`), and so does `serve --store URL` on a host that only pulls its orders from a shared
store (no HTTP here: stateless `avalon-worker listener` processes elsewhere take the requests). The process holds no secret: it sees only the worker's public signup and the
requesters' ciphertexts, and reaches the worker like any client, over ZMQ. Keeping it apart
leaves the supervisor's event loop and the forked worker processes untouched, and gives the
HTTP parsing and the store a core of their own.

It stops on SIGTERM or SIGINT, or when the `serve` process that started it is gone (killed
with SIGKILL, say): in-flight orders left unanswered are then picked up again after their
leases expire, by the next pump for that worker.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from .store import DEFAULT_MAX_PENDING, DEFAULT_RESULT_TTL_S, StoreError, describe_store, open_store
from .store.cli import STORE_ENV

logger = logging.getLogger("avalon_worker.http_front")  # also when run as __main__

READY_PREFIX = "listener on "
PUMP_READY_PREFIX = "pulling orders for worker "
STORE_FILE = "work-orders.sqlite3"
PARENT_CHECK_S = 0.5


@dataclass(frozen=True)
class FrontConfig:
    endpoint: str  # the worker's ZMQ endpoint
    listen: str  # HOST:PORT for HTTP (port 0: any free port), or "" for none
    store: str  # where the store is: a SQLite file or directory, or a postgresql:// URL
    max_request_bytes: int
    result_ttl_s: float = DEFAULT_RESULT_TTL_S
    lease_s: float = 10.0
    max_in_flight: int = 16
    max_pending: int = DEFAULT_MAX_PENDING
    log_level: str = "INFO"
    heartbeat_s: float = 5.0
    stale_after_s: float = 30.0

    def arguments(self) -> list[str]:
        """The command line of the front-door process; the store travels in its environment
        (`STORE_ENV`), as a database URL may hold a password."""
        return [
            "--endpoint", self.endpoint, "--listen-http", self.listen,
            "--max-request-bytes", str(self.max_request_bytes), "--result-ttl", repr(self.result_ttl_s),
            "--lease-s", repr(self.lease_s), "--max-in-flight", str(self.max_in_flight),
            "--max-pending", str(self.max_pending), "--log-level", self.log_level,
            "--heartbeat-s", repr(self.heartbeat_s), "--stale-after-s", repr(self.stale_after_s),
        ]


def split_listen(text: str) -> tuple[str, int]:
    """HOST:PORT (or [v6]:PORT) → (host, port); ValueError with a message otherwise."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"--listen-http needs HOST:PORT, e.g. 127.0.0.1:8080 (got {text!r})")
    return host.strip("[]") or "0.0.0.0", int(port)


def start(config: FrontConfig) -> subprocess.Popen[bytes]:
    """Start the front-door process for a worker whose endpoint is up. It prints
    `listener on http://HOST:PORT` on the shared standard output when it serves; if it cannot
    serve, it says why and sends this process SIGTERM."""
    return subprocess.Popen(
        [sys.executable, "-m", "avalon_worker.http_front", *config.arguments()], stdin=subprocess.DEVNULL,
        env={**os.environ, STORE_ENV: config.store},
    )


def start_for(args: argparse.Namespace, endpoint: str) -> subprocess.Popen[bytes] | None:
    """`start` with the options of `avalon-worker serve`, or None without `--listen-http` or
    `--store`."""
    if not args.listen_http and not args.store:
        return None
    if args.listen_http and not args.insecure_reuse_session_iv:
        logger.warning("--listen-http without --insecure-reuse-session-iv: Avalon's SDK decrypts results with "
                       "sessionKeyIv and cannot read them; clients that read each item's iv can")
    processes = max(args.workers, 1)
    return start(FrontConfig(
        endpoint=connectable(endpoint),
        listen=args.listen_http or "",
        store=args.store or args.state_dir,
        max_request_bytes=args.max_request_bytes,
        result_ttl_s=args.result_ttl,
        lease_s=args.lease_s,
        max_in_flight=max(1, min(64, args.queue_limit + processes)),
        log_level=args.log_level,
        heartbeat_s=args.heartbeat_s,
        stale_after_s=args.stale_after_s,
    ))


def connectable(endpoint: str) -> str:
    """A bound endpoint as a client reaches it from this host (`*` and 0.0.0.0 → loopback)."""
    for wildcard in ("tcp://*:", "tcp://0.0.0.0:"):
        if endpoint.startswith(wildcard):
            return "tcp://127.0.0.1:" + endpoint[len(wildcard):]
    return endpoint


def read_ready(process: subprocess.Popen[str], endpoint_prefix: str = "listening on ") -> tuple[str, str]:
    """(ZMQ endpoint, HTTP URL) from the standard output of a `serve --listen-http` process
    started with `stdout=PIPE, text=True`; RuntimeError if it stops first."""
    assert process.stdout is not None
    endpoint = url = ""
    while not url:
        line = process.stdout.readline()
        if not line:
            raise RuntimeError(f"the worker stopped before serving HTTP (exit status {process.wait()})")
        if line.startswith(endpoint_prefix):
            endpoint = line[len(endpoint_prefix):].strip()
        elif line.startswith(READY_PREFIX):
            url = line[len(READY_PREFIX):].strip() + "/"
    return endpoint, url


def stop(process: subprocess.Popen[bytes], timeout_s: float = 10.0) -> None:
    """Ask the front door to stop (it gives back the orders it could not finish) and wait."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


async def serve(config: FrontConfig, parent_pid: int | None = None) -> None:
    """Run the pump (and the HTTP listener, if `config.listen`) until a signal, or until
    `parent_pid` is no longer our parent."""
    # Imported here, in the front-door process only: `avalon-worker` itself starts without them.
    from aiohttp import web

    from .listener import Listener, ListenerConfig
    from .listener_service import follow_store
    from .pump import Pump, PumpConfig

    store = open_store(config.store, max_pending=config.max_pending, max_pending_bytes=64 * config.max_request_bytes)
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="store")  # the store's one writer
    stop_event = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop_event.set)
    pump = Pump(store, config.endpoint, executor, PumpConfig(
        lease_s=config.lease_s, max_in_flight=config.max_in_flight, result_ttl_s=config.result_ttl_s,
        heartbeat_s=config.heartbeat_s,
    ))
    listener_config = ListenerConfig(max_body_bytes=config.max_request_bytes, result_ttl_s=config.result_ttl_s,
                                     stale_after_s=config.stale_after_s)
    listener = Listener(store, executor, listener_config, pump=pump)
    pump.on_done = listener.order_done
    runner = web.AppRunner(listener.app(), access_log=None, handle_signals=False) if config.listen else None
    unfollow = None
    try:
        worker_id = await pump.register()
        unfollow = follow_store(store, loop, pump=pump, listener=listener if runner else None)
        if runner is not None:
            host, port = split_listen(config.listen)
            await runner.setup()
            site = web.TCPSite(runner, host, port, reuse_address=True)
            await site.start()
            bound = runner.addresses[0]
            logger.info("listener for worker %s on http://%s:%d, store %s", worker_id[:16], bound[0], bound[1],
                        describe_store(config.store))
            print(f"{READY_PREFIX}http://{bound[0]}:{bound[1]}", flush=True)
        else:
            logger.info("worker %s pulls its orders from the store %s", worker_id[:16], describe_store(config.store))
            print(f"{PUMP_READY_PREFIX}{worker_id}", flush=True)
        watcher = asyncio.create_task(_watch_parent(parent_pid, stop_event))
        await pump.run(stop_event)
        watcher.cancel()
    finally:
        if unfollow is not None:
            unfollow()
        if runner is not None:
            await runner.cleanup()
        executor.submit(store.close).result()
        executor.shutdown()


async def _watch_parent(parent_pid: int | None, stop_event: asyncio.Event) -> None:
    while parent_pid is not None and not stop_event.is_set():
        if os.getppid() != parent_pid:
            logger.warning("the worker process is gone; the listener stops")
            stop_event.set()
        await asyncio.sleep(PARENT_CHECK_S)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m avalon_worker.http_front", description=__doc__)
    parser.add_argument("--endpoint", required=True)
    parser.add_argument("--listen-http", default="")
    parser.add_argument("--store", default=os.environ.get(STORE_ENV), required=not os.environ.get(STORE_ENV))
    parser.add_argument("--max-request-bytes", type=int, required=True)
    parser.add_argument("--result-ttl", type=float, default=DEFAULT_RESULT_TTL_S)
    parser.add_argument("--lease-s", type=float, default=10.0)
    parser.add_argument("--max-in-flight", type=int, default=16)
    parser.add_argument("--max-pending", type=int, default=DEFAULT_MAX_PENDING)
    parser.add_argument("--log-level", default="INFO")
    parser.add_argument("--heartbeat-s", type=float, default=5.0)
    parser.add_argument("--stale-after-s", type=float, default=30.0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=getattr(logging, args.log_level.upper(), logging.INFO),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    config = FrontConfig(args.endpoint, args.listen_http, args.store, args.max_request_bytes, args.result_ttl,
                         args.lease_s, args.max_in_flight, args.max_pending, args.log_level, args.heartbeat_s,
                         args.stale_after_s)
    parent = os.getppid()
    try:
        asyncio.run(serve(config, parent))
    except (StoreError, OSError, TimeoutError, ValueError) as exc:
        print(f"avalon-worker: the HTTP listener cannot serve: {exc}", file=sys.stderr)
        if os.getppid() == parent:
            os.kill(parent, signal.SIGTERM)  # `serve` stops and reports it rather than run half-deployed
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The HTTP front door of one worker host: listener + pump + store, in a process of their own.

`avalon-worker serve --listen-http HOST:PORT` starts this process once its ZMQ endpoint is up
(`start`). The process holds no secret: it sees only the worker's public signup and the
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

from .store import DEFAULT_MAX_PENDING, DEFAULT_RESULT_TTL_S, StoreError, open_store

logger = logging.getLogger("avalon_worker.http_front")  # also when run as __main__

READY_PREFIX = "listener on "
STORE_FILE = "work-orders.sqlite3"
PARENT_CHECK_S = 0.5


@dataclass(frozen=True)
class FrontConfig:
    endpoint: str  # the worker's ZMQ endpoint
    listen: str  # HOST:PORT for HTTP (port 0: any free port)
    store: str  # where the store is (a SQLite file path for now)
    max_request_bytes: int
    result_ttl_s: float = DEFAULT_RESULT_TTL_S
    lease_s: float = 10.0
    max_in_flight: int = 16
    max_pending: int = DEFAULT_MAX_PENDING
    log_level: str = "INFO"

    def arguments(self) -> list[str]:
        return [
            "--endpoint", self.endpoint, "--listen-http", self.listen, "--store", self.store,
            "--max-request-bytes", str(self.max_request_bytes), "--result-ttl", repr(self.result_ttl_s),
            "--lease-s", repr(self.lease_s), "--max-in-flight", str(self.max_in_flight),
            "--max-pending", str(self.max_pending), "--log-level", self.log_level,
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
    return subprocess.Popen([sys.executable, "-m", "avalon_worker.http_front", *config.arguments()], stdin=subprocess.DEVNULL)


def start_for(args: argparse.Namespace, endpoint: str) -> subprocess.Popen[bytes] | None:
    """`start` with the options of `avalon-worker serve`, or None without `--listen-http`."""
    if not args.listen_http:
        return None
    if not args.insecure_reuse_session_iv:
        logger.warning("--listen-http without --insecure-reuse-session-iv: Avalon's SDK decrypts results with "
                       "sessionKeyIv and cannot read them; clients that read each item's iv can")
    processes = max(args.workers, 1)
    return start(FrontConfig(
        endpoint=connectable(endpoint),
        listen=args.listen_http,
        store=args.state_dir,
        max_request_bytes=args.max_request_bytes,
        result_ttl_s=args.result_ttl,
        lease_s=args.lease_s,
        max_in_flight=max(1, min(64, args.queue_limit + processes)),
        log_level=args.log_level,
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
    """Run listener and pump until a signal, or until `parent_pid` is no longer our parent."""
    # Imported here, in the front-door process only: `avalon-worker` itself starts without them.
    from aiohttp import web

    from .listener import Listener, ListenerConfig
    from .pump import Pump, PumpConfig

    host, port = split_listen(config.listen)
    store = open_store(config.store, max_pending=config.max_pending, max_pending_bytes=64 * config.max_request_bytes)
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="store")  # the store's one writer
    stop_event = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop_event.set)
    pump = Pump(store, config.endpoint, executor, PumpConfig(
        lease_s=config.lease_s, max_in_flight=config.max_in_flight, result_ttl_s=config.result_ttl_s,
    ))
    listener_config = ListenerConfig(max_body_bytes=config.max_request_bytes, result_ttl_s=config.result_ttl_s)
    listener = Listener(store, executor, listener_config, on_submitted=pump.wake)
    pump.on_done = listener.order_done
    runner = web.AppRunner(listener.app(), access_log=None, handle_signals=False)
    try:
        worker_id = await pump.register()
        await runner.setup()
        site = web.TCPSite(runner, host, port, reuse_address=True)
        await site.start()
        bound = runner.addresses[0]
        logger.info("listener for worker %s on http://%s:%d, store %s", worker_id[:16], bound[0], bound[1], config.store)
        print(f"{READY_PREFIX}http://{bound[0]}:{bound[1]}", flush=True)
        watcher = asyncio.create_task(_watch_parent(parent_pid, stop_event))
        await pump.run(stop_event)
        watcher.cancel()
    finally:
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
    parser.add_argument("--listen-http", required=True)
    parser.add_argument("--store", required=True)
    parser.add_argument("--max-request-bytes", type=int, required=True)
    parser.add_argument("--result-ttl", type=float, default=DEFAULT_RESULT_TTL_S)
    parser.add_argument("--lease-s", type=float, default=10.0)
    parser.add_argument("--max-in-flight", type=int, default=16)
    parser.add_argument("--max-pending", type=int, default=DEFAULT_MAX_PENDING)
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    logging.basicConfig(level=getattr(logging, args.log_level.upper(), logging.INFO),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    config = FrontConfig(args.endpoint, args.listen_http, args.store, args.max_request_bytes, args.result_ttl,
                         args.lease_s, args.max_in_flight, args.max_pending, args.log_level)
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

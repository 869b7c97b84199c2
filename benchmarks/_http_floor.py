#!/usr/bin/env python3
"""The HTTP floor of the front door: the listener's own HTTP server (`front/http_server.py`, on
asyncio and llhttp, with the listener's bounds) in a process of its own, answering every POST
with a fixed body and doing nothing else: no JSON, no store, no worker.

`http_listener.py` drives it with the same load as the real front door (each order a submit and a
get-result on a keep-alive connection) and counts its CPU per order: what the two HTTP requests
of an order cost this process structure before any of the listener's work. The fixed body is
read from the file named by the first argument (a real result's answer, so that the bytes
written are those of a real order). A submit is answered after the milliseconds of the second
argument, as the listener answers it once the worker is done: so the requests arrive at the
front door's own rate, and the loop wakes as often per request as it does there (answered at
once, the same connections bring ten times the rate, and each wake-up serves more requests).
Prints `READY http://host:port` when it serves.
"""

from __future__ import annotations

import asyncio
import signal
import socket
import sys
from pathlib import Path

from avalon_worker import defaults
from avalon_worker.front.http_guard import BodyBudget, HttpLimits
from avalon_worker.front.http_server import Refusal, serve_http


class FixedAnswer:
    """An `HttpApp` that answers every body with the same bytes."""

    def __init__(self, body: bytes, submit_wait_s: float) -> None:
        self.body = body
        self.submit_wait_s = submit_wait_s

    async def answer(self, body: bytes) -> tuple[bytes, bool]:
        if b'"WorkOrderSubmit"' in body:
            await asyncio.sleep(self.submit_wait_s)
        return self.body, False

    def refusal(self, why: Refusal) -> bytes:
        return b'{"jsonrpc":"2.0","id":null,"error":{"code":2,"message":"refused"}}'


async def main(body: bytes, submit_wait_s: float) -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(1024)
    limits = HttpLimits()
    max_body = defaults.MAX_REQUEST_BYTES
    close = await serve_http(sock, FixedAnswer(body, submit_wait_s), limits, max_body_bytes=max_body, body_timeout_s=10.0,
                             budget=BodyBudget(limits.budget_for(max_body)), overloaded=b"{}")
    host, port = sock.getsockname()
    print(f"READY http://{host}:{port}", flush=True)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    await close()


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1]).read_bytes(), float(sys.argv[2]) / 1000))

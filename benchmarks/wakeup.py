#!/usr/bin/env python3
"""What a worker process pays to wake the supervisor: its CPU per reused-key hello, with the reader
of its replies asleep and with that reader spinning.

A worker process's loop (`_internal/child.run`, the real `Processor`, an RSA-2048 identity) is
forked on one end of a socket pair, as `serve` does; this process plays the supervisor on the
other end, keeping `--depth` orders in flight and reading replies either by blocking in `poll`
(as the supervisor's epoll does: the process sleeps between replies) or by spinning on a
non-blocking `recv` (it never sleeps). The worker process's CPU per order (from /proc) differs by
what the kernel does, in the sender's time, to wake a sleeping reader on another core; a trivial
`process` (a fixed reply, no cryptography) shows the loop's own cost. A third row holds each reply
until `--batch` of them are ready and sends them in one `sendmsg` (as a worker process that
answered several orders at once would: here without any bound, to measure only what fewer
wake-ups would save). A fourth sends every reply at once, on a socket the reader does not wait
on, and rings a doorbell (a byte on a second socket pair, which the reader waits on) after
every `--batch` replies and before it waits for work: no reply is held back in the worker
process (one that dies leaves its replies in the socket), only the wake-up is. Rounds
alternate the modes.

Run by hand: `python benchmarks/wakeup.py [--orders 6000] [--rounds 3] [--depth 4] [--batch 2]`.
"""

from __future__ import annotations

import argparse
import logging
import os
import select
import socket
import statistics
import tempfile
from collections.abc import Callable, Sequence
from typing import Any

from _handle_floor import reused_key_hello
from throughput import _cpu_seconds

from avalon_worker._internal import child
from avalon_worker._internal.framing import ORDER, REPLY, Reader, encode, send_all
from avalon_worker.processor import Outcome

MAX_PAYLOAD = 1 << 20


def _send_in_batches(batch: int) -> Callable[[socket.socket, Sequence[Any]], None]:
    """A `send_all` that holds messages until `batch` of them are ready, then sends them in one call."""
    held: list[Any] = []

    def send(sock: socket.socket, buffers: Sequence[Any]) -> None:
        held.extend(buffers)
        if len(held) >= batch * len(buffers):
            send_all(sock, held)
            held.clear()

    return send


def _ring_every(batch: int, bell: socket.socket) -> tuple[Callable[[socket.socket, Sequence[Any]], None], Callable[[], None]]:
    """A `send_all` that sends at once and rings `bell` after every `batch` messages, and an
    `idle` that rings it for those not rung for yet (the process is about to wait for work)."""
    unrung = 0

    def send(sock: socket.socket, buffers: Sequence[Any]) -> None:
        nonlocal unrung
        send_all(sock, buffers)
        unrung += 1
        if unrung >= batch:
            bell.send(b"!")
            unrung = 0

    def idle() -> None:
        nonlocal unrung
        if unrung:
            bell.send(b"!")
            unrung = 0

    return send, idle


def _serve(theirs: socket.socket, ringer: socket.socket, process: Callable[[bytes | bytearray], Any], batch: int,
           doorbell: bool) -> None:
    """The worker process's side: its real loop, its replies sent as the row says."""
    idle: Callable[[], None] = lambda: None  # noqa: E731
    if doorbell:
        child.send_all, idle = _ring_every(batch, ringer)  # type: ignore[attr-defined]
    elif batch > 1:
        child.send_all = _send_in_batches(batch)  # type: ignore[attr-defined]
    child.run(theirs, process, None, MAX_PAYLOAD, idle)


def _replies(reader: Reader, ours: socket.socket, bell: socket.socket, spin: bool, doorbell: bool) -> list[Any] | None:
    """The messages the supervisor's side reads in one turn (none yet, for a spinning reader; None
    when the worker process has gone)."""
    if spin:
        try:
            messages = reader.read(ours, socket.MSG_DONTWAIT)
        except BlockingIOError:
            return []
        if doorbell:  # unread, its rings would fill the socket's buffer and stop the worker process
            try:
                bell.recv(4096, socket.MSG_DONTWAIT)
            except BlockingIOError:
                pass
        return messages
    if not doorbell:
        select.select([ours], [], [])
        return reader.read(ours)
    select.select([bell], [], [])  # asleep until rung, then everything the socket holds
    bell.recv(4096)
    messages = []
    while True:
        try:
            more = reader.read(ours, socket.MSG_DONTWAIT)
        except BlockingIOError:
            return messages
        if more is None:
            return None
        messages += more


def one_run(process: Callable[[bytes | bytearray], Any], frame: bytes, orders: int, depth: int, spin: bool,
            batch: int = 1, doorbell: bool = False) -> float:
    """The forked worker process's CPU µs per order over `orders` orders (a multiple of `batch`)."""
    ours, theirs = socket.socketpair()
    bell, ringer = socket.socketpair()
    pid = os.fork()
    if pid == 0:
        ours.close()
        bell.close()
        try:
            _serve(theirs, ringer, process, batch, doorbell)
        finally:
            os._exit(0)
    theirs.close()
    ringer.close()
    reader = Reader(MAX_PAYLOAD)
    sent = answered = 0
    start = _cpu_seconds(pid)
    while answered < orders:
        while sent < orders and sent - answered < depth:
            sent += 1
            send_all(ours, encode(ORDER, sent, frame))
        messages = _replies(reader, ours, bell, spin, doorbell)
        assert messages is not None, "the worker process went away"
        answered += sum(1 for kind, _, _ in messages if kind == REPLY)
    used = _cpu_seconds(pid) - start
    ours.close()
    bell.close()
    os.waitpid(pid, 0)
    return used / orders * 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orders", type=int, default=6000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--depth", type=int, default=4, help="orders in flight to the worker process")
    parser.add_argument("--batch", type=int, default=2, help="replies per sendmsg in the batched row")
    args = parser.parse_args()
    if not 1 <= args.batch <= args.depth:
        parser.error("--batch must be between 1 and --depth: the worker process holds replies until it has that many")
    logging.disable(logging.INFO)
    with tempfile.TemporaryDirectory() as state:
        processor, frame = reused_key_hello(state)
    fixed = Outcome(b'{"jsonrpc":"2.0","id":1,"result":{}}', "ProcessWorkOrder")
    orders = args.orders - args.orders % args.batch
    # (name, process, replies per sendmsg or per ring, doorbell)
    rows: list[tuple[str, Callable[[bytes | bytearray], Any], int, bool]] = [
        ("reused-key hello", processor.process, 1, False),
        ("trivial (fixed reply)", lambda _frame: fixed, 1, False),
        (f"reused-key hello, replies {args.batch} per sendmsg", processor.process, args.batch, False),
        (f"reused-key hello, each reply at once, a doorbell every {args.batch}", processor.process, args.batch, True),
    ]
    results: dict[tuple[str, bool], list[float]] = {(name, spin): [] for name, *_ in rows for spin in (False, True)}
    for _ in range(args.rounds):
        for name, process, batch, doorbell in rows:
            for spin in (False, True):
                results[name, spin].append(one_run(process, frame, orders, args.depth, spin, batch, doorbell))
    print(f"worker process CPU µs per order, median of {args.rounds} rounds of {orders} orders, {args.depth} in flight")
    print("| process | reader asleep | reader spinning | asleep − spinning |\n|---|---:|---:|---:|")
    for name, *_ in rows:
        asleep, spinning = (statistics.median(results[name, spin]) for spin in (False, True))
        print(f"| {name} | {asleep:.1f} | {spinning:.1f} | {asleep - spinning:.1f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

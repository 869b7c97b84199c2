"""The body of a worker process: orders in, replies out, over one stream socket.

The process runs its orders one at a time, in the order they came. The supervisor may send
orders ahead (prefetch) and later revoke the ones it wants back; so before each order starts,
the process has read everything the supervisor sent up to then, and a revoked order it still
holds is skipped and reported (`SKIPPED`) rather than run. After each order it kills whatever
the order left running (it is a subreaper: see `reaper`). The end of its socket means the
supervisor has gone: it stops at once. What its workloads write to standard output and error is
kept out of the log (`output`).
"""

from __future__ import annotations

import resource
import signal
import socket
from collections import deque
from collections.abc import Callable
from typing import Any, Protocol

from . import reaper
from .framing import ORDER, REPLY, REVOKE, SEQ, SKIPPED, Reader, encode, send_all
from .output import OutputCapture


class Outcome(Protocol):
    """What the processor returns: the reply and what happened (for the supervisor's metrics)."""

    reply: bytes
    method: str
    workload: str
    status: str
    work_order_id: str | None


def run(sock: socket.socket, process: Callable[[bytes | bytearray], Outcome], memory_limit: int | None, max_payload: int,
        idle: Callable[[], None] = lambda: None, order_log: Any = None) -> None:
    """Serve orders from `sock` until the supervisor closes it; call `idle` before waiting for
    one. `order_log` (the per-order log line's writer) goes on writing to the log."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the supervisor, which drains us
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    output = OutputCapture.start(order_log)  # before the memory limit: its thread's stack is mapped now
    if memory_limit:
        resource.setrlimit(resource.RLIMIT_AS, (memory_limit, memory_limit))
    reaper.become_subreaper()
    reader = Reader(max_payload)
    pending: deque[tuple[int, bytes | bytearray]] = deque()
    while True:
        if not _read_ahead(sock, reader, pending, idle):
            reaper.kill_children()
            return
        if not pending:
            continue
        seq, frame = pending.popleft()
        outcome = process(frame)
        if reaper.has_children():  # what the order started does not outlive it
            reaper.kill_children()
        if output.debug:
            output.order_done(outcome.work_order_id)
        meta = f"{outcome.method}\t{outcome.workload}\t{outcome.status}\n".encode()
        send_all(sock, encode(REPLY, seq, meta, outcome.reply))
        reader.drained = False


def _read_ahead(sock: socket.socket, reader: Reader, pending: deque[tuple[int, bytes | bytearray]],
                idle: Callable[[], None]) -> bool:
    """Read what the supervisor has sent, orders into `pending`, revokes applied; False when the
    supervisor has gone.

    Everything sent so far must be read before an order starts (a REVOKE may be there); a read
    that returned less than it asked for has seen it all.
    """
    while not (pending and reader.drained):
        if pending:  # with orders in hand, only look: one system call, whether or not anything came
            try:
                messages = reader.read(sock, socket.MSG_DONTWAIT)
            except BlockingIOError:
                return True
        else:
            idle()
            messages = reader.read(sock)
        if messages is None:
            return False
        for kind, seq, payload in messages:
            if kind == ORDER:
                pending.append((seq, payload))
            elif kind == REVOKE:
                _revoke(sock, pending, seq, SEQ.unpack(payload)[0])
    return True


def _revoke(sock: socket.socket, pending: deque[tuple[int, bytes | bytearray]], first: int, last: int) -> None:
    """Drop the orders `first`..`last` still held, and tell the supervisor each was skipped."""
    for order in [order for order in pending if first <= order[0] <= last]:
        pending.remove(order)
        send_all(sock, encode(SKIPPED, order[0]))

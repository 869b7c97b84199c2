"""The HTTP front door's bounds on connections and request bodies, around aiohttp's server.

aiohttp bounds each request on its own: header line and field sizes, a body limit per request
(`client_max_size`), a per-connection read buffer with flow control, and an idle timeout between
requests (`keepalive_timeout`). It has no time limit for the headers of a request (a slowloris
client that sends a header line now and then is held for ever), no limit on the number of
connections, and no bound on the request bodies held across all connections at once. Those
three are here:

- `ConnectionGuard.wrap` puts each connection's aiohttp protocol behind a thin protocol of ours
  (`_Guarded`) that counts connections and keeps two timers: a request's headers must be complete
  within `header_timeout_s` of its first byte, and a connection with no request must not stay
  idle for longer than `idle_timeout_s` (from its start, or its last answer). At `max_connections`
  a new connection makes the longest-idle one without a request in progress close (one still
  sending its headers counts as idle), or, when every connection has a request in progress, is
  answered 503 and closed.
- `BodyBudget` bounds the bytes of request bodies held at once across all connections: a body
  still arriving that does not fit is refused at once (the listener answers BUSY and closes the
  connection) rather than buffered; a body already received whole always fits. When the bodies
  held since the budget was last empty reached `TRIM_AFTER_BYTES`, the heap's free memory is
  handed back to the system shortly after it is empty again (a garbage collection, then glibc's
  `malloc_trim`, as the ZMQ endpoint does), and `map_large_buffers` (called once in a process that serves HTTP) has glibc
  give every buffer of 1 MiB or more its own mapping, returned to the system when it is freed:
  a burst of large uploads leaves the process near the size it had before.

The listener tells the guard where each request starts and ends (`request_started`,
`request_finished`); the rest of the HTTP handling stays aiohttp's.
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import gc
import logging
import resource
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .. import defaults
from .._internal.router import give_back_memory

logger = logging.getLogger(__name__)

BACKLOG = 1024  # connections the kernel holds before they are served, also while a front door starts again
FD_RESERVE = 64  # descriptors kept for the store, the worker connection, logs
TRIM_AFTER_BYTES = 1 << 20
TRIM_DELAY_S = 1.0  # after the budget empties: the connections that held the bodies close meanwhile
MMAP_THRESHOLD_BYTES = 1 << 20
_M_MMAP_THRESHOLD = -3  # mallopt's parameter number (malloc.h)
OVERLOADED = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nConnection: close\r\n"
              b"Content-Length: %d\r\n\r\n%s")


@dataclass(frozen=True)
class HttpLimits:
    """The front door's bounds; `body_budget_bytes` 0 means defaults.HTTP_BODY_BUDGET_REQUESTS maximal requests."""

    max_connections: int = defaults.HTTP_MAX_CONNECTIONS
    header_timeout_s: float = defaults.HTTP_HEADER_TIMEOUT_S
    idle_timeout_s: float = defaults.HTTP_IDLE_TIMEOUT_S
    body_budget_bytes: int = 0

    def budget_for(self, max_request_bytes: int) -> int:
        return self.body_budget_bytes or defaults.HTTP_BODY_BUDGET_REQUESTS * max_request_bytes

    def connection_cap(self) -> int:
        """`max_connections`, within what the descriptor limit leaves."""
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        if soft == resource.RLIM_INFINITY:
            return self.max_connections
        return max(1, min(self.max_connections, soft - FD_RESERVE))


def map_large_buffers() -> bool:
    """Have glibc put each allocation of MMAP_THRESHOLD_BYTES or more in a mapping of its own,
    which it returns to the system when freed. By default glibc raises that threshold to the
    size of the largest mapped buffer freed (up to 32 MiB), after which a burst of 31 MiB bodies
    lands on the heap, where freed pages stay with the process. False where there is no glibc."""
    mallopt = getattr(ctypes.CDLL(None), "mallopt", None)
    return bool(mallopt is not None and mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES) == 1)


def limits_from(args: argparse.Namespace) -> HttpLimits:
    """The `HttpLimits` of the `--http-*` options."""
    return HttpLimits(args.http_max_connections, args.http_header_timeout_s, args.http_idle_timeout_s,
                      args.http_body_budget_bytes)


def give_back_memory_soon() -> None:
    """`give_back_memory` TRIM_DELAY_S from now, once however often it is asked for meanwhile
    (on the running event loop)."""
    global _trim_due
    if _trim_due is None or _trim_due.cancelled():
        _trim_due = asyncio.get_running_loop().call_later(TRIM_DELAY_S, _trim_now)


_trim_due: asyncio.TimerHandle | None = None


def _trim_now() -> None:
    global _trim_due
    _trim_due = None
    # Bodies can outlive their request in reference cycles (an exception's traceback holds the
    # frames that read them, and asyncio keeps exceptions on futures): collect those first.
    gc.collect()
    give_back_memory()


class BodyBudget:
    """Bytes of request bodies held at once, across all connections, within `limit`."""

    def __init__(self, limit: int, trim: Callable[[], None] = give_back_memory_soon) -> None:
        self.limit = limit
        self.held = 0
        self._trim = trim
        self._peak = 0  # the most held since the budget was last empty

    def take(self, size: int, *, received: bool = False) -> bool:
        """Hold `size` more bytes; False (and nothing held) if they do not fit, unless the body
        is already `received`, which refusing would not make smaller."""
        if not received and self.held + size > self.limit:
            return False
        self.held += size
        self._peak = max(self._peak, self.held)
        return True

    def give_back(self, size: int) -> None:
        self.held -= size
        if self.held <= 0:
            self.held = 0
            if self._peak >= TRIM_AFTER_BYTES:
                self._trim()
            self._peak = 0


class ConnectionGuard:
    """Counts, times and caps the connections of one HTTP server (see the module docstring)."""

    def __init__(self, limits: HttpLimits, refusal: bytes) -> None:
        self.limits = limits
        self.cap = limits.connection_cap()
        self._refusal = OVERLOADED % (len(refusal), refusal)
        self._open: dict[Any, _Guarded] = {}  # by transport
        self._idle: OrderedDict[_Guarded, None] = OrderedDict()  # no request in progress, longest idle first
        self.refused = 0
        self.timed_out = 0

    @property
    def connections(self) -> int:
        return len(self._open)

    def wrap(self, factory: Callable[[], asyncio.Protocol]) -> Callable[[], asyncio.Protocol]:
        """A protocol factory for `loop.create_server` that guards `factory`'s protocols."""
        return lambda: _Guarded(self, factory())

    def request_started(self, transport: Any) -> None:
        """The listener has a request from this connection (its headers are complete)."""
        guarded = self._open.get(transport)
        if guarded is not None:
            guarded.busy = True
            guarded.cancel_timer()
            self._idle.pop(guarded, None)

    def request_finished(self, transport: Any) -> None:
        """The listener has answered it: the connection is idle until its next request."""
        guarded = self._open.get(transport)
        if guarded is not None:
            guarded.busy = False
            self._idle.pop(guarded, None)
            self._idle[guarded] = None
            guarded.start_timer(self.limits.idle_timeout_s, "idle")

    def _admit(self, guarded: _Guarded) -> bool:
        if len(self._open) >= self.cap:
            if not self._idle:
                self.refused += 1
                return False
            oldest = next(iter(self._idle))
            oldest.close("to make room for a new connection")
        return True

    def _opened(self, guarded: _Guarded) -> None:
        self._open[guarded.transport] = guarded
        self._idle[guarded] = None
        guarded.start_timer(self.limits.idle_timeout_s, "idle")

    def _closed(self, guarded: _Guarded) -> None:
        if self._open.get(guarded.transport) is guarded:
            del self._open[guarded.transport]
        self._idle.pop(guarded, None)


class _Guarded(asyncio.Protocol):
    """One connection: aiohttp's protocol (`inner`) behind the guard's count and timers."""

    def __init__(self, guard: ConnectionGuard, inner: asyncio.Protocol) -> None:
        self.guard = guard
        self.inner = inner
        self.transport: Any = None
        self.busy = False
        self._timer: asyncio.TimerHandle | None = None
        self._waiting_for = ""
        self._closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        if not self.guard._admit(self):
            assert isinstance(transport, asyncio.Transport)
            transport.write(self.guard._refusal)
            transport.close()
            self._closed = True
            return
        self.guard._opened(self)
        self.inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if self._closed:
            return
        if not self.busy and self._waiting_for != "headers":
            # The first bytes of a request: its headers must be complete in time, whatever trickles.
            self.start_timer(self.guard.limits.header_timeout_s, "headers")
        self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        return None if self._closed else self.inner.eof_received()

    def pause_writing(self) -> None:
        if not self._closed:
            self.inner.pause_writing()

    def resume_writing(self) -> None:
        if not self._closed:
            self.inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        self.cancel_timer()
        if self._closed and self.guard._open.get(self.transport) is not self:
            return  # refused: aiohttp never saw it
        self._closed = True
        self.guard._closed(self)
        self.inner.connection_lost(exc)

    def start_timer(self, seconds: float, waiting_for: str) -> None:
        self.cancel_timer()
        self._waiting_for = waiting_for
        self._timer = asyncio.get_running_loop().call_later(seconds, self._expired)

    def cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._waiting_for = ""

    def _expired(self) -> None:
        self._timer = None
        self.guard.timed_out += 1
        reason = "its request's headers did not arrive" if self._waiting_for == "headers" else "it was idle"
        timeout = self.guard.limits.header_timeout_s if self._waiting_for == "headers" else self.guard.limits.idle_timeout_s
        self.close(f"{reason} within {timeout:g} s")

    def close(self, why: str) -> None:
        logger.debug("closing an HTTP connection: %s", why)
        self.cancel_timer()
        self.guard._idle.pop(self, None)
        if self.transport is not None:
            self.transport.abort()

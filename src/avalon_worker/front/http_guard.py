"""The HTTP front door's bounds (`HttpLimits`) and the budget of request bodies held at once.

`http_server` keeps them per connection (header and idle timeouts, the connection cap); here:

- `HttpLimits`: a request's headers must be complete within `header_timeout_s` of its first
  byte, a connection with no request must not stay idle for longer than `idle_timeout_s` (from
  its start, or its last answer), and at most `max_connections` are open (within what the
  descriptor limit leaves).
- `BodyBudget` bounds the bytes of request bodies held at once across all connections: a body
  still arriving that does not fit is refused at once (the listener answers BUSY and closes the
  connection) rather than buffered; a body already received whole always fits. When the bodies
  held since the budget was last empty reached `TRIM_AFTER_BYTES`, the heap's free memory is
  handed back to the system shortly after it is empty again (a garbage collection, then glibc's
  `malloc_trim`, as the ZMQ endpoint does), and `map_large_buffers` (called once in a process that serves HTTP) has glibc
  give every buffer of 1 MiB or more its own mapping, returned to the system when it is freed:
  a burst of large uploads leaves the process near the size it had before.
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import gc
import resource
from collections.abc import Callable
from dataclasses import dataclass

from .. import defaults
from .._internal.router import give_back_memory

BACKLOG = 1024  # connections the kernel holds before they are served, also while a front door starts again
FD_RESERVE = 64  # descriptors kept for the store, the worker connection, logs
TRIM_AFTER_BYTES = 1 << 20
TRIM_DELAY_S = 1.0  # after the budget empties: the connections that held the bodies close meanwhile
MMAP_THRESHOLD_BYTES = 1 << 20
_M_MMAP_THRESHOLD = -3  # mallopt's parameter number (malloc.h)


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

"""Where the front door's store calls run: on threads, or at once on the event loop's own thread.

Every store method blocks. A PostgreSQL store answers across the network, so its calls run on
threads and the event loop serves HTTP and the worker's connection while one waits. The embedded
SQLite store is a file of this process: a call is some tens of µs of SQLite and, for a commit,
one fsync. Handing each such call to a thread and back (a context switch each way, the GIL passed
between two threads, a wake-up of the loop) cost more than the call itself: on the loop, the
front door's CPU per order fell by a fifth (docs/performance.md). While a call runs there the loop
waits, and the requests that arrive meanwhile are read together afterwards, so that the next
commit covers them all; no call holds the store long (`purge` goes in slices).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import Executor, ThreadPoolExecutor
from typing import Any, TypeVar

from ..store import Store

T = TypeVar("T")


class StoreCalls:
    """Runs store methods for coroutines: `await calls(store.submit, orders, now)`. On
    `executor`'s threads, or, with none, at once on the calling (event loop's) thread."""

    def __init__(self, executor: Executor | None = None) -> None:
        self.executor = executor

    @classmethod
    def for_store(cls, store: Store, threads: int) -> StoreCalls:
        """On the loop for a store in this process; else on `threads` threads of its own."""
        if store.in_process:
            return cls()
        return cls(ThreadPoolExecutor(max_workers=threads, thread_name_prefix="store"))

    async def __call__(self, method: Callable[..., T], *args: Any) -> T:
        if self.executor is None:
            return method(*args)
        return await asyncio.get_running_loop().run_in_executor(self.executor, method, *args)

    def close(self) -> None:
        """Let go of the threads (after the calls under way)."""
        if self.executor is not None:
            self.executor.shutdown()

"""Where the front door's store calls run: on threads, or at once on the event loop's own thread.

Every store method blocks. A PostgreSQL store answers across the network, so its calls run on
threads and the event loop serves HTTP and the worker's connection while one waits. The embedded
SQLite store is a file of this process: a call is some tens of µs of SQLite and, for a commit,
one fsync. Handing each such call to a thread and back (a context switch each way, the GIL passed
between two threads, a wake-up of the loop) cost more than the call itself: on the loop, the
front door's CPU per order fell by a fifth (docs/performance.md). While a call runs there the loop
waits, and the requests that arrive meanwhile are read together afterwards, so that the next
commit covers them all; no call holds the store long (`purge` goes in slices).

The threads are our own, not a `ThreadPoolExecutor` under `run_in_executor`: a call is one queue
put, and its result one `call_soon_threadsafe` that settles the awaited future. The executor's
way makes two futures per call (one with its own lock and condition) chained by callbacks, and
takes a semaphore per call: handing a call that does nothing over and back cost 125–149 µs of
CPU that way against 85–106 µs here one call at a time, 58–62 against 31–34 with four under
way (`benchmarks/store_handoff.py`); the wake-ups of the thread and of the loop are the rest.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from ..store import Store

T = TypeVar("T")

_Call = tuple[Callable[..., Any], tuple[Any, ...], asyncio.AbstractEventLoop, "asyncio.Future[Any]"]


def _settle(future: asyncio.Future[Any], value: Any, error: BaseException | None) -> None:
    if future.cancelled():  # the caller stopped waiting (a task cancelled): the call ran regardless
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(value)


class StoreCalls:
    """Runs store methods for coroutines: `await calls(store.submit, orders, now)`. On `threads`
    threads of its own, or, with none, at once on the calling (event loop's) thread."""

    def __init__(self, threads: int = 0, name: str = "store") -> None:
        self.threads = threads
        self._queue: queue.SimpleQueue[_Call | None] = queue.SimpleQueue()
        self._running = [threading.Thread(target=self._serve, name=f"{name}-{n}", daemon=True) for n in range(threads)]
        for thread in self._running:
            thread.start()

    @classmethod
    def for_store(cls, store: Store, threads: int) -> StoreCalls:
        """On the loop for a store in this process; else on `threads` threads of its own."""
        return cls() if store.in_process else cls(threads)

    async def __call__(self, method: Callable[..., T], *args: Any) -> T:
        if not self.threads:
            return method(*args)
        if not self._running:
            raise RuntimeError("a store call after the store's threads were closed")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._queue.put((method, args, loop, future))
        return await future

    def _serve(self) -> None:
        """One thread: the calls in turn, each result handed to its caller's loop."""
        while (call := self._queue.get()) is not None:
            method, args, loop, future = call
            value, error = None, None
            try:
                value = method(*args)
            except BaseException as exc:  # the caller's to handle, as if it had made the call itself
                error = exc
            try:
                loop.call_soon_threadsafe(_settle, future, value, error)
            except RuntimeError:  # the loop is closed: nobody waits for this call any more
                pass
            del call, method, args, future, value, error  # hold nothing while waiting for the next call

    def close(self) -> None:
        """Let go of the threads (after the calls under way)."""
        for _ in self._running:
            self._queue.put(None)
        for thread in self._running:
            thread.join()
        self._running.clear()

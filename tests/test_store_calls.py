"""Where the front door's store calls run (`front.store_calls`): the embedded SQLite store's on
the event loop's own thread, a PostgreSQL store's on threads of their own."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest

from avalon_worker.front.store_calls import StoreCalls
from avalon_worker.store import NewOrder, Store, SubmitOutcome
from avalon_worker.store.sqlite import SQLiteStore

WORKER = "a" * 64


async def _thread_and_outcome(calls: StoreCalls, store: Store) -> tuple[int, list[SubmitOutcome]]:
    where = await calls(threading.get_ident)
    outcome = await calls(store.submit, [NewOrder("1" * 64, WORKER, b"{}")], 1000.0)
    return where, outcome


def test_the_embedded_store_is_called_on_the_loops_own_thread(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path)
    calls = StoreCalls.for_store(store, threads=4)
    try:
        assert calls.threads == 0
        where, outcome = asyncio.run(_thread_and_outcome(calls, store))
        assert where == threading.get_ident() and outcome == [SubmitOutcome.ACCEPTED]
    finally:
        calls.close()
        store.close()


@pytest.mark.slow
def test_a_postgresql_store_is_called_on_threads_of_its_own(postgres_url: str) -> None:
    from avalon_worker.store.postgres import PostgresStore

    store = PostgresStore(postgres_url)
    calls = StoreCalls.for_store(store, threads=2)
    try:
        assert calls.threads == 2
        where, outcome = asyncio.run(_thread_and_outcome(calls, store))
        assert where != threading.get_ident() and outcome == [SubmitOutcome.ACCEPTED]
    finally:
        calls.close()
        store.close()


def test_a_call_on_a_thread_returns_its_value_or_raises_its_error_in_the_caller() -> None:
    calls = StoreCalls(threads=1)

    def fail() -> None:
        raise ValueError("the store says no")

    async def both() -> tuple[int, str]:
        value = await calls(pow, 2, 10)
        try:
            await calls(fail)
        except ValueError as exc:
            return value, str(exc)
        return value, "no error"

    try:
        assert asyncio.run(both()) == (1024, "the store says no")
    finally:
        calls.close()


def test_a_caller_that_stops_waiting_leaves_the_thread_serving_the_next_call() -> None:
    """The first call is cancelled while it runs (the thread still finishes it, and its result
    goes nowhere, quietly); the thread then serves the next call."""
    calls = StoreCalls(threads=1)
    running, release = threading.Event(), threading.Event()
    errors: list[dict[str, object]] = []

    def slow() -> str:
        running.set()
        release.wait(10)
        return "late"

    async def cancel_then_call() -> str:
        asyncio.get_running_loop().set_exception_handler(lambda _, context: errors.append(context))
        first = asyncio.ensure_future(calls(slow))
        await asyncio.get_running_loop().run_in_executor(None, running.wait, 10)
        first.cancel()
        release.set()
        return await calls(str, "next")

    try:
        assert asyncio.run(cancel_then_call()) == "next"
        assert errors == []  # the late result was dropped, not set on the cancelled future
    finally:
        calls.close()


def test_a_call_after_close_is_refused() -> None:
    calls = StoreCalls(threads=2)
    calls.close()
    with pytest.raises(RuntimeError, match="closed"):
        asyncio.run(calls(str, "late"))

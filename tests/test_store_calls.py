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
        assert calls.executor is None
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
        assert calls.executor is not None
        where, outcome = asyncio.run(_thread_and_outcome(calls, store))
        assert where != threading.get_ident() and outcome == [SubmitOutcome.ACCEPTED]
    finally:
        calls.close()
        store.close()

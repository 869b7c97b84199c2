"""Receipts in the work-order store's contract, against every backend (`make_store`: SQLite, and
PostgreSQL as a slow test), and the schema migration that brings them to a store made before."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psycopg
import pytest
import test_store
from test_store import T0, WORKER, StoreFactory

from avalon_worker.store import (
    Completion,
    NewOrder,
    NewReceipt,
    ReceiptOutcome,
    ReceiptQuery,
    ReceiptUpdate,
    Store,
    SubmitOutcome,
    open_store,
)
from avalon_worker.store import postgres as pg
from avalon_worker.store import sqlite as lite

from conftest import wait_for

make_store = test_store.make_store  # the fixture: every backend
REQUESTER = "c" * 64
OTHER_REQUESTER = "d" * 64


def request_hash(number: int) -> bytes:
    return hashlib.sha256(b"order %d" % number).digest()


def order(number: int, requester: str = REQUESTER) -> NewOrder:
    return NewOrder(f"{number:064x}", WORKER, b"x" * 10, requester, request_hash(number))


def new_receipt(number: int, requester: str = REQUESTER, *, status: int = 0, hash_of: int | None = None,
                worker: str = WORKER) -> NewReceipt:
    shown = f"0x{number:064X}"
    params = json.dumps({"workOrderId": shown, "requesterId": requester, "n": number}).encode()
    return NewReceipt(f"{number:064x}", worker, worker, requester, status,
                      request_hash(number if hash_of is None else hash_of), shown, params)


def update(kind: int, updater: str = WORKER, data: str = "") -> ReceiptUpdate:
    return ReceiptUpdate(updater, kind, json.dumps({"updaterId": updater, "updateType": kind, "updateData": data}).encode())


def done(number: int, with_update: ReceiptUpdate | None) -> Completion:
    return Completion(f"{number:064x}", b'{"outData":[]}', False, with_update)


class TestCreate:
    def test_a_receipt_is_created_once_for_an_order_the_store_keeps_with_its_hash_and_ids(self, make_store: StoreFactory) -> None:
        store = make_store()
        store.submit([order(1), order(2)], T0)
        assert store.create_receipt(new_receipt(3), T0) is ReceiptOutcome.UNKNOWN_ORDER
        assert store.create_receipt(new_receipt(1, hash_of=2), T0) is ReceiptOutcome.NOT_THE_ORDER
        assert store.create_receipt(new_receipt(1, OTHER_REQUESTER), T0) is ReceiptOutcome.NOT_THE_ORDER
        assert store.create_receipt(new_receipt(1, worker="e" * 64), T0) is ReceiptOutcome.NOT_THE_ORDER
        assert store.receipt(f"{1:064x}") is None
        assert store.create_receipt(new_receipt(1), T0) is ReceiptOutcome.CREATED
        assert store.create_receipt(new_receipt(1), T0) is ReceiptOutcome.DUPLICATE
        kept = store.receipt(f"{1:064x}")
        assert kept is not None and kept.params == new_receipt(1).params and kept.status == 0 and kept.updates == ()
        assert kept.requester_id == REQUESTER

    def test_an_order_without_a_request_hash_takes_no_receipt(self, make_store: StoreFactory) -> None:
        store = make_store()
        store.submit([NewOrder(f"{1:064x}", WORKER, b"x", REQUESTER, None)], T0)
        assert store.create_receipt(new_receipt(1), T0) is ReceiptOutcome.NOT_THE_ORDER


class TestWorkersUpdate:
    def test_an_outcome_adds_the_workers_update_to_a_receipt_made_before(self, make_store: StoreFactory) -> None:
        store = make_store()
        store.submit([order(1)], T0)
        store.create_receipt(new_receipt(1), T0)
        assert store.complete([done(1, update(1, data="hash"))], T0 + 1) == [True]
        kept = store.receipt(f"{1:064x}")
        assert kept is not None and kept.status == 1 and kept.updates == (update(1, data="hash"),)

    def test_a_receipt_made_after_the_outcome_gets_the_workers_update_at_once(self, make_store: StoreFactory) -> None:
        store = make_store()
        store.submit([order(1), order(2)], T0)
        store.complete([done(1, update(3, data="2")), done(2, None)], T0 + 1)
        assert store.create_receipt(new_receipt(1), T0 + 2) is ReceiptOutcome.CREATED
        assert store.create_receipt(new_receipt(2), T0 + 2) is ReceiptOutcome.CREATED
        one, two = store.receipt(f"{1:064x}"), store.receipt(f"{2:064x}")
        assert one is not None and one.status == 3 and one.updates == (update(3, data="2"),)
        assert two is not None and two.status == 0 and two.updates == ()

    def test_only_the_stored_outcomes_update_is_kept(self, make_store: StoreFactory) -> None:
        store = make_store()
        store.submit([order(1)], T0)
        store.create_receipt(new_receipt(1), T0)
        assert store.complete([done(1, update(1, data="first"))], T0) == [True]
        assert store.complete([done(1, update(1, data="second"))], T0) == [False]  # the order ran twice
        kept = store.receipt(f"{1:064x}")
        assert kept is not None and kept.updates == (update(1, data="first"),)


class TestUpdates:
    def test_an_update_is_appended_only_to_the_receipt_its_caller_saw(self, make_store: StoreFactory) -> None:
        store = make_store()
        store.submit([order(1)], T0)
        store.create_receipt(new_receipt(1), T0)
        assert store.add_receipt_update(f"{1:064x}", update(4, REQUESTER), 0)
        assert not store.add_receipt_update(f"{1:064x}", update(3, REQUESTER), 0)  # another came first
        assert store.add_receipt_update(f"{1:064x}", update(300, REQUESTER), 1)  # an application's type
        assert not store.add_receipt_update(f"{2:064x}", update(3, REQUESTER), 0)  # no such receipt
        kept = store.receipt(f"{1:064x}")
        assert kept is not None and [u.update_type for u in kept.updates] == [4, 300]
        assert kept.status == 4  # the last update that is a status
        store.complete([done(1, update(1))], T0)
        kept = store.receipt(f"{1:064x}")
        assert kept is not None and [u.update_type for u in kept.updates] == [4, 300, 1] and kept.status == 1


class TestLookup:
    def test_pages_in_creation_order_with_filters_and_a_total(self, make_store: StoreFactory) -> None:
        store = make_store()
        numbers = list(range(1, 8))
        store.submit([order(n, REQUESTER if n % 2 else OTHER_REQUESTER) for n in numbers], T0)
        for n in reversed(numbers):  # created in another order than submitted
            assert store.create_receipt(new_receipt(n, REQUESTER if n % 2 else OTHER_REQUESTER), T0) is ReceiptOutcome.CREATED
        store.complete([done(3, update(1))], T0)
        everything, seen, after = [], [], 0
        while True:
            page = store.lookup_receipts(ReceiptQuery(), after, 3)
            assert page.total == 7
            seen.append(len(page.ids))
            everything += page.ids
            if page.last is None:
                break
            after = page.last
        assert everything == [f"0x{n:064X}" for n in reversed(numbers)] and seen == [3, 3, 1]
        mine = store.lookup_receipts(ReceiptQuery(requester_id=REQUESTER, worker_id=WORKER), 0, 10)
        assert (mine.total, mine.last) == (4, None) and sorted(mine.ids) == sorted(f"0x{n:064X}" for n in (1, 3, 5, 7))
        assert store.lookup_receipts(ReceiptQuery(requester_id=REQUESTER, status=1), 0, 10).ids == (f"0x{3:064X}",)
        assert store.lookup_receipts(ReceiptQuery(worker_service_id="f" * 64), 0, 10).total == 0
        exactly = store.lookup_receipts(ReceiptQuery(), 0, 7)
        assert len(exactly.ids) == 7 and exactly.last is None  # a full last page says it is the last


class TestRetention:
    def test_a_receipt_goes_with_its_order(self, make_store: StoreFactory) -> None:
        store = make_store()
        store.submit([order(1), order(2)], T0)
        for n in (1, 2):
            store.create_receipt(new_receipt(n), T0)
        store.complete([done(1, update(1)), done(2, update(1))], T0)
        store.complete([], T0)
        assert store.purge(100, T0 + 50, 10) == 0
        assert store.purge(10, T0 + 50, 10) == 2
        assert store.receipt(f"{1:064x}") is None and store.lookup_receipts(ReceiptQuery(), 0, 10).total == 0
        assert store.submit([order(1)], T0 + 60) == [SubmitOutcome.ACCEPTED]  # the id is free again
        assert store.create_receipt(new_receipt(1), T0 + 60) is ReceiptOutcome.CREATED
        kept = store.receipt(f"{1:064x}")
        assert kept is not None and kept.updates == ()


# --- the schema migration -------------------------------------------------------------------------


def _old_sqlite_store(path: Path) -> None:
    """A store file as schema version 1 wrote it, with an order done and one pending."""
    with sqlite3.connect(path / lite.FILE_NAME) as db:
        db.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        db.executescript(lite.MIGRATIONS[0])
        db.execute("INSERT INTO meta VALUES ('schema_version', '1')")
        db.execute("INSERT INTO orders (work_order_id, worker_id, state, request, request_bytes, submitted, outcome, "
                   "is_error, completed) VALUES (?, ?, 2, x'', 0, ?, ?, 0, ?)", (f"{1:064x}", WORKER, T0, b'{"a":1}', T0))
        db.execute("INSERT INTO orders (work_order_id, worker_id, state, request, request_bytes, submitted) "
                   "VALUES (?, ?, 0, x'78', 1, ?)", (f"{2:064x}", WORKER, T0))


def _store_migrate(location: str) -> str:
    done = subprocess.run([sys.executable, "-m", "avalon_worker", "store", "migrate", "--store", location],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


def _works_after_migration(store: Store) -> None:
    """Orders from before the migration are kept (and take no receipt: no hash was kept for
    them); new orders take receipts."""
    status = store.status(f"{1:064x}")
    assert status is not None and status.outcome == b'{"a":1}'
    assert [o.work_order_id for o in store.lease(WORKER, "pump", 10, 30, T0)] == [f"{2:064x}"]
    assert store.complete([done(2, update(1))], T0) == [True]  # an order from before takes its outcome
    finished = store.status(f"{2:064x}")
    assert finished is not None and finished.outcome == b'{"outData":[]}'
    assert store.create_receipt(new_receipt(1), T0) is ReceiptOutcome.NOT_THE_ORDER
    store.submit([order(3)], T0)
    assert store.create_receipt(new_receipt(3), T0) is ReceiptOutcome.CREATED


def test_store_migrate_brings_a_version_1_sqlite_store_to_receipts(tmp_path: Path) -> None:
    _old_sqlite_store(tmp_path)
    assert "migrated from schema version 1 to 2" in _store_migrate(str(tmp_path))
    assert "at schema version 2; nothing to do" in _store_migrate(str(tmp_path))
    store = open_store(tmp_path)
    try:
        _works_after_migration(store)
    finally:
        store.close()


@pytest.mark.slow
def test_store_migrate_brings_a_version_1_postgresql_store_to_receipts(postgres_url: str) -> None:
    with psycopg.connect(postgres_url, autocommit=True) as connection:
        connection.execute("CREATE TABLE schema_version (version integer NOT NULL)")
        connection.execute(pg.MIGRATIONS[0])
        connection.execute("INSERT INTO schema_version VALUES (1)")
        connection.execute("INSERT INTO work_orders (work_order_id, worker_id, state, request, request_bytes, submitted, "
                           "outcome, is_error, completed) VALUES (%s, %s, 2, '', 0, %s, %s, false, %s)",
                           (f"{1:064x}", WORKER, T0, b'{"a":1}', T0))
        connection.execute("INSERT INTO work_orders (work_order_id, worker_id, state, request, request_bytes, submitted) "
                           "VALUES (%s, %s, 0, 'x', 1, %s)", (f"{2:064x}", WORKER, T0))
    assert f"migrated from schema version 1 to {pg.SCHEMA_VERSION}" in _store_migrate(postgres_url)
    store = open_store(postgres_url)
    try:
        _works_after_migration(store)
    finally:
        store.close()


# --- PostgreSQL shared by many hosts ----------------------------------------------------------------


@pytest.mark.slow
def test_receipts_and_outcomes_from_different_hosts_at_once_each_get_the_workers_update(postgres_url: str) -> None:
    """A listener creates receipts while a pump on another host stores the outcomes: whichever
    commits first, every receipt ends with the worker's one update, seen from a third store."""
    listener, pump, other_listener = (open_store(postgres_url) for _ in range(3))
    try:
        count = 150
        listener.submit([order(n) for n in range(1, count + 1)], T0)
        outcomes: list[ReceiptOutcome] = []

        def create() -> None:
            outcomes.extend(listener.create_receipt(new_receipt(n), T0) for n in range(1, count + 1))

        def complete() -> None:
            for n in range(1, count + 1):
                pump.complete([done(n, update(1, data=str(n)))], T0)

        threads = [threading.Thread(target=create), threading.Thread(target=complete)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert outcomes == [ReceiptOutcome.CREATED] * count
        for n in range(1, count + 1):
            kept = other_listener.receipt(f"{n:064x}")
            assert kept is not None and kept.updates == (update(1, data=str(n)),) and kept.status == 1, n
        assert other_listener.create_receipt(new_receipt(1), T0) is ReceiptOutcome.DUPLICATE
        assert other_listener.lookup_receipts(ReceiptQuery(requester_id=REQUESTER), 0, 100).total == count
    finally:
        for store in (listener, pump, other_listener):
            store.close()


def _waiting_for_a_lock(url: str, statement: str) -> bool:
    """Whether a session runs a statement starting with `statement` and waits for a lock."""
    with psycopg.connect(url, autocommit=True) as connection:
        row = connection.execute("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                                 "AND starts_with(query, %s)", (statement,)).fetchone()
    return bool(row and row[0])


@pytest.mark.slow
def test_a_receipt_committed_while_its_outcome_waits_for_the_order_gets_the_workers_update(postgres_url: str) -> None:
    """The interleaving the random one above may miss: `create_receipt` holds the order and
    commits its receipt while the outcome's update waits for that order. The receipts' update
    that follows must see the receipt (in one statement with the outcome's, it would not)."""
    listener, pump = open_store(postgres_url), open_store(postgres_url)
    try:
        listener.submit([order(1)], T0)
        with ThreadPoolExecutor(2) as pool, psycopg.connect(postgres_url) as blocker:
            blocker.execute("LOCK TABLE receipts IN SHARE MODE")  # the receipt's insert waits, the order held
            created = pool.submit(listener.create_receipt, new_receipt(1), T0)
            wait_for(lambda: _waiting_for_a_lock(postgres_url, "INSERT INTO receipts"), "the receipt's insert to wait")
            completed = pool.submit(pump.complete, [done(1, update(1))], T0)
            wait_for(lambda: _waiting_for_a_lock(postgres_url, "SELECT * FROM complete_work_orders"),
                     "the outcome to wait for the order")
            blocker.rollback()
            assert created.result(timeout=30) is ReceiptOutcome.CREATED
            assert completed.result(timeout=30) == [True]
        kept = listener.receipt(f"{1:064x}")
        assert kept is not None and kept.updates == (update(1),) and kept.status == 1
    finally:
        listener.close()
        pump.close()

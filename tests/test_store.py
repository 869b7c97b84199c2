"""The work-order store's contract, run against every backend (`store` fixture), plus what only
the SQLite file has to show (durability across kill -9, schema versions)."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from avalon_worker.store import (
    Completion,
    Handoff,
    NewOrder,
    OrderState,
    Store,
    StoreError,
    StoreRefused,
    SubmitOutcome,
    canonical_id,
    open_store,
)
from avalon_worker.store.sqlite import SQLiteStore

WORKER = "a" * 64
OTHER_WORKER = "b" * 64
T0 = 1_000_000.0

StoreFactory = Callable[..., Store]


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.slow)])
def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StoreFactory]:
    """Opens a store of the backend under test; the same arguments reopen the same data."""
    opened: list[Store] = []
    location = str(tmp_path) if request.param == "sqlite" else request.getfixturevalue("postgres_url")

    def make(**limits: int) -> Store:
        store = open_store(location, **limits)
        opened.append(store)
        return store

    yield make
    for store in opened:
        store.close()


def order(number: int, worker: str = WORKER, size: int = 10) -> NewOrder:
    return NewOrder(f"{number:064x}", worker, b"x" * size)


class TestHandoff:
    """A submit may lease its orders to the pump in the listener's own process at once."""

    def test_orders_handed_off_are_leased_to_the_pump_and_not_leased_again(self, make_store: StoreFactory) -> None:
        store = make_store()
        handoff = Handoff(WORKER, "local-pump", 30.0, 2)
        orders = [order(1), order(2, OTHER_WORKER), order(1), order(3), order(4)]
        outcomes = store.submit(orders, T0, handoff)
        assert outcomes == [SubmitOutcome.ACCEPTED, SubmitOutcome.ACCEPTED, SubmitOutcome.DUPLICATE,
                            SubmitOutcome.ACCEPTED, SubmitOutcome.ACCEPTED]
        taken = handoff.taken(orders, outcomes, T0)
        # the first two accepted for the hand-off's worker; the other worker's order is not its pump's
        assert [o.work_order_id for o in taken] == [order(1).work_order_id, order(3).work_order_id]
        assert all(o.attempts == 1 and o.expires == T0 + 30.0 and o.request == b"x" * 10 for o in taken)
        # another pump finds only what was not handed off
        assert [o.work_order_id for o in store.lease(WORKER, "other-pump", 10, 60, T0)] == [order(4).work_order_id]
        # the hand-off is a lease like any other: renewed and completed by its owner, taken back when it lapses
        assert store.renew("local-pump", [order(1).work_order_id], 30.0, T0 + 20) == 1
        assert store.complete([Completion(order(1).work_order_id, b'{"a":1}', False)], T0 + 21) == [True]
        [again] = store.lease(WORKER, "other-pump", 10, 30, T0 + 31)
        assert again.work_order_id == order(3).work_order_id and again.attempts == 2

    def test_a_handoff_of_nothing_leaves_every_order_pending(self, make_store: StoreFactory) -> None:
        store = make_store()
        handoff = Handoff(WORKER, "local-pump", 30.0, 0)
        assert handoff.taken([order(1)], store.submit([order(1)], T0, handoff), T0) == []
        assert [o.work_order_id for o in store.lease(WORKER, "pump", 10, 30, T0)] == [order(1).work_order_id]


class TestFinished:
    def test_only_done_orders_are_returned_with_their_outcomes(self, make_store: StoreFactory) -> None:
        store = make_store()
        store.submit([order(n) for n in (1, 2, 3)], T0)
        store.lease(WORKER, "pump", 10, 30, T0)
        store.complete([Completion(order(1).work_order_id, b'{"a":1}', False),
                        Completion(order(3).work_order_id, b'{"code":4}', True)], T0)
        ids = [order(n).work_order_id for n in (1, 2, 3, 9, 1)]
        found = {c.work_order_id: c for c in store.finished(ids)}
        assert found == {order(1).work_order_id: Completion(order(1).work_order_id, b'{"a":1}', False),
                         order(3).work_order_id: Completion(order(3).work_order_id, b'{"code":4}', True)}
        assert store.finished([]) == []


class TestSubmit:
    def test_accepted_order_is_pending(self, make_store: StoreFactory) -> None:
        store = make_store()
        assert store.submit([order(1)], T0) == [SubmitOutcome.ACCEPTED]
        status = store.status(order(1).work_order_id)
        assert status is not None and status.state is OrderState.PENDING

    def test_unknown_order_has_no_status(self, make_store: StoreFactory) -> None:
        assert make_store().status("ff" * 32) is None

    def test_duplicate_id_is_refused_in_one_batch_and_later(self, make_store: StoreFactory) -> None:
        store = make_store()
        assert store.submit([order(1), order(1)], T0) == [SubmitOutcome.ACCEPTED, SubmitOutcome.DUPLICATE]
        [leased] = store.lease(WORKER, "pump", 10, 30, T0)
        store.complete([Completion(leased.work_order_id, b'{"a":1}', False)], T0)
        assert store.submit([order(1)], T0 + 1) == [SubmitOutcome.DUPLICATE]

    def test_queue_limit_in_orders_is_per_worker(self, make_store: StoreFactory) -> None:
        store = make_store(max_pending=2)
        outcomes = store.submit([order(1), order(2), order(3), order(4, OTHER_WORKER)], T0)
        assert outcomes == [SubmitOutcome.ACCEPTED, SubmitOutcome.ACCEPTED, SubmitOutcome.QUEUE_FULL, SubmitOutcome.ACCEPTED]

    def test_a_duplicate_is_a_duplicate_even_when_the_queue_is_full(self, make_store: StoreFactory) -> None:
        """One rule for both backends (`admit`): the requester learns its order is there, not
        that the queue is full."""
        store = make_store(max_pending=1)
        assert store.submit([order(1)], T0) == [SubmitOutcome.ACCEPTED]
        assert store.submit([order(1), order(2)], T0) == [SubmitOutcome.DUPLICATE, SubmitOutcome.QUEUE_FULL]

    def test_queue_limit_in_bytes(self, make_store: StoreFactory) -> None:
        store = make_store(max_pending_bytes=100)
        assert store.submit([order(1, size=60), order(2, size=60), order(3, size=40)], T0) == [
            SubmitOutcome.ACCEPTED, SubmitOutcome.QUEUE_FULL, SubmitOutcome.ACCEPTED,
        ]

    def test_completed_orders_free_the_queue(self, make_store: StoreFactory) -> None:
        store = make_store(max_pending=1)
        store.submit([order(1)], T0)
        assert store.submit([order(2)], T0) == [SubmitOutcome.QUEUE_FULL]
        [leased] = store.lease(WORKER, "pump", 1, 30, T0)
        store.complete([Completion(leased.work_order_id, b"{}", False)], T0)
        assert store.submit([order(2)], T0) == [SubmitOutcome.ACCEPTED]

    def test_queue_count_survives_reopening(self, make_store: StoreFactory) -> None:
        make_store(max_pending=1).submit([order(1)], T0)
        assert make_store(max_pending=1).submit([order(2)], T0) == [SubmitOutcome.QUEUE_FULL]


class TestLease:
    def test_only_the_workers_orders_oldest_first_up_to_the_limit(self, make_store: StoreFactory) -> None:
        store = make_store()
        store.submit([order(3)], T0 + 3)
        store.submit([order(1), order(9, OTHER_WORKER)], T0 + 1)
        store.submit([order(2)], T0 + 2)
        leased = store.lease(WORKER, "pump", 2, 30, T0 + 10)
        assert [item.work_order_id for item in leased] == [order(1).work_order_id, order(2).work_order_id]
        assert [item.request for item in leased] == [b"x" * 10] * 2
        assert all(item.attempts == 1 and item.expires == T0 + 40 for item in leased)

    def test_a_leased_order_is_not_leased_again_before_expiry(self, make_store: StoreFactory) -> None:
        store = make_store()
        store.submit([order(1)], T0)
        assert len(store.lease(WORKER, "pump-1", 5, 30, T0)) == 1
        assert store.lease(WORKER, "pump-2", 5, 30, T0 + 29) == []

    def test_an_expired_lease_is_leased_again(self, make_store: StoreFactory) -> None:
        store = make_store()
        store.submit([order(1)], T0)
        store.lease(WORKER, "pump-1", 5, 30, T0)
        [again] = store.lease(WORKER, "pump-2", 5, 30, T0 + 30)
        assert again.attempts == 2
        assert store.renew("pump-1", [again.work_order_id], 30, T0 + 31) == 0  # no longer pump-1's

    def test_renewal_keeps_the_lease(self, make_store: StoreFactory) -> None:
        store = make_store()
        store.submit([order(1)], T0)
        [leased] = store.lease(WORKER, "pump", 5, 30, T0)
        assert store.renew("pump", [leased.work_order_id], 30, T0 + 20) == 1
        assert store.lease(WORKER, "other", 5, 30, T0 + 45) == []
        assert len(store.lease(WORKER, "other", 5, 30, T0 + 50)) == 1

    def test_released_orders_go_back_to_the_queue(self, make_store: StoreFactory) -> None:
        store = make_store()
        store.submit([order(1)], T0)
        [leased] = store.lease(WORKER, "pump", 5, 30, T0)
        assert store.release("someone-else", [leased.work_order_id]) == 0
        assert store.release("pump", [leased.work_order_id]) == 1
        assert [item.work_order_id for item in store.lease(WORKER, "pump", 5, 30, T0 + 1)] == [leased.work_order_id]

    def test_done_orders_are_never_leased(self, make_store: StoreFactory) -> None:
        store = make_store()
        store.submit([order(1)], T0)
        [leased] = store.lease(WORKER, "pump", 5, 1, T0)
        store.complete([Completion(leased.work_order_id, b"{}", False)], T0)
        assert store.lease(WORKER, "pump", 5, 1, T0 + 100) == []


class TestComplete:
    def test_first_outcome_wins(self, make_store: StoreFactory) -> None:
        store = make_store()
        store.submit([order(1)], T0)
        wo_id = order(1).work_order_id
        assert store.complete([Completion(wo_id, b'{"first":1}', False)], T0) == [True]
        assert store.complete([Completion(wo_id, b'{"code":1}', True)], T0) == [False]
        status = store.status(wo_id)
        assert status is not None
        assert (status.state, status.outcome, status.is_error) == (OrderState.DONE, b'{"first":1}', False)

    def test_an_error_outcome_is_kept_as_an_error(self, make_store: StoreFactory) -> None:
        store = make_store()
        store.submit([order(1)], T0)
        store.complete([Completion(order(1).work_order_id, b'{"code":4}', True)], T0)
        status = store.status(order(1).work_order_id)
        assert status is not None and status.is_error and status.outcome == b'{"code":4}'

    def test_requests_and_outcomes_of_any_bytes_come_back_exactly(self, make_store: StoreFactory) -> None:
        store = make_store()
        every_byte = bytes(range(256)) * 8  # NUL, backslashes, quotes, braces: what an array's text form escapes
        orders = [NewOrder(f"{n:064x}", WORKER, every_byte[n:] + b"\\" * n) for n in range(3)]
        store.submit(orders, T0)
        leased = store.lease(WORKER, "pump", 3, 30, T0)
        assert [item.request for item in leased] == [o.request for o in orders]
        outcomes = [Completion(o.work_order_id, every_byte[::-1][n:] + b"{}\x00", n == 1) for n, o in enumerate(orders)]
        assert store.complete(outcomes, T0) == [True, True, True]
        finished = {item.work_order_id: item for item in store.finished([o.work_order_id for o in orders])}
        assert finished == {item.work_order_id: item for item in outcomes}

    def test_unknown_order_is_not_stored(self, make_store: StoreFactory) -> None:
        store = make_store()
        assert store.complete([Completion("cd" * 32, b"{}", False)], T0) == [False]
        assert store.status("cd" * 32) is None

    def test_outcomes_survive_reopening(self, make_store: StoreFactory) -> None:
        store = make_store()
        store.submit([order(1), order(2)], T0)
        store.complete([Completion(order(1).work_order_id, b'{"r":1}', False)], T0)
        store.close()
        again = make_store()
        done, pending = again.status(order(1).work_order_id), again.status(order(2).work_order_id)
        assert done is not None and done.outcome == b'{"r":1}'
        assert pending is not None and pending.state is OrderState.PENDING


class TestErrors:
    """A store tells what it refuses (the data of this call: retrying cannot help) from what
    failed (the store: retrying later may), and goes on serving after either."""

    def test_data_the_store_refuses_is_refused_at_once_and_the_store_serves_on(self, make_store: StoreFactory) -> None:
        store = make_store()
        with pytest.raises(StoreRefused, match="refused"):
            store.submit([NewOrder("ab" * 32, None, b"x")], T0)  # type: ignore[arg-type]  # NOT NULL
        assert store.status("ab" * 32) is None
        assert store.submit([order(1)], T0) == [SubmitOutcome.ACCEPTED]
        assert store.complete([Completion(order(1).work_order_id, b"{}", False)], T0) == [True]


class TestRetention:
    def test_purge_deletes_only_outcomes_older_than_the_ttl(self, make_store: StoreFactory) -> None:
        store = make_store()
        store.submit([order(1), order(2), order(3)], T0)
        store.complete([Completion(order(1).work_order_id, b"{}", False)], T0)
        store.complete([Completion(order(2).work_order_id, b"{}", False)], T0 + 50)
        assert store.purge(100, T0 + 120, 10) == 1
        assert store.status(order(1).work_order_id) is None
        assert store.status(order(2).work_order_id) is not None
        assert store.status(order(3).work_order_id) is not None  # pending orders are never purged

    def test_purge_deletes_at_most_its_limit_oldest_first(self, make_store: StoreFactory) -> None:
        store = make_store()
        store.submit([order(n) for n in range(1, 6)], T0)
        for n in (3, 1, 5, 2, 4):
            store.complete([Completion(order(n).work_order_id, b"{}", False)], T0 + n * 10)
        assert store.purge(0, T0 + 100, 2) == 2
        assert [store.status(order(n).work_order_id) is None for n in range(1, 6)] == [True, True, False, False, False]
        assert store.purge(0, T0 + 100, 2) == 2
        assert store.purge(0, T0 + 100, 2) == 1


class TestExpiry:
    """An order whose worker has said nothing for the pending time limit, and that waited that
    long, ends with an error its requester can read: no requester polls for ever."""

    TTL = 3600.0

    def test_orders_of_a_worker_gone_for_the_limit_end_with_an_error(self, make_store: StoreFactory) -> None:
        store = make_store(max_pending=2)
        store.register_worker(WORKER, {}, T0)
        store.submit([order(1), order(2)], T0)
        assert store.expire(self.TTL, T0 + self.TTL - 1) == 0  # not that old yet
        assert store.expire(self.TTL, T0 + self.TTL + 1) == 2
        status = store.status(order(1).work_order_id)
        assert status is not None and status.state is OrderState.DONE and status.is_error
        error = json.loads(status.outcome)
        assert error["code"] == 1 and "3600 s" in error["message"] and "submit it again" in error["message"]
        assert error["data"] == {"workOrderId": order(1).work_order_id}
        assert store.submit([order(3)], T0 + self.TTL + 2) == [SubmitOutcome.ACCEPTED]  # the queue has room again
        assert store.lease(WORKER, "pump", 10, 30, T0 + self.TTL + 3)[0].work_order_id == order(3).work_order_id

    def test_orders_of_an_unknown_worker_expire_too(self, make_store: StoreFactory) -> None:
        store = make_store()
        store.submit([order(1, OTHER_WORKER)], T0)
        assert store.expire(self.TTL, T0 + self.TTL + 1) == 1

    def test_orders_of_a_worker_that_is_alive_wait_however_long(self, make_store: StoreFactory) -> None:
        store = make_store()
        store.register_worker(WORKER, {}, T0)
        store.submit([order(1)], T0)
        store.heartbeat(WORKER, T0 + self.TTL)
        assert store.expire(self.TTL, T0 + self.TTL + 1) == 0
        status = store.status(order(1).work_order_id)
        assert status is not None and status.state is OrderState.PENDING

    def test_an_order_under_a_live_lease_is_left_to_its_pump(self, make_store: StoreFactory) -> None:
        store = make_store()
        store.submit([order(1)], T0)
        store.lease(WORKER, "pump", 1, 2 * self.TTL, T0 + 1)
        assert store.expire(self.TTL, T0 + self.TTL + 1) == 0
        assert store.expire(self.TTL, T0 + 2 * self.TTL + 2) == 1  # its lease lapsed: its pump is gone too


class TestWorkers:
    def test_registration_heartbeat_and_listing(self, make_store: StoreFactory) -> None:
        store = make_store()
        assert store.worker(WORKER) is None
        store.register_worker(WORKER, {"verifying_key": "pem"}, T0)
        store.register_worker(OTHER_WORKER, {"verifying_key": "other"}, T0 + 1)
        store.heartbeat(WORKER, T0 + 5)
        record = store.worker(WORKER)
        assert record is not None
        assert (record.signup, record.registered, record.heartbeat) == ({"verifying_key": "pem"}, T0, T0 + 5)
        assert [w.worker_id for w in store.workers()] == [WORKER, OTHER_WORKER]

    def test_registering_again_replaces_the_signup_and_keeps_the_first_registration(self, make_store: StoreFactory) -> None:
        store = make_store()
        store.register_worker(WORKER, {"quote": "old"}, T0)
        store.register_worker(WORKER, {"quote": "new"}, T0 + 9)
        store.close()
        record = make_store().worker(WORKER)
        assert record is not None and record.signup == {"quote": "new"} and record.registered == T0


def test_canonical_id_ignores_case_and_0x() -> None:
    assert canonical_id("0xABcd") == canonical_id("abCD") == "abcd"


def test_open_store_takes_a_directory_a_path_or_a_sqlite_url(tmp_path: Path) -> None:
    for location in (tmp_path, tmp_path / "s.db", f"sqlite://{tmp_path / 'u.db'}"):
        store = open_store(location)
        store.submit([order(1)], T0)
        store.close()
    assert (tmp_path / "work-orders.sqlite3").exists() and (tmp_path / "s.db").exists() and (tmp_path / "u.db").exists()


def test_open_store_refuses_an_unknown_scheme(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="unsupported store"):
        open_store("redis://localhost/0")


def test_a_store_written_by_a_newer_version_is_refused(tmp_path: Path) -> None:
    SQLiteStore(tmp_path).close()
    with sqlite3.connect(tmp_path / "work-orders.sqlite3") as db:
        db.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    with pytest.raises(StoreError, match="schema version 99"):
        SQLiteStore(tmp_path)


def test_a_file_that_is_not_a_database_is_refused(tmp_path: Path) -> None:
    (tmp_path / "work-orders.sqlite3").write_bytes(b"not a database" * 100)
    with pytest.raises(StoreError, match="cannot open the work-order store"):
        SQLiteStore(tmp_path)


def test_a_full_database_is_a_store_error_and_the_store_serves_on_once_there_is_room(tmp_path: Path) -> None:
    """SQLite reports a full disk and a database at its size limit alike (SQLITE_FULL): the
    store says so as a `StoreError` that is not a refusal of the data, and works again once
    there is room."""
    store = SQLiteStore(tmp_path, max_pending=10**6)
    try:
        pages = store._db.execute("PRAGMA page_count").fetchone()[0]
        store._db.execute(f"PRAGMA max_page_count = {pages + 2}")
        with pytest.raises(StoreError, match="full") as raised:
            for number in range(100):
                store.submit([order(number, size=4000)], T0)
        assert not isinstance(raised.value, StoreRefused)
        store._db.execute("PRAGMA max_page_count = 1000000")
        assert store.submit([order(1000)], T0) == [SubmitOutcome.ACCEPTED]
    finally:
        store.close()


def _steps(store: SQLiteStore, call: Callable[..., object], *args: object) -> int:
    """SQLite's virtual-machine steps that `call(*args)` takes on the store's connection (in thousands)."""
    counted = [0]

    def tick() -> int:
        counted[0] += 1
        return 0

    store._db.set_progress_handler(tick, 1000)
    try:
        call(*args)
    finally:
        store._db.set_progress_handler(None, 0)
    return counted[0]


def test_the_pumps_recurring_statements_read_the_queue_not_the_results_kept(tmp_path: Path) -> None:
    """A lease, an expiry pass and a purge cost the same beside 20 kept outcomes as beside 2,000:
    they read the pending orders' index, never every order the store keeps (a lease that scanned
    the whole table once took a tenth of the front door's CPU, and grew with the retention)."""
    costs = []
    for kept in (20, 2000):
        store = SQLiteStore(tmp_path / str(kept), max_pending=10**6)
        try:
            store.submit([order(n, size=2000) for n in range(kept)], T0)
            store.complete([Completion(order(n).work_order_id, b"x" * 1000, False) for n in range(kept)], T0 + 1)
            store.submit([order(10**6 + n) for n in range(3)], T0 + 2)
            costs.append((_steps(store, store.lease, WORKER, "pump", 2, 30, T0 + 3),
                          _steps(store, store.expire, 60, T0 + 3), _steps(store, store.purge, 3600, T0 + 3, 1000)))
            assert [o.work_order_id for o in store.lease(WORKER, "pump", 5, 30, T0 + 3)] == [order(10**6 + 2).work_order_id]
        finally:
            store.close()
    small, large = costs
    assert all(b <= a + 2 for a, b in zip(small, large)), f"steps (thousands) beside 20 and 2,000 kept outcomes: {costs}"


def test_every_accepted_order_survives_kill_9(tmp_path: Path) -> None:
    """A process that submits as fast as it can is killed with SIGKILL; every order it was told
    was accepted is in the file afterwards."""
    script = textwrap.dedent(
        f"""
        import sys
        from avalon_worker.store import NewOrder
        from avalon_worker.store.sqlite import SQLiteStore
        store = SQLiteStore({str(tmp_path)!r}, max_pending=10**9)
        for batch in range(10**6):
            ids = [f"{{batch:032x}}{{n:032x}}" for n in range(4)]
            store.submit([NewOrder(i, {WORKER!r}, b"request") for i in ids], 1.0)
            print(*ids, flush=True)
        """
    )
    process = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    accepted: list[str] = []
    while len(accepted) < 200:
        line = process.stdout.readline()
        assert line, "the submitting process stopped early"
        accepted += line.split()
    process.send_signal(signal.SIGKILL)
    accepted += process.stdout.read().split()
    process.wait()
    store = SQLiteStore(tmp_path)
    try:
        missing = [wo_id for wo_id in accepted if store.status(wo_id) is None]
        assert missing == []
    finally:
        store.close()

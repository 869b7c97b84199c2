"""What the PostgreSQL store shows beyond the store contract (test_store.py runs that on it too):
several processes sharing one database at once, schema versions, notifications, and a server
that goes away and comes back."""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import psycopg
import pytest

from avalon_worker.store import (
    Completion,
    Handoff,
    NewOrder,
    OrderState,
    StoreError,
    StoreRefused,
    SubmitOutcome,
    open_store,
)
from avalon_worker.store.postgres import (
    NOT_DURABLE,
    ORDERS_CHANNEL,
    PENDING,
    RESULTS_CHANNEL,
    SCHEMA_VERSION,
    PostgresStore,
    describe,
)

from conftest import start_postgres
from postgres_server import PostgresServer, free_port

pytestmark = pytest.mark.slow

WORKER = "a" * 64
OTHER_WORKER = "b" * 64
T0 = 1_000_000.0
WAIT_S = 30  # how long a test waits for something that should happen; never reached when it works


def order(number: int, worker: str = WORKER, size: int = 10) -> NewOrder:
    return NewOrder(f"{number:064x}", worker, b"x" * size)


@pytest.fixture(scope="module")
def server_to_stop() -> Iterator[PostgresServer]:
    server = start_postgres()
    yield server
    server.remove()


@pytest.fixture
def own_server(server_to_stop: PostgresServer) -> PostgresServer:
    """A PostgreSQL server of this module's own, running, for a test to stop and start."""
    if not server_to_stop.running():
        server_to_stop.start()
    return server_to_stop


class TestSchema:
    def test_a_new_database_gets_the_current_version(self, postgres_url: str) -> None:
        store = PostgresStore(postgres_url)
        try:
            assert store.schema_version() == SCHEMA_VERSION
            assert store.migrate() == SCHEMA_VERSION  # nothing left to do
        finally:
            store.close()

    def test_a_database_written_by_a_newer_version_is_refused(self, postgres_url: str) -> None:
        PostgresStore(postgres_url).close()
        with psycopg.connect(postgres_url, autocommit=True) as connection:
            connection.execute("INSERT INTO schema_version VALUES (99)")
        with pytest.raises(StoreError, match="schema version 99, newer than"):
            PostgresStore(postgres_url)

    def test_processes_starting_at_once_migrate_once(self, postgres_url: str) -> None:
        barrier = threading.Barrier(4)

        def open_and_close(_: int) -> int:
            barrier.wait()
            store = PostgresStore(postgres_url)
            version = store.schema_version()
            store.close()
            return version

        with ThreadPoolExecutor(4) as pool:
            assert list(pool.map(open_and_close, range(4))) == [SCHEMA_VERSION] * 4
        with psycopg.connect(postgres_url) as connection:
            versions = [row[0] for row in connection.execute("SELECT version FROM schema_version ORDER BY version")]
        assert versions == list(range(1, SCHEMA_VERSION + 1))


class TestSharing:
    """Several stores on one database stand for several listeners and worker hosts."""

    def test_the_queue_limit_holds_across_listeners_submitting_at_once(self, postgres_url: str) -> None:
        stores = [PostgresStore(postgres_url, max_pending=50) for _ in range(4)]
        barrier = threading.Barrier(len(stores))

        def submit_all(index: int) -> int:
            barrier.wait()
            accepted = 0
            for batch in range(10):
                numbers = range(1000 * index + 5 * batch, 1000 * index + 5 * batch + 5)
                outcomes = stores[index].submit([order(n) for n in numbers], T0)
                accepted += outcomes.count(SubmitOutcome.ACCEPTED)
            return accepted

        try:
            with ThreadPoolExecutor(len(stores)) as pool:
                total = sum(pool.map(submit_all, range(len(stores))))
            assert total == 50
            assert len(stores[0].lease(WORKER, "pump", 1000, 30, T0)) == 50
        finally:
            for store in stores:
                store.close()

    def test_the_same_order_id_from_two_listeners_is_accepted_once(self, postgres_url: str) -> None:
        stores = [PostgresStore(postgres_url) for _ in range(4)]
        barrier = threading.Barrier(len(stores))

        def submit(index: int) -> SubmitOutcome:
            barrier.wait()
            return stores[index].submit([order(7)], T0 + index)[0]

        try:
            with ThreadPoolExecutor(len(stores)) as pool:
                outcomes = list(pool.map(submit, range(len(stores))))
            assert sorted(o.value for o in outcomes) == ["accepted"] + ["duplicate"] * 3
        finally:
            for store in stores:
                store.close()

    def test_a_handoff_that_loses_an_id_to_another_listener_leases_what_its_caller_takes(
        self, postgres_url: str
    ) -> None:
        # Another listener inserts order 7 for another worker (so under another worker's queue
        # lock) and has not committed yet: this submit finds no order 7, waits on its insert,
        # and loses it. Its caller then takes order 8 instead, which must be leased to it.
        store = PostgresStore(postgres_url)
        other = psycopg.connect(postgres_url)
        pool = ThreadPoolExecutor(1)
        handoff = Handoff(WORKER, "local-pump", 30.0, 1)
        orders = [order(7), order(8)]
        try:
            with other.transaction():
                other.execute(
                    "INSERT INTO work_orders (work_order_id, worker_id, state, request, request_bytes, submitted, "
                    "attempts) VALUES (%s, %s, %s, %s, 10, %s, 0)",
                    (order(7).work_order_id, OTHER_WORKER, PENDING, b"x" * 10, T0),
                )
                submitted = pool.submit(store.submit, orders, T0, handoff)
                time.sleep(0.3)  # the submit is waiting on the uncommitted order 7
                assert not submitted.done()
            outcomes = submitted.result(timeout=WAIT_S)
            assert outcomes == [SubmitOutcome.DUPLICATE, SubmitOutcome.ACCEPTED]
            assert [o.work_order_id for o in handoff.taken(orders, outcomes, T0)] == [order(8).work_order_id]
            assert store.lease(WORKER, "other-pump", 10, 60, T0) == []  # order 8 is the local pump's
            assert store.renew("local-pump", [order(8).work_order_id], 30.0, T0 + 1) == 1
        finally:
            pool.shutdown()
            other.close()
            store.close()

    def test_pumps_leasing_at_once_never_get_the_same_order(self, postgres_url: str) -> None:
        feeder = PostgresStore(postgres_url)
        feeder.submit([order(n) for n in range(300)], T0)
        pumps = [PostgresStore(postgres_url) for _ in range(4)]
        barrier = threading.Barrier(len(pumps))

        def drain(index: int) -> list[str]:
            barrier.wait()
            mine: list[str] = []
            while leased := pumps[index].lease(WORKER, f"pump-{index}", 7, 30, T0):
                mine += [item.work_order_id for item in leased]
            return mine

        try:
            with ThreadPoolExecutor(len(pumps)) as pool:
                shares = list(pool.map(drain, range(len(pumps))))
            every = [wo_id for share in shares for wo_id in share]
            assert sorted(every) == sorted(order(n).work_order_id for n in range(300))  # each exactly once
        finally:
            for store in [feeder, *pumps]:
                store.close()


class TestCommits:
    def test_a_statement_joining_not_durable_commits_without_the_flush_and_leaves_the_session_as_it_was(
        self, postgres_url: str
    ) -> None:
        with psycopg.connect(postgres_url, autocommit=True) as connection:  # as the store's pool connects
            inside = connection.execute(f"SELECT current_setting('synchronous_commit') FROM {NOT_DURABLE}").fetchone()
            after = connection.execute("SELECT current_setting('synchronous_commit')").fetchone()
        assert inside == ("off",)
        assert after == ("on",)  # the next statement, an outcome's commit, waits for the flush again

    def test_leases_renewals_releases_and_heartbeats_leave_the_pooled_connections_durable(self, postgres_url: str) -> None:
        store = PostgresStore(postgres_url, pool_size=2)
        try:
            store.submit([order(n) for n in range(4)], T0)
            leased = store.lease(WORKER, "pump", 4, 30, T0)
            assert store.renew("pump", [leased[0].work_order_id], 30, T0 + 1) == 1
            assert store.release("pump", [leased[1].work_order_id]) == 1
            store.register_worker(WORKER, {"workerId": WORKER}, T0)
            store.heartbeat(WORKER, T0 + 2)
            assert store.purge(0.0, T0 + 3, 10) == 0
            settings = {store._run(lambda c, _: c.execute("SHOW synchronous_commit").fetchone(), transaction=False)
                        for _ in range(4)}
            assert settings == {("on",)}
        finally:
            store.close()


class TestNotifications:
    def test_the_first_subscriber_hears_the_first_connection_however_late_it_is_added(
        self, postgres_url: str, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """On a loaded machine the subscribing thread can lose the CPU between making the
        notification connection and adding its subscriber; the "anything may have changed"
        call of the first connection must still reach it."""
        from avalon_worker.store import postgres

        add = postgres._Notifications.add
        monkeypatch.setattr(postgres._Notifications, "add", lambda self, subscriber: (time.sleep(0.5), add(self, subscriber)))
        store = PostgresStore(postgres_url)
        heard = threading.Event()
        try:
            store.subscribe(on_orders=lambda worker_id: heard.set() if worker_id is None else None)
            assert heard.wait(WAIT_S), "the subscriber never heard that the connection was made"
        finally:
            store.close()

    def test_submits_and_outcomes_wake_subscribers_in_other_processes(self, postgres_url: str) -> None:
        listener, pump = PostgresStore(postgres_url), PostgresStore(postgres_url)
        woken: list[str | None] = []
        results: list[str] = []
        got_orders, got_results, connected = threading.Event(), threading.Event(), threading.Event()

        def on_orders(worker_id: str | None) -> None:
            if worker_id is None:
                connected.set()
                return
            woken.append(worker_id)
            got_orders.set()

        def on_results(worker_id: str | None) -> None:
            if worker_id is not None:
                results.append(worker_id)
                got_results.set()

        unsubscribe = pump.subscribe(on_orders=on_orders, on_results=on_results)
        try:
            assert connected.wait(WAIT_S), "the subscription never connected"
            listener.submit([order(1), order(2), order(3, OTHER_WORKER)], T0)
            assert got_orders.wait(WAIT_S)
            leased = pump.lease(WORKER, "pump", 10, 30, T0)
            pump.complete([Completion(item.work_order_id, b"{}", False) for item in leased], T0)
            assert got_results.wait(WAIT_S)
            assert sorted(set(woken)) == [WORKER, OTHER_WORKER]
            assert results == [WORKER]  # outcomes are announced per worker: one notice for the batch
        finally:
            unsubscribe()
            listener.close()
            pump.close()

    def test_a_process_listens_only_on_the_channels_it_hears_and_a_later_subscriber_adds_its_own(
            self, postgres_url: str) -> None:
        store, other = PostgresStore(postgres_url), PostgresStore(postgres_url)
        orders_connected, results_connected, got_results = threading.Event(), threading.Event(), threading.Event()
        unsubscribe = store.subscribe(on_orders=lambda worker_id: orders_connected.set() if worker_id is None else None)
        try:
            assert orders_connected.wait(WAIT_S)
            assert store._notifications is not None and store._notifications._listening == {ORDERS_CHANNEL}
            heard: list[str] = []

            def on_results(worker_id: str | None) -> None:
                if worker_id is None:
                    results_connected.set()
                else:
                    heard.append(worker_id)
                    got_results.set()

            unsubscribe_results = store.subscribe(on_results=on_results)
            assert results_connected.wait(WAIT_S), "the new subscriber was not told to look (its channel is new)"
            assert store._notifications._listening == {ORDERS_CHANNEL, RESULTS_CHANNEL}
            other.submit([order(1)], T0)
            assert len(other.lease(WORKER, "pump", 10, 30, T0)) == 1
            assert other.complete([Completion(order(1).work_order_id, b"{}", False)], T0) == [True]
            assert got_results.wait(WAIT_S) and heard == [WORKER]
            unsubscribe_results()
        finally:
            unsubscribe()
            store.close()
            other.close()

    def test_an_outcome_for_an_id_longer_than_a_notice_is_stored_with_its_batch_and_announced(
            self, postgres_url: str) -> None:
        """A notice carries at most 8,000 bytes; an outcome is announced by its worker id, so no
        id, however long, can make a batch of outcomes fail."""
        store = PostgresStore(postgres_url)
        heard: list[str] = []
        got, connected = threading.Event(), threading.Event()

        def on_results(worker_id: str | None) -> None:
            (got if worker_id is not None else connected).set()
            if worker_id is not None:
                heard.append(worker_id)

        unsubscribe = store.subscribe(on_results=on_results)
        try:
            assert connected.wait(WAIT_S), "the subscription never connected"
            poison = "ab" * 4050  # repetitive: short enough for the index once compressed
            assert store.submit([NewOrder(poison, WORKER, b"x"), order(1)], T0) == [SubmitOutcome.ACCEPTED] * 2
            assert len(store.lease(WORKER, "pump", 10, 30, T0)) == 2
            completions = [Completion(poison, b'{"a":1}', False), Completion(order(1).work_order_id, b'{"b":2}', False)]
            assert store.complete(completions, T0 + 1) == [True, True]
            assert got.wait(WAIT_S) and heard == [WORKER]
            assert [item.outcome for item in store.finished([poison, order(1).work_order_id])] == [b'{"a":1}', b'{"b":2}']
        finally:
            unsubscribe()
            store.close()


class TestRefusals:
    def test_an_id_too_long_for_the_index_is_refused_at_once_not_retried_as_a_lost_connection(
            self, postgres_url: str) -> None:
        store = PostgresStore(postgres_url, reconnect_s=5)
        try:
            with pytest.raises(StoreRefused, match="index row size"):
                store.submit([NewOrder(secrets.token_hex(1500), WORKER, b"x")], T0)  # does not compress
            assert store.submit([order(1)], T0) == [SubmitOutcome.ACCEPTED]
        finally:
            store.close()


class TestServerAway:
    def test_calls_made_while_the_server_restarts_wait_for_it(self, own_server: PostgresServer) -> None:
        url = own_server.create_database("restarts")
        store = PostgresStore(url, reconnect_s=60)
        connected, reconnected = threading.Event(), threading.Event()

        def on_orders(worker_id: str | None) -> None:
            if worker_id is None:  # told at every (re)connect that anything may have changed
                (reconnected if connected.is_set() else connected).set()

        unsubscribe = store.subscribe(on_orders=on_orders)
        try:
            assert connected.wait(WAIT_S), "the subscription never connected"
            assert store.submit([order(1)], T0) == [SubmitOutcome.ACCEPTED]
            own_server.stop("immediate")
            restart = threading.Timer(1.0, own_server.start)
            restart.start()
            assert store.submit([order(2)], T0) == [SubmitOutcome.ACCEPTED]  # waits through the restart
            restart.join()
            statuses = [store.status(order(n).work_order_id) for n in (1, 2)]
            assert all(s is not None and s.state is OrderState.PENDING for s in statuses)
            assert reconnected.wait(WAIT_S), "the subscription did not reconnect after the restart"
        finally:
            unsubscribe()
            store.close()

    def test_a_server_that_stays_away_gives_an_error_naming_it_without_the_password(
        self, own_server: PostgresServer
    ) -> None:
        url = own_server.create_database("goes_away").replace("postgres@", "postgres:s3cret-pw@")
        store = PostgresStore(url, reconnect_s=1)
        try:
            own_server.stop("immediate")
            with pytest.raises(StoreError) as raised:
                store.status(order(1).work_order_id)
            assert f"127.0.0.1:{own_server.port}/goes_away" in str(raised.value)
            assert "s3cret-pw" not in str(raised.value)
        finally:
            store.close()


def test_an_unreachable_store_is_refused_at_open_with_what_to_check() -> None:
    with pytest.raises(StoreError, match="cannot connect to the PostgreSQL store 127.0.0.1:.*check the URL"):
        PostgresStore(f"postgresql://nobody:pw@127.0.0.1:{free_port()}/none", reconnect_s=1)


def test_describe_shows_host_port_and_database_only() -> None:
    assert describe("postgresql://user:secret@db.example:6543/orders?sslmode=require") == "db.example:6543/orders"


def test_open_store_picks_postgresql_by_url(postgres_url: str) -> None:
    store = open_store(postgres_url)
    try:
        assert isinstance(store, PostgresStore)
    finally:
        store.close()


def test_store_migrate_command_creates_then_finds_the_current_schema(postgres_url: str) -> None:
    from conftest import run_cli

    first = run_cli("store", "migrate", "--store", postgres_url)
    assert first.returncode == 0, first.stderr
    assert f"migrated from schema version 0 to {SCHEMA_VERSION}" in first.stdout
    second = run_cli("store", "migrate", "--store", postgres_url)
    assert second.returncode == 0 and f"at schema version {SCHEMA_VERSION}; nothing to do" in second.stdout

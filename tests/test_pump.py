"""The pump between a real PostgreSQL store and a real worker: what it does when the store
refuses an outcome, and when the store goes away while orders run."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import pytest

from avalon_worker import jsonio
from avalon_worker.front.pump import Pump
from avalon_worker.front.pump_core import PumpConfig
from avalon_worker.front.store_calls import StoreCalls
from avalon_worker.requester import PendingWorkOrder, WorkerInfo, build_work_order, open_result
from avalon_worker.store import NewOrder, OrderState, canonical_id
from avalon_worker.store.postgres import PostgresStore

from conftest import MISBEHAVING_REGISTRY, RunningWorker, hold_store_thread, launch_worker, start_postgres, wait_for
from postgres_server import PostgresServer

WAIT_S = 60  # the longest a test waits for something that should happen

pytestmark = pytest.mark.slow


@dataclass
class RunningPump:
    """A `Pump` on an event loop in a thread of its own, with its store's one thread."""

    store: PostgresStore
    endpoint: str
    config: PumpConfig
    calls: StoreCalls = field(default_factory=lambda: StoreCalls(threads=1))

    def __post_init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.registered = threading.Event()
        self.thread = threading.Thread(target=self.loop.run_until_complete, args=(self._run(),), daemon=True)
        self.thread.start()
        assert self.registered.wait(WAIT_S), "the pump did not register the worker"

    async def _run(self) -> None:
        self.stop_event = asyncio.Event()
        self.pump = Pump(self.store, self.endpoint, self.calls, self.config)
        await self.pump.register()
        self.registered.set()
        await self.pump.run(self.stop_event)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.stop_event.set)
        self.thread.join(WAIT_S)
        self.calls.close()


@pytest.fixture(scope="module")
def hello_worker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningWorker]:
    running = launch_worker(tmp_path_factory.mktemp("state"), ["--workers", "2", "--workloads", MISBEHAVING_REGISTRY])
    yield running
    running.stop()


def submit(store: PostgresStore, info: WorkerInfo, workload: str, text: str) -> PendingWorkOrder:
    pending = build_work_order(info, workload, [text.encode()])
    body = jsonio.dumps(pending.request)
    assert store.submit([NewOrder(canonical_id(pending.work_order_id), canonical_id(info.worker_id), body)], time.time())
    return pending


def rows(url: str) -> dict[str, tuple[int, int, bool | None]]:
    """Every order: id → (state, attempts, is_error)."""
    with psycopg.connect(url) as connection:
        found = connection.execute("SELECT work_order_id, state, attempts, is_error FROM work_orders").fetchall()
    return {row[0]: (row[1], row[2], row[3]) for row in found}


def wait_until_done(url: str, count: int) -> dict[str, tuple[int, int, bool | None]]:
    deadline = time.monotonic() + WAIT_S
    while True:
        found = rows(url)
        if len(found) == count and all(state == 2 for state, _, _ in found.values()):
            return found
        assert time.monotonic() < deadline, f"orders not done after {WAIT_S} s: {found}"
        time.sleep(0.05)


def test_an_outcome_the_store_refuses_ends_its_order_once_and_the_rest_of_its_batch_is_stored(
        postgres_url: str, hello_worker: RunningWorker) -> None:
    """The database is made to refuse outcomes over 20,000 bytes (a constraint, as a stand-in
    for anything a store cannot keep); the store's thread is held while three orders are
    answered, so that their outcomes come to the store as one batch."""
    store = PostgresStore(postgres_url)
    with psycopg.connect(postgres_url, autocommit=True) as connection:
        connection.execute("ALTER TABLE work_orders ADD CONSTRAINT small_outcomes "
                           "CHECK (outcome IS NULL OR octet_length(outcome) < 20000)")
    info = WorkerInfo.from_signup(hello_worker.signup())
    running = RunningPump(store, hello_worker.endpoint, PumpConfig(lease_s=2.0, poll_s=0.1))
    try:
        held = threading.Event()
        hold_store_thread(running.calls, running.loop, held, WAIT_S)
        orders = [submit(store, info, "python-hello", text) for text in ("a", "x" * 30_000, "b")]
        time.sleep(1.0)  # the pump looks for orders every 0.1 s: they are sent and answered meanwhile
        held.set()
        found = wait_until_done(postgres_url, 3)
        assert [found[canonical_id(o.work_order_id)][1:] for o in orders] == [(1, False), (1, True), (1, False)]
        for pending, text in ((orders[0], "a"), (orders[2], "b")):
            status = store.status(canonical_id(pending.work_order_id))
            assert status is not None and status.state is OrderState.DONE
            assert open_result(pending, {"result": json.loads(status.outcome)}, info) == [f"Hello {text}".encode()]
        refused = store.status(canonical_id(orders[1].work_order_id))
        assert refused is not None and "could not be stored" in json.loads(refused.outcome)["message"]
    finally:
        running.stop()
        store.close()


@pytest.fixture(scope="module")
def server_to_stop() -> Iterator[PostgresServer]:
    server = start_postgres()
    yield server
    server.remove()


def test_outcomes_are_kept_while_the_store_is_away_and_no_order_runs_twice(
        server_to_stop: PostgresServer, hello_worker: RunningWorker, tmp_path: Path) -> None:
    """The database stops while three orders run, for longer than the store retries (1 s) and
    than their leases (2 s): the pump keeps their outcomes and stores them when it is back,
    before it leases anything, so none is leased (and run) again."""
    url = server_to_stop.create_database("away")
    store = PostgresStore(url, reconnect_s=1.0)
    info = WorkerInfo.from_signup(hello_worker.signup())
    running = RunningPump(store, hello_worker.endpoint, PumpConfig(lease_s=2.0, poll_s=0.1, heartbeat_s=0.5))
    try:
        orders = [submit(store, info, "sleep", "1.5") for _ in range(2)]
        wait_for(lambda: all(state == 1 for state, _, _ in rows(url).values()), "the orders to be leased", timeout_s=WAIT_S)
        # A fast stop cuts every session but keeps the leases (committed without waiting for
        # the disk, they could be lost in a crash, and the order would then count no lease).
        server_to_stop.stop("fast")
        time.sleep(4.0)  # the orders finish; storing their outcomes fails; their leases lapse
        server_to_stop.start()
        found = wait_until_done(url, 2)
        assert [found[canonical_id(o.work_order_id)][1:] for o in orders] == [(1, False)] * 2
        for pending in orders:
            status = store.status(canonical_id(pending.work_order_id))
            assert status is not None
            assert open_result(pending, {"result": json.loads(status.outcome)}, info) == [b"slept 1.5"]
    finally:
        running.stop()
        store.close()
        if not server_to_stop.running():
            server_to_stop.start()

"""Many worker hosts and stateless listeners on one real PostgreSQL, as separate processes:
`avalon-worker serve --store postgresql://…` hosts pull their own orders, `avalon-worker listener`
processes take the requests, and requesters speak to the listeners as Avalon's SDK does."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import ecdsa
import psycopg
import pytest
import receipt_requester as receipts
import sdk_requester as sdk
from test_listener_end_to_end import HttpWorker, expected_output, sample_orders

from avalon_worker.front.door import PUMP_READY_PREFIX
from avalon_worker.front.door import READY_PREFIX as LISTENER_READY_PREFIX

from conftest import MISBEHAVING_REGISTRY, launch_worker, run_cli, start_postgres, wait_for
from independent_requester import request_hash, response_hash
from postgres_server import PostgresServer

pytestmark = pytest.mark.slow

TESTS = Path(__file__).parent
POLL_S = 0.1
LEASE_S = 2.0  # short leases and heartbeats, so that a dead host's orders and status turn quickly
HEARTBEAT_S = 0.5
STALE_AFTER_S = 3.0
WAIT_S = 120  # the longest a test waits for something that should happen


def _read_ready(process: subprocess.Popen[str], prefix: str, what: str) -> str:
    assert process.stdout is not None
    while True:
        line = process.stdout.readline()
        if not line:
            pytest.fail(f"{what} stopped before it was ready (exit {process.wait()})")
        if line.startswith(prefix):
            threading.Thread(target=process.stdout.read, daemon=True).start()  # keep the pipe drained
            return line[len(prefix):].strip()


@dataclass
class Service(HttpWorker):
    """A process group of ours (`kill_all`, `stop`): a worker host (`serve --store`), known by
    the worker id it pulls orders for, or a listener, known by its `url`."""

    worker_id: str = ""


def start_worker_host(state_dir: Path, store_url: str, extra: Sequence[str] = ()) -> Service:
    command = [
        sys.executable, "-m", "avalon_worker", "serve", "--bind", "tcp://127.0.0.1:*", "--state-dir", str(state_dir),
        "--rsa-bits", "2048", "--attestation", "none", "--workers", "1", "--insecure-reuse-session-iv",
        "--store", store_url, "--lease-s", str(LEASE_S), "--heartbeat-s", str(HEARTBEAT_S),
        "--log-level", "WARNING", *extra,
    ]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, start_new_session=True)
    return Service(process, "", "", worker_id=_read_ready(process, PUMP_READY_PREFIX, "the worker host"))


def start_listener(store_url: str, extra: Sequence[str] = ()) -> Service:
    command = [
        sys.executable, "-m", "avalon_worker", "listener", "--store", store_url, "--listen-http", "127.0.0.1:0",
        "--stale-after-s", str(STALE_AFTER_S), "--log-level", "WARNING", *extra,
    ]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, start_new_session=True)
    return Service(process, "", _read_ready(process, LISTENER_READY_PREFIX, "the listener") + "/")


@dataclass
class Deployment:
    """What a test started; everything still running is stopped at the end."""

    store_url: str
    root: Path
    services: list[Service] = field(default_factory=list)

    def worker_host(self, name: str, extra: Sequence[str] = ()) -> Service:
        service = start_worker_host(self.root / name, self.store_url, extra)
        self.services.append(service)
        return service

    def listener(self, extra: Sequence[str] = ()) -> Service:
        service = start_listener(self.store_url, extra)
        self.services.append(service)
        return service

    def close(self) -> None:
        for service in self.services:
            if service.process.poll() is None:
                service.kill_all()


@pytest.fixture
def deployment(postgres_url: str, tmp_path: Path) -> Iterator[Deployment]:
    running = Deployment(postgres_url, tmp_path)
    yield running
    running.close()


def order_rows(store_url: str) -> dict[str, tuple[str, int, int]]:
    """Every order in the store: id → (worker id, state, attempts)."""
    with psycopg.connect(store_url) as connection:
        rows = connection.execute("SELECT work_order_id, worker_id, state, attempts FROM work_orders").fetchall()
    return {row[0]: (row[1], row[2], row[3]) for row in rows}


def submit_pending(url: str, worker: sdk.Worker, workload: str, text: str) -> sdk.SdkOrder:
    """An order submitted without waiting for its result; the listener answered "pending"."""
    order = sdk.build(worker, workload, [text], response_timeout_ms=None)
    answer = sdk.submit(url, order)
    assert answer["error"]["code"] == 5, answer
    return order


def test_two_workers_on_one_database_each_get_only_their_own_orders(deployment: Deployment) -> None:
    hosts = [deployment.worker_host("alpha"), deployment.worker_host("beta")]
    listeners = [deployment.listener(), deployment.listener()]
    assert hosts[0].worker_id != hosts[1].worker_id
    for listener in listeners:
        assert sorted(sdk.lookup(listener.url)) == sorted(host.worker_id for host in hosts)
    orders: list[tuple[sdk.Worker, sdk.SdkOrder, bytes]] = []
    for listener in listeners:
        for host in hosts:
            worker = sdk.retrieve(listener.url, host.worker_id.upper())
            assert worker.status == 1
            for workload, text in sample_orders()[:3]:
                orders.append((worker, submit_pending(listener.url, worker, workload, text), expected_output(workload, text)))
    for worker, order, expected in orders:
        # Only the worker addressed holds the key that opens the session key and signs the result.
        answer = sdk.get_result(listeners[0].url, order.work_order_id, poll_s=POLL_S)
        assert answer["result"]["workerId"] == worker.worker_id
        assert sdk.open_result(worker, order, answer) == [expected]
    rows = order_rows(deployment.store_url)
    assert all(rows[order.work_order_id][:2] == (worker.worker_id.lower(), 2) for worker, order, _ in orders)
    # Our own requester through one listener: the nine sample orders on every worker it lists.
    command = run_cli("run-orders", "--listener", listeners[1].url, str(TESTS / "test_work_orders.json"), timeout=WAIT_S)
    assert command.returncode == 0, command.stdout + command.stderr
    assert sorted(line.split()[2] for line in command.stderr.splitlines() if line.startswith("avalon-worker: worker ")) == sorted(
        host.worker_id for host in hosts)
    assert command.stdout.count("9 of 9 work orders verified") == 2



def wait_until_off_line(listener_url: str, worker_id: str) -> None:
    def off_line() -> bool:
        return worker_id not in sdk.lookup(listener_url) and sdk.retrieve(listener_url, worker_id).status != 1

    wait_for(off_line, f"worker {worker_id[:16]} to be shown off-line", WAIT_S, 0.05)


def test_a_worker_host_killed_mid_order_finishes_every_order_once_it_returns(deployment: Deployment) -> None:
    with_sleep = ["--workloads", str(TESTS / "workloads" / "workloads.json")]  # python-hello and sleep
    alpha, beta = deployment.worker_host("alpha", with_sleep), deployment.worker_host("beta", with_sleep)
    listener = deployment.listener()
    worker_a = sdk.retrieve(listener.url, alpha.worker_id)
    worker_b = sdk.retrieve(listener.url, beta.worker_id)
    orders = [(submit_pending(listener.url, worker_a, "sleep", "2"), b"slept 2") for _ in range(2)]
    orders += [(submit_pending(listener.url, worker_a, "python-hello", f"n{n}"), f"Hello n{n}".encode()) for n in range(4)]
    wait_for(lambda: any(state == 1 for _, state, _ in order_rows(deployment.store_url).values()), "an order leased",
             WAIT_S, 0.05)
    alpha.kill_all()
    wait_until_off_line(listener.url, alpha.worker_id)
    assert sdk.retrieve(listener.url, beta.worker_id).status == 1
    # The other worker serves on, and never takes the dead one's orders: they are encrypted to
    # a key it does not have. Its own order finishing shows it has been pumping meanwhile.
    assert sdk.run(listener.url, worker_b, "python-hello", ["beta"], poll_s=POLL_S) == [b"Hello beta"]
    time.sleep(LEASE_S)  # past every lease the dead host held
    unfinished = [order for order, _ in orders if order_rows(deployment.store_url)[order.work_order_id][1] != 2]
    assert unfinished, "every order finished before the kill: the test did not kill mid-order"
    for order in unfinished:
        assert sdk.call(listener.url, "WorkOrderGetResult", {"workOrderId": order.work_order_id})["error"]["code"] == 5
    back = deployment.worker_host("alpha", with_sleep)
    assert back.worker_id == alpha.worker_id  # the same identity, from the same state directory
    wait_for(lambda: sdk.retrieve(listener.url, alpha.worker_id).status == 1, "the worker shown active again", WAIT_S, 0.05)
    for order, expected in orders:
        answer = sdk.get_result(listener.url, order.work_order_id, poll_s=POLL_S)
        assert sdk.open_result(worker_a, order, answer) == [expected]
        assert sdk.get_result(listener.url, order.work_order_id)["result"] == answer["result"]  # one outcome, kept
    rows = order_rows(deployment.store_url)
    assert all(rows[order.work_order_id][1] == 2 for order, _ in orders)
    assert any(rows[order.work_order_id][2] >= 2 for order in unfinished)  # leased again after the kill


def test_a_listener_killed_with_orders_pending_loses_none_of_them(deployment: Deployment) -> None:
    alpha = deployment.worker_host("alpha")
    first = deployment.listener()
    worker = sdk.retrieve(first.url, alpha.worker_id)
    assert alpha.stop() == 0  # the worker is away: orders wait in the store
    orders = [(submit_pending(first.url, worker, "python-hello", f"p{n}"), f"Hello p{n}".encode()) for n in range(5)]
    first.kill_all()
    deployment.worker_host("alpha")
    second = deployment.listener()
    for order, expected in orders:
        assert sdk.open_result(worker, order, sdk.get_result(second.url, order.work_order_id, poll_s=POLL_S)) == [expected]


def test_orders_for_a_worker_that_never_comes_back_end_with_an_error_after_the_pending_ttl(deployment: Deployment) -> None:
    """No worker host runs to expire them: the listener does, once the worker has been silent,
    and the order has waited, for --pending-ttl."""
    alpha = deployment.worker_host("alpha")
    listener = deployment.listener(["--pending-ttl", "2"])
    worker = sdk.retrieve(listener.url, alpha.worker_id)
    alpha.kill_all()
    order = submit_pending(listener.url, worker, "python-hello", "never")
    answer = sdk.get_result(listener.url, order.work_order_id, poll_s=0.5, max_polls=60)
    error = answer["error"]
    assert error["code"] == 1 and "within 2 s" in error["message"] and "submit it again" in error["message"]
    assert error["data"] == {"workOrderId": order.work_order_id.lower()}
    assert order_rows(deployment.store_url)[order.work_order_id][1] == 2


def test_a_listener_started_after_results_were_stored_returns_them(deployment: Deployment) -> None:
    alpha = deployment.worker_host("alpha")
    first = deployment.listener()
    worker = sdk.retrieve(first.url, alpha.worker_id)
    texts = ["r0", "r1", "r2"]
    orders = [submit_pending(first.url, worker, "python-hello", text) for text in texts]
    answers = [sdk.get_result(first.url, order.work_order_id, poll_s=POLL_S) for order in orders]
    assert first.stop() == 0
    later = deployment.listener()
    for order, answer, text in zip(orders, answers, texts, strict=True):
        assert sdk.get_result(later.url, order.work_order_id)["result"] == answer["result"]
        assert sdk.open_result(worker, order, answer) == [f"Hello {text}".encode()]


def test_a_receipt_created_on_one_listener_is_seen_on_another_with_the_worker_hosts_update(deployment: Deployment) -> None:
    alpha = deployment.worker_host("alpha")
    first, second = deployment.listener(), deployment.listener()
    worker = sdk.retrieve(first.url, alpha.worker_id)
    before = submit_pending(first.url, worker, "python-hello", "before")  # its receipt is created after it ends
    answer = sdk.get_result(first.url, before.work_order_id, poll_s=POLL_S)
    key = ecdsa.SigningKey.generate(curve=ecdsa.SECP256k1)
    params = receipts.create_params(before.params, request_hash(before.params), key)
    assert receipts.create(first.url, params)["error"]["code"] == 0
    assert receipts.create(second.url, params)["error"]["code"] == 2  # once, whichever listener is asked
    kept = receipts.retrieve(second.url, before.work_order_id)["result"]
    assert {name: kept[name] for name in params} == params and kept["receiptCurrentStatus"] == receipts.COMPLETED
    update = receipts.update_retrieve(second.url, before.work_order_id)["result"]
    receipts.verify_worker_update(update, worker.verification_key, work_order_id=before.work_order_id,
                                  worker_id=worker.worker_id, expected_type=receipts.COMPLETED,
                                  expected_data=response_hash(answer["result"]).hex())
    assert receipts.lookup_all(first.url, requesterId=before.params["requesterId"]) == ([before.work_order_id], 1)


@pytest.fixture(scope="module")
def server_to_restart() -> Iterator[PostgresServer]:
    server = start_postgres()
    yield server
    server.remove()


def test_the_database_restarted_under_load_loses_nothing_accepted(server_to_restart: PostgresServer, tmp_path: Path) -> None:
    running = Deployment(server_to_restart.create_database("under_load"), tmp_path)
    try:
        hosts = [running.worker_host("alpha"), running.worker_host("beta")]
        listeners = [running.listener(), running.listener()]
        workers = [sdk.retrieve(listeners[0].url, host.worker_id) for host in hosts]
        accepted: list[tuple[str, sdk.Worker, sdk.SdkOrder, bytes]] = []
        refused: list[str] = []
        restarted = threading.Event()
        stop = threading.Event()

        def requester(number: int) -> None:
            sent = 0
            while not stop.is_set() and sent < 400:
                url, worker = listeners[sent % 2].url, workers[(sent + number) % 2]
                text = f"c{number}-{sent}"
                order = sdk.build(worker, "python-hello", [text], response_timeout_ms=None)
                sent += 1
                try:
                    answer = sdk.submit(url, order)
                except OSError as exc:  # the listener's store call outlasted the HTTP timeout
                    refused.append(f"{type(exc).__name__}")
                    continue
                if answer.get("error", {}).get("code") == 5:
                    accepted.append((url, worker, order, f"Hello {text}".encode()))
                else:
                    refused.append(str(answer.get("error", {}).get("message")))
                if restarted.is_set() and len(accepted) >= 60:
                    return

        threads = [threading.Thread(target=requester, args=(n,)) for n in range(2)]
        for thread in threads:
            thread.start()
        wait_for(lambda: len(accepted) >= 20, "orders accepted before the restart", WAIT_S, 0.05)
        server_to_restart.stop("immediate")  # as a crash: no checkpoint, sessions cut
        time.sleep(1)
        server_to_restart.start()
        before_restart = len(accepted)
        restarted.set()
        for thread in threads:
            thread.join(WAIT_S)
        stop.set()
        assert len(accepted) > before_restart, f"nothing was accepted after the restart; refused: {refused[-3:]}"
        for url, worker, order, expected in accepted:
            other = listeners[1].url if url == listeners[0].url else listeners[0].url
            assert sdk.open_result(worker, order, sdk.get_result(other, order.work_order_id, poll_s=POLL_S)) == [expected]
        rows = order_rows(running.store_url)
        assert all(rows[order.work_order_id][1] == 2 for _, _, order, _ in accepted)
        assert all(sdk.lookup(listener.url) for listener in listeners)
    finally:
        running.close()


def test_a_pump_beside_a_worker_whose_command_line_is_fixed(deployment: Deployment) -> None:
    """As under Gramine-SGX: the worker serves ZMQ only, a `pump` process pulls its orders."""
    worker_process = launch_worker(deployment.root / "sgx-like", ["--workers", "1", "--insecure-reuse-session-iv"])
    try:
        command = [sys.executable, "-m", "avalon_worker", "pump", "--store", deployment.store_url,
                   "--endpoint", worker_process.endpoint, "--log-level", "WARNING"]
        process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, start_new_session=True)
        pump = Service(process, "", "", worker_id=_read_ready(process, PUMP_READY_PREFIX, "the pump"))
        deployment.services.append(pump)
        listener = deployment.listener()
        worker = sdk.retrieve(listener.url, pump.worker_id)
        assert sdk.run(listener.url, worker, "python-fib", ["30"], poll_s=POLL_S) == [b"Fibonacci number at position 30 = 832040"]
    finally:
        worker_process.stop()


def test_a_pump_gives_back_at_once_what_a_restarted_worker_never_answered(deployment: Deployment, tmp_path: Path) -> None:
    """The worker behind a `pump` is killed mid-order and started again on the same endpoint:
    the pump connects again and the order runs on the new worker process straight away, not
    after the pump's give-up time for unanswered orders (300 s)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        endpoint = f"tcp://127.0.0.1:{probe.getsockname()[1]}"
    options = ["--workers", "1", "--insecure-reuse-session-iv", "--bind", endpoint, "--workloads", MISBEHAVING_REGISTRY]
    state = deployment.root / "restarted"
    first = launch_worker(state, options)
    second = None
    try:
        command = [sys.executable, "-m", "avalon_worker", "pump", "--store", deployment.store_url,
                   "--endpoint", endpoint, "--log-level", "WARNING"]
        process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, start_new_session=True)
        pump = Service(process, "", "", worker_id=_read_ready(process, PUMP_READY_PREFIX, "the pump"))
        deployment.services.append(pump)
        listener = deployment.listener()
        worker = sdk.retrieve(listener.url, pump.worker_id)
        marker = tmp_path / "running"
        order = submit_pending(listener.url, worker, "mark-then-sleep", f"{marker} 1")
        wait_for(marker.exists, "the order to start", WAIT_S, 0.05)
        first.process.kill()
        first.process.wait()
        second = launch_worker(state, options)  # the same identity on the same endpoint
        answer = sdk.get_result(listener.url, order.work_order_id, poll_s=0.5, max_polls=60)
        assert sdk.open_result(worker, order, answer) == [b"slept 1"]
        assert order_rows(deployment.store_url)[order.work_order_id][1:] == (2, 2)  # done, on its second lease
    finally:
        first.stop()
        if second is not None:
            second.stop()

"""`avalon-worker serve --listen-http` as a real subprocess, driven over HTTP the way Avalon's SDK
drives a listener: the nine sample orders, pending orders, and a kill -9 with orders pending."""

from __future__ import annotations

import json
import os
import shlex
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import pytest
import sdk_requester as sdk

from avalon_worker._cli.console import READY_PREFIX
from avalon_worker._cli.demo import read_ready
from avalon_worker.store.sqlite import SQLiteStore

from independent_requester import ItemSpec, VerificationError, build_work_order, open_response

pytestmark = pytest.mark.slow

TESTS = Path(__file__).parent
POLL_S = 0.1  # the SDK polls every 2 s; the tests need not wait that long


def sample_orders() -> list[tuple[str, str]]:
    orders = json.loads((TESTS / "test_work_orders.json").read_text())["workOrders"]
    return [(order["workloadId"], order["params"]) for order in orders]


def expected_output(workload: str, text: str) -> bytes:
    if workload == "python-hello":
        return f"Hello {text}".encode()
    a, b = 0, 1
    for _ in range(int(text)):
        a, b = b, a + b
    return f"Fibonacci number at position {text} = {a}".encode()


@dataclass
class HttpWorker:
    process: subprocess.Popen[str]
    endpoint: str
    url: str

    def kill_all(self) -> None:
        """SIGKILL to the worker and everything it started, at once: nothing gets to clean up."""
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(30)

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.terminate()
        return self.process.wait(60)


def start(state_dir: Path, extra: Sequence[str] = (), *, legacy_iv: bool = True, stderr: IO[str] | None = None) -> HttpWorker:
    command = [
        sys.executable, "-m", "avalon_worker", "serve", "--bind", "tcp://127.0.0.1:*", "--state-dir", str(state_dir),
        "--rsa-bits", "2048", "--attestation", "none", "--listen-http", "127.0.0.1:0", "--log-level", "WARNING",
        *(["--insecure-reuse-session-iv"] if legacy_iv else []), *extra,
    ]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=stderr, text=True, start_new_session=True)
    try:
        endpoint, url = read_ready(process, READY_PREFIX)
    except RuntimeError as exc:
        pytest.fail(str(exc))
    return HttpWorker(process, endpoint, url)


@pytest.fixture(scope="module")
def http_worker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HttpWorker]:
    running = start(tmp_path_factory.mktemp("state"), ["--workers", "2"])
    yield running
    assert running.stop() == 0


@pytest.fixture(scope="module")
def worker(http_worker: HttpWorker) -> sdk.Worker:
    [worker_id] = sdk.lookup(http_worker.url)
    return sdk.retrieve(http_worker.url, worker_id.upper())


@pytest.mark.parametrize("sign", [False, True], ids=["unsigned", "signed"])
def test_the_nine_sample_orders_as_avalons_sdk_sends_them(http_worker: HttpWorker, worker: sdk.Worker, sign: bool) -> None:
    for workload, text in sample_orders():
        assert sdk.run(http_worker.url, worker, workload, [text], sign=sign, poll_s=POLL_S) == [expected_output(workload, text)]


def test_demo_pys_odd_0x_work_order_ids_over_http(http_worker: HttpWorker, worker: sdk.Worker) -> None:
    # Avalon's tests/Demo.py: wo_id = hex(random.randint(1, 2**64 - 1)), an odd number of digits one time in 16.
    for work_order_id in ("0x1", "0xabcde", "0x" + "f" * 15):
        order = sdk.build(worker, "echo-result", ["odd"], work_order_id=work_order_id)
        submitted = sdk.submit(http_worker.url, order)
        assert "result" in submitted or submitted["error"]["code"] == 5, submitted
        answer = sdk.get_result(http_worker.url, work_order_id, poll_s=POLL_S)
        assert sdk.open_result(worker, order, answer) == [b"odd"]
        assert answer["result"]["workOrderId"] == work_order_id


def test_a_result_stays_retrievable_and_unchanged(http_worker: HttpWorker, worker: sdk.Worker) -> None:
    order = sdk.build(worker, "python-fib", ["20"])
    submitted = sdk.submit(http_worker.url, order)
    first = sdk.get_result(http_worker.url, order.work_order_id, poll_s=POLL_S)
    again = sdk.get_result(http_worker.url, order.work_order_id, poll_s=POLL_S)
    assert first["result"] == again["result"]
    if "result" in submitted:  # it finished within the submit call
        assert submitted["result"] == first["result"]
    result = first["result"]
    assert [result[k] for k in ("workOrderId", "workerId", "requesterId")] == [
        order.params[k] for k in ("workOrderId", "workerId", "requesterId")]  # ids exactly as sent
    assert "extVerificationKey" not in result
    assert all("iv" in item and "encryptedDataEncryptionKey" in item for item in result["outData"])
    assert sdk.open_result(worker, order, first) == [b"Fibonacci number at position 20 = 6765"]


def test_an_order_submitted_without_waiting_is_pending_then_done(http_worker: HttpWorker, worker: sdk.Worker) -> None:
    order = sdk.build(worker, "python-hello", ["later"], response_timeout_ms=None)
    answer = sdk.submit(http_worker.url, order)
    assert answer["error"]["code"] == 5 and answer["error"]["data"] == {"workOrderId": order.work_order_id}
    assert sdk.open_result(worker, order, sdk.get_result(http_worker.url, order.work_order_id, poll_s=POLL_S)) == [b"Hello later"]


def test_an_order_the_worker_rejects_keeps_the_workers_error(http_worker: HttpWorker, worker: sdk.Worker) -> None:
    order = sdk.build(worker, "python-hello", ["x"])
    order.params["encryptedRequestHash"] = "00" * 48
    sdk.submit(http_worker.url, order)
    error = sdk.get_result(http_worker.url, order.work_order_id, poll_s=POLL_S)["error"]
    assert error["code"] == 4 and error["data"] == {"workOrderId": order.work_order_id}


def test_our_independent_requester_reads_fresh_ivs_over_http(tmp_path: Path) -> None:
    """Without --insecure-reuse-session-iv a requester that reads each item's `iv` gets its
    result; the SDK's way (sessionKeyIv for every item) cannot open it."""
    running = start(tmp_path, ["--workers", "1"], legacy_iv=False)
    try:
        [worker_id] = sdk.lookup(running.url)
        worker = sdk.retrieve(running.url, worker_id)
        signup = {"verifying_key": worker.verification_key, "encryption_key": worker.encryption_key,
                  "encryption_key_signature": worker.encryption_key_signature}
        frame, ctx = build_work_order(signup, "python-hello", [ItemSpec(b"World")], hex_style="upper")
        request = json.loads(json.loads(frame)["params"])
        sdk.post(running.url, request)
        answer = sdk.get_result(running.url, request["params"]["workOrderId"], poll_s=POLL_S, reply_id=ctx.inner_id)
        assert open_response(answer, ctx) == [b"Hello World"]
        order = sdk.build(worker, "python-hello", ["World"])
        sdk.submit(running.url, order)
        with pytest.raises(VerificationError, match="tag"):  # GCM tag check fails: the item was sealed under its own iv
            sdk.open_result(worker, order, sdk.get_result(running.url, order.work_order_id, poll_s=POLL_S))
    finally:
        assert running.stop() == 0


def test_kill_9_with_orders_pending_then_restart(tmp_path: Path) -> None:
    """Every order accepted before a SIGKILL of the worker and everything it started completes
    exactly once after a restart on the same state directory, and every result stored before
    the kill is returned unchanged."""
    lease = ["--lease-s", "1", "--workers", "1", "--workloads", str(TESTS / "workloads" / "workloads.json")]
    running = start(tmp_path, lease)
    [worker_id] = sdk.lookup(running.url)
    worker = sdk.retrieve(running.url, worker_id)
    orders = [sdk.build(worker, "sleep", ["0.2"], response_timeout_ms=None) for _ in range(12)]
    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda order: sdk.submit(running.url, order), orders))
    assert [answer["error"]["code"] for answer in answers] == [5] * len(orders)
    first = sdk.get_result(running.url, orders[0].work_order_id, poll_s=POLL_S)  # one done before the kill
    running.kill_all()

    store = SQLiteStore(tmp_path)
    try:
        states = [store.status(order.work_order_id.lower()) for order in orders]
    finally:
        store.close()
    assert all(state is not None for state in states)
    assert any(state is not None and state.state.value == "pending" for state in states), "nothing was left pending"
    with sqlite3.connect(tmp_path / "work-orders.sqlite3") as db:
        [(leased,)] = db.execute("SELECT count(*) FROM orders WHERE lease_owner IS NOT NULL").fetchall()
    assert leased > 0, "no order was in flight at the kill: the test would not exercise lease expiry"

    restarted = start(tmp_path, lease)
    try:
        assert sdk.lookup(restarted.url) == [worker_id]
        assert sdk.retrieve(restarted.url, worker_id).status == 1
        assert sdk.get_result(restarted.url, orders[0].work_order_id, poll_s=POLL_S)["result"] == first["result"]
        results = [sdk.get_result(restarted.url, order.work_order_id, poll_s=POLL_S) for order in orders]
        for order, answer in zip(orders, results, strict=True):
            assert sdk.open_result(worker, order, answer) == [b"slept 0.2"]
            assert sdk.get_result(restarted.url, order.work_order_id, poll_s=POLL_S)["result"] == answer["result"]
    finally:
        assert restarted.stop() == 0


def test_run_orders_through_the_listener_keeps_stdout_for_the_json(http_worker: HttpWorker, tmp_path: Path) -> None:
    [worker_id] = sdk.lookup(http_worker.url)
    command = [sys.executable, "-m", "avalon_worker", "run-orders", "--listener", http_worker.url, "--json",
               str(TESTS / "test_work_orders.json")]
    stdout = tmp_path / "stdout"
    piped = subprocess.run(f"{shlex.join(command)} | tee {shlex.quote(str(stdout))} | "
                           f"{shlex.quote(sys.executable)} -m json.tool --json-lines",
                           shell=True, capture_output=True, text=True, timeout=120)
    assert piped.returncode == 0, piped.stderr
    assert f"avalon-worker: worker {worker_id} through {http_worker.url}" in piped.stderr.splitlines()
    assert "9 of 9 work orders verified" in piped.stderr
    records = [json.loads(line) for line in stdout.read_text().splitlines()]
    assert [(r["workload"], r["input"], r["status"]) for r in records] == [(w, t, "verified") for w, t in sample_orders()]


def test_the_front_door_outlives_a_worker_process_that_dies(tmp_path: Path) -> None:
    """The supervisor kills what a dead worker process leaves among its children; the front
    door, also its child, is not among those."""
    running = start(tmp_path, ["--workers", "1", "--workloads", str(TESTS / "workloads" / "workloads.json")])
    try:
        [worker_id] = sdk.lookup(running.url)
        worker = sdk.retrieve(running.url, worker_id)
        order = sdk.build(worker, "exit", ["3"])
        sdk.submit(running.url, order)
        answer = sdk.get_result(running.url, order.work_order_id, poll_s=POLL_S)
        assert answer["error"]["code"] == 1 and "exited with status 3" in answer["error"]["message"]
        assert sdk.run(running.url, worker, "python-hello", ["after"]) == [b"Hello after"]
    finally:
        assert running.stop() == 0


def front_door_pid(serve: subprocess.Popen[str], other_than: int = 0, wait_s: float = 60.0) -> int:
    """The pid of the front-door process `serve` runs (one other than `other_than`, once there is one)."""
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        for task in os.listdir(f"/proc/{serve.pid}/task"):
            for pid in map(int, Path(f"/proc/{serve.pid}/task/{task}/children").read_text().split()):
                try:
                    command = Path(f"/proc/{pid}/cmdline").read_bytes()
                except OSError:
                    continue
                if b"avalon_worker._cli.front_door" in command and pid != other_than:
                    return pid
        time.sleep(0.05)
    raise AssertionError(f"no front-door process (other than {other_than}) within {wait_s} s")


def test_a_front_door_killed_with_sigkill_is_started_again_and_loses_nothing(tmp_path: Path) -> None:
    running = start(tmp_path, ["--workers", "1", "--lease-s", "1", "--workloads", str(TESTS / "workloads" / "workloads.json")])
    try:
        [worker_id] = sdk.lookup(running.url)
        worker = sdk.retrieve(running.url, worker_id)
        orders = [sdk.build(worker, "sleep", ["0.3"], response_timeout_ms=None) for _ in range(4)]
        assert [sdk.submit(running.url, order)["error"]["code"] for order in orders] == [5] * len(orders)
        first = front_door_pid(running.process)
        os.kill(first, signal.SIGKILL)
        # The port stays open: this call waits in its backlog for the next front door, which answers it.
        assert sdk.run(running.url, worker, "python-hello", ["again"], poll_s=POLL_S) == [b"Hello again"]
        assert front_door_pid(running.process, other_than=first) != first
        for order in orders:
            answer = sdk.get_result(running.url, order.work_order_id, poll_s=POLL_S)
            assert sdk.open_result(worker, order, answer) == [b"slept 0.3"]
        assert running.process.poll() is None
    finally:
        assert running.stop() == 0


def test_a_front_door_that_cannot_come_back_stops_serve_with_one_line(tmp_path: Path) -> None:
    log = tmp_path / "serve.log"
    state = tmp_path / "state"
    with open(log, "w") as stderr:
        running = start(state, ["--workers", "1"], stderr=stderr)
    try:
        assert sdk.lookup(running.url)
        for name in ("work-orders.sqlite3-wal", "work-orders.sqlite3-shm"):
            (state / name).unlink(missing_ok=True)
        (state / "work-orders.sqlite3").write_bytes(b"\x00 not a database any more \xff" * 300)
        os.kill(front_door_pid(running.process), signal.SIGKILL)
        assert running.process.wait(120) == 1
    finally:
        if running.process.poll() is None:
            running.kill_all()
    said = [line for line in log.read_text().splitlines() if line.startswith("avalon-worker:")]
    assert len(said) == 1 and "could not be started again" in said[0] and "work-order store" in said[0], said
    assert "Traceback" not in log.read_text()


def test_an_order_longer_than_the_wait_in_one_call_completes_through_run_orders(tmp_path: Path) -> None:
    """A requester's wait in one HTTP call (responseTimeoutMSecs, at most 5 s in the listener)
    is not the order's time limit: a 7 s order completes, and the client polls for it."""
    running = start(tmp_path / "state", ["--workers", "1", "--workloads", str(TESTS / "workloads" / "workloads.json")])
    try:
        orders = tmp_path / "orders.json"
        orders.write_text(json.dumps({"workOrders": [{"workloadId": "sleep", "params": "7"}]}))
        done = subprocess.run([sys.executable, "-m", "avalon_worker", "run-orders", "--listener", running.url,
                               "--timeout-s", "60", "--json", str(orders)], capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        [record] = [json.loads(line) for line in done.stdout.splitlines()]
        assert (record["status"], record["result"]) == ("verified", "slept 7")
    finally:
        assert running.stop() == 0

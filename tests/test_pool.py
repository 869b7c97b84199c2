"""The process pool with real processes: isolation, limits, BUSY, graceful stop, metrics."""

from __future__ import annotations

import json
import os
import signal
import socket
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import zmq

from avalon_worker.requester import PendingWorkOrder, WorkerInfo, build_work_order, open_result

from conftest import MISBEHAVING_REGISTRY, RunningWorker, launch_worker, reseal, wait_for

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Order:
    """One work order in flight on its own REQ socket."""

    def __init__(self, worker: RunningWorker, info: WorkerInfo, workload: str, data: bytes, **params: object) -> None:
        self.info = info
        self.pending: PendingWorkOrder = build_work_order(info, workload, [data], request_id=f"{workload}-{id(self)}")
        self.pending.request["params"].update(params)
        if params:
            reseal(self.pending)
        self.sock = zmq.Context.instance().socket(zmq.REQ)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.connect(worker.endpoint)
        self.sock.send(self.pending.frame())

    def done(self, timeout_ms: int = 0) -> bool:
        return bool(self.sock.poll(timeout_ms, zmq.POLLIN))

    def reply(self, timeout_ms: int = 30000) -> dict:
        assert self.sock.poll(timeout_ms, zmq.POLLIN), "no reply"
        reply = json.loads(self.sock.recv())
        self.sock.close(linger=0)
        assert reply["id"] == self.pending.request["id"]
        return reply

    def result(self, timeout_ms: int = 30000) -> bytes:
        return open_result(self.pending, self.reply(timeout_ms), self.info)[0]


@pytest.fixture
def pool(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[tuple[RunningWorker, WorkerInfo, int]]:
    extra = getattr(request, "param", [])
    port = free_port()
    running = launch_worker(tmp_path, ["--workloads", MISBEHAVING_REGISTRY, "--workers", "2", "--timeout-s", "2",
                                       "--metrics-port", str(port), "--metrics-addr", "127.0.0.1", *extra])
    yield running, WorkerInfo.from_signup(running.signup()), port
    running.stop()


def metric(port: int, name: str) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not in metrics")


def wait_for_metric(port: int, name: str, value: float, seconds: float = 30) -> None:
    """Wait until the pool reports `value` for `name`: how a test knows that an order has
    arrived (and is running or queued) before it sends the next, whatever the machine's load."""
    deadline = time.monotonic() + seconds
    while (seen := metric(port, name)) != value:
        assert time.monotonic() < deadline, f"{name} stayed {seen}, not {value}"
        time.sleep(0.01)


def assert_full_pool(running: RunningWorker, info: WorkerInfo) -> None:
    """Both processes serve at once: two sleeps run side by side while a third order waits."""
    first, second = Order(running, info, "sleep", b"0.5"), Order(running, info, "sleep", b"0.5")
    assert first.result() == b"slept 0.5" and second.result() == b"slept 0.5"
    hello = Order(running, info, "python-hello", b"again")
    assert hello.result() == b"Hello again"


@pytest.mark.parametrize("pool", [["--timeout-s", "60"]], indirect=True)
def test_a_slow_workload_does_not_block_others(pool, tmp_path: Path) -> None:
    running, info, _ = pool
    release = tmp_path / "release"
    slow = Order(running, info, "wait-for-file", str(release).encode())  # runs until the test says
    hello = Order(running, info, "python-hello", b"Parvathy")
    assert hello.result() == b"Hello Parvathy"
    assert not slow.done(), "the slow order ended before it was released"
    release.touch()
    assert slow.result() == b"released"


@pytest.mark.parametrize(
    "workload,fragment",
    [("exit", "exited with status 3"), ("segfault", "killed by SIGSEGV"), ("memory-error", "ran out of memory"),
     ("spin", "exceeded its time limit")],
)
def test_a_failing_workload_gets_code_1_and_the_pool_recovers(pool, workload: str, fragment: str) -> None:
    running, info, port = pool
    reply = Order(running, info, workload, b"x").reply()
    assert reply["error"]["code"] == 1
    assert fragment in reply["error"]["message"]
    assert_full_pool(running, info)
    assert metric(port, "avalon_worker_pool_size") == 2


def test_a_smaller_response_timeout_in_the_request_wins(pool) -> None:
    running, info, _ = pool
    reply = Order(running, info, "sleep", b"5", responseTimeoutMSecs=300).reply()
    assert reply["error"]["code"] == 1 and "time limit" in reply["error"]["message"]
    assert Order(running, info, "sleep", b"0.1", responseTimeoutMSecs=5000).result() == b"slept 0.1"


@pytest.mark.parametrize("pool", [["--timeout-s", "60"]], indirect=True)  # only the requester's limit can pass
def test_orders_that_outlast_their_requesters_limit_replace_no_process(pool) -> None:
    """The requester is answered at its limit; the process finishes the order and is reused."""
    running, info, _ = pool
    workers = sorted(children(running.process.pid))
    for _ in range(20):
        reply = Order(running, info, "sleep", b"0.2", responseTimeoutMSecs=1).reply()
        assert reply["error"]["code"] == 1 and "time limit" in reply["error"]["message"], reply
    assert_full_pool(running, info)
    assert sorted(children(running.process.pid)) == workers, "a worker process was replaced"


@pytest.mark.parametrize("pool", [["--memory-limit-mb", "600"]], indirect=True)
def test_the_memory_limit_stops_a_hog(pool) -> None:
    running, info, _ = pool
    reply = Order(running, info, "hog", b"4000").reply()
    assert reply["error"]["code"] == 1
    assert "memory" in reply["error"]["message"] or "killed" in reply["error"]["message"]
    assert Order(running, info, "hog", b"10").result() == b"\x00"


@pytest.mark.parametrize("pool", [["--workers", "1", "--queue-limit", "1", "--no-prefetch"]], indirect=True)
def test_busy_when_the_queue_is_full(pool) -> None:
    running, info, port = pool
    sleeper = Order(running, info, "sleep", b"1")
    wait_for_metric(port, "avalon_worker_pool_busy", 1)
    queued = Order(running, info, "python-hello", b"queued")
    wait_for_metric(port, "avalon_worker_queue_depth", 1)  # it waits before the next one is sent
    refused = Order(running, info, "python-hello", b"refused")
    reply = refused.reply(5000)
    assert reply["error"]["code"] == 8
    assert not sleeper.done(), "BUSY must come at once, not after the queue drains"
    assert sleeper.result() == b"slept 1"
    assert queued.result() == b"Hello queued"


@pytest.mark.parametrize("pool", [["--workers", "1", "--max-request-bytes", "100000"]], indirect=True)
def test_busy_when_the_queued_bytes_would_pass_four_maximal_requests(pool) -> None:
    running, info, port = pool
    sleeper = Order(running, info, "sleep", b"1")
    wait_for_metric(port, "avalon_worker_pool_busy", 1)
    big = b"x" * 60_000  # about 90 KB once encrypted, base64-encoded and wrapped twice in JSON
    queued = [Order(running, info, "python-hello", big) for _ in range(4)]
    wait_for_metric(port, "avalon_worker_queue_depth", 4)  # all four wait before the next one is sent
    refused = Order(running, info, "python-hello", big)
    assert refused.reply(5000)["error"]["code"] == 8
    assert not sleeper.done(), "BUSY must come at once"
    assert [order.result() for order in queued] == [b"Hello " + big] * 4


@pytest.mark.parametrize("pool", [["--no-prefetch"]], indirect=True)  # so that the last one is seen queued
def test_sigterm_answers_every_order_in_flight(pool) -> None:
    running, info, port = pool
    orders = [Order(running, info, "sleep", b"0.8"), Order(running, info, "sleep", b"0.8")]
    wait_for_metric(port, "avalon_worker_pool_busy", 2)
    orders.append(Order(running, info, "python-hello", b"last"))
    wait_for_metric(port, "avalon_worker_queue_depth", 1)  # every order has arrived before the signal
    running.process.send_signal(signal.SIGTERM)
    assert [order.result() for order in orders] == [b"slept 0.8", b"slept 0.8", b"Hello last"]
    assert running.process.wait(timeout=30) == 0


def test_metrics_count_orders_by_workload_and_outcome(pool) -> None:
    running, info, port = pool
    assert Order(running, info, "python-hello", b"m").result() == b"Hello m"
    Order(running, info, "exit", b"x").reply()
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    assert 'avalon_worker_requests_total{method="work-order",outcome="ok",workload="python-hello"} 1.0' in text
    assert 'outcome="error-1",workload="exit"' in text
    assert "avalon_worker_request_seconds_bucket" in text
    assert metric(port, "avalon_worker_queue_depth") == 0


def _hammer(endpoint: str, signup: dict, name: bytes, count: int, results) -> None:
    """A client process in a closed loop of `count` orders; reports how many replies were its
    own, verified."""
    from avalon_worker.client import WorkerClient
    from avalon_worker.requester import Session

    good = bad = 0
    with WorkerClient(endpoint, timeout_s=20, context=zmq.Context(), signup=signup) as client:
        session = Session.new(client.worker())
        for _ in range(count):
            pending = build_work_order(client.worker(), "python-hello", [name], session=session)
            try:
                ok = open_result(pending, client.call(pending.frame()), client.worker()) == [b"Hello " + name]
            except Exception:
                ok = False
            good, bad = good + ok, bad + (not ok)
    results.put((name, good, bad))


@pytest.mark.parametrize("pool", [["--workers", "1"], ["--workers", "2"]], indirect=True)
def test_under_sustained_load_every_client_gets_its_own_replies(pool) -> None:
    import multiprocessing

    running, info, _ = pool
    ctx = multiprocessing.get_context("spawn")  # not fork: this test process runs ZMQ threads
    results = ctx.Queue()
    names = [f"client {n}".encode() for n in range(4)]
    # a number of orders, not a time: how many fit in a second depends on the machine's load
    procs = [ctx.Process(target=_hammer, args=(running.endpoint, dict(info.signup), name, 100, results)) for name in names]
    for proc in procs:
        proc.start()
    outcomes = sorted(results.get(timeout=300) for _ in procs)
    for proc in procs:
        proc.join()
    assert outcomes == [(name, 100, 0) for name in names]


@pytest.mark.parametrize("pool", [["--timeout-s", "60"]], indirect=True)
def test_an_order_queued_behind_a_slow_one_goes_to_the_next_free_process(pool, tmp_path: Path) -> None:
    running, info, _ = pool
    release = tmp_path / "release"
    slow = Order(running, info, "wait-for-file", str(release).encode())  # runs until the test says
    short = Order(running, info, "sleep", b"0.4")
    # both processes are busy: each hello may be prefetched behind either order
    hellos = [Order(running, info, "python-hello", b"one"), Order(running, info, "python-hello", b"two")]
    assert [hello.result() for hello in hellos] == [b"Hello one", b"Hello two"], "a hello waited for the slow order"
    assert short.result() == b"slept 0.4"
    release.touch()
    assert slow.result() == b"released"


@pytest.mark.parametrize("pool", [["--no-prefetch"]], indirect=True)
def test_without_prefetch_a_hung_workload_still_costs_only_its_process(pool) -> None:
    running, info, _ = pool
    reply = Order(running, info, "spin", b"x").reply()
    assert reply["error"]["code"] == 1 and "time limit" in reply["error"]["message"]
    assert_full_pool(running, info)


def allowed_cpus(pid: int) -> set[int]:
    return os.sched_getaffinity(pid)


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two usable cores")
def test_pin_cpus_gives_each_process_its_core_and_the_spare_takes_over_a_lost_ones(tmp_path: Path) -> None:
    cores = sorted(os.sched_getaffinity(0))
    running = launch_worker(tmp_path, ["--workloads", MISBEHAVING_REGISTRY, "--workers", "1", "--pin-cpus"])
    try:
        info = WorkerInfo.from_signup(running.signup())
        first = children(running.process.pid)
        assert len(first) == 2, "one worker process and one warm spare"
        [active] = [pid for pid in first if allowed_cpus(pid) == {cores[0]}]
        [spare] = [pid for pid in first if pid != active]
        assert allowed_cpus(running.process.pid) == set(cores[1:])
        assert "was replaced" in Order(running, info, "exit", b"3").reply()["error"]["message"]
        # the supervisor answers first, then forks a new spare
        wait_for(lambda: children(running.process.pid) not in ([], first, [spare]), "a new spare", timeout_s=10)
        now = children(running.process.pid)
        assert active not in now and spare in now and len(now) == 2
        assert allowed_cpus(spare) == {cores[0]}, "the spare took over the lost process's core"
        assert Order(running, info, "python-hello", b"pinned").result() == b"Hello pinned"
    finally:
        running.stop()


def children(pid: int) -> list[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as handle:
        return [int(p) for p in handle.read().split()]


def _listening_addresses(port: int) -> set[str]:
    """Local IPv4 addresses with a TCP listener on `port`, from /proc/net/tcp (state 0A: LISTEN)."""
    found = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        address, port_hex = local.split(":")
        if state == "0A" and int(port_hex, 16) == port:
            found.add(socket.inet_ntoa(bytes.fromhex(address)[::-1]))
    return found


def test_metrics_listen_on_loopback_unless_asked(tmp_path: Path) -> None:
    port = free_port()
    running = launch_worker(tmp_path, ["--workers", "1", "--metrics-port", str(port)])
    try:
        assert _listening_addresses(port) == {"127.0.0.1"}
    finally:
        running.stop()


def processes_with(marker: str) -> list[int]:
    """Processes whose command line carries `marker`."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as handle:
                    if marker.encode() in handle.read().split(b"\0"):
                        found.append(int(entry))
            except OSError:
                pass
    return found


def gone(marker: str, seconds: float = 10) -> bool:
    deadline = time.monotonic() + seconds
    while processes_with(marker):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def started_marker() -> str:
    return f"descendant-{os.getpid()}-{time.monotonic_ns()}"


def session_leaders(pids: list[int]) -> list[int]:
    found = []
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat", "rb") as handle:
                if int(handle.read().rsplit(b")", 1)[1].split()[3]) == pid:
                    found.append(pid)
        except OSError:
            pass
    return found


def appears(workload: str, marker: str, seconds: float = 20) -> bool:
    """The descendant `workload` starts runs (the escaping one in a session of its own)."""
    deadline = time.monotonic() + seconds
    while not (pids := processes_with(marker)) or (workload.startswith("escaping") and not session_leaders(pids)):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


# "descendant" stays in its worker process's group; "escaping-descendant" leaves it (setsid in
# a grandchild whose parent has exited)
DESCENDANTS = ["descendant", "escaping-descendant"]


@pytest.mark.parametrize("workload", DESCENDANTS)
def test_what_a_workload_started_dies_when_its_order_is_done(pool, workload: str) -> None:
    running, info, _ = pool
    marker = started_marker()
    assert Order(running, info, workload, marker.encode()).result() == b"started " + marker.encode()
    assert gone(marker), "a descendant outlived its order"
    assert_full_pool(running, info)


@pytest.mark.parametrize("workload", DESCENDANTS)
def test_what_a_workload_started_dies_with_its_order_at_the_time_limit(pool, workload: str) -> None:
    running, info, _ = pool
    marker = started_marker()
    order = Order(running, info, workload, f"{marker} 30".encode())
    assert appears(workload, marker), "the workload did not start its descendant"
    reply = order.reply()
    assert "exceeded its time limit" in reply["error"]["message"]
    assert gone(marker), "a descendant of the killed process is still running"
    assert_full_pool(running, info)


@pytest.mark.parametrize("pool", [["--timeout-s", "60"]], indirect=True)
@pytest.mark.parametrize("workload", DESCENDANTS)
def test_what_workloads_started_dies_at_shutdown(pool, workload: str) -> None:
    running, info, _ = pool
    marker = started_marker()
    order = Order(running, info, workload, f"{marker} 30".encode())
    assert appears(workload, marker), "the workload did not start its descendant"
    running.process.send_signal(signal.SIGTERM)
    # a second signal stops at once, killing the processes; but two signals sent together may
    # arrive as one: send it once the first has been seen (new orders are refused)
    assert Order(running, info, "python-hello", b"late").reply()["error"]["code"] == 8
    running.process.send_signal(signal.SIGTERM)
    assert order.reply()["error"]["code"] == 1
    assert running.process.wait(timeout=30) == 128 + signal.SIGTERM
    assert gone(marker), "a descendant outlived the worker"


def running_processes(pids: list[int]) -> list[int]:
    """Those of `pids` that still run (a zombie no longer does)."""
    alive = []
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat", "rb") as handle:
                state = handle.read().rsplit(b")", 1)[1].split()[0]
        except OSError:
            continue
        if state != b"Z":
            alive.append(pid)
    return alive


def test_worker_processes_die_with_a_killed_supervisor(pool) -> None:
    running, info, _ = pool
    busy = Order(running, info, "sleep", b"30")
    assert not busy.done(300)
    workers = children(running.process.pid)
    assert len(workers) == 3, "two worker processes and a warm spare"
    running.process.kill()
    running.process.wait(timeout=30)
    wait_for(lambda: running_processes(workers) == [], "the worker processes to go with the supervisor", timeout_s=5)


def test_a_workload_that_forks_into_the_worker_loop_never_answers_another_requester(pool) -> None:
    """Both processes of the fork read orders and send replies; only replies that echo the
    order's sequence number are believed, and the process that broke the rule is stopped."""
    running, info, _ = pool
    forked = Order(running, info, "fork", b"x")
    hellos = [Order(running, info, "python-hello", f"requester {n}".encode()) for n in range(8)]
    first = forked.reply()
    assert first.get("result") or first["error"]["code"] == 1
    for n, order in enumerate(hellos):
        reply = order.reply()
        if "error" in reply:
            assert reply["error"]["code"] == 1, reply
        else:
            assert open_result(order.pending, reply, info) == [f"Hello requester {n}".encode()]
    assert_full_pool(running, info)

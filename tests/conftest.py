"""Shared fixtures: real worker processes on 127.0.0.1 and an in-process processor."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, NoReturn

import pytest
import zmq
from hypothesis import settings

from avalon_worker import crypto, hashing
from avalon_worker._cli.demo import start_worker_process
from avalon_worker.front.store_calls import StoreCalls
from avalon_worker.hashing import ItemText
from avalon_worker.identity import Identity
from avalon_worker.processor import Processor
from avalon_worker.requester import PendingWorkOrder, WorkerInfo
from avalon_worker.signup import signup_function
from avalon_worker.workload.registry import WorkloadRegistry

from attestation_fixtures import QuoteFactory, TestPki
from postgres_server import PostgresServer, PostgresUnavailable

# CI explores the same examples every run, so a red build always means a change broke something;
# local runs keep exploring new ones.
# No per-example deadline: on a loaded machine a fast example can take 300 ms once, and a
# timing is not what these tests check.
settings.register_profile("local", deadline=None)
settings.register_profile("ci", derandomize=True, database=None, deadline=None)
settings.load_profile("ci" if os.environ.get("CI") else "local")

# The misbehaving workloads (sleep, exit, segfault, ...) the pool and CLI tests serve.
MISBEHAVING_REGISTRY = str(Path(__file__).with_name("workloads") / "workloads.json")

SIGNUP_FRAME = b'{"jsonrpc":"2.0","id":1,"method":"ProcessWorkerSignup","params":null}'


class RunningWorker:
    """A real `avalon-worker serve` subprocess and helpers to talk to it."""

    def __init__(self, process: subprocess.Popen[str], endpoint: str, state_dir: Path) -> None:
        self.process = process
        self.endpoint = endpoint
        self.state_dir = state_dir
        self._context = zmq.Context.instance()

    def request(self, frame: bytes | str, timeout_ms: int = 20000) -> bytes:
        """Send one raw frame on a fresh REQ socket; return the raw reply."""
        sock = self._context.socket(zmq.REQ)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.RCVTIMEO, timeout_ms)
        sock.setsockopt(zmq.SNDTIMEO, timeout_ms)
        sock.connect(self.endpoint)
        try:
            sock.send(frame.encode() if isinstance(frame, str) else frame)
            return sock.recv()
        finally:
            sock.close(linger=0)

    def call(self, frame: bytes | str) -> dict:
        return json.loads(self.request(frame))

    def signup(self) -> dict:
        return self.call(SIGNUP_FRAME)

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.terminate()
        return self.process.wait(timeout=30)


def launch_worker(state_dir: Path, extra: Sequence[str] = ()) -> RunningWorker:
    process, endpoint = start_worker_process(str(state_dir), ["--rsa-bits", "2048", "--attestation", "none", *extra])
    return RunningWorker(process, endpoint, state_dir)


def wait_for(condition: Callable[[], object], what: str, timeout_s: float = 30.0, every_s: float = 0.01) -> None:
    """Wait until `condition()` holds, looking every `every_s`; fail naming `what` if it has not
    within `timeout_s` (a bound never reached when the code works)."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"still waiting for {what} after {timeout_s:g} s"
        time.sleep(every_s)


def hold_store_thread(calls: StoreCalls, loop: asyncio.AbstractEventLoop, release: threading.Event,
                      timeout_s: float = 30.0) -> None:
    """Keep the one thread of `calls` (driven from `loop`, running in another thread) busy until
    `release` is set; returns once the thread is held, so that the calls made next must wait."""
    holding = threading.Event()

    def hold() -> None:
        holding.set()
        release.wait(timeout_s)

    asyncio.run_coroutine_threadsafe(calls(hold), loop)
    assert holding.wait(timeout_s), "the store's thread never took the holding call"


def errors_in_threads(target: Callable[[int], None], count: int) -> list[BaseException]:
    """Run `target(i)` for i in range(count), each in a thread of its own; what they raised."""
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            target(i)
        except BaseException as exc:  # collected for the caller's assert
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return errors


@pytest.fixture(scope="module")
def worker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningWorker]:
    """A worker with the built-in workloads, shared by a test module."""
    running = launch_worker(tmp_path_factory.mktemp("state"))
    yield running
    running.stop()


@pytest.fixture(scope="session")
def identity() -> Identity:
    return Identity.generate(2048)


def make_processor(identity: Identity, **options: Any) -> Processor:
    """A processor with the built-in workloads and no attestation."""
    return Processor(identity, WorkloadRegistry.builtin(), signup_function(identity), **options)


@pytest.fixture(scope="session")
def processor(identity: Identity) -> Processor:
    return make_processor(identity)


def _items(items: Any) -> list[ItemText]:
    return [ItemText.from_json(item) for item in items or ()]


def concat_items_of(items: Any) -> str:
    """`hashing.concat_items` over data items given as decoded JSON."""
    return hashing.concat_items(_items(items))


def request_hash_of(params: Mapping[str, Any]) -> bytes:
    """`hashing.request_hash` over WorkOrderSubmit params given as decoded JSON."""
    return hashing.request_hash(
        requester_nonce=params.get("requesterNonce") or "",
        work_order_id=params.get("workOrderId") or "",
        worker_id=params.get("workerId") or "",
        workload_id=params.get("workloadId") or "",
        requester_id=params.get("requesterId") or "",
        in_data=_items(params["inData"]),
        out_data=_items(params.get("outData")),
    )


def reseal(pending: PendingWorkOrder) -> None:
    """Recompute the encrypted request hash after editing a built request's params, as a
    requester who means the edit would (the hash is taken over the edited params as decoded JSON)."""
    params = pending.request["params"]
    params["encryptedRequestHash"] = crypto.aes_gcm_encrypt(
        pending.session_key, pending.session_key_iv, request_hash_of(params)
    ).hex()


def response_hash_of(result: Mapping[str, Any]) -> bytes:
    """`hashing.response_hash` over a result given as decoded JSON."""
    return hashing.response_hash(
        worker_nonce=result.get("workerNonce") or "",
        work_order_id=result.get("workOrderId") or "",
        worker_id=result.get("workerId") or "",
        workload_id=result.get("workloadId") or "",
        requester_id=result.get("requesterId") or "",
        out_data=_items(result["outData"]),
    )


@pytest.fixture(scope="session")
def worker_info(processor: Processor) -> WorkerInfo:
    return WorkerInfo.from_signup(json.loads(processor.handle(SIGNUP_FRAME)))


def run_cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run `python -m avalon_worker ARGS` and capture its output."""
    return subprocess.run(
        [sys.executable, "-m", "avalon_worker", *args], capture_output=True, text=True, timeout=timeout
    )


@pytest.fixture(scope="module")
def pki() -> TestPki:
    """A test CA hierarchy shaped like Intel's SGX PKI, one per test module."""
    return TestPki.create()


@pytest.fixture(scope="module")
def factory(pki: TestPki) -> QuoteFactory:
    """Makes DCAP quotes signed under `pki`."""
    return QuoteFactory(pki)


# PostgreSQL ----------------------------------------------------------------------------------------

_schema_numbers = itertools.count(1)


def postgres_unavailable(reason: str) -> NoReturn:
    """Skip a test that needs PostgreSQL, or fail it when CI_REQUIRE_POSTGRES=1."""
    if os.environ.get("CI_REQUIRE_POSTGRES") == "1":
        pytest.fail(f"PostgreSQL is required here (CI_REQUIRE_POSTGRES=1) but {reason}")
    pytest.skip(
        f"PostgreSQL not available: {reason}. Install Debian's postgresql package and the "
        "'postgres' extra to run these tests; CI_REQUIRE_POSTGRES=1 makes this a failure."
    )


def start_postgres(*, fsync: bool = False) -> PostgresServer:
    """A started PostgreSQL server of its own (call `remove()` when done), or a skip."""
    try:
        import psycopg  # noqa: F401
    except ImportError:
        postgres_unavailable("psycopg is not installed (pip install '.[postgres]')")
    try:
        server = PostgresServer(fsync=fsync)
    except PostgresUnavailable as exc:
        postgres_unavailable(str(exc))
    try:
        server.start()
    except PostgresUnavailable as exc:
        server.remove()
        postgres_unavailable(str(exc))
    return server


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One PostgreSQL server for the whole run; tests get a database each (`postgres_url`)."""
    server = start_postgres()
    yield server
    server.remove()


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> str:
    """The URL of a new, empty schema on the shared server, for this test alone."""
    return postgres_server.create_schema(f"test_{next(_schema_numbers)}")

"""Shared fixtures: real worker processes on 127.0.0.1 and an in-process processor."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

import os

import pytest
import zmq
from hypothesis import settings


from attestation_fixtures import QuoteFactory, TestPki
from avalon_worker.cli import start_worker_process
from avalon_worker.identity import Identity
from avalon_worker.processor import Processor
from avalon_worker.requester import WorkerInfo
from avalon_worker.workload.registry import WorkloadRegistry

# CI explores the same examples every run, so a red build always means a change broke something;
# local runs keep exploring new ones.
settings.register_profile("ci", derandomize=True, database=None)
if os.environ.get("CI"):
    settings.load_profile("ci")

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


@pytest.fixture(scope="module")
def worker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningWorker]:
    """A worker with the built-in workloads, shared by a test module."""
    running = launch_worker(tmp_path_factory.mktemp("state"))
    yield running
    running.stop()


@pytest.fixture(scope="session")
def identity() -> Identity:
    return Identity.generate(2048)


@pytest.fixture(scope="session")
def processor(identity: Identity) -> Processor:
    return Processor(identity, WorkloadRegistry.builtin())


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

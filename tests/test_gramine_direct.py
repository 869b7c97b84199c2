"""The worker inside Gramine's library OS, run with `gramine-direct`: real Gramine, real processes.

`gramine-direct` runs the same manifest as `gramine-sgx` (library OS, mounts, trusted-file checks,
encrypted files, one Gramine process per forked process) without the enclave, so what these
tests show holds inside SGX too, except what needs SGX hardware: quotes and sealing keys.

`scripts/gramine-direct-test.sh` builds or finds Gramine, installs the worker for the interpreter
Gramine runs and then runs this module; run alone, it is skipped.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
from test_pool import Order

from avalon_worker import jsonio
from avalon_worker.front.listener_client import ListenerClient
from avalon_worker.requester import WorkerInfo, build_work_order, open_result

from conftest import RunningWorker

pytestmark = pytest.mark.slow

if os.environ.get("AVALON_GRAMINE_DIRECT") != "1":
    pytest.skip("runs under gramine-direct: use scripts/gramine-direct-test.sh", allow_module_level=True)

ROOT = Path(__file__).resolve().parent.parent
MAKEFILE = ROOT / "gramine" / "Makefile"
TEST_WORKLOADS = Path(__file__).with_name("workloads")
# Published on purpose: the encrypted mount needs a key and gramine-direct has no sealing key.
DIRECT_TEST_KEY = "00112233445566778899aabbccddeeff"
START_TIMEOUT_S = 180  # a Gramine process starts in seconds; a loaded machine makes it slower


@dataclass(frozen=True)
class Enclave:
    """A rendered manifest: the app directory and state directory it measures and mounts."""

    manifest: Path  # without suffix, as gramine-direct takes it
    app_dir: Path
    state_dir: Path


def render(out: Path, app_dir: Path, state_dir: Path, workers: int) -> Enclave:
    """Render the project's manifest for gramine-direct with the project's own Makefile."""
    out.mkdir(parents=True, exist_ok=True)
    state_dir.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["make", "--no-print-directory", "-s", "-f", str(MAKEFILE), "-C", str(out),
         f"ENTRYPOINT={os.environ['AVALON_GRAMINE_ENTRYPOINT']}", f"APP_DIR={app_dir}",
         f"STATE_DIR={state_dir}", f"PACKAGES={os.environ['AVALON_GRAMINE_PACKAGES']}",
         f"WORKERS={workers}", f"INSECURE_DIRECT_TEST_KEY={DIRECT_TEST_KEY}"],
        check=True, timeout=600,
    )
    return Enclave(out / "python-worker", app_dir, state_dir)


def make_app_dir(path: Path) -> Path:
    """The built-in workloads plus the misbehaving ones of the pool tests."""
    path.mkdir(parents=True)
    shutil.copy(TEST_WORKLOADS / "misbehaving.py", path)
    shutil.copy(TEST_WORKLOADS / "workloads.json", path)
    return path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class GramineWorker(RunningWorker):
    """`avalon-worker serve` under gramine-direct, its output in a file.

    Gramine hands the application's stdout and stderr both to the host's stdout, so the log and
    the `listening on` line arrive together.
    """

    log_path: Path

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def serve_command(enclave: Enclave, state: str, args: Sequence[str]) -> list[str]:
    return ["gramine-direct", str(enclave.manifest), "-m", "avalon_worker", "serve",
            "--bind", f"tcp://127.0.0.1:{free_port()}", "--state-dir", str(enclave.state_dir / state),
            "--workloads", str(enclave.app_dir / "workloads.json"), "--rsa-bits", "2048", *args]


def launch(enclave: Enclave, state: str, args: Sequence[str], log_path: Path) -> GramineWorker:
    """Start the worker under gramine-direct and wait until it listens."""
    with open(log_path, "wb") as log:
        process = subprocess.Popen(serve_command(enclave, state, args), stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline and process.poll() is None:
        for line in log_path.read_text(errors="replace").splitlines():
            if line.startswith("listening on "):
                worker = GramineWorker(process, line.split()[-1], enclave.state_dir / state)  # type: ignore[arg-type]
                worker.log_path = log_path
                return worker
        time.sleep(0.2)
    process.kill()
    process.wait()
    raise AssertionError(f"worker did not start under gramine-direct:\n{log_path.read_text(errors='replace')[-3000:]}")


def run_to_exit(enclave: Enclave, state: str, args: Sequence[str]) -> subprocess.CompletedProcess[str]:
    """Run a worker that is expected to stop by itself; its output is in `stdout`."""
    return subprocess.run(serve_command(enclave, state, args), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, timeout=START_TIMEOUT_S)


@pytest.fixture(scope="module")
def pool_enclave(tmp_path_factory: pytest.TempPathFactory) -> Enclave:
    base = tmp_path_factory.mktemp("gramine-pool")
    return render(base / "manifest", make_app_dir(base / "app"), base / "state", workers=2)


@pytest.fixture
def pool(pool_enclave: Enclave, tmp_path: Path) -> Iterator[tuple[GramineWorker, WorkerInfo]]:
    running = launch(pool_enclave, tmp_path.name, ["--workers", "2", "--timeout-s", "3", "--attestation", "auto"],
                     tmp_path / "worker.log")
    yield running, WorkerInfo.from_signup(running.signup())
    # SIGTERM, not SIGKILL: Gramine's worker processes outlive a killed supervisor.
    running.stop()


class TestPool:
    """The process pool inside Gramine, where every worker process is a Gramine process of its own."""

    def test_a_hung_workload_hits_its_time_limit_and_the_next_order_is_served(self, pool) -> None:
        running, info = pool
        reply = Order(running, info, "spin", b"x").reply(timeout_ms=60_000)
        assert reply["error"]["code"] == 1 and "time limit" in reply["error"]["message"]
        assert Order(running, info, "python-hello", b"after").result(timeout_ms=60_000) == b"Hello after"
        # Both processes serve again: the killed one was replaced.
        first, second = Order(running, info, "sleep", b"1"), Order(running, info, "sleep", b"1")
        started = time.monotonic()
        assert first.result(60_000) == b"slept 1" and second.result(60_000) == b"slept 1"
        assert time.monotonic() - started < 1.9, "the two sleeps did not run side by side"

    @pytest.mark.parametrize("workload,fragment", [("exit", "exited with status 3"), ("segfault", "SIGSEGV")])
    def test_a_crashing_workload_costs_only_its_order(self, pool, workload: str, fragment: str) -> None:
        running, info = pool
        sleeper = Order(running, info, "sleep", b"1.5")
        reply = Order(running, info, workload, b"x").reply(timeout_ms=60_000)
        assert reply["error"]["code"] == 1 and fragment in reply["error"]["message"]
        assert sleeper.result(60_000) == b"slept 1.5"
        assert Order(running, info, "python-hello", b"next").result(60_000) == b"Hello next"

    def test_sigterm_with_orders_in_flight_answers_them_all_and_exits_0(self, pool) -> None:
        running, info = pool
        orders = [Order(running, info, "sleep", b"1"), Order(running, info, "sleep", b"1"),
                  Order(running, info, "python-hello", b"last")]
        assert not orders[0].done(300)
        running.process.send_signal(signal.SIGTERM)
        assert [order.result(60_000) for order in orders] == [b"slept 1", b"slept 1", b"Hello last"]
        assert running.process.wait(timeout=60) == 0

    def test_the_library_os_has_no_seqpacket_sockets_and_the_pool_needs_none(self, pool_enclave: Enclave) -> None:
        probe = subprocess.run(
            ["gramine-direct", str(pool_enclave.manifest), "-c",
             "import socket\ntry:\n    socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)\n"
             "    print('seqpacket works')\nexcept OSError as exc:\n    print('seqpacket refused', exc.errno)"],
            capture_output=True, text=True, timeout=START_TIMEOUT_S,
        )
        # If Gramine gains SEQPACKET one day, the pool tests above no longer prove this point.
        assert "seqpacket refused" in probe.stdout, probe.stdout + probe.stderr


class TestStartUpChecks:
    """What the worker refuses, and says, at start inside Gramine without SGX."""

    def test_auto_starts_without_a_quote_and_says_why(self, pool_enclave: Enclave, tmp_path: Path) -> None:
        running = launch(pool_enclave, tmp_path.name, ["--workers", "0", "--attestation", "auto"], tmp_path / "log")
        try:
            signup = running.signup()
            assert signup["quote"] == "" and signup["mrenclave"] == ""
        finally:
            running.stop()
        assert "attestation: none" in running.log and "no SGX attestation" in running.log

    def test_gramine_stops_with_a_clear_message(self, pool_enclave: Enclave, tmp_path: Path) -> None:
        result = run_to_exit(pool_enclave, tmp_path.name, ["--workers", "0", "--attestation", "gramine"])
        assert result.returncode != 0
        assert "no remote attestation" in result.stdout and "gramine-sgx" in result.stdout
        assert "Traceback" not in result.stdout
        assert not (pool_enclave.state_dir / tmp_path.name / "identity.json").exists(), "no identity before attesting"


    def test_a_memory_limit_is_refused_naming_the_enclave_size(self, pool_enclave: Enclave, tmp_path: Path) -> None:
        result = run_to_exit(pool_enclave, tmp_path.name, ["--workers", "1", "--memory-limit-mb", "256"])
        assert result.returncode != 0
        assert "--memory-limit-mb" in result.stdout and "sgx.enclave_size" in result.stdout, result.stdout[-2000:]
        assert "Traceback" not in result.stdout


class TestIdentityOnTheEncryptedMount:
    def test_created_once_loaded_unchanged_and_ciphertext_on_the_host(
        self, pool_enclave: Enclave, tmp_path: Path
    ) -> None:
        # In-process (--workers 0): nothing forks, so each start costs one Gramine process.
        first = launch(pool_enclave, tmp_path.name, ["--workers", "0"], tmp_path / "first.log")
        signup = first.signup()
        assert first.stop() == 0
        assert "created identity" in first.log
        second = launch(pool_enclave, tmp_path.name, ["--workers", "0"], tmp_path / "second.log")
        again = second.signup()
        assert second.stop() == 0
        assert "loaded identity" in second.log
        assert again["verifying_key"] == signup["verifying_key"]
        assert again["encryption_key"] == signup["encryption_key"]

        files = [p for p in (pool_enclave.state_dir / tmp_path.name).rglob("*") if p.is_file()]
        assert files, "the identity is stored on the host, encrypted"
        for path in files:
            raw = path.read_bytes()
            assert raw.startswith(b"GRAFS_PF"), f"{path} is not a Gramine encrypted file"
            assert b"PRIVATE KEY" not in raw and b"verifying_key" not in raw, path
            assert signup["verifying_key"].encode()[27:80] not in raw, f"{path} holds the public key in clear"


class TestListenerOnTheEncryptedMount:
    """`--listen-http` inside Gramine: the front door is a Gramine process of its own, and its
    SQLite store (write-ahead log included) lives on the encrypted mount."""

    def test_a_result_outlives_a_restart_and_the_host_sees_ciphertext(self, pool_enclave: Enclave, tmp_path: Path) -> None:
        args = ["--workers", "1", "--attestation", "auto", "--listen-http", f"127.0.0.1:{free_port()}"]
        first = launch(pool_enclave, tmp_path.name, args, tmp_path / "first.log")
        try:
            url = wait_for_line(first, "listener on ").split()[-1]
            worker_id = ListenerClient(url, "").lookup()[0]
            with ListenerClient(url, worker_id, timeout_s=120) as client:
                assert client.submit("python-hello", [b"store"]) == [b"Hello store"]
                pending = build_work_order(client.worker(), "python-hello", [b"again"])
                reply = client.post(jsonio.dumps(pending.request))
                deadline = time.monotonic() + 120
                while "result" not in reply and time.monotonic() < deadline:
                    time.sleep(0.2)
                    reply = client.call("WorkOrderGetResult", {"workOrderId": pending.work_order_id})
        finally:
            assert first.stop() == 0
        second = launch(pool_enclave, tmp_path.name, args, tmp_path / "second.log")
        try:
            url = wait_for_line(second, "listener on ").split()[-1]
            with ListenerClient(url, worker_id) as client:
                kept = client.call("WorkOrderGetResult", {"workOrderId": pending.work_order_id})
                assert kept["result"] == reply["result"]  # the stored result, unchanged
                assert open_result(pending, kept, client.worker()) == [b"Hello again"]
        finally:
            assert second.stop() == 0
        stored = [p for p in (pool_enclave.state_dir / tmp_path.name).rglob("work-orders*") if p.is_file()]
        assert stored, "the store is on the state directory"
        for path in stored:
            raw = path.read_bytes()
            assert raw.startswith(b"GRAFS_PF") and b"SQLite format 3" not in raw, f"{path} is readable on the host"
            assert pending.work_order_id.encode() not in raw, f"{path} shows an order id in clear"


def wait_for_line(worker: GramineWorker, prefix: str) -> str:
    """The first line of the worker's log that starts with `prefix`, waiting for it."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline and worker.process.poll() is None:
        for line in worker.log.splitlines():
            if line.startswith(prefix):
                return line
        time.sleep(0.2)
    raise AssertionError(f"no line starting {prefix!r} under gramine-direct:\n{worker.log[-3000:]}")


class TestFilePolicy:
    def test_a_workload_changed_after_rendering_is_refused_and_named(self, tmp_path: Path) -> None:
        enclave = render(tmp_path / "manifest", make_app_dir(tmp_path / "app"), tmp_path / "state", workers=1)
        with open(enclave.app_dir / "misbehaving.py", "a", encoding="utf-8") as f:
            f.write("\n# changed after the manifest was rendered\n")
        result = run_to_exit(enclave, "s", ["--workers", "1", "--attestation", "auto"])
        assert result.returncode != 0
        refused = str(enclave.app_dir / "misbehaving.py")
        assert f"{refused} is there but may not be read" in result.stdout, result.stdout[-2000:]
        assert "Traceback" not in result.stdout


@pytest.fixture(scope="module")
def no_pool_enclave(tmp_path_factory: pytest.TempPathFactory) -> Enclave:
    base = tmp_path_factory.mktemp("gramine-nopool")
    return render(base / "manifest", make_app_dir(base / "app"), base / "state", workers=0)


class TestInProcessServer:
    """--workers 0: the enclave's own process serves, nothing forks."""

    def test_serves_work_orders(self, no_pool_enclave: Enclave, tmp_path: Path) -> None:
        running = launch(no_pool_enclave, tmp_path.name, ["--workers", "0"], tmp_path / "log")
        try:
            info = WorkerInfo.from_signup(running.signup())
            assert Order(running, info, "python-hello", b"in-process").result(60_000) == b"Hello in-process"
            reply = json.loads(running.request(b"not json"))
            assert reply["error"]["code"] == 2
        finally:
            assert running.stop() == 0

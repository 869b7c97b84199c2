"""What a person sees when something is wrong: one clear line, the right exit status, no silence.

Real subprocesses of `avalon-worker` against real workers and sockets on 127.0.0.1.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import zmq

from avalon_worker.attestation import load_policy
from avalon_worker.attestation.verifier.policy import MRENCLAVE_PLACEHOLDER
from avalon_worker.requester import WorkerInfo, build_work_order

from conftest import MISBEHAVING_REGISTRY, RunningWorker, launch_worker, run_cli

pytestmark = pytest.mark.slow

SAMPLE = str(Path(__file__).with_name("test_work_orders.json"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def serve_logged(state: Path, *extra: str) -> tuple[RunningWorker, Path]:
    """A one-process worker with the misbehaving test workloads; its log goes to a file."""
    log = state / "worker.log"
    with log.open("w") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "avalon_worker", "serve", "--bind", "tcp://127.0.0.1:*", "--state-dir", str(state / "s"),
             "--rsa-bits", "2048", "--attestation", "none", "--workers", "1", "--workloads", MISBEHAVING_REGISTRY, *extra],
            stdout=subprocess.PIPE, stderr=stderr, text=True,
        )
    assert process.stdout is not None
    endpoint = process.stdout.readline().removeprefix("listening on ").strip()
    return RunningWorker(process, endpoint, state), log


@pytest.fixture(scope="module")
def sleepy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningWorker, Path]]:
    running, log = serve_logged(tmp_path_factory.mktemp("sleepy"))
    yield running, log
    running.stop()


def send_order(running: RunningWorker, workload: str, data: bytes) -> zmq.Socket:
    """Send one work order on a REQ socket of its own; the reply waits there."""
    info = WorkerInfo.from_signup(running.signup())
    sock = zmq.Context.instance().socket(zmq.REQ)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(running.endpoint)
    sock.send(build_work_order(info, workload, [data]).frame())
    return sock


def wait_for_line(path: Path, fragment: str, limit_s: float = 60) -> str:
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        for line in path.read_text().splitlines():
            if fragment in line:
                return line
        time.sleep(0.1)
    raise AssertionError(f"{fragment!r} never appeared in {path}:\n{path.read_text()}")


# 1. a mistyped endpoint --------------------------------------------------------------------------


@pytest.mark.parametrize("command", [["signup"], ["submit", "--workload", "python-hello", "x"], ["run-orders", SAMPLE],
                                     ["verify", "--policy", "p.json"]])
def test_an_endpoint_without_a_scheme_is_one_line_naming_the_option(command: list[str]) -> None:
    done = run_cli(*command[:1], "--endpoint", "127.0.0.1:7777", *command[1:])
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert "argument --endpoint: '127.0.0.1:7777' has no scheme" in done.stderr
    assert "did you mean tcp://127.0.0.1:7777?" in done.stderr


@pytest.mark.parametrize("endpoint,fragment", [
    ("http://127.0.0.1:7777", "is an HTTP address; a worker's ZMQ endpoint is tcp://HOST:PORT"),
    ("udp://127.0.0.1:7777", "scheme 'udp' is not supported"),
    ("tcp://127.0.0.1:99999", "a port from 1 to 65535"),
    ("tcp://127.0.0.1", "write tcp://HOST:PORT"),
])
def test_other_malformed_endpoints_say_what_to_write(endpoint: str, fragment: str) -> None:
    done = run_cli("submit", "--endpoint", endpoint, "--workload", "python-hello", "x")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert fragment in done.stderr


# 2. waiting: say so, say why, and stop the order the client gave up on ----------------------------


def test_nothing_listening_is_said_at_once_and_explained_at_the_end() -> None:
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    done = run_cli("signup", "--endpoint", endpoint, "--timeout-s", "2")
    assert done.returncode == 1
    lines = done.stderr.splitlines()
    assert lines[0] == f"avalon-worker: cannot connect to {endpoint} yet (nothing listening?); retrying for up to 2 s"
    assert lines[-1] == (f"avalon-worker: no worker at {endpoint}: no connection within 2 s "
                         "(is it running, and is the address right?)")


def test_a_peer_that_is_not_a_zmq_worker_is_named_at_once() -> None:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()

    def answer_like_http() -> None:
        connection, _ = server.accept()
        connection.recv(64)
        connection.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
        connection.close()

    threading.Thread(target=answer_like_http, daemon=True).start()
    endpoint = f"tcp://127.0.0.1:{server.getsockname()[1]}"
    try:
        done = run_cli("signup", "--endpoint", endpoint, "--timeout-s", "30")
    finally:
        server.close()
    assert done.returncode == 1
    assert f"{endpoint} is not a ZMQ worker endpoint" in done.stderr


def test_a_slow_order_is_answered_by_the_worker_at_the_clients_time_limit(sleepy: tuple[RunningWorker, Path]) -> None:
    running, log = sleepy
    done = run_cli("submit", "--endpoint", running.endpoint, "--timeout-s", "4", "--workload", "sleep", "6")
    assert done.returncode == 1
    # The request carried 3 s (the client's 4 s less a margin) as responseTimeoutMSecs: the worker
    # answers then rather than after 6 s, and says so in time; its one process finishes the order
    # (within the worker's own 60 s limit) and then serves the next.
    assert "error 1: workload 'sleep' exceeded its time limit" in done.stderr
    assert "hint: this client asked the worker to answer within 3 s; raise --timeout-s" in done.stderr
    assert "workload='sleep': the requester's time limit passed" in wait_for_line(log, "the requester's time limit passed")
    assert run_cli("submit", "--endpoint", running.endpoint, "--workload", "python-hello", "again").stdout == "Hello again\n"


def test_a_worker_that_took_the_order_and_did_not_answer_is_told_apart_from_a_missing_one(tmp_path: Path) -> None:
    inline = launch_worker(tmp_path, ["--workers", "0", "--workloads", MISBEHAVING_REGISTRY])  # no time limits in-process
    try:
        done = run_cli("submit", "--endpoint", inline.endpoint, "--timeout-s", "1", "--workload", "sleep", "3")
    finally:
        inline.stop()
    assert done.returncode == 1
    assert f"{inline.endpoint} took the request but did not answer within 1 s" in done.stderr
    assert "raise --timeout-s" in done.stderr


def test_help_shows_the_reply_timeout_default() -> None:
    for command in ("signup", "submit", "run-orders", "verify"):
        help_text = " ".join(run_cli(command, "--help").stdout.split())
        assert "--timeout-s TIMEOUT_S" in help_text and "(default 30)" in help_text, command


# 3. Ctrl-C: say what the worker waits for; a second one stops it now ----------------------------------


def test_a_stop_says_what_it_waits_for_and_a_second_signal_stops_now(tmp_path: Path) -> None:
    running, log = serve_logged(tmp_path)
    marker = tmp_path / "started"
    try:
        order = send_order(running, "mark-then-sleep", f"{marker} 40".encode())
        while not marker.exists():  # the order is running
            assert running.process.poll() is None, log.read_text()
            time.sleep(0.05)
        running.process.send_signal(signal.SIGINT)
        draining = wait_for_line(log, "stopping:")
        assert "answering 1 work order(s) in progress and 0 queued (within 60 s, their time limit)" in draining
        assert "send the signal again (Ctrl-C) to stop now" in draining
        assert running.process.poll() is None, "it drains: the order has 40 s to go"
        running.process.send_signal(signal.SIGINT)
        assert running.process.wait(timeout=30) == 128 + signal.SIGINT
        assert order.poll(10000), "the order in flight is answered"
        reply = json.loads(order.recv())
        assert reply["error"]["code"] == 1
        assert reply["error"]["message"] == "the worker was stopped before this work order finished"
        assert "stopping now: 1 work order(s) answered with an error" in log.read_text()
    finally:
        running.stop()


def test_a_second_signal_interrupts_an_order_running_in_process(tmp_path: Path) -> None:
    running, log = serve_logged(tmp_path, "--workers", "0")
    marker = tmp_path / "started"
    try:
        order = send_order(running, "mark-then-sleep", f"{marker} 40".encode())
        while not marker.exists():
            assert running.process.poll() is None, log.read_text()
            time.sleep(0.05)
        running.process.send_signal(signal.SIGTERM)
        assert "answering 1 work order(s) in progress" in wait_for_line(log, "stopping:")
        running.process.send_signal(signal.SIGTERM)
        assert running.process.wait(timeout=30) == 128 + signal.SIGTERM
        assert order.poll(10000)
        assert json.loads(order.recv())["error"]["message"] == "the worker was stopped before this work order finished"
    finally:
        running.stop()


# 7. verify speaks like the other commands ------------------------------------------------------------


def test_verify_without_a_policy_checks_all_but_the_measurements(worker: RunningWorker) -> None:
    usage = run_cli("verify", "--help").stdout.split("\n\n")[0]
    assert "[--policy FILE]" in usage and "--evidence FILE]" in usage
    done = run_cli("verify", "--endpoint", worker.endpoint)
    assert done.returncode == 1
    assert done.stdout.startswith("policy: none given, so the measurements are not checked")
    assert "[NOT CHECKED] MRENCLAVE/MRSIGNER allowed" in done.stdout
    nothing = run_cli("verify", "--policy", "p.json")
    assert nothing.returncode == 2
    assert "verify needs what to check: --endpoint URL, --signup FILE or --evidence FILE" in nothing.stderr


def test_verify_prints_a_policy_template_that_needs_only_the_enclave(tmp_path: Path) -> None:
    done = run_cli("verify", "--print-policy-template")
    assert done.returncode == 0
    template = json.loads(done.stdout)
    assert template["sgx"]["enclave"]["mrenclave"] == [MRENCLAVE_PLACEHOLDER]
    policy = tmp_path / "policy.json"
    policy.write_text(done.stdout.replace(MRENCLAVE_PLACEHOLDER, "ab" * 32))
    assert "ab" * 32 in load_policy(policy).describe()
    policy.write_text(done.stdout)
    refused = run_cli("verify", "--signup", str(tmp_path / "none.json"), "--policy", str(policy))
    assert refused.returncode == 2 and "is not hex" in refused.stderr


def test_verify_errors_look_like_every_other_command(tmp_path: Path) -> None:
    template = run_cli("verify", "--print-policy-template").stdout.replace(MRENCLAVE_PLACEHOLDER, "ab" * 32)
    policy = tmp_path / "policy.json"
    policy.write_text(template)
    done = run_cli("verify", "--signup", str(tmp_path / "missing.json"), "--policy", str(policy))
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.startswith(f"avalon-worker: cannot read {tmp_path / 'missing.json'}")
    unreachable = run_cli("verify", "--endpoint", f"tcp://127.0.0.1:{free_port()}", "--policy", str(policy),
                          "--timeout-s", "1")
    same = run_cli("signup", "--endpoint", f"tcp://127.0.0.1:{free_port()}", "--timeout-s", "1")
    assert unreachable.returncode == same.returncode == 1
    assert unreachable.stderr.splitlines()[-1].startswith("avalon-worker: no worker at")
    assert same.stderr.splitlines()[-1].startswith("avalon-worker: no worker at")


def test_verify_of_a_worker_without_sgx_leads_with_the_missing_quote(worker: RunningWorker, tmp_path: Path) -> None:
    policy = tmp_path / "policy.json"
    policy.write_text(run_cli("verify", "--print-policy-template").stdout.replace(MRENCLAVE_PLACEHOLDER, "ab" * 32))
    done = run_cli("verify", "--endpoint", worker.endpoint, "--policy", str(policy))
    assert done.returncode == 1
    assert done.stdout.splitlines()[-1] == (
        "FAILED: quote parsed: the quote is empty: the worker runs without attestation "
        "(11 further checks could not run)")


# 10. start-up: nothing is made before the command line is known to be right ---------------------------


def test_rsa_bits_for_an_existing_identity_says_the_key_is_kept(tmp_path: Path) -> None:
    first, log = serve_logged(tmp_path)
    first.stop()
    assert "ignored" not in log.read_text()
    key = (tmp_path / "s" / "identity.json").read_text()
    again, log = serve_logged(tmp_path, "--rsa-bits", "4096")
    try:
        notice = wait_for_line(log, "--rsa-bits 4096 ignored")
        assert f"the identity in {tmp_path / 's'} keeps its RSA-2048 key" in notice
        assert "RSA-2048" in wait_for_line(log, "loaded identity")
    finally:
        again.stop()
    assert (tmp_path / "s" / "identity.json").read_text() == key


@pytest.mark.parametrize("extra,message", [
    (["--bind", "tcp//127.0.0.1:7777"], "cannot serve on 'tcp//127.0.0.1:7777': give tcp://HOST:PORT"),
    (["--bind", "tcp://127.0.0.1:77777"], "the port must be a number or *"),
    (["--worker-id", "not-hex"], "--worker-id must be a hex id"),
    (["--worker-id", "ab" * 129], "--worker-id must be a hex id of at most 256 digits"),
    (["--listen-http", "127.0.0.1"], "--listen-http needs HOST:PORT"),
    (["--workers", "0", "--timeout-s", "5"], "--timeout-s needs worker processes"),
    (["--workloads", "no-such-registry.json"], "no-such-registry.json"),
])
def test_a_mistyped_option_on_the_first_start_leaves_no_keys_behind(tmp_path: Path, extra: list[str], message: str) -> None:
    done = run_cli("serve", "--state-dir", str(tmp_path / "s"), "--attestation", "none", *extra)
    assert done.returncode == 2, done.stderr
    assert message in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "s").exists()


@pytest.mark.parametrize("taken_option", ["--bind", "--metrics-port", "--listen-http"])
def test_a_port_in_use_on_the_first_start_leaves_no_keys_behind(tmp_path: Path, taken_option: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        value = {"--bind": f"tcp://127.0.0.1:{port}", "--metrics-port": str(port)}.get(taken_option, f"127.0.0.1:{port}")
        done = run_cli("serve", "--state-dir", str(tmp_path / "s"), "--bind", "tcp://127.0.0.1:*", "--attestation", "none",
                       taken_option, value)
    assert done.returncode == 2 and "Address already in use" in done.stderr, done.stderr
    assert not (tmp_path / "s").exists()


def test_an_empty_existing_state_directory_stays_empty_after_a_typo(tmp_path: Path) -> None:
    state = tmp_path / "s"
    state.mkdir(mode=0o700)
    done = run_cli("serve", "--state-dir", str(state), "--bind", "udp://127.0.0.1:7777")
    assert done.returncode == 2
    assert list(state.iterdir()) == []


def test_a_state_dir_that_is_a_file_is_named_as_such(tmp_path: Path) -> None:
    regular = tmp_path / "state"
    regular.write_text("not a directory")
    regular.chmod(0o644)
    done = run_cli("serve", "--state-dir", str(regular), "--bind", "tcp://127.0.0.1:*", "--attestation", "none")
    assert done.returncode == 2
    assert f"avalon-worker: the state directory {regular} is a file, not a directory\n" in done.stderr
    assert "hint: give a directory" in done.stderr
    assert regular.read_text() == "not a directory" and regular.stat().st_mode & 0o777 == 0o644, "the file is left alone"
    inside = run_cli("serve", "--state-dir", str(regular / "sub"), "--bind", "tcp://127.0.0.1:*", "--attestation", "none")
    assert inside.returncode == 2
    assert f"the state directory {regular / 'sub'} is inside {regular}, which is a file, not a directory" in inside.stderr


def _damage_store(state: Path, damage: str) -> None:
    store = state / "work-orders.sqlite3"
    if damage == "garbage":
        store.write_bytes(b"\x00 this is not an SQLite database \xff" * 300)
    elif damage == "directory":
        store.mkdir()
    else:  # a real store cut short, as by a full disk or a careless copy
        from avalon_worker.store import NewOrder
        from avalon_worker.store.sqlite import SQLiteStore

        made = SQLiteStore(state)
        made.submit([NewOrder(f"{n:064x}", "a" * 64, b"x" * 3000) for n in range(200)], 1.0)
        made.close()
        with open(store, "r+b") as handle:
            handle.truncate(3 * 4096)


@pytest.mark.parametrize("damage", ["garbage", "directory", "truncated"])
def test_a_store_that_cannot_be_opened_stops_serve_with_exit_2_and_one_line(tmp_path: Path, damage: str) -> None:
    state = tmp_path / "s"
    state.mkdir(mode=0o700)
    _damage_store(state, damage)
    done = run_cli("serve", "--state-dir", str(state), "--bind", "tcp://127.0.0.1:*", "--attestation", "none",
                   "--rsa-bits", "2048", "--workers", "1", "--listen-http", "127.0.0.1:0", timeout=120)
    assert done.returncode == 2, done.stderr
    said = [line for line in done.stderr.splitlines() if line.startswith("avalon-worker:")]
    assert len(said) == 1 and "work-order store" in said[0], done.stderr
    assert "Traceback" not in done.stderr

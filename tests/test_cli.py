"""The command line, as a person runs it: real subprocesses and sockets."""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path

import pytest

from conftest import RunningWorker, run_cli

pytestmark = pytest.mark.slow

EXPECTED = [
    "Hello Krsna", "Hello Rama", "Hello Shiva", "Hello Ganesha", "Hello Lakshmi", "Hello Parvathy",
    "Fibonacci number at position 9 = 34", "Fibonacci number at position 10 = 55",
    "Fibonacci number at position 15 = 610",
]


def test_demo_prints_nine_verified_results() -> None:
    done = run_cli("demo", timeout=120)
    assert done.returncode == 0, done.stderr
    for result in EXPECTED:
        assert f"verified  {result}" in done.stdout
    assert "9 of 9 work orders verified" in done.stdout


def test_run_orders_runs_the_original_sample_file(worker: RunningWorker) -> None:
    sample = Path(__file__).with_name("test_work_orders.json")
    done = run_cli("run-orders", "--endpoint", worker.endpoint, str(sample))
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("verified  ") == 9
    assert all(result in done.stdout for result in EXPECTED)


def test_run_orders_exits_nonzero_when_an_order_fails(worker: RunningWorker, tmp_path: Path) -> None:
    orders = tmp_path / "orders.json"
    orders.write_text(json.dumps({"workOrders": [
        {"workloadId": "python-hello", "params": "Sita"},
        {"workloadId": "python-fib", "params": "-4"},
        {"workloadId": "no-such-workload", "params": "x"},
    ]}))
    done = run_cli("run-orders", "--endpoint", worker.endpoint, str(orders))
    assert done.returncode == 1
    assert "verified  Hello Sita" in done.stdout
    assert done.stdout.count("FAILED") == 2
    assert "1 of 3 work orders verified" in done.stdout


def test_submit_prints_the_verified_result_with_a_signed_request(worker: RunningWorker) -> None:
    done = run_cli("submit", "--endpoint", worker.endpoint, "--workload", "python-fib", "--sign", "20")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "Fibonacci number at position 20 = 6765"


def test_submit_can_leave_the_data_hash_out(worker: RunningWorker) -> None:
    done = run_cli("submit", "--endpoint", worker.endpoint, "--workload", "python-hello", "--no-data-hash", "Ada")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "Hello Ada"


def test_signup_prints_the_document_and_checks_its_signature(worker: RunningWorker) -> None:
    done = run_cli("signup", "--endpoint", worker.endpoint)
    assert done.returncode == 0, done.stderr
    signup = json.loads(done.stdout)
    assert signup["verifying_key"].startswith("-----BEGIN PUBLIC KEY-----")
    assert "verified" in done.stderr


def test_a_dead_worker_is_an_error_message_not_a_hang() -> None:
    started = time.monotonic()
    done = run_cli("signup", "--endpoint", "tcp://127.0.0.1:9", "--timeout-s", "1")
    assert done.returncode == 1
    assert "no worker at tcp://127.0.0.1:9" in done.stderr
    assert "Traceback" not in done.stderr
    assert time.monotonic() - started < 30


def test_a_missing_orders_file_is_a_clear_error() -> None:
    done = run_cli("run-orders", "--endpoint", "tcp://127.0.0.1:9", "does-not-exist.json")
    assert done.returncode == 2
    assert "cannot read does-not-exist.json" in done.stderr


def test_a_bad_registry_names_the_bad_entry(tmp_path: Path) -> None:
    registry = tmp_path / "workloads.json"
    registry.write_text(json.dumps({"good": {"module": "avalon_worker.workload.builtin.echo", "class": "EchoWorkload"},
                                    "broken": {"module": "no_such_module_here", "class": "X"}}))
    done = run_cli("serve", "--workloads", str(registry), "--state-dir", str(tmp_path / "s"), "--rsa-bits", "2048")
    assert done.returncode == 2
    assert "entry 'broken'" in done.stderr and "no_such_module_here" in done.stderr
    assert "Traceback" not in done.stderr


POLICY = {"sgx": {"enclave": {"mrenclave": ["ab" * 32]}}}


def test_verify_fails_a_worker_without_a_quote_and_says_why(worker: RunningWorker, tmp_path: Path) -> None:
    policy = tmp_path / "policy.json"
    policy.write_text(json.dumps(POLICY))
    done = run_cli("verify", "--endpoint", worker.endpoint, "--policy", str(policy))
    assert done.returncode == 1, done.stdout + done.stderr
    assert "quote" in done.stdout.lower()
    assert "FAIL" in done.stdout.upper()


def test_run_orders_with_a_policy_refuses_an_unattested_worker(worker: RunningWorker, tmp_path: Path) -> None:
    policy = tmp_path / "policy.json"
    policy.write_text(json.dumps(POLICY))
    sample = Path(__file__).with_name("test_work_orders.json")
    done = run_cli("run-orders", "--endpoint", worker.endpoint, "--policy", str(policy), str(sample))
    assert done.returncode == 1
    assert "refusing to send inputs" in done.stderr
    assert "verified  Hello" not in done.stdout


def test_signup_with_a_nonce_is_answered_and_without_one_is_unchanged(worker: RunningWorker) -> None:
    plain = worker.signup()
    fresh = worker.call(b'{"jsonrpc":"2.0","id":5,"method":"ProcessWorkerSignup","params":{"nonce":"00ff"}}')
    assert fresh["verifying_key"] == plain["verifying_key"]
    assert fresh["encryption_key_signature"] == plain["encryption_key_signature"]
    assert plain["quote"] == "" and plain["mrenclave"] == ""


def test_workers_0_serves_in_process(tmp_path: Path) -> None:
    from avalon_worker.client import WorkerClient

    from conftest import launch_worker

    inline = launch_worker(tmp_path, ["--workers", "0", "--max-request-bytes", "4096"])
    try:
        assert json.loads(inline.request(b"not json"))["error"]["code"] == 2
        assert json.loads(inline.request(b"x" * 5000))["error"]["message"].startswith("request is 5000 bytes")
        with WorkerClient(inline.endpoint, timeout_s=20) as client:
            assert client.submit("python-hello", [b"inline"]) == [b"Hello inline"]
    finally:
        assert inline.stop() == 0


def test_gramine_attestation_without_sgx_stops_the_worker_clearly(tmp_path: Path) -> None:
    done = run_cli("serve", "--attestation", "gramine", "--attestation-root", str(tmp_path / "no-such-tree"),
                   "--state-dir", str(tmp_path / "state"), "--bind", "tcp://127.0.0.1:*", "--rsa-bits", "2048")
    assert done.returncode == 2
    assert "attestation" in done.stderr.lower() and "Traceback" not in done.stderr
    assert not (tmp_path / "state").exists(), "no identity is made for a worker that cannot attest"


def test_a_taken_port_or_a_bad_endpoint_is_a_clear_error(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        endpoint = f"tcp://127.0.0.1:{taken.getsockname()[1]}"
        for bind, expected in ((endpoint, "Address already in use"), ("udp://127.0.0.1:5555", "give tcp://HOST:PORT")):
            done = run_cli("serve", "--bind", bind, "--state-dir", str(tmp_path / "s"), "--rsa-bits", "2048",
                           "--attestation", "none", "--workers", "1")
            assert done.returncode == 2, done.stderr
            assert f"cannot serve on '{bind}'" in done.stderr and expected in done.stderr
            assert "Traceback" not in done.stderr


def test_submit_sends_every_input_as_an_item_in_order(worker: RunningWorker) -> None:
    done = run_cli("submit", "--endpoint", worker.endpoint, "--workload", "echo-result", "a", "b c", "d")
    assert done.returncode == 0, done.stderr
    assert done.stdout == "ab cd\n"
    help_text = " ".join(run_cli("submit", "--help").stdout.split())
    assert "one per INPUT, all sent in index order" in help_text and "python-hello greets the first" in help_text

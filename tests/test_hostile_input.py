"""Hostile input a review found, over real sockets: ids, hex, foreign curves, addressing, replay.

Each order here is well-formed enough to reach the work-order path; the worker must answer it
with the code PROTOCOL §5 names, echo the id by the one rule of `jsonrpc`, and keep its
processes (a crash under SGX is a new enclave).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from avalon_worker.crypto import SigningKey
from avalon_worker.requester import PendingWorkOrder, VerificationError, WorkerInfo, build_work_order, open_result

from conftest import RunningWorker, launch_worker, reseal, run_cli


@pytest.fixture(scope="module")
def info(worker: RunningWorker) -> WorkerInfo:
    return WorkerInfo.from_signup(worker.signup())


def _frame(pending: PendingWorkOrder, inner_id_json: str | None, outer_id_json: str = "7") -> bytes:
    """The ProcessWorkOrder frame with ids written as raw JSON text (None: the inner id left out)."""
    inner = dict(pending.request)
    inner.pop("id", None)
    text = json.dumps(inner)
    if inner_id_json is not None:
        text = '{"id":' + inner_id_json + "," + text[1:]
    return ('{"jsonrpc":"2.0","id":' + outer_id_json + ',"method":"ProcessWorkOrder","params":' + json.dumps(text) + "}").encode()


def _assert_serves(worker: RunningWorker, info: WorkerInfo) -> None:
    pending = build_work_order(info, "python-hello", [b"again"])
    assert open_result(pending, worker.call(pending.frame()), info) == [b"Hello again"]


def _processes(worker: RunningWorker) -> set[int]:
    children = Path(f"/proc/{worker.process.pid}/task/{worker.process.pid}/children").read_text().split()
    return {int(pid) for pid in children}


def test_an_inner_id_nested_a_thousand_deep_is_refused_without_losing_a_process(
    worker: RunningWorker, info: WorkerInfo
) -> None:
    before = _processes(worker)
    pending = build_work_order(info, "python-hello", [b"x"])
    reply = json.loads(worker.request(_frame(pending, "[" * 1000 + "]" * 1000, outer_id_json='"outer"')))
    assert reply["error"]["code"] == 2
    assert reply["id"] == "outer"
    assert "id must be a string, a number or null" in reply["error"]["message"]
    _assert_serves(worker, info)
    assert _processes(worker) == before


@pytest.mark.parametrize("inner_id", ["true", "false", "[]", "{}", '{"a":1}', "[1]"])
def test_an_inner_id_that_is_not_a_string_number_or_null_gets_error_2_with_the_outer_id(
    worker: RunningWorker, info: WorkerInfo, inner_id: str
) -> None:
    pending = build_work_order(info, "python-hello", [b"x"])
    reply = json.loads(worker.request(_frame(pending, inner_id)))
    assert reply["error"]["code"] == 2
    assert reply["id"] == 7


@pytest.mark.parametrize("outer_id", ["true", "[]", "{}"])
def test_an_outer_id_that_breaks_the_rule_gets_error_2_with_null(worker: RunningWorker, outer_id: str) -> None:
    frame = '{"jsonrpc":"2.0","id":' + outer_id + ',"method":"ProcessWorkerSignup","params":null}'
    reply = worker.call(frame)
    assert reply["error"]["code"] == 2
    assert reply["id"] is None


def test_a_result_for_an_inner_request_without_id_carries_the_outer_id(worker: RunningWorker, info: WorkerInfo) -> None:
    pending = build_work_order(info, "python-hello", [b"x"])
    reply = worker.call(_frame(pending, None, outer_id_json='"outer-9"'))
    assert reply["id"] == "outer-9"
    assert open_result(pending, reply, info) == [b"Hello x"]


def test_an_error_for_an_inner_request_without_id_carries_the_outer_id(worker: RunningWorker, info: WorkerInfo) -> None:
    pending = build_work_order(info, "no-such-workload", [b"x"])
    reply = worker.call(_frame(pending, None, outer_id_json='"outer-10"'))
    assert reply["error"]["code"] == 2
    assert reply["id"] == "outer-10"


@pytest.mark.parametrize("inner_id", ["null", '"s"', "0", "-3", "1.5", str(2**64), str(2**70), str(-(2**80))])
def test_results_and_errors_echo_the_inner_id_exactly(worker: RunningWorker, info: WorkerInfo, inner_id: str) -> None:
    pending = build_work_order(info, "python-hello", [b"x"])
    raw = worker.request(_frame(pending, inner_id))
    assert json.loads(raw)["id"] == json.loads(inner_id)  # the standard library keeps big integers exact
    assert b'"id":' + inner_id.encode() in raw.replace(b", ", b",").replace(b": ", b":")
    bad = build_work_order(info, "no-such-workload", [b"x"])
    raw = worker.request(_frame(bad, inner_id))
    assert json.loads(raw)["id"] == json.loads(inner_id)


def test_a_big_outer_id_is_echoed_exactly(worker: RunningWorker, info: WorkerInfo) -> None:
    pending = build_work_order(info, "python-hello", [b"x"])
    reply = json.loads(worker.request(_frame(pending, None, outer_id_json=str(2**70 + 1))))
    assert reply["id"] == 2**70 + 1


def _foreign_curve_pem(pem: str) -> str:
    """The same key with its curve OID (secp256k1, 1.3.132.0.10) changed to one nobody knows."""
    der = base64.b64decode("".join(line for line in pem.splitlines() if "-----" not in line))
    oid = bytes.fromhex("06052b8104000a")
    assert der.count(oid) == 1
    der = der.replace(oid, bytes.fromhex("06052b8104007f"))
    body = base64.b64encode(der).decode()
    return "-----BEGIN PUBLIC KEY-----\n" + "\n".join(body[i : i + 64] for i in range(0, len(body), 64)) + "\n-----END PUBLIC KEY-----\n"


def test_a_verifying_key_on_an_unknown_curve_gets_error_2(worker: RunningWorker, info: WorkerInfo) -> None:
    pending = build_work_order(info, "python-hello", [b"x"], requester_key=SigningKey.generate())
    params = pending.request["params"]
    params["verifyingKey"] = _foreign_curve_pem(params["verifyingKey"])
    reseal(pending)
    reply = worker.call(pending.frame())
    assert reply["error"]["code"] == 2, reply
    assert "verifyingKey" in reply["error"]["message"]
    _assert_serves(worker, info)


def test_the_client_refuses_a_signup_whose_verifying_key_is_on_an_unknown_curve(worker: RunningWorker) -> None:
    signup = worker.signup()
    signup["verifying_key"] = _foreign_curve_pem(signup["verifying_key"])
    with pytest.raises(VerificationError):
        WorkerInfo.from_signup(signup)


@pytest.mark.parametrize("field", ["workOrderId", "requesterId", "workerId", "requesterNonce", "workloadId"])
@pytest.mark.parametrize("junk", ["\n", "\r\n", " ", "\t", "\u2028"])
def test_hex_fields_with_whitespace_get_error_2(
    worker: RunningWorker, info: WorkerInfo, field: str, junk: str
) -> None:
    pending = build_work_order(info, "python-hello", [b"x"])
    params = pending.request["params"]
    value = params[field]
    params[field] = value[:4] + junk + value[4:]
    reseal(pending)
    reply = worker.call(pending.frame())
    assert reply["error"]["code"] == 2, reply
    data = reply["error"].get("data")
    assert data is None or junk not in data["workOrderId"]


@pytest.fixture(scope="module")
def addressed_worker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningWorker]:
    running = launch_worker(
        tmp_path_factory.mktemp("state"),
        ["--workers", "2", "--worker-id", "0x" + "AB" * 32, "--replay-window-s", "600"],
    )
    yield running
    running.stop()


def test_a_worker_id_refuses_orders_addressed_to_another_worker(addressed_worker: RunningWorker) -> None:
    info = WorkerInfo.from_signup(addressed_worker.signup())
    assert info.worker_id == "0x" + "AB" * 32
    pending = build_work_order(info, "python-hello", [b"mine"])
    assert open_result(pending, addressed_worker.call(pending.frame()), info) == [b"Hello mine"]
    other = build_work_order(info, "python-hello", [b"theirs"])
    other.request["params"]["workerId"] = "cd" * 32
    reseal(other)
    reply = addressed_worker.call(other.frame())
    assert reply["error"]["code"] == 2
    assert "workerId" in reply["error"]["message"]


def test_the_worker_id_compares_without_case_or_prefix(addressed_worker: RunningWorker) -> None:
    info = WorkerInfo.from_signup(addressed_worker.signup())
    pending = build_work_order(info, "python-hello", [b"case"])
    pending.request["params"]["workerId"] = "ab" * 32
    reseal(pending)
    assert open_result(pending, addressed_worker.call(pending.frame()), info) == [b"Hello case"]


def test_the_replay_guard_serves_an_order_once_across_worker_processes(addressed_worker: RunningWorker) -> None:
    info = WorkerInfo.from_signup(addressed_worker.signup())
    pending = build_work_order(info, "python-hello", [b"once"])
    replies: list[dict[str, Any]] = [addressed_worker.call(pending.frame()) for _ in range(5)]
    assert open_result(pending, replies[0], info) == [b"Hello once"]
    for reply in replies[1:]:
        assert reply["error"]["code"] == 2
        assert "already served" in reply["error"]["message"]
    again = build_work_order(info, "python-hello", [b"new id"])
    assert open_result(again, addressed_worker.call(again.frame()), info) == [b"Hello new id"]


def test_a_forged_order_does_not_use_up_its_work_order_id(addressed_worker: RunningWorker) -> None:
    info = WorkerInfo.from_signup(addressed_worker.signup())
    pending = build_work_order(info, "python-hello", [b"real"])
    forged = json.loads(json.dumps(pending.request))
    forged["params"]["encryptedRequestHash"] = "00" * 48
    forged_frame = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "ProcessWorkOrder", "params": json.dumps(forged)})
    assert addressed_worker.call(forged_frame)["error"]["code"] == 4
    assert open_result(pending, addressed_worker.call(pending.frame()), info) == [b"Hello real"]


def test_without_a_replay_window_the_same_order_is_served_again(worker: RunningWorker, info: WorkerInfo) -> None:
    pending = build_work_order(info, "python-hello", [b"twice"])
    for _ in range(2):
        assert open_result(pending, worker.call(pending.frame()), info) == [b"Hello twice"]


def test_a_replay_window_across_enclaves_is_refused_at_start(tmp_path: Path) -> None:
    # A directory where Gramine's /dev/attestation would be: the worker believes it is in an enclave.
    fake_root = tmp_path / "attestation"
    fake_root.mkdir()
    done = run_cli("serve", "--state-dir", str(tmp_path / "state"), "--attestation", "none",
                   "--attestation-root", str(fake_root), "--workers", "2", "--replay-window-s", "60")
    assert done.returncode == 2
    assert "--replay-window-s inside Gramine needs --workers 1" in done.stderr
    assert not (tmp_path / "state").exists()  # refused before any key was made


@pytest.mark.parametrize("field", ["workOrderId", "requesterId", "workerId", "requesterNonce"])
def test_ids_longer_than_the_limit_get_error_2_and_are_never_echoed(worker: RunningWorker, info: WorkerInfo, field: str) -> None:
    pending = build_work_order(info, "python-hello", [b"x"])
    params = pending.request["params"]
    params[field] = "ab" * 4050
    reseal(pending)
    reply = worker.call(pending.frame())
    assert reply["error"]["code"] == 2, reply
    assert field in reply["error"]["message"] and "256 hex digits" in reply["error"]["message"]
    assert "ab" * 200 not in json.dumps(reply)
    _assert_serves(worker, info)


@pytest.mark.parametrize("field", ["workOrderId", "requesterId", "requesterNonce"])
def test_ids_of_exactly_the_limit_are_served(worker: RunningWorker, info: WorkerInfo, field: str) -> None:
    pending = build_work_order(info, "python-hello", [b"long id"])
    pending.request["params"][field] = "0x" + "Cd" * 128
    reseal(pending)
    assert open_result(pending, worker.call(pending.frame()), info) == [b"Hello long id"]

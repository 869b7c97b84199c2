"""Every error class of PROTOCOL §5, over a real socket: its code, the echoed id, no secret in
the reply, and a valid work order served right after it."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from typing import Any

import pytest

from avalon_worker import crypto
from avalon_worker.crypto import SigningKey
from avalon_worker.errors import IntegrityError
from avalon_worker.requester import PendingWorkOrder, WorkerInfo, build_work_order, open_result

from conftest import RunningWorker, request_hash_of, reseal

SECRET_INPUT = b"the secret input 8d1f"


@pytest.fixture(scope="module")
def info(worker: RunningWorker) -> WorkerInfo:
    return WorkerInfo.from_signup(worker.signup())


def assert_still_serving(worker: RunningWorker, info: WorkerInfo) -> None:
    pending = build_work_order(info, "python-hello", [b"again"])
    assert open_result(pending, worker.call(pending.frame()), info) == [b"Hello again"]


def assert_no_secret(reply_text: str, pending: PendingWorkOrder | None = None) -> None:
    assert SECRET_INPUT.decode() not in reply_text
    assert base64.b64encode(SECRET_INPUT).decode() not in reply_text
    if pending is not None:
        for secret in (pending.session_key.hex(), base64.b64encode(pending.session_key).decode()):
            assert secret not in reply_text


# Frames that never reach a work order: answered with code 2 and the id we can know.
FRAME_CASES: list[tuple[str, bytes, Any]] = [
    ("invalid UTF-8", b"\xff\xfe{not utf8", None),
    ("not JSON", b"{this is not json", None),
    ("deep nesting", b"[" * 100_000 + b"]" * 100_000, None),
    ("a JSON array", b"[1, 2, 3]", None),
    ("a JSON number", b"42", None),
    ("unknown method", b'{"jsonrpc":"2.0","id":7,"method":"Nope","params":null}', 7),
    ("params not a string", b'{"jsonrpc":"2.0","id":"x1","method":"ProcessWorkOrder","params":42}', "x1"),
    ("params not JSON", b'{"jsonrpc":"2.0","id":8,"method":"ProcessWorkOrder","params":"{oops"}', 8),
    ("inner not an object", b'{"jsonrpc":"2.0","id":9,"method":"ProcessWorkOrder","params":"[1]"}', 9),
    ("signup with a bad nonce", b'{"jsonrpc":"2.0","id":10,"method":"ProcessWorkerSignup","params":{"nonce":"zz"}}', 10),
]


@pytest.mark.parametrize("name,frame,expected_id", FRAME_CASES, ids=[c[0] for c in FRAME_CASES])
def test_bad_frames_get_code_2_and_the_server_keeps_serving(
    worker: RunningWorker, info: WorkerInfo, name: str, frame: bytes, expected_id: Any
) -> None:
    reply = worker.call(frame)
    assert reply["jsonrpc"] == "2.0"
    assert reply["error"]["code"] == 2
    assert reply["id"] == expected_id
    assert reply["error"]["message"]
    assert_still_serving(worker, info)


def _drop(field: str) -> Callable[[dict], None]:
    return lambda params: params.pop(field)


def _set(field: str, value: Any) -> Callable[[dict], None]:
    return lambda params: params.__setitem__(field, value)


def _set_item(field: str, value: Any) -> Callable[[dict], None]:
    return lambda params: params["inData"][0].__setitem__(field, value)


# (name, tampering of the inner params, expected code, whether workOrderId is still known)
REQUEST_CASES: list[tuple[str, Callable[[dict], None], int, bool]] = [
    ("missing workOrderId", _drop("workOrderId"), 2, False),
    ("missing encryptedSessionKey", _drop("encryptedSessionKey"), 2, True),
    ("encryptedSessionKey not hex", _set("encryptedSessionKey", "xyz"), 2, True),
    ("sessionKeyIv of 8 bytes", _set("sessionKeyIv", "00" * 8), 2, True),
    ("inData empty", _set("inData", []), 2, True),
    ("inData not a list", _set("inData", {"index": 0}), 2, True),
    ("item data not base64", _set_item("data", "%%%"), 2, True),
    ("item index not an integer", _set_item("index", "zero"), 2, True),
    ("item dataHash not a digest", _set_item("dataHash", "abcd"), 2, True),
    ("unknown workload", _set("workloadId", b"no-such-workload".hex()), 2, True),
    ("workloadId not hex", _set("workloadId", "python-hello"), 2, True),
    ("requesterId a number", _set("requesterId", 12), 2, True),
    ("signature without verifyingKey", _set("requesterSignature", base64.b64encode(b"sig").decode()), 2, True),
    ("JWT payload format", _set("payloadFormat", "JSON-RPC-JWT"), 6, True),
    ("unsupported data algorithm", _set("dataEncryptionAlgorithm", "AES-CBC-256"), 6, True),
]


@pytest.mark.parametrize("name,tamper,code,knows_id", REQUEST_CASES, ids=[c[0] for c in REQUEST_CASES])
def test_malformed_work_orders_get_their_code_and_echo_the_inner_id(
    worker: RunningWorker, info: WorkerInfo, name: str, tamper: Callable[[dict], None], code: int, knows_id: bool
) -> None:
    pending = build_work_order(info, "python-hello", [SECRET_INPUT], request_id="inner-42")
    work_order_id = pending.work_order_id
    tamper(pending.request["params"])
    text = worker.request(pending.frame(outer_id=99)).decode()
    reply = json.loads(text)
    assert reply["error"]["code"] == code, reply
    assert reply["id"] == "inner-42"
    if knows_id:
        assert reply["error"]["data"]["workOrderId"] == work_order_id
    assert_no_secret(text, pending)
    assert_still_serving(worker, info)


def _other_rsa_key(pending: PendingWorkOrder) -> None:
    other = crypto.generate_rsa_key(2048).public_key()
    pending.request["params"]["encryptedSessionKey"] = crypto.rsa_oaep_encrypt(other, pending.session_key).hex()


def _flip_request_hash(pending: PendingWorkOrder) -> None:
    raw = bytearray(bytes.fromhex(pending.request["params"]["encryptedRequestHash"]))
    raw[5] ^= 1
    pending.request["params"]["encryptedRequestHash"] = raw.hex()


def _flip_item_byte_and_reseal(pending: PendingWorkOrder) -> None:
    item = pending.request["params"]["inData"][0]
    raw = bytearray(base64.b64decode(item["data"]))
    raw[0] ^= 1
    item["data"] = base64.b64encode(raw).decode()
    reseal(pending)


def _wrong_data_hash_and_reseal(pending: PendingWorkOrder) -> None:
    pending.request["params"]["inData"][0]["dataHash"] = crypto.sha256(b"something else").hex()
    reseal(pending)


def _signature_by_another_key(pending: PendingWorkOrder) -> None:
    params = pending.request["params"]
    signer, impostor = SigningKey.generate(), SigningKey.generate()
    params["verifyingKey"] = signer.verifying_key_pem
    reseal(pending)
    digest = request_hash_of(params)
    params["requesterSignature"] = base64.b64encode(impostor.sign_digest(digest)).decode()


INTEGRITY_CASES: list[tuple[str, Callable[[PendingWorkOrder], None]]] = [
    ("session key for another worker", _other_rsa_key),
    ("session key of the wrong length", lambda p: p.request["params"].__setitem__("encryptedSessionKey", "00" * 17)),
    ("session key above the modulus", lambda p: p.request["params"].__setitem__("encryptedSessionKey", "ff" * 256)),
    ("request hash tampered", _flip_request_hash),
    ("request hash not matching the fields", lambda p: p.request["params"].__setitem__("requesterNonce", "00" * 16)),
    ("item ciphertext tampered", _flip_item_byte_and_reseal),
    ("dataHash mismatch", _wrong_data_hash_and_reseal),
    ("requester signature by another key", _signature_by_another_key),
]


@pytest.mark.parametrize("name,tamper", INTEGRITY_CASES, ids=[c[0] for c in INTEGRITY_CASES])
def test_integrity_failures_get_code_4_with_one_message(
    worker: RunningWorker, info: WorkerInfo, name: str, tamper: Callable[[PendingWorkOrder], None]
) -> None:
    pending = build_work_order(info, "python-hello", [SECRET_INPUT], request_id=1234)
    tamper(pending)
    text = worker.request(pending.frame()).decode()
    reply = json.loads(text)
    assert reply["id"] == 1234
    assert reply["error"]["code"] == 4
    assert reply["error"]["message"] == IntegrityError.MESSAGE
    assert reply["error"]["data"]["workOrderId"] == pending.work_order_id
    assert_no_secret(text, pending)
    assert_still_serving(worker, info)


@pytest.mark.parametrize("position", ["-5", "abc" + SECRET_INPUT.decode(), "10001", "9" * 5000])
def test_workload_failures_get_code_1_without_repeating_the_input(
    worker: RunningWorker, info: WorkerInfo, position: str
) -> None:
    pending = build_work_order(info, "python-fib", [position.encode()], request_id="fib")
    text = worker.request(pending.frame()).decode()
    reply = json.loads(text)
    assert reply["id"] == "fib"
    assert reply["error"]["code"] == 1
    assert "python-fib" in reply["error"]["message"]
    assert position not in reply["error"]["message"]
    assert_no_secret(text, pending)
    assert_still_serving(worker, info)


def test_oversize_request_is_refused_clearly(tmp_path) -> None:
    from conftest import launch_worker

    small = launch_worker(tmp_path, ["--max-request-bytes", "4096"])
    try:
        info = WorkerInfo.from_signup(small.signup())
        pending = build_work_order(info, "echo-result", [b"x" * 10_000])
        reply = small.call(pending.frame())
        assert reply["error"]["code"] == 2
        assert "accepts at most 4096" in reply["error"]["message"]
        assert_still_serving(small, info)
    finally:
        small.stop()

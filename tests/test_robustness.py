"""Any input gets a JSON-RPC reply, and the worker keeps serving."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from avalon_worker.processor import Processor
from avalon_worker.requester import WorkerInfo, build_work_order, open_result

from conftest import RunningWorker

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=20,
)

FIELDS = ["workOrderId", "workerId", "workloadId", "requesterId", "requesterNonce", "encryptedSessionKey",
          "sessionKeyIv", "encryptedRequestHash", "inData", "outData", "payloadFormat", "requesterSignature",
          "verifyingKey", "responseTimeoutMSecs", "dataEncryptionAlgorithm"]


def assert_is_error_reply(raw: bytes) -> dict:
    reply = json.loads(raw)
    assert reply["jsonrpc"] == "2.0"
    assert isinstance(reply["error"]["code"], int)
    assert reply["error"]["message"]
    return reply


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=200))
def test_any_bytes_get_an_error_reply(processor: Processor, frame: bytes) -> None:
    raw = processor.handle(frame)
    if frame.strip().startswith(b"{") and b"ProcessWorkerSignup" in frame:
        return  # a valid signup request, which hypothesis may well build
    assert_is_error_reply(raw)


@pytest.mark.slow
@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(json_values)
def test_any_json_envelope_gets_a_reply(processor: Processor, value: object) -> None:
    raw = processor.handle(json.dumps({"jsonrpc": "2.0", "id": 3, "method": "ProcessWorkOrder", "params": value}).encode())
    assert assert_is_error_reply(raw)["error"]["code"] == 2


@pytest.mark.slow
@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(field=st.sampled_from(FIELDS), value=json_values)
def test_any_wrong_field_gets_a_spec_error_and_echoes_the_id(
    processor: Processor, worker_info: WorkerInfo, field: str, value: object
) -> None:
    pending = build_work_order(worker_info, "python-hello", [b"x"], request_id="fuzz")
    pending.request["params"][field] = value
    reply = json.loads(processor.handle(pending.frame()))
    if "result" in reply:  # some values are harmless (e.g. a null optional field)
        assert open_result(pending, reply, worker_info) == [b"Hello x"]
        return
    assert reply["id"] == "fuzz"
    assert reply["error"]["code"] in (1, 2, 4, 6)


def test_a_burst_of_garbage_over_the_wire_leaves_the_worker_serving(worker: RunningWorker) -> None:
    frames = [b"", b"\x00" * 1000, b"{" * 50_000, b'{"method": null}', "\u2603".encode("utf-16"), b"[]" * 1000,
              b'{"jsonrpc":"2.0","id":{"nested":1},"method":"ProcessWorkOrder","params":"{}"}']
    for frame in frames:
        assert_is_error_reply(worker.request(frame))
    info = WorkerInfo.from_signup(worker.signup())
    pending = build_work_order(info, "python-hello", [b"still here"])
    assert open_result(pending, worker.call(pending.frame()), info) == [b"Hello still here"]

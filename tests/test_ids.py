"""The id rule: workOrderId, workerId and requesterId as Avalon's schema allows them
(`^(0[xX])?[0-9a-fA-F]+$`: odd lengths and `0x` included), on the ZMQ and HTTP paths, hashed as
the text sent.

The known answers below were computed by Avalon's own hashing code,
`common/crypto_utils/avalon_crypto_utils/worker_hash.py` (`WorkerHash.calculate_request_hash` and
`calculate_response_hash`, hyperledger/avalon commit cf762fd, Apache-2.0), run as its generic
client runs it (pycryptodomex), on the protocol notes' vector with only the ids changed. The
vector's own hashes (PROTOCOL.md §4) came out unchanged from that code, which is the check that it
was run on the same inputs. Both our package and the independent requester must reproduce them.
"""

from __future__ import annotations

from typing import Any

import pytest
from test_known_answer import REQUEST_HASH, RESPONSE_HASH, vector_params, vector_result

from avalon_worker.errors import InvalidParameterError
from avalon_worker.front import api as listener_api
from avalon_worker.models import WorkOrderRequest, check_id, check_nonce, is_id

import independent_requester as ir
from conftest import request_hash_of, response_hash_of

# (ids changed from the vector, request hash, response hash), all three from Avalon's WorkerHash.
AVALON_ID_VECTORS = [
    ({}, REQUEST_HASH.hex(), RESPONSE_HASH.hex()),
    (
        {"workOrderId": "0x1a2b3"},  # Demo.py's shape: hex(random.randint(...)), here with 5 digits
        "62e855dd4dffb6965677cf8ad77906a9f753253012479df5356451f907c5a7a8",
        "b5250981a8c12aba7cb19057438b7f3a4483b7ee323dd3e1e9dd1cce051546df",
    ),
    (
        {"workOrderId": "1A2B3"},
        "01184ba04033958a87930705c4290516b050735c8e95c5745071f36de97215c7",
        "034437c72107fc3ad2b8792efd2bd6aac788efd7d494dcff69a7a3617c01827a",
    ),
    (
        {"workOrderId": "0Xabc", "workerId": "0x1e9ba3f5f", "requesterId": "f"},
        "2063a2666d4550f06a2f99c32661b323c9c1551b69110bb440d6d7cbe4cd05ee",
        "1c6776e906310684c9e33dc6f8b862d742044de7f6c4222a01b9659752bedf52",
    ),
    (
        {"workOrderId": "0x0"},
        "cda3d540a11a7765c1b551dff35da58bb3641fd91a52cd2ee520e21153442c83",
        "d6db6a3c070277aa70ad4fea723fc165961105308296ea5fb88c6b9f6717d7c4",
    ),
]


@pytest.mark.parametrize(("ids", "request_hex", "response_hex"), AVALON_ID_VECTORS)
class TestHashesAgreeWithAvalonsWorkerHash:
    def test_request_hash(self, ids: dict[str, str], request_hex: str, response_hex: str) -> None:
        params = {**vector_params(), **ids}
        assert request_hash_of(params).hex() == request_hex
        assert ir.request_hash(params).hex() == request_hex

    def test_response_hash(self, ids: dict[str, str], request_hex: str, response_hex: str) -> None:
        result = {**vector_result(), **ids}
        assert response_hash_of(result).hex() == response_hex
        assert ir.response_hash(result).hex() == response_hex


GOOD_IDS = ["a", "0", "abc", "0xabc", "0Xabc", "0x0", "ABCdef0123456789", "f" * 255, "0x" + "f" * 256, "0x" + "1" * 63]
BAD_IDS = ["0x", "0X", "x1", "0xg", "ab cd", "ab\n", "\nab", " ab", "ab\t", "0x 1", "ａｂ", "١٢", "-1", "+1", "1.5", "0o1"]


@pytest.mark.parametrize("value", GOOD_IDS)
def test_any_number_of_hex_digits_after_an_optional_0x_is_an_id(value: str) -> None:
    assert is_id(value)
    assert check_id(value, "workOrderId") == value  # as sent: never normalised, since it is hashed as sent


@pytest.mark.parametrize("value", BAD_IDS)
def test_anything_else_is_refused_naming_the_field(value: str) -> None:
    assert not is_id(value)
    with pytest.raises(InvalidParameterError, match="requesterId (must be a hex string|is required)") as raised:
        check_id(value, "requesterId", work_order_id="ab")
    assert raised.value.work_order_id == "ab"


@pytest.mark.parametrize("value", ["f" * 257, "0x" + "F" * 257, "ab" * 4050])
def test_an_id_longer_than_the_limit_is_refused_saying_so(value: str) -> None:
    assert not is_id(value)
    with pytest.raises(InvalidParameterError, match="requesterId is longer than 256 hex digits"):
        check_id(value, "requesterId")
    with pytest.raises(InvalidParameterError, match="requesterNonce is longer than 256 hex digits"):
        check_nonce(value + "0" * (len(value) % 2))


def test_a_nonce_of_the_limit_is_kept_as_sent_and_an_odd_one_refused() -> None:
    assert check_nonce("0x" + "Ab" * 128) == "0x" + "Ab" * 128
    with pytest.raises(InvalidParameterError, match="requesterNonce is not valid hex"):
        check_nonce("abc")


@pytest.mark.parametrize("value", [None, "", 12, ["ab"], {"ab": 1}, True])
def test_a_missing_or_non_string_id_is_required(value: Any) -> None:
    assert not is_id(value)
    with pytest.raises(InvalidParameterError, match="workerId is required"):
        check_id(value, "workerId")


def _params(**changes: Any) -> dict[str, Any]:
    params = {**vector_params(), "encryptedSessionKey": "ab" * 256, **changes}
    return {k: v for k, v in params.items() if v is not None}


@pytest.mark.parametrize("field", ["workOrderId", "workerId", "requesterId"])
@pytest.mark.parametrize("value", ["0x123", "123", "0XfFf", "7"])
def test_a_work_order_with_odd_or_0x_ids_parses_and_keeps_them_as_sent(field: str, value: str) -> None:
    request = WorkOrderRequest.parse({"method": "WorkOrderSubmit", "params": _params(**{field: value})})
    sent = {"workOrderId": request.work_order_id, "workerId": request.worker_id, "requesterId": request.requester_id}
    assert sent[field] == value
    assert request.request_hash() == ir.request_hash(_params(**{field: value}))


@pytest.mark.parametrize("field", ["workOrderId", "workerId", "requesterId"])
def test_a_work_order_with_a_bad_id_is_error_2_naming_it(field: str) -> None:
    with pytest.raises(InvalidParameterError, match=f"{field} must be a hex string"):
        WorkOrderRequest.parse({"params": _params(**{field: "0x12 34"})})


@pytest.mark.parametrize("nonce", ["abc", "0xabc", "0x", "zz"])
def test_the_requester_nonce_keeps_the_even_length_rule(nonce: str) -> None:
    # The nonce is hex of random bytes (§6.1.1): its digits come in pairs.
    with pytest.raises(InvalidParameterError, match="requesterNonce"):
        WorkOrderRequest.parse({"params": _params(requesterNonce=nonce)})


def _call(method: str, **params: Any) -> listener_api.Call:
    body = listener_api.jsonio.dumps({"jsonrpc": "2.0", "method": method, "id": 7, "params": params})
    return listener_api.parse_call(body)


class TestTheListenerUsesTheSameRule:
    WORKER = "ab" * 32

    def test_submit_accepts_demo_pys_odd_0x_id_and_stores_it_canonical(self) -> None:
        call = _call("WorkOrderSubmit", workOrderId="0x1ABCD", workerId="0x" + self.WORKER.upper(), requesterId="0x123",
                     requesterNonce="ab" * 16)
        item = listener_api.submission(call, listener_api.submit_ids(call), {self.WORKER}, 1 << 20, 5.0)
        assert (item.order.work_order_id, item.order.worker_id, item.work_order_id) == ("1abcd", self.WORKER, "0x1ABCD")

    def test_get_result_accepts_an_odd_id(self) -> None:
        assert listener_api.get_result_id(_call("WorkOrderGetResult", workOrderId="0X123")) == ("123", "0X123")

    @pytest.mark.parametrize("bad", ["0x", "12 3", "xyz", 5, "f" * 257])
    def test_submit_refuses_what_the_worker_would_refuse(self, bad: Any) -> None:
        call = _call("WorkOrderSubmit", workOrderId=bad, workerId=self.WORKER, requesterId="12", requesterNonce="ab")
        with pytest.raises(listener_api.CallError) as raised:
            listener_api.submission(call, listener_api.submit_ids(call), {self.WORKER}, 1 << 20, 5.0)
        assert raised.value.code == 2 and "workOrderId" in raised.value.message

    def test_worker_retrieve_with_an_odd_id_is_unknown_not_malformed(self) -> None:
        with pytest.raises(listener_api.CallError) as raised:
            listener_api.worker_retrieve(_call("WorkerRetrieve", workerId="123"), None, 0.0, 30.0)
        assert "no worker with this workerId" in raised.value.message

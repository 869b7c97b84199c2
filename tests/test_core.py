"""The protocol core without sockets: data-item modes, outputs, legacy IV mode, no mutation."""

from __future__ import annotations

import base64
import copy
import json

import pytest

from avalon_worker import crypto
from avalon_worker.core import insecure_seal_result_reusing_session_iv, open_work_order, seal_result
from avalon_worker.errors import IntegrityError
from avalon_worker.identity import Identity
from avalon_worker.models import WorkOrderRequest
from avalon_worker.processor import Processor
from avalon_worker.requester import InputSpec, WorkerInfo, build_work_order, open_result

from conftest import make_processor, request_hash_of


def roundtrip(processor: Processor, pending) -> dict:
    return json.loads(processor.handle(pending.frame()))


def test_mixed_item_modes_are_decrypted_and_echoed_in_index_order(processor: Processor, worker_info: WorkerInfo) -> None:
    inputs = [InputSpec(b"plain-", "plaintext"), InputSpec(b"keyed-", "data-key"), InputSpec(b"session")]
    pending = build_work_order(worker_info, "echo-result", inputs)
    assert open_result(pending, roundtrip(processor, pending), worker_info) == [b"plain-keyed-session"]


def test_items_sent_out_of_order_are_processed_by_index(processor: Processor, worker_info: WorkerInfo) -> None:
    pending = build_work_order(worker_info, "echo-result", [b"a", b"b", b"c"])
    params = pending.request["params"]
    params["inData"] = list(reversed(params["inData"]))  # the hash is over index order: still valid
    assert open_result(pending, roundtrip(processor, pending), worker_info) == [b"abc"]


@pytest.mark.parametrize("mode", ["plaintext", "session-key", "data-key"])
def test_requested_output_mode_is_honoured(processor: Processor, worker_info: WorkerInfo, mode: str) -> None:
    pending = build_work_order(worker_info, "python-hello", [b"Sita"], output_modes=[mode])
    reply = roundtrip(processor, pending)
    item = reply["result"]["outData"][0]
    if mode == "plaintext":
        assert item["encryptedDataEncryptionKey"] == "-"
        assert base64.b64decode(item["data"]) == b"Hello Sita"
    else:
        assert base64.b64decode(item["data"]) != b"Hello Sita"
        assert len(bytes.fromhex(item["iv"])) == 12
    assert item["dataHash"] == crypto.sha256(b"Hello Sita").hex()
    assert open_result(pending, reply, worker_info) == [b"Hello Sita"]


def test_each_output_gets_a_fresh_iv_not_the_session_iv(processor: Processor, worker_info: WorkerInfo) -> None:
    ivs = set()
    for _ in range(3):
        pending = build_work_order(worker_info, "python-hello", [b"x"])
        item = roundtrip(processor, pending)["result"]["outData"][0]
        assert item["iv"] != pending.session_key_iv.hex()
        ivs.add(item["iv"])
    assert len(ivs) == 3


def test_legacy_mode_encrypts_results_under_the_session_iv(identity: Identity, worker_info: WorkerInfo) -> None:
    legacy = make_processor(identity, seal=insecure_seal_result_reusing_session_iv)
    pending = build_work_order(worker_info, "python-hello", [b"Rama"])
    item = roundtrip(legacy, pending)["result"]["outData"][0]
    assert item["iv"] == ""
    data = base64.b64decode(item["data"])
    assert crypto.aes_gcm_decrypt(pending.session_key, pending.session_key_iv, data) == b"Hello Rama"


def test_default_mode_output_does_not_decrypt_with_the_session_iv(processor: Processor, worker_info: WorkerInfo) -> None:
    pending = build_work_order(worker_info, "python-hello", [b"Rama"])
    data = base64.b64decode(roundtrip(processor, pending)["result"]["outData"][0]["data"])
    with pytest.raises(crypto.CryptoError):
        crypto.aes_gcm_decrypt(pending.session_key, pending.session_key_iv, data)


def _without_session_iv(pending) -> None:
    """Re-encode a request the Avalon way when sessionKeyIv is absent: IV ‖ ct ‖ tag."""
    params = pending.request["params"]
    del params["sessionKeyIv"]
    for item in params["inData"]:
        iv = crypto.random_bytes(12)
        plaintext = crypto.aes_gcm_decrypt(pending.session_key, bytes.fromhex(item["iv"]), base64.b64decode(item["data"]))
        item["data"] = base64.b64encode(iv + crypto.aes_gcm_encrypt(pending.session_key, iv, plaintext)).decode()
        item["iv"] = ""
    iv = crypto.random_bytes(12)
    params["encryptedRequestHash"] = (iv + crypto.aes_gcm_encrypt(pending.session_key, iv, request_hash_of(params))).hex()


def test_requests_without_session_iv_use_prefixed_ivs(processor: Processor, worker_info: WorkerInfo) -> None:
    pending = build_work_order(worker_info, "python-hello", [b"Shiva"])
    _without_session_iv(pending)
    assert open_result(pending, roundtrip(processor, pending), worker_info) == [b"Hello Shiva"]


def test_legacy_mode_without_session_iv_prefixes_a_fresh_iv(identity: Identity, worker_info: WorkerInfo) -> None:
    legacy = make_processor(identity, seal=insecure_seal_result_reusing_session_iv)
    pending = build_work_order(worker_info, "python-hello", [b"Uma"])
    _without_session_iv(pending)
    data = base64.b64decode(roundtrip(legacy, pending)["result"]["outData"][0]["data"])
    assert crypto.aes_gcm_decrypt_prefixed(pending.session_key, data) == b"Hello Uma"


def test_opening_and_sealing_never_mutate_the_request(identity: Identity, worker_info: WorkerInfo) -> None:
    pending = build_work_order(worker_info, "echo-result", [b"b", b"a"], output_modes=["session-key", "plaintext"])
    pending.request["params"]["inData"].reverse()
    before = copy.deepcopy(pending.request)
    request = WorkOrderRequest.parse(pending.request)
    opened = open_work_order(request, identity)
    seal_result(opened, [b"one", b"two"], identity)
    assert pending.request == before


def test_worker_nonces_differ_and_come_from_the_injected_rng(identity: Identity, worker_info: WorkerInfo) -> None:
    pending = build_work_order(worker_info, "python-hello", [b"x"])
    opened = open_work_order(WorkOrderRequest.parse(pending.request), identity)
    nonces = {seal_result(opened, [b"r"], identity).worker_nonce for _ in range(5)}
    assert len(nonces) == 5
    fixed = seal_result(opened, [b"r"], identity, random_bytes=lambda n: b"\x01" * n)
    assert fixed.worker_nonce == base64.b64encode(b"\x01" * 16).decode()
    assert fixed.out_data[0].iv == "01" * 12


@pytest.mark.parametrize("seal", [seal_result, insecure_seal_result_reusing_session_iv])
def test_a_result_draws_its_randomness_once_and_uses_no_byte_twice(
    identity: Identity, worker_info: WorkerInfo, seal
) -> None:
    pending = build_work_order(worker_info, "echo-result", [b"a", b"b", b"c"],
                               output_modes=["session-key", "plaintext", "data-key"])
    _without_session_iv(pending)  # the legacy sealing then needs a fresh IV for the session-key item too
    opened = open_work_order(WorkOrderRequest.parse(pending.request), identity)
    draws: list[bytes] = []

    def counting(size: int) -> bytes:
        draws.append(bytes(range(size)))  # every byte of the draw differs from the others
        return draws[-1]

    result = seal(opened, [b"one", b"two", b"three"], identity, random_bytes=counting)
    assert len(draws) == 1
    nonce = base64.b64decode(result.worker_nonce)
    ivs = [bytes.fromhex(item.iv) for item in result.out_data if item.iv]
    if seal is insecure_seal_result_reusing_session_iv:
        ivs.append(base64.b64decode(result.out_data[0].data)[:12])  # prefixed, not in `iv`
    assert len(ivs) == 2 and sorted(b"".join([*ivs, nonce])) == sorted(draws[0])


def test_result_signed_by_another_key_is_rejected(processor: Processor, worker_info: WorkerInfo) -> None:
    from avalon_worker.requester import VerificationError

    pending = build_work_order(worker_info, "python-hello", [b"x"])
    reply = roundtrip(processor, pending)
    reply["result"]["outData"][0]["dataHash"] = "00" * 32
    with pytest.raises(VerificationError):
        open_result(pending, reply, worker_info)


def test_outputs_count_must_match_requested_outdata(processor: Processor, worker_info: WorkerInfo) -> None:
    pending = build_work_order(worker_info, "python-hello", [b"x"], output_modes=["plaintext", "plaintext"])
    reply = roundtrip(processor, pending)
    assert reply["error"]["code"] == 1
    assert "asks for 2" in reply["error"]["message"]


def test_without_outdata_each_result_gets_an_item_of_its_own(processor: Processor, worker_info: WorkerInfo) -> None:
    # inside-out-eval answers every input item (Avalon's plug-in does); an unknown command needs no file.
    pending = build_work_order(worker_info, "inside-out-eval", [b"first", b"second x", b"third"])
    reply = roundtrip(processor, pending)
    assert [item["index"] for item in reply["result"]["outData"]] == [0, 1, 2]
    assert open_result(pending, reply, worker_info) == [b"RESULT: "] * 3
    ivs = [item["iv"] for item in reply["result"]["outData"]]
    assert len(set(ivs)) == 3  # a fresh IV each


def test_a_workload_with_no_result_is_error_1(identity: Identity, worker_info: WorkerInfo) -> None:
    from avalon_worker.workload import Workload, WorkloadRegistry

    class Nothing(Workload):
        def run(self, inputs: object) -> list[bytes]:
            return []

    processor = Processor(identity, WorkloadRegistry({"nothing": Nothing()}), lambda nonce: {})
    reply = roundtrip(processor, build_work_order(worker_info, "nothing", [b"x"]))
    assert reply["error"]["code"] == 1 and "returned no result" in reply["error"]["message"]


def test_a_reused_session_key_is_unwrapped_once(identity: Identity, worker_info: WorkerInfo) -> None:
    from avalon_worker.requester import Session

    cached = make_processor(identity)
    session = Session.new(worker_info)
    for name in (b"a", b"b", b"c"):
        pending = build_work_order(worker_info, "python-hello", [name], session=session)
        assert open_result(pending, roundtrip(cached, pending), worker_info) == [b"Hello " + name]
    assert (cached.keys.misses, cached.keys.hits) == (1, 2)


def test_a_bad_session_key_is_not_cached(identity: Identity, worker_info: WorkerInfo) -> None:
    cached = make_processor(identity)
    pending = build_work_order(worker_info, "python-hello", [b"x"])
    pending.request["params"]["encryptedSessionKey"] = "00" * 256
    for _ in range(2):
        assert roundtrip(cached, pending)["error"]["code"] == 4
    assert cached.keys.hits == 0


def test_inputs_without_data_hash_are_served_and_carry_no_digest_of_the_plaintext(
    processor: Processor, worker_info: WorkerInfo
) -> None:
    secret = b"yes"
    pending = build_work_order(
        worker_info, "echo-result", [secret, InputSpec(b"!", "plaintext")], include_data_hash=False
    )
    assert [item["dataHash"] for item in pending.request["params"]["inData"]] == ["", ""]
    assert crypto.sha256(secret).hex() not in pending.frame().decode()
    assert open_result(pending, roundtrip(processor, pending), worker_info) == [b"yes!"]


def _tamper_second_input(pending) -> None:
    item = pending.request["params"]["inData"][1]
    item["dataHash"] = crypto.sha256(b"something else").hex()


def _tamper_output_key(pending) -> None:
    item = pending.request["params"]["outData"][1]
    item["encryptedDataEncryptionKey"] = "00" * 300


@pytest.mark.parametrize(("tamper", "step"), [
    (lambda pending: pending.request["params"].update(encryptedSessionKey="00" * 256), "session key"),
    (lambda pending: pending.request["params"].update(requesterNonce="00" * 16), "request hash"),
    (_tamper_second_input, "inData[1]"),
    (_tamper_output_key, "outData[1] data key"),
])
def test_an_integrity_failure_names_the_check_that_failed(identity: Identity, worker_info: WorkerInfo, tamper, step: str) -> None:
    """The step goes to the worker's log only (the reply's message is always the same)."""
    pending = build_work_order(worker_info, "echo-result", [b"a", b"b"], output_modes=["session-key", "data-key"])
    tamper(pending)
    request = WorkOrderRequest.parse(pending.request)
    if step in ("inData[1]", "outData[1] data key"):  # keep the request hash right: only the item is wrong
        digest = request.request_hash()
        iv = bytes.fromhex(pending.request["params"]["sessionKeyIv"])
        pending.request["params"]["encryptedRequestHash"] = crypto.aes_gcm_encrypt(pending.session_key, iv, digest).hex()
        request = WorkOrderRequest.parse(pending.request)
    with pytest.raises(IntegrityError) as raised:
        open_work_order(request, identity)
    assert raised.value.step == step

"""Work-order receipts (EEA TC v1.1 §7.2), checked by the spec-written client in
`receipt_requester.py` (its docstring states the semantics and their sources).

The client's own signatures are checked against answers computed by Avalon's code; the
lifecycle against a live worker (`serve --listen-http`) is the acceptance test for the server
side.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from typing import Any

import ecdsa
import pytest
import receipt_requester as receipts
import sdk_requester as sdk
import test_listener
from test_listener import RunningListener, order_for
from test_listener_end_to_end import HttpWorker, start

from avalon_worker.identity import Identity
from avalon_worker.processor import Processor
from avalon_worker.requester import WorkerInfo, build_work_order
from avalon_worker.store import Completion, ReceiptUpdate, canonical_id

from independent_requester import VerificationError, request_hash, response_hash

# --- the client's signatures, against Avalon's code ------------------------------------------

# Computed by Avalon's avalon_crypto_utils (worker_hash.WorkerHash.compute_message_hash and
# worker_signing.WorkerSign.sign_message with this key's PEM; hyperledger/avalon cf762fd), whose
# verify_create_receipt_signature and verify_update_receipt_signature accepted both signatures.
registered, running = test_listener.registered, test_listener.running  # fixtures: a listener and its store
KEY = ecdsa.SigningKey.from_secret_exponent(0x1F2E3D4C5B6A79880123456789ABCDEF, curve=ecdsa.SECP256k1)
CREATE = {
    "workOrderId": "0x1a2b3", "workerServiceId": "ab" * 32, "workerId": "ab" * 32, "requesterId": "cd" * 32,
    "receiptCreateStatus": 0, "workOrderRequestHash": base64.b64encode(bytes(range(32))).decode(),
    "requesterGeneratedNonce": "ee" * 16,
}
CREATE_DIGEST = "748f9a17bd41b4dd785e1be6ebd8c1226b6ac2400b3b11e8d02d2e197f54a517"
CREATE_SIGNATURE = "MEYCIQDOO1tbf4z1+q+Yxac/8XiCJ2PrYO2NcBrHv11BCRpaFgIhALJA6ozn2R5ktiTkSa2vlBCLIJ5l1ussABofgfubmMyL"
UPDATE = {"workOrderId": "0x1a2b3", "updateType": 1, "updateData": "ff" * 32}
UPDATE_DIGEST = "d8e3e4d08f1feacde38b37677519d5958a9c08955d327392cb6057f0b3574cba"
UPDATE_SIGNATURE = "MEUCIQDaUv0vep5rdvPrQe4YMZn6dcYbq0xU3XoX4UaTYuOCFgIgKpN2jBedsBxdZKrRC78NISoP4r+Qvtir1RiCFcRkCRM="


def test_create_digest_and_signature_are_avalons() -> None:
    assert receipts.create_digest(CREATE).hex() == CREATE_DIGEST
    assert receipts.sign(KEY, bytes.fromhex(CREATE_DIGEST)) == CREATE_SIGNATURE  # RFC 6979: deterministic


def test_update_digest_and_signature_are_avalons() -> None:
    assert receipts.update_digest(UPDATE).hex() == UPDATE_DIGEST
    assert receipts.sign(KEY, bytes.fromhex(UPDATE_DIGEST)) == UPDATE_SIGNATURE


def test_create_params_sign_what_they_carry() -> None:
    order = {"workOrderId": "0x1a2b3", "workerId": "ab" * 32, "requesterId": "cd" * 32}
    params = receipts.create_params(order, bytes(range(32)), KEY, nonce="ee" * 16)
    assert {k: params[k] for k in CREATE} == CREATE
    assert params["requesterSignature"] == CREATE_SIGNATURE and params["signatureRules"] == "SHA-256/SECP256K1"
    receipts.verify(params["receiptVerificationKey"], params["requesterSignature"], receipts.create_digest(params), "x")


def test_a_worker_update_is_checked_under_the_workers_published_key() -> None:
    update = {**UPDATE, "updaterId": "0xAB", "updateSignature": UPDATE_SIGNATURE, "signatureRules": "SHA-256/SECP256K1"}
    published = KEY.get_verifying_key().to_pem().decode()
    receipts.verify_worker_update(update, published, work_order_id="0x1a2b3", worker_id="ab",
                                  expected_type=1, expected_data="ff" * 32)
    other = ecdsa.SigningKey.generate(curve=ecdsa.SECP256k1).get_verifying_key().to_pem().decode()
    with pytest.raises(VerificationError, match="signature"):
        receipts.verify_worker_update(update, other, work_order_id="0x1a2b3", worker_id="ab",
                                      expected_type=1, expected_data="ff" * 32)
    with pytest.raises(VerificationError, match="unexpected update"):
        receipts.verify_worker_update(update, published, work_order_id="0x1a2b3", worker_id="ab",
                                      expected_type=3, expected_data="ff" * 32)


# --- the lifecycle against a live worker (acceptance test for the server side) ---------------

def served(test: Any) -> Any:
    """A lifecycle test against a live worker (slow)."""
    return pytest.mark.slow(test)
Live = tuple[HttpWorker, sdk.Worker]


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    running = start(tmp_path_factory.mktemp("state"), ["--workers", "2"])
    [worker_id] = sdk.lookup(running.url)
    yield running, sdk.retrieve(running.url, worker_id)
    assert running.stop() == 0


def _completed_order(http_worker: HttpWorker, worker: sdk.Worker, **options: Any) -> tuple[sdk.SdkOrder, dict[str, Any]]:
    order = sdk.build(worker, "echo-result", ["receipt"], **options)
    sdk.submit(http_worker.url, order)
    return order, sdk.get_result(http_worker.url, order.work_order_id, poll_s=0.1)


def _last_update(url: str, work_order_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 10
    while True:  # the worker adds its update when the order completes, or at once if it has
        answer = receipts.update_retrieve(url, work_order_id)
        if "result" in answer or time.monotonic() > deadline:
            return answer
        time.sleep(0.1)


@served
def test_create_retrieve_and_the_workers_signed_completion_update(live: Live) -> None:
    http_worker, worker = live
    order, answer = _completed_order(http_worker, worker)
    key = ecdsa.SigningKey.generate(curve=ecdsa.SECP256k1)
    params = receipts.create_params(order.params, request_hash(order.params), key)
    created = receipts.create(http_worker.url, params)
    assert created["id"] == 71 and created["error"]["code"] == 0, created

    update = _last_update(http_worker.url, order.work_order_id)["result"]
    receipts.verify_worker_update(update, worker.verification_key, work_order_id=order.work_order_id,
                                  worker_id=worker.worker_id, expected_type=receipts.COMPLETED,
                                  expected_data=response_hash(answer["result"]).hex())
    assert update["updateCount"] == 1
    assert receipts.update_retrieve(http_worker.url, order.work_order_id, 1)["result"] == update

    receipt = receipts.retrieve(http_worker.url, order.work_order_id)["result"]
    assert {name: receipt[name] for name in params} == params
    assert receipt["receiptCurrentStatus"] == receipts.COMPLETED
    receipts.verify(receipt["receiptVerificationKey"], receipt["requesterSignature"], receipts.create_digest(receipt), "create")


@served
def test_a_failed_order_gets_a_failed_update_with_its_error_code(live: Live) -> None:
    http_worker, worker = live
    order = sdk.build(worker, "no-such-workload", ["x"])
    sdk.submit(http_worker.url, order)
    assert sdk.get_result(http_worker.url, order.work_order_id, poll_s=0.1)["error"]["code"] == 2
    key = ecdsa.SigningKey.generate(curve=ecdsa.SECP256k1)
    assert receipts.create(http_worker.url, receipts.create_params(order.params, request_hash(order.params), key))[
        "error"]["code"] == 0
    update = _last_update(http_worker.url, order.work_order_id)["result"]
    receipts.verify_worker_update(update, worker.verification_key, work_order_id=order.work_order_id,
                                  worker_id=worker.worker_id, expected_type=receipts.FAILED, expected_data="2")
    assert receipts.retrieve(http_worker.url, order.work_order_id)["result"]["receiptCurrentStatus"] == receipts.FAILED


@served
def test_lookup_pages_through_every_receipt_of_a_requester(live: Live) -> None:
    http_worker, worker = live
    requester = "0A" * 32
    created = []
    for _ in range(25):
        order = sdk.build(worker, "echo-result", ["page"], requester_id=requester)
        sdk.submit(http_worker.url, order)
        sdk.get_result(http_worker.url, order.work_order_id, poll_s=0.1)
        key = ecdsa.SigningKey.generate(curve=ecdsa.SECP256k1)
        assert receipts.create(http_worker.url, receipts.create_params(order.params, request_hash(order.params), key))[
            "error"]["code"] == 0
        created.append(order.work_order_id)
    ids, _pages = receipts.lookup_all(http_worker.url, requesterId=requester)
    assert sorted(ids) == sorted(created)
    ids, _ = receipts.lookup_all(http_worker.url, requesterId=requester, receiptStatus=receipts.ANY_STATUS)
    assert sorted(ids) == sorted(created)
    ids, _ = receipts.lookup_all(http_worker.url, requesterId=requester, receiptStatus=receipts.PENDING)
    assert ids == []  # every one completed
    assert receipts.lookup_all(http_worker.url, requesterId="0B" * 32) == ([], 1)


@served
@pytest.mark.parametrize("fault", ["unknown order", "bad signature", "signed by another key", "duplicate", "wrong hash"])
def test_refusals(live: Live, fault: str) -> None:
    http_worker, worker = live
    order, _ = _completed_order(http_worker, worker)
    key = ecdsa.SigningKey.generate(curve=ecdsa.SECP256k1)
    params = receipts.create_params(order.params, request_hash(order.params), key)
    expected = 2
    if fault == "unknown order":
        never_sent = sdk.build(worker, "echo-result", ["never sent"])
        params = receipts.create_params(never_sent.params, request_hash(never_sent.params), key)
    elif fault == "bad signature":
        signature = bytearray(base64.b64decode(params["requesterSignature"]))
        signature[-1] ^= 1
        params["requesterSignature"] = base64.b64encode(bytes(signature)).decode()
        expected = 4
    elif fault == "signed by another key":
        params["requesterSignature"] = receipts.sign(ecdsa.SigningKey.generate(curve=ecdsa.SECP256k1),
                                                     receipts.create_digest(params))
        expected = 4
    elif fault == "duplicate":
        assert receipts.create(http_worker.url, params)["error"]["code"] == 0
    elif fault == "wrong hash":
        params = receipts.create_params(order.params, bytes(32), key)
    answer = receipts.create(http_worker.url, params)
    assert answer["id"] == 71 and answer["error"]["code"] == expected, answer
    if fault != "duplicate":
        assert receipts.retrieve(http_worker.url, params["workOrderId"])["error"]["code"] == 2


@served
def test_update_retrieve_beyond_the_updates_is_error_2(live: Live) -> None:
    http_worker, worker = live
    order, _ = _completed_order(http_worker, worker)
    key = ecdsa.SigningKey.generate(curve=ecdsa.SECP256k1)
    receipts.create(http_worker.url, receipts.create_params(order.params, request_hash(order.params), key))
    _last_update(http_worker.url, order.work_order_id)
    assert receipts.update_retrieve(http_worker.url, order.work_order_id, 2)["error"]["code"] == 2
    assert receipts.update_retrieve(http_worker.url, order.work_order_id, 0)["error"]["code"] == 2
    assert receipts.update_retrieve(http_worker.url, order.work_order_id, updater_id="0C" * 32)["error"]["code"] == 2


def worker_receipt_update(identity: Identity, work_order_id: str, update_type: int, data: str) -> ReceiptUpdate:
    """The worker's update as the pump stores it, signed with the worker's key (by the client's
    code: the lifecycle tests above check the worker's own)."""
    key = ecdsa.SigningKey.from_pem(identity.signing_key.to_pem())
    update = {"workOrderId": work_order_id, "updaterId": identity.worker_id, "updateType": update_type,
              "updateData": data, "signatureRules": receipts.SIGNATURE_RULES}
    update["updateSignature"] = receipts.sign(key, receipts.update_digest(update))
    return ReceiptUpdate(identity.worker_id, update_type, json.dumps(update).encode())


# --- the listener's checks, on a real socket with a SQLite store (the test stands in for the pump) ---


def _requester_update(params: dict[str, Any], key: ecdsa.SigningKey, update_type: int, data: str = "",
                      updater: str | None = None) -> dict[str, Any]:
    update = {"workOrderId": params["workOrderId"], "updaterId": updater or params["requesterId"],
              "updateType": update_type, "updateData": data, "signatureRules": receipts.SIGNATURE_RULES}
    update["updateSignature"] = receipts.sign(key, receipts.update_digest(update))
    return update


def _pending_with_receipt(running: RunningListener, identity: Identity) -> tuple[sdk.SdkOrder, dict[str, Any], ecdsa.SigningKey]:
    order = order_for(identity, responseTimeoutMSecs=0)  # answered "pending" at once
    assert sdk.submit(running.url, order)["error"]["code"] == 5
    key = ecdsa.SigningKey.generate(curve=ecdsa.SECP256k1)
    params = receipts.create_params(order.params, request_hash(order.params), key)
    assert receipts.create(running.url, params)["error"] == {"code": 0, "message": "Receipt created successfully"}
    return order, params, key


def test_the_requester_updates_until_the_worker_completes(running: RunningListener, identity: Identity) -> None:
    order, params, key = _pending_with_receipt(running, identity)
    url, wo_id = running.url, order.work_order_id
    assert receipts.update_retrieve(url, wo_id)["error"]["code"] == 2  # no updates yet
    assert receipts.update(url, _requester_update(params, key, receipts.REJECTED, "changed my mind"))["error"]["code"] == 0
    assert receipts.update(url, _requester_update(params, key, 300, "an application's"))["error"]["code"] == 0
    assert receipts.retrieve(url, wo_id)["result"]["receiptCurrentStatus"] == receipts.REJECTED
    # the worker's update arrives with the outcome, whatever the requester said before
    worker_update = worker_receipt_update(identity, wo_id, receipts.COMPLETED, "ab" * 32)
    running.done(Completion(canonical_id(wo_id), b'{"outData":[]}', False, worker_update))
    last = receipts.update_retrieve(url, wo_id)["result"]
    assert last["updateCount"] == 3 and last["updateType"] == receipts.COMPLETED
    receipts.verify_worker_update(last, identity.verifying_key_pem, work_order_id=wo_id, worker_id=identity.worker_id,
                                  expected_type=receipts.COMPLETED, expected_data="ab" * 32)
    assert receipts.update_retrieve(url, wo_id, 1 << 32)["result"] == last  # Avalon's generic client's "last"
    mine = receipts.update_retrieve(url, wo_id, receipts.LAST_UPDATE, updater_id=params["requesterId"])["result"]
    assert (mine["updateType"], mine["updateCount"]) == (300, 2)
    assert mine["receiptVerificationKey"] == params["receiptVerificationKey"]  # named, though the requester left it out
    assert receipts.update_retrieve(url, wo_id, 1, updater_id=identity.worker_id.upper())["result"]["updateCount"] == 1
    assert receipts.retrieve(url, wo_id)["result"]["receiptCurrentStatus"] == receipts.COMPLETED
    refused = receipts.update(url, _requester_update(params, key, receipts.FAILED))["error"]
    assert refused["code"] == 2 and "completed" in refused["message"]


@pytest.mark.parametrize(("fault", "code", "words"), [
    ("another updater", 3, "only the receipt's requester"),
    ("completed by the requester", 3, "the worker makes them itself"),
    ("reserved type", 2, "reserved"),
    ("another key", 4, "updateSignature does not verify"),
    ("tampered data", 4, "updateSignature does not verify"),
    ("unknown parameter", 2, "unknown parameter 'extra'"),
    ("no receipt", 2, "no receipt for this workOrderId"),
    ("data too long", 2, "updateData is required"),
])
def test_updates_the_listener_refuses(running: RunningListener, identity: Identity, fault: str, code: int, words: str) -> None:
    _, params, key = _pending_with_receipt(running, identity)
    update = _requester_update(params, key, receipts.FAILED, "x")
    if fault == "another updater":
        update = _requester_update(params, key, receipts.FAILED, "x", updater=identity.worker_id)
    elif fault == "completed by the requester":
        update = _requester_update(params, key, receipts.COMPLETED, "ab" * 32)
    elif fault == "reserved type":
        update = _requester_update(params, key, 7)
    elif fault == "another key":
        update = _requester_update(params, ecdsa.SigningKey.generate(curve=ecdsa.SECP256k1), receipts.FAILED, "x")
    elif fault == "tampered data":
        update["updateData"] = "y"
    elif fault == "unknown parameter":
        update["extra"] = 1
    elif fault == "no receipt":
        update = _requester_update({**params, "workOrderId": "ab" * 32}, key, receipts.FAILED, "x")
    elif fault == "data too long":
        update = _requester_update(params, key, receipts.FAILED, "x" * 5000)
    answer = receipts.update(running.url, update)["error"]
    assert answer["code"] == code and words in answer["message"], answer
    assert receipts.update_retrieve(running.url, params["workOrderId"])["error"]["code"] == 2  # nothing was kept


@pytest.mark.parametrize(("change", "words"), [
    ({"receiptVerificationKey": "not a key"}, "PEM secp256k1 public key"),
    ({"receiptCreateStatus": 7}, "receiptCreateStatus must be"),
    ({"workOrderRequestHash": "AAAA"}, "32 bytes"),
    ({"workOrderRequestHash": "not base64!"}, "must be base64"),
    ({"requesterGeneratedNonce": "zz"}, "requesterGeneratedNonce must be a hex string"),
    ({"signatureRules": "SHA-512/ED25519"}, "signatureRules must be"),
    ({"workerServiceId": 50}, "workerServiceId"),
    ({"surprise": 1}, "unknown parameter 'surprise'"),
])
def test_creates_the_listener_refuses_for_their_shape(running: RunningListener, identity: Identity,
                                                      change: dict[str, Any], words: str) -> None:
    order = order_for(identity, responseTimeoutMSecs=0)  # answered "pending" at once
    sdk.submit(running.url, order)
    key = ecdsa.SigningKey.generate(curve=ecdsa.SECP256k1)
    params = {**receipts.create_params(order.params, request_hash(order.params), key), **change}
    answer = receipts.create(running.url, params)["error"]
    assert answer["code"] == 2 and words in answer["message"], answer
    assert receipts.retrieve(running.url, order.work_order_id)["error"]["code"] == 2


def test_lookups_take_avalons_spellings_and_refuse_a_tag_they_did_not_give(running: RunningListener, identity: Identity) -> None:
    order, params, _ = _pending_with_receipt(running, identity)
    url = running.url
    for filters in ({"receiptStatus": receipts.PENDING}, {"receiptStatus": "0"}, {"requestCreateStatus": 0},
                    {"requesterId": params["requesterId"].upper()}, {"workerId": "0x" + params["workerId"]},
                    {"receiptStatus": receipts.ANY_STATUS}, {}):
        assert receipts.lookup_all(url, **filters) == ([order.work_order_id], 1), filters
    assert receipts.lookup_all(url, receiptStatus="1") == ([], 1)
    assert receipts.lookup_all(url, workerServiceId="50") == ([], 1)  # Avalon's workorderreceipt_04.json
    for bad in ({"lastLookUpTag": "x1"}, {"lastLookUpTag": 5}, {}):
        assert sdk.call(url, "WorkOrderReceiptLookUpNext", bad, 1)["error"]["code"] == 2
    assert sdk.call(url, "WorkOrderReceiptLookUp", {"lastLookUpTag": "1"}, 1)["error"]["code"] == 2
    assert sdk.call(url, "WorkOrderReceiptLookUp", {"receiptStatus": -1}, 1)["error"]["code"] == 2
    assert sdk.call(url, "WorkOrderReceiptUpdateRetrieve", {"workOrderId": order.work_order_id}, 1)["error"]["code"] == 2


# --- the worker's side: the update it signs when the pump asks -------------------------------------


def test_the_processor_signs_its_update_only_when_asked(processor: Processor, worker_info: WorkerInfo,
                                                        identity: Identity) -> None:
    pending = build_work_order(worker_info, "python-hello", [b"World"])
    plain = json.loads(processor.handle(pending.frame()))
    assert "receiptUpdate" not in plain  # what a ZMQ requester or Avalon's enclave manager gets
    asked = json.loads(processor.handle(pending.frame()[:-1] + b',"receiptUpdate":true}'))
    update = asked.pop("receiptUpdate")
    assert set(asked) == {"jsonrpc", "id", "result"}
    assert update["receiptVerificationKey"] == identity.verifying_key_pem  # where Avalon's check looks for the key
    receipts.verify_worker_update(update, identity.verifying_key_pem, work_order_id=pending.request["params"]["workOrderId"],
                                  worker_id=identity.worker_id, expected_type=receipts.COMPLETED,
                                  expected_data=response_hash(asked["result"]).hex())
    refused = build_work_order(worker_info, "no-such-workload", [b"x"]).frame()[:-1] + b',"receiptUpdate":true}'
    answer = json.loads(processor.handle(refused))
    assert answer["error"]["code"] == 2
    receipts.verify_worker_update(answer["receiptUpdate"], identity.verifying_key_pem,
                                  work_order_id=answer["error"]["data"]["workOrderId"], worker_id=identity.worker_id,
                                  expected_type=receipts.FAILED, expected_data="2")
    unreadable = json.loads(processor.handle(b'{"jsonrpc":"2.0","id":1,"method":"ProcessWorkOrder","params":"{","receiptUpdate":true}'))
    assert "receiptUpdate" not in unreadable  # no order id: nothing to sign

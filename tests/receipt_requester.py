"""A test-only client for work-order receipts (EEA TC v1.1 §7.2, direct model), written from
the spec's text as Avalon carries it (`sdk/avalon_sdk/connector/interfaces/work_order_receipt.py`),
Avalon's receipt schemas (`common/python/schema_validation/data/WorkOrderReceipt*.json`), its
SDK's receipt requests (`work_order_receipt/work_order_receipt.py`, `connector/direct/jrpc/
jrpc_work_order_receipt.py`), its signature checks (`avalon_crypto_utils/worker_signing.py`
`verify_create_receipt_signature`, `verify_update_receipt_signature`) and its listener's handler
(`listener/avalon_listener/tcs_workorder_receipt_handler.py`). It shares no code with
`avalon_worker`: hashes with pycryptodomex, signatures with python-ecdsa.

The semantics it checks (the acceptance test for the server side, `tests/test_receipts.py`):
- Status values (§7.1): 0 pending, 1 completed (no more worker updates), 2 processed (more
  expected), 3 failed, 4 rejected, 5-254 reserved, 255 "any" in lookups, >255 application's.
- `WorkOrderReceiptCreate` {workOrderId, workerServiceId, workerId, requesterId,
  receiptCreateStatus, workOrderRequestHash, requesterGeneratedNonce, requesterSignature,
  signatureRules, receiptVerificationKey}: the request hash (§6.6.1) in base64, as Avalon's SDK
  sends it; the requester signs SHA-256 of the UTF-8 concatenation workOrderId +
  workerServiceId + workerId + requesterId + str(receiptCreateStatus) + workOrderRequestHash +
  requesterGeneratedNonce (the digest itself, ECDSA secp256k1, DER, base64) with the key whose
  PEM is receiptVerificationKey; signatureRules "SHA-256/SECP256K1". Answer: the spec's status
  payload, a JSON-RPC `error` with code 0 on success. Refused with 2 for an order the worker
  never received, a second create for the same order, or a request hash that is not the
  order's; with 4 (the spec's "invalid signature") for a signature that does not verify.
- `WorkOrderReceiptUpdate` {workOrderId, updaterId, updateType, updateData, updateSignature,
  signatureRules, receiptVerificationKey}: the signature is over SHA-256 of workOrderId +
  str(updateType) + updateData. The worker adds its own update when the order completes (at
  once, if the receipt is created after that): updaterId its workerId, updateType 1
  (completed: a synchronous worker sends nothing more) with updateData the hex response hash
  (§6.6.2) of its result, or 3 (failed) with updateData the error code as decimal text; signed
  with the worker's signing key, whose PEM is the verificationKey `WorkerRetrieve` publishes.
- `WorkOrderReceiptRetrieve` {workOrderId} → the create params plus receiptCurrentStatus: the
  type of the last update if it is a status (0-255), else the create status.
- `WorkOrderReceiptUpdateRetrieve` {workOrderId, updaterId (null: any), updateIndex} → the
  update's params plus updateCount (of that updater's updates, or of all); updateIndex counts
  from 1, 0xFFFFFFFF is the last; beyond the count, or no updates, is 2.
- `WorkOrderReceiptLookUp` {workerServiceId, workerId, requesterId, receiptStatus (255: any)},
  every filter optional → {totalCount (all matches), lookupTag ("" when this page is the last),
  ids (workOrderIds)}; `WorkOrderReceiptLookUpNext` takes the same filters and lastLookUpTag.
"""

from __future__ import annotations

import base64
import secrets
from collections.abc import Mapping
from typing import Any

import ecdsa
from Cryptodome.Hash import SHA256
from ecdsa.util import sigdecode_der, sigencode_der
from sdk_requester import call

from independent_requester import VerificationError

SIGNATURE_RULES = "SHA-256/SECP256K1"
PENDING, COMPLETED, PROCESSED, FAILED, REJECTED, ANY_STATUS = 0, 1, 2, 3, 4, 255
LAST_UPDATE = 0xFFFFFFFF


def sha256(data: bytes) -> bytes:
    return SHA256.new(data).digest()


def create_digest(params: Mapping[str, Any]) -> bytes:
    """What the requester signs for WorkOrderReceiptCreate."""
    text = (params["workOrderId"] + params["workerServiceId"] + params["workerId"] + params["requesterId"]
            + str(params["receiptCreateStatus"]) + params["workOrderRequestHash"] + params["requesterGeneratedNonce"])
    return sha256(text.encode("utf-8"))


def update_digest(params: Mapping[str, Any]) -> bytes:
    """What an updater signs for WorkOrderReceiptUpdate."""
    return sha256((params["workOrderId"] + str(params["updateType"]) + params["updateData"]).encode("utf-8"))


def sign(key: ecdsa.SigningKey, digest: bytes) -> str:
    return base64.b64encode(key.sign_digest_deterministic(digest, sigencode=sigencode_der)).decode("ascii")


def verify(pem: str, signature_b64: str, digest: bytes, what: str) -> None:
    try:
        key = ecdsa.VerifyingKey.from_pem(pem)
        key.verify_digest(base64.b64decode(signature_b64), digest, sigdecode=sigdecode_der)
    except (ecdsa.BadSignatureError, ecdsa.der.UnexpectedDER, ValueError) as exc:
        raise VerificationError(f"{what} does not verify") from exc


def create_params(order: Mapping[str, Any], request_hash: bytes, key: ecdsa.SigningKey, *,
                  status: int = PENDING, worker_service_id: str | None = None, nonce: str | None = None) -> dict[str, Any]:
    """A signed WorkOrderReceiptCreate for a WorkOrderSubmit's params and its request hash."""
    params: dict[str, Any] = {
        "workOrderId": order["workOrderId"],
        "workerServiceId": worker_service_id or order["workerId"],
        "workerId": order["workerId"],
        "requesterId": order["requesterId"],
        "receiptCreateStatus": status,
        "workOrderRequestHash": base64.b64encode(request_hash).decode("ascii"),
        "requesterGeneratedNonce": nonce or secrets.token_hex(16),
        "signatureRules": SIGNATURE_RULES,
        "receiptVerificationKey": key.get_verifying_key().to_pem().decode("ascii"),
    }
    params["requesterSignature"] = sign(key, create_digest(params))
    return params


def create(url: str, params: Mapping[str, Any], reply_id: int = 71) -> dict[str, Any]:
    return call(url, "WorkOrderReceiptCreate", dict(params), reply_id)


def retrieve(url: str, work_order_id: str, reply_id: int = 72) -> dict[str, Any]:
    return call(url, "WorkOrderReceiptRetrieve", {"workOrderId": work_order_id}, reply_id)


def update_retrieve(url: str, work_order_id: str, index: int = LAST_UPDATE, updater_id: str | None = None,
                    reply_id: int = 73) -> dict[str, Any]:
    params = {"workOrderId": work_order_id, "updaterId": updater_id, "updateIndex": index}
    return call(url, "WorkOrderReceiptUpdateRetrieve", params, reply_id)


def update(url: str, params: Mapping[str, Any], reply_id: int = 74) -> dict[str, Any]:
    return call(url, "WorkOrderReceiptUpdate", dict(params), reply_id)


def lookup_all(url: str, **filters: Any) -> tuple[list[str], int]:
    """Every id a lookup matches, page by page; (ids, pages). Checks that totalCount stays the
    number of all matches and that no id comes twice."""
    answer = call(url, "WorkOrderReceiptLookUp", filters, 75)["result"]
    ids, pages, total = list(answer["ids"]), 1, answer["totalCount"]
    while answer["lookupTag"]:
        answer = call(url, "WorkOrderReceiptLookUpNext", {**filters, "lastLookUpTag": answer["lookupTag"]}, 76)["result"]
        assert answer["totalCount"] == total, "totalCount changed between pages"
        ids += answer["ids"]
        pages += 1
        assert pages <= total + 1, "lookup pages do not end"
    assert len(ids) == len(set(ids)) == total, (len(ids), total)
    return ids, pages


def verify_worker_update(update_result: Mapping[str, Any], worker_verification_key: str, *, work_order_id: str,
                         worker_id: str, expected_type: int, expected_data: str) -> None:
    """The worker's completion update: its fields, and its signature under the key the worker
    publishes (not the key the update names, which anyone could set)."""
    if update_result.get("workOrderId") != work_order_id:
        raise VerificationError("the update is for another work order")
    if str(update_result.get("updaterId", "")).lower().removeprefix("0x") != worker_id.lower().removeprefix("0x"):
        raise VerificationError("the update is not the worker's")
    if update_result.get("updateType") != expected_type or update_result.get("updateData") != expected_data:
        raise VerificationError(f"unexpected update {update_result.get('updateType')}/{update_result.get('updateData')}")
    if update_result.get("signatureRules", SIGNATURE_RULES) != SIGNATURE_RULES:
        raise VerificationError("unexpected signature rules")
    verify(worker_verification_key, str(update_result.get("updateSignature")), update_digest(update_result),
           "the worker's update signature")

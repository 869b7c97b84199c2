"""Work-order receipts (EEA TC v1.1 §7): statuses, what the requester and an updater sign, and
the worker's own signed update, without I/O.

What is signed, as Avalon's `avalon_crypto_utils.worker_signing` signs and checks it: the
SHA-256 digest of a UTF-8 text, signed as is (ECDSA secp256k1, DER, base64);
- a receipt's creation: workOrderId + workerServiceId + workerId + requesterId +
  str(receiptCreateStatus) + workOrderRequestHash + requesterGeneratedNonce, by the key whose
  PEM is the receipt's receiptVerificationKey;
- an update: workOrderId + str(updateType) + updateData.

The worker adds one update when it has answered an order (`worker_update`): updaterId its
worker id, receiptVerificationKey its key, updateType 1 (completed: a synchronous worker sends nothing more) with the hex
response hash of its result, or 3 (failed) with the error code as decimal text; signed with the
worker's signing key, whose PEM `WorkerRetrieve` publishes as verificationKey.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from typing import Any, Protocol

from .crypto import CryptoError, VerifyingKey, sha256

PENDING, COMPLETED, PROCESSED, FAILED, REJECTED = 0, 1, 2, 3, 4  # §7.1
STATUSES = (PENDING, COMPLETED, PROCESSED, FAILED, REJECTED)  # 5-254 reserved, 255 "any" in lookups
ANY_STATUS = 255
APPLICATION_TYPES = 256  # update types from here on are the application's, not a status
SIGNATURE_RULES = "SHA-256/SECP256K1"
LAST_UPDATE = 0xFFFFFFFF  # updateIndex of the last update
AVALONS_LAST_UPDATE = 1 << 32  # what Avalon's listener and generic client take for it instead


class _Signer(Protocol):
    def sign_digest(self, digest: bytes) -> bytes: ...


def create_digest(params: Mapping[str, Any]) -> bytes:
    """What the requester signs for WorkOrderReceiptCreate (the params as sent)."""
    text = (params["workOrderId"] + params["workerServiceId"] + params["workerId"] + params["requesterId"]
            + str(params["receiptCreateStatus"]) + params["workOrderRequestHash"] + params["requesterGeneratedNonce"])
    return sha256(text.encode("utf-8"))


def update_digest(work_order_id: str, update_type: int, update_data: str) -> bytes:
    """What an updater signs for WorkOrderReceiptUpdate."""
    return sha256((work_order_id + str(update_type) + update_data).encode("utf-8"))


def signature_verifies(pem: str, signature_b64: str, digest: bytes) -> bool:
    """Whether `signature_b64` (base64 DER) signs `digest` under the secp256k1 key `pem`."""
    try:
        signature = base64.b64decode(signature_b64, validate=True)
        VerifyingKey(pem).verify_digest(signature, digest)
    except (binascii.Error, ValueError, CryptoError):
        return False
    return True


def worker_update(signer: _Signer, verification_key: str, work_order_id: str, worker_id: str, update_type: int,
                  update_data: str) -> dict[str, Any]:
    """The worker's update to the receipt of the order `work_order_id` (as the requester sent it),
    naming the key that checks it (`verification_key`, the PEM the worker publishes), where
    Avalon's `verify_update_receipt_signature` looks for it."""
    signature = signer.sign_digest(update_digest(work_order_id, update_type, update_data))
    return {
        "workOrderId": work_order_id,
        "updaterId": worker_id,
        "updateType": update_type,
        "updateData": update_data,
        "updateSignature": base64.b64encode(signature).decode("ascii"),
        "signatureRules": SIGNATURE_RULES,
        "receiptVerificationKey": verification_key,
    }


"""A test-only requester that talks to the HTTP listener the way Avalon's SDK does.

Written from Avalon's `sdk/avalon_sdk/connector/direct/jrpc/`, `work_order/work_order_params.py`
and `examples/apps/generic_client/`, on this package's independent crypto (`independent_requester`:
pycryptodomex + ecdsa), sharing no code with `avalon_worker`. What it copies from the SDK:
- HTTP POST with `Content-Type: application/json`; an answer whose Content-Type is anything but
  exactly `application/json` is dropped (the SDK returns None for it);
- `WorkerRetrieve` → `details.workerTypeData` keys; the encryption-key signature is checked;
- the request: `responseTimeoutMSecs` 6000, ids from `secrets.token_hex` (lower case),
  `workerEncryptionKey` as hex of the PEM, `sessionKeyIv`, `encryptedSessionKey` and
  `encryptedRequestHash` in upper-case hex, inData items `{index, data}` only,
  `requesterSignature` "" unless signed (then base64 DER plus `verifyingKey`);
- results: polled with `WorkOrderGetResult` until the code is not 5 (the SDK sleeps 2 s between
  polls and never gives up; `poll_s` and `max_polls` keep tests short and finite), the worker
  signature checked over the response hash, and outData decrypted with the session key and
  `sessionKeyIv`, ignoring each item's `iv` (what the SDK does: it needs the worker's
  `--insecure-reuse-session-iv`).
"""

from __future__ import annotations

import base64
import json
import secrets
import time
import urllib.request
from dataclasses import dataclass
from typing import Any

import ecdsa
from ecdsa.util import sigdecode_der, sigencode_der

from independent_requester import (
    ReplyError,
    VerificationError,
    aes_gcm_decrypt,
    aes_gcm_encrypt,
    request_hash,
    response_hash,
    rsa_oaep_encrypt,
    verify_signup,
)

JSON = "application/json"


class NotJson(Exception):
    """The listener answered with a Content-Type other than exactly application/json."""


def post(url: str, message: dict[str, Any] | bytes, timeout_s: float = 10.0) -> dict[str, Any]:
    """POST a JSON-RPC request as `HttpJrpcClient._postmsg` does; return the decoded answer."""
    data = message if isinstance(message, bytes) else json.dumps(message).encode("utf-8")
    request = urllib.request.Request(url, data, {"Content-Type": JSON, "Content-Length": str(len(data))})
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(request, timeout=timeout_s) as response:
        content = response.read()
        content_type = response.info().get("Content-Type")
        status = response.status
    if status != 200 or content_type != JSON:
        raise NotJson(f"HTTP {status} with Content-Type {content_type!r}")
    answer = json.loads(content.decode("utf-8"))
    assert isinstance(answer, dict)
    return answer


def call(url: str, method: str, params: Any, reply_id: Any = None) -> dict[str, Any]:
    return post(url, {"jsonrpc": "2.0", "method": method, "id": reply_id, "params": params})


@dataclass
class Worker:
    """What the SDK keeps of `WorkerRetrieve` (`SGXWorkerDetails.load_worker`)."""

    worker_id: str
    verification_key: str
    encryption_key: str
    encryption_key_signature: str
    status: int
    details: dict[str, Any]


def lookup(url: str, **filters: Any) -> list[str]:
    answer = call(url, "WorkerLookUp", filters, secrets.randbelow(10000) + 1)
    result = answer["result"]
    assert result["totalCount"] == len(result["ids"])
    return list(result["ids"])


def retrieve(url: str, worker_id: str) -> Worker:
    answer = call(url, "WorkerRetrieve", {"workerId": worker_id}, secrets.randbelow(10000) + 1)
    if "error" in answer:
        raise ReplyError(answer["error"].get("code"), answer["error"].get("message"), answer["error"].get("data"))
    result = answer["result"]
    data = result["details"]["workerTypeData"]
    verify_signup({
        "verifying_key": data["verificationKey"],
        "encryption_key": data["encryptionKey"],
        "encryption_key_signature": data["encryptionKeySignature"],
    })
    return Worker(worker_id, data["verificationKey"], data["encryptionKey"], data["encryptionKeySignature"],
                  result["status"], result["details"])


@dataclass
class SdkOrder:
    """A work order built as `WorkOrderParams` builds it, and what opening its result needs."""

    params: dict[str, Any]
    session_key: bytes
    session_iv: bytes
    reply_id: int

    @property
    def work_order_id(self) -> str:
        return str(self.params["workOrderId"])

    def submit_body(self) -> dict[str, Any]:
        return {"jsonrpc": "2.0", "method": "WorkOrderSubmit", "id": self.reply_id, "params": self.params}


def build(worker: Worker, workload: str, inputs: list[str], *, sign: bool = False,
          response_timeout_ms: int | None = 6000, work_order_id: str | None = None,
          requester_id: str | None = None) -> SdkOrder:
    """`work_order_id` and `requester_id` replace the SDK's `secrets.token_hex(32)` (e.g. with
    Demo.py's `hex(random.randint(1, 2**64 - 1))`)."""
    session_key = secrets.token_bytes(32)
    session_iv = secrets.token_bytes(12)
    params: dict[str, Any] = {"workOrderId": work_order_id or secrets.token_hex(32)}
    if response_timeout_ms is not None:
        params["responseTimeoutMSecs"] = response_timeout_ms
    params |= {
        "payloadFormat": "JSON-RPC",
        "requesterNonce": secrets.token_hex(16),
        "workloadId": workload.encode("utf-8").hex(),
        "workerId": worker.worker_id,
        "requesterId": requester_id or secrets.token_hex(32),
        "sessionKeyIv": session_iv.hex().upper(),
        "workerEncryptionKey": worker.encryption_key.encode("utf-8").hex(),
        "dataEncryptionAlgorithm": "AES-GCM-256",
        "encryptedSessionKey": rsa_oaep_encrypt(worker.encryption_key, session_key).hex().upper(),
        "encryptedRequestHash": "",
        "requesterSignature": "",
        "inData": [
            {"index": n, "data": base64.b64encode(aes_gcm_encrypt(session_key, session_iv, text.encode("utf-8"))).decode()}
            for n, text in enumerate(inputs)
        ],
    }
    digest = request_hash(params)
    params["encryptedRequestHash"] = aes_gcm_encrypt(session_key, session_iv, digest).hex().upper()
    if sign:
        key = ecdsa.SigningKey.generate(curve=ecdsa.SECP256k1)
        signature = key.sign_digest(digest, sigencode=sigencode_der)
        params["requesterSignature"] = base64.b64encode(signature).decode()
        params["verifyingKey"] = key.get_verifying_key().to_pem().decode()
    return SdkOrder(params, session_key, session_iv, secrets.randbelow(10000) + 1)


def submit(url: str, order: SdkOrder) -> dict[str, Any]:
    """`submit_work_order`: accepted if the answer is a result or error 5 (pending)."""
    return post(url, order.submit_body())


def get_result(url: str, work_order_id: str, *, poll_s: float = 2.0, max_polls: int = 100,
               reply_id: Any = None) -> dict[str, Any]:
    """`work_order_get_result`: ask, and while the answer is 5, ask again then sleep `poll_s`."""
    reply_id = reply_id if reply_id is not None else secrets.randbelow(10000) + 1
    answer = call(url, "WorkOrderGetResult", {"workOrderId": work_order_id}, reply_id)
    polls = 0
    while "error" in answer and answer["error"].get("code") == 5:
        polls += 1
        assert polls <= max_polls, f"work order {work_order_id} still pending after {max_polls} polls"
        answer = call(url, "WorkOrderGetResult", {"workOrderId": work_order_id}, reply_id)
        time.sleep(poll_s)
    return answer


def open_result(worker: Worker, order: SdkOrder, answer: dict[str, Any]) -> list[bytes]:
    """`verify_wo_response_signature` then `decrypt_wo_response`; the plaintexts by index."""
    if "error" in answer:
        error = answer["error"]
        raise ReplyError(error.get("code"), error.get("message"), error.get("data"), answer.get("id"))
    result = answer["result"]
    key = ecdsa.VerifyingKey.from_pem(worker.verification_key)
    signature = base64.b64decode(result["workerSignature"])
    try:
        key.verify_digest(signature, response_hash(result), sigdecode=sigdecode_der, allow_truncate=False)
    except ecdsa.BadSignatureError as exc:
        raise VerificationError("worker signature does not verify") from exc
    plaintexts = []
    for item in result["outData"]:
        e_key = item.get("encryptedDataEncryptionKey")
        data = base64.b64decode(item["data"])
        plaintexts.append(data if e_key == "-" else aes_gcm_decrypt(order.session_key, order.session_iv, data))
    return plaintexts


def run(url: str, worker: Worker, workload: str, inputs: list[str], *, sign: bool = False, poll_s: float = 0.1) -> list[bytes]:
    """One order start to finish, as generic_client runs it: submit, get result, verify, decrypt."""
    order = build(worker, workload, inputs, sign=sign)
    submitted = submit(url, order)
    assert "result" in submitted or submitted["error"]["code"] == 5, submitted
    return open_result(worker, order, get_result(url, order.work_order_id, poll_s=poll_s))

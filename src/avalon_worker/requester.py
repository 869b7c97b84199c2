"""The requester's side of a work order, with no I/O: build requests, check and open replies.

It mirrors `core`: the same hashes and data-item encodings, used the other way round. Every
encrypted item gets its own random IV, so no AES-GCM nonce is ever used twice.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from . import crypto, jsonio
from .crypto import CryptoError, SigningKey, VerifyingKey
from .errors import Error
from .hashing import ItemText, request_hash
from .models import WorkOrderResult

ItemModeName = Literal["session-key", "plaintext", "data-key"]


class VerificationError(Error):
    """A signup or a result failed a check: do not trust it."""


class WorkOrderFailed(Error):
    """The worker answered with a JSON-RPC error."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(f"error {code}: {message}")
        self.code = code
        self.reason = message


@dataclass(frozen=True)
class WorkerInfo:
    """A worker's signup document whose encryption-key signature has been verified."""

    signup: Mapping[str, Any]
    verifying_key: VerifyingKey
    encryption_key: Any  # cryptography RSAPublicKey

    @classmethod
    def from_signup(cls, signup: Any) -> WorkerInfo:
        """Check the signup's shape and its encryption-key signature (PROTOCOL §6)."""
        if not isinstance(signup, Mapping):
            raise VerificationError("the signup is not a JSON object")
        try:
            vk_pem = signup["verifying_key"]
            ek_pem = signup["encryption_key"]
            signature = bytes.fromhex(signup["encryption_key_signature"])
            verifying_key = VerifyingKey(vk_pem)
            encryption_key = crypto.load_rsa_public_pem(ek_pem)
        except (KeyError, TypeError, ValueError) as exc:
            raise VerificationError(f"the signup is malformed ({exc})") from None
        try:
            verifying_key.verify_digest(signature, crypto.sha256(ek_pem.encode("utf-8")))
        except CryptoError:
            raise VerificationError("the encryption key's signature does not verify with the verifying key") from None
        return cls(signup, verifying_key, encryption_key)

    @property
    def verifying_key_pem(self) -> str:
        return str(self.signup["verifying_key"])

    @property
    def worker_id(self) -> str:
        """The signup's worker id, or the hex SHA-256 of its verifying key."""
        return str(self.signup.get("worker_id") or crypto.sha256(self.verifying_key_pem.encode("utf-8")).hex())


@dataclass(frozen=True)
class Session:
    """A session key and its RSA-OAEP wrapping for one worker.

    Reusing a session across work orders lets the worker skip the RSA unwrap (it caches keys by
    their wrapping); every request still gets fresh random IVs.
    """

    key: bytes
    encrypted_key: bytes

    @classmethod
    def new(cls, worker: WorkerInfo, random_bytes: Callable[[int], bytes] = crypto.random_bytes) -> Session:
        key = random_bytes(crypto.AES_KEY_BYTES)
        return cls(key, crypto.rsa_oaep_encrypt(worker.encryption_key, key))


@dataclass(frozen=True)
class InputSpec:
    """One input item and how to protect it on the wire (§6.5)."""

    data: bytes
    mode: ItemModeName = "session-key"


@dataclass
class PendingWorkOrder:
    """A built request and the secrets needed to open its reply."""

    request: dict[str, Any]
    session_key: bytes
    session_key_iv: bytes
    output_keys: dict[int, bytes] = field(default_factory=dict)

    @property
    def work_order_id(self) -> str:
        return str(self.request["params"]["workOrderId"])

    def frame(self, outer_id: int = 1) -> bytes:
        """The ProcessWorkOrder envelope: the WorkOrderSubmit request as a JSON string."""
        inner = jsonio.dumps(self.request).decode("utf-8")
        return jsonio.dumps({"jsonrpc": "2.0", "id": outer_id, "method": "ProcessWorkOrder", "params": inner})


def _wrap_key(key: bytes, worker: WorkerInfo, session_key: bytes, random_bytes: Callable[[int], bytes]) -> str:
    iv = random_bytes(crypto.GCM_IV_BYTES)
    wrapped = crypto.rsa_oaep_encrypt(worker.encryption_key, key)
    return (iv + crypto.aes_gcm_encrypt(session_key, iv, wrapped)).hex()


def _input_item(
    index: int,
    spec: InputSpec,
    worker: WorkerInfo,
    session_key: bytes,
    include_data_hash: bool,
    random_bytes: Callable[[int], bytes],
) -> ItemText:
    data_hash = crypto.sha256(spec.data).hex() if include_data_hash else ""
    if spec.mode == "plaintext":
        return ItemText(index, data_hash, base64.b64encode(spec.data).decode(), "-", "")
    key = session_key if spec.mode == "session-key" else random_bytes(crypto.AES_KEY_BYTES)
    iv = random_bytes(crypto.GCM_IV_BYTES)
    ekey = "null" if spec.mode == "session-key" else _wrap_key(key, worker, session_key, random_bytes)
    ciphertext = crypto.aes_gcm_encrypt(key, iv, spec.data)
    return ItemText(index, data_hash, base64.b64encode(ciphertext).decode(), ekey, iv.hex())


def build_work_order(
    worker: WorkerInfo,
    workload_id: str,
    inputs: Sequence[bytes | InputSpec],
    *,
    requester_key: SigningKey | None = None,
    output_modes: Sequence[ItemModeName] | None = None,
    requester_id: str | None = None,
    request_id: Any = 1,
    session: Session | None = None,
    include_data_hash: bool = True,
    response_timeout_ms: int = 0,
    random_bytes: Callable[[int], bytes] = crypto.random_bytes,
) -> PendingWorkOrder:
    """A WorkOrderSubmit request for `workload_id` on `inputs`.

    `requester_key` signs the request hash; `output_modes` asks for one output item per mode
    (indexes 0, 1, …); without it the worker returns one item under the session key.
    `session` reuses a session key; by default each work order gets a new one.
    `include_data_hash=False` leaves each input's `dataHash` out: it is an unsalted SHA-256 of
    the plaintext, sent in clear, so a guessable input can be recovered from it (SECURITY.md).
    AES-GCM already authenticates every encrypted input.
    `response_timeout_ms` asks the worker to answer within that long (0: its own limit).
    """
    session = session or Session.new(worker, random_bytes)
    session_key = session.key
    session_iv = random_bytes(crypto.GCM_IV_BYTES)
    in_items = [
        _input_item(index, spec if isinstance(spec, InputSpec) else InputSpec(bytes(spec)), worker, session_key,
                    include_data_hash, random_bytes)
        for index, spec in enumerate(inputs)
    ]
    params: dict[str, Any] = {
        "responseTimeoutMSecs": response_timeout_ms,
        "payloadFormat": "JSON-RPC",
        "resultUri": "",
        "notifyUri": "",
        "workOrderId": random_bytes(32).hex(),
        "workerId": worker.worker_id,
        "workloadId": workload_id.encode("utf-8").hex(),
        "requesterId": requester_id or random_bytes(32).hex(),
        "workerEncryptionKey": worker.signup["encryption_key"].encode("utf-8").hex(),
        "dataEncryptionAlgorithm": "AES-GCM-256",
        "encryptedSessionKey": session.encrypted_key.hex(),
        "sessionKeyIv": session_iv.hex(),
        "requesterNonce": random_bytes(16).hex(),
        "inData": [item.to_json() for item in in_items],
    }
    output_keys: dict[int, bytes] = {}
    out_items = []
    for index, mode in enumerate(output_modes or ()):
        marker = {"session-key": "null", "plaintext": "-"}.get(mode)
        if marker is None:
            output_keys[index] = random_bytes(crypto.AES_KEY_BYTES)
            marker = _wrap_key(output_keys[index], worker, session_key, random_bytes)
        out_items.append(ItemText(index, encrypted_key=marker))
    if out_items:
        params["outData"] = [item.to_json() for item in out_items]
    digest = request_hash(
        requester_nonce=params["requesterNonce"],
        work_order_id=params["workOrderId"],
        worker_id=params["workerId"],
        workload_id=params["workloadId"],
        requester_id=params["requesterId"],
        in_data=in_items,
        out_data=out_items,
    )
    params["encryptedRequestHash"] = crypto.aes_gcm_encrypt(session_key, session_iv, digest).hex()
    if requester_key is not None:
        params["requesterSignature"] = base64.b64encode(requester_key.sign_digest(digest)).decode()
        params["verifyingKey"] = requester_key.verifying_key_pem
    request = {"jsonrpc": "2.0", "method": "WorkOrderSubmit", "id": request_id, "params": params}
    return PendingWorkOrder(request, session_key, session_iv, output_keys)


def open_result(pending: PendingWorkOrder, reply: Any, worker: WorkerInfo) -> list[bytes]:
    """Verify a ProcessWorkOrder reply and return the output plaintexts in index order.

    Raises `WorkOrderFailed` for an error reply and `VerificationError` when the reply is not
    the worker's signed answer to this request.
    """
    if not isinstance(reply, Mapping):
        raise VerificationError("the reply is not a JSON object")
    error = reply.get("error")
    if isinstance(error, Mapping):
        code = error.get("code")
        raise WorkOrderFailed(code if isinstance(code, int) and not isinstance(code, bool) else 1,
                              str(error.get("message", ""))[:500])
    try:
        result = WorkOrderResult.parse(reply.get("result"))
    except ValueError as exc:
        raise VerificationError(str(exc)) from None
    params = pending.request["params"]
    for name, value in (("workOrderId", result.work_order_id), ("workloadId", result.workload_id),
                        ("requesterId", result.requester_id)):
        if value != params[name]:
            raise VerificationError(f"the result's {name} is not the request's")
    try:
        signature = base64.b64decode(result.worker_signature, validate=True)
        worker.verifying_key.verify_digest(signature, result.response_hash())
    except (CryptoError, ValueError):
        raise VerificationError("the worker's signature over the result does not verify") from None
    try:
        return [_open_item(item, pending) for item in sorted(result.out_data, key=lambda it: it.index)]
    except (CryptoError, ValueError, KeyError):
        raise VerificationError("an output item does not decrypt or does not match its dataHash") from None


def _open_item(item: ItemText, pending: PendingWorkOrder) -> bytes:
    data = base64.b64decode(item.data, validate=True)
    if item.encrypted_key == "-":
        plaintext = data
    else:
        key = pending.session_key if item.encrypted_key in ("", "null") else pending.output_keys[item.index]
        iv = bytes.fromhex(item.iv) if item.iv else pending.session_key_iv
        plaintext = crypto.aes_gcm_decrypt(key, iv, data)
    if item.data_hash and not crypto.digests_equal(bytes.fromhex(item.data_hash), crypto.sha256(plaintext)):
        raise CryptoError("dataHash mismatch")
    return plaintext

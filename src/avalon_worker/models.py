"""Parsed, validated work-order requests (EEA TC 1.1 §6.1, §6.5), as frozen typed models.

Parsing checks only shape: types, encodings and supported modes. Any fault here raises
`InvalidParameterError` (code 2) or `UnsupportedModeError` (code 6), before any key is used.
Every hashed field keeps its text exactly as sent, because hashes are computed over the strings
as transmitted (`hashing`); the models compute them.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any

from .crypto import GCM_IV_BYTES, VerifyingKey
from .errors import InvalidParameterError, UnsupportedModeError
from .hashing import ItemText, request_hash, response_hash

SUPPORTED_PAYLOAD_FORMAT = "JSON-RPC"
SUPPORTED_DATA_ALGORITHM = "AES-GCM-256"

# Values of encryptedDataEncryptionKey that select the session key (§6.5).
SESSION_KEY_MARKERS = frozenset({"", "null"})
PLAINTEXT_MARKER = "-"


class ItemMode(Enum):
    """How a data item's `data` is protected (§6.5 encryptedDataEncryptionKey)."""

    SESSION_KEY = "session-key"
    PLAINTEXT = "plaintext"
    DATA_KEY = "data-key"


def strip_0x(value: str) -> str:
    return value[2:] if value[:2] in ("0x", "0X") else value


_fromhex = bytes.fromhex  # looked up once: `bytes.fromhex` binds a new method on every use (about 40 % of the call)


def _from_hex(text: str) -> bytes | None:
    """The bytes of an even number of hex digits after an optional `0x`, or None for anything
    else: `bytes.fromhex` skips whitespace, so its result is checked to account for every
    character (a work order id that is echoed into logs and replies must carry none). Done in
    C: hex fields of several KiB pass through here on every order."""
    digits = text[2:] if text[:2] in ("0x", "0X") else text
    try:
        raw = _fromhex(digits)
    except ValueError:
        return None
    return raw if 2 * len(raw) == len(digits) else None


def is_hex(value: str) -> bool:
    """An even number of hex digits after an optional `0x`: no spaces, no line breaks."""
    return _from_hex(value) is not None


def decode_hex(value: Any, field: str, *, work_order_id: str | None = None) -> bytes:
    """Decode a hex string (an optional `0x` prefix allowed) or raise code 2 naming the field."""
    raw = _from_hex(value) if isinstance(value, str) else None
    if raw is None:
        if not isinstance(value, str):
            raise InvalidParameterError(f"{field} must be a hex string", work_order_id=work_order_id)
        raise InvalidParameterError(
            f"{field} is not valid hex (an even number of digits 0-9 a-f, nothing else)", work_order_id=work_order_id
        )
    return raw


def decode_base64(value: Any, field: str, *, work_order_id: str | None = None) -> bytes:
    if not isinstance(value, str):
        raise InvalidParameterError(f"{field} must be a base64 string", work_order_id=work_order_id)
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidParameterError(f"{field} is not valid base64", work_order_id=work_order_id) from None


def _optional_str(params: Mapping[str, Any], field: str, where: str, wo_id: str | None) -> str:
    value = params.get(field)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise InvalidParameterError(f"{where}{field} must be a string", work_order_id=wo_id)
    return value


# Avalon's schemas (common/python/schema_validation/data/WorkOrderSubmit.json and the listener's
# others) give every id the pattern ^(0[xX])?[0-9a-fA-F]+$: any number of hex digits, odd
# included, after an optional 0x. Ids are never decoded, only hashed as the text sent, so
# their length need not be even (Avalon's Demo.py makes them with hex(random...)).
_HEX_ID = re.compile(r"(?:0[xX])?[0-9a-fA-F]+").fullmatch
# Avalon's SDK sends 64 hex digits; ids are kept, indexed, echoed and logged, so they are bounded
# before anything else is done with them (a PostgreSQL index entry holds at most 2,704 bytes).
MAX_ID_DIGITS = 256


def is_id(value: Any) -> bool:
    """True for an id as Avalon's schema allows it: one or more hex digits after an optional
    `0x`, nothing else (no spaces, no line breaks: ids are echoed into logs and replies), and
    at most `MAX_ID_DIGITS` digits."""
    return (isinstance(value, str) and (len(value) <= MAX_ID_DIGITS or len(strip_0x(value)) <= MAX_ID_DIGITS)
            and _HEX_ID(value) is not None)


def check_id(value: Any, field: str, *, work_order_id: str | None = None) -> str:
    """The one rule for workOrderId, workerId and requesterId, on every path into the worker:
    the id as sent, or code 2 naming the field. The length is checked before the digits, so a
    long id costs nothing to refuse."""
    if is_id(value):
        return str(value)
    digits = strip_0x(value) if isinstance(value, str) else ""
    if not digits:
        raise InvalidParameterError(f"{field} is required (a hex string)", work_order_id=work_order_id)
    if len(digits) > MAX_ID_DIGITS:
        raise InvalidParameterError(f"{field} is longer than {MAX_ID_DIGITS} hex digits", work_order_id=work_order_id)
    raise InvalidParameterError(
        f"{field} must be a hex string (digits 0-9 a-f, an optional 0x, nothing else)", work_order_id=work_order_id
    )


def check_nonce(value: Any, *, work_order_id: str | None = None) -> str:
    """requesterNonce by the id rule's bound, as bytes: an even number of hex digits (the spec
    calls it bytes; it is hashed as sent, like the ids). Code 2 otherwise."""
    if isinstance(value, str) and len(value) <= MAX_ID_DIGITS and _from_hex(value):  # the common case: one check
        return value
    digits = strip_0x(value) if isinstance(value, str) else ""
    if not digits:
        raise InvalidParameterError("requesterNonce is required (a hex string)", work_order_id=work_order_id)
    if len(digits) > MAX_ID_DIGITS:
        raise InvalidParameterError(f"requesterNonce is longer than {MAX_ID_DIGITS} hex digits", work_order_id=work_order_id)
    decode_hex(value, "requesterNonce", work_order_id=work_order_id)  # not hex: raises, naming the field
    return str(value)  # `0x` and exactly MAX_ID_DIGITS digits


@dataclass(frozen=True)
class DataItem:
    """One inData/outData item (§6.5), its binary fields decoded, its text kept for hashing."""

    index: int
    mode: ItemMode
    data: bytes
    data_hash: bytes | None
    iv: bytes | None
    wrapped_key: bytes | None
    text: ItemText  # the hashed fields as sent

    @classmethod
    def parse(
        cls, raw: Any, field: str, *, work_order_id: str | None = None, require_data: bool = True
    ) -> DataItem:
        if not isinstance(raw, Mapping):
            raise InvalidParameterError(f"{field} must be an object", work_order_id=work_order_id)
        index = raw.get("index")
        if isinstance(index, bool) or not isinstance(index, int) or index < 0:
            raise InvalidParameterError(
                f"{field}.index must be a non-negative integer", work_order_id=work_order_id
            )
        where = f"{field}[index {index}]."
        ekey = _optional_str(raw, "encryptedDataEncryptionKey", where, work_order_id)
        if ekey in SESSION_KEY_MARKERS:
            mode, wrapped = ItemMode.SESSION_KEY, None
        elif ekey == PLAINTEXT_MARKER:
            mode, wrapped = ItemMode.PLAINTEXT, None
        else:
            mode = ItemMode.DATA_KEY
            wrapped = decode_hex(ekey, where + "encryptedDataEncryptionKey", work_order_id=work_order_id)
            if not wrapped:
                raise InvalidParameterError(
                    f"{where}encryptedDataEncryptionKey is empty", work_order_id=work_order_id
                )
        data_text = _optional_str(raw, "data", where, work_order_id)
        if require_data and "data" not in raw:
            raise InvalidParameterError(f"{where}data is required", work_order_id=work_order_id)
        data = decode_base64(data_text, where + "data", work_order_id=work_order_id)
        hash_text = _optional_str(raw, "dataHash", where, work_order_id)
        data_hash = decode_hex(hash_text, where + "dataHash", work_order_id=work_order_id) if hash_text else None
        if data_hash is not None and len(data_hash) != 32:
            raise InvalidParameterError(
                f"{where}dataHash must be a SHA-256 digest (64 hex digits)", work_order_id=work_order_id
            )
        iv_text = _optional_str(raw, "iv", where, work_order_id)
        iv = decode_hex(iv_text, where + "iv", work_order_id=work_order_id) if iv_text else None
        if iv is not None and len(iv) != GCM_IV_BYTES:
            raise InvalidParameterError(f"{where}iv must be 12 bytes", work_order_id=work_order_id)
        return cls(
            index=index, mode=mode, data=data, data_hash=data_hash, iv=iv, wrapped_key=wrapped,
            text=ItemText(index, hash_text, data_text, ekey, iv_text),
        )


def _parse_items(raw: Any, field: str, wo_id: str | None, *, required: bool) -> tuple[DataItem, ...]:
    if raw is None and not required:
        return ()
    if not isinstance(raw, list) or (required and not raw):
        raise InvalidParameterError(f"{field} must be a non-empty array of data items", work_order_id=wo_id)
    items = [DataItem.parse(item, field, work_order_id=wo_id, require_data=required) for item in raw]
    if len(items) > 1:
        items.sort(key=lambda item: item.index)
        if len({item.index for item in items}) != len(items):
            raise InvalidParameterError(f"{field} has duplicate indexes", work_order_id=wo_id)
    return tuple(items)


def _check_mode(params: Mapping[str, Any], field: str, supported: str, wo_id: str) -> None:
    """An optional mode field: a string naming `supported` (any case), else 2 or 6."""
    value = params.get(field)
    if value is None:
        return
    if not isinstance(value, str):
        raise InvalidParameterError(f"{field} must be a string", work_order_id=wo_id)
    if value.upper() != supported:
        raise UnsupportedModeError(f"{field} {value[:40]!r} is not supported; use {supported}", work_order_id=wo_id)


def _workload(params: Mapping[str, Any], wo_id: str) -> tuple[str, str]:
    """workloadId as sent and the workload name it encodes."""
    raw = params.get("workloadId")
    if not isinstance(raw, str) or not raw:
        raise InvalidParameterError("workloadId is required (hex of the workload name)", work_order_id=wo_id)
    try:
        return raw, decode_hex(raw, "workloadId", work_order_id=wo_id).decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidParameterError("workloadId is not hex of a UTF-8 name", work_order_id=wo_id) from None


def _required_hex(params: Mapping[str, Any], field: str, wo_id: str) -> bytes:
    value = decode_hex(params.get(field), field, work_order_id=wo_id)
    if not value:
        raise InvalidParameterError(f"{field} is required", work_order_id=wo_id)
    return value


def _requester_signature(params: Mapping[str, Any], wo_id: str) -> tuple[bytes | None, VerifyingKey | None]:
    """The optional requesterSignature and the verifyingKey it needs."""
    text = _optional_str(params, "requesterSignature", "", wo_id)
    pem = _optional_str(params, "verifyingKey", "", wo_id)
    if not text:
        return None, None
    signature = decode_base64(text, "requesterSignature", work_order_id=wo_id)
    if not pem:
        raise InvalidParameterError(
            "requesterSignature needs verifyingKey (the requester's PEM public key)", work_order_id=wo_id
        )
    try:
        return signature, VerifyingKey(pem)
    except ValueError:
        raise InvalidParameterError("verifyingKey is not a PEM secp256k1 public key", work_order_id=wo_id) from None


@dataclass(frozen=True)
class WorkOrderRequest:
    """A WorkOrderSubmit request whose shape has been checked (no key has been used yet)."""

    work_order_id: str
    worker_id: str
    requester_id: str
    requester_nonce: str
    workload_id_text: str  # hex, as sent
    workload_id: str  # the workload's name
    in_data: tuple[DataItem, ...]
    out_data: tuple[DataItem, ...]
    encrypted_session_key: bytes
    session_key_iv: bytes | None
    encrypted_request_hash: bytes
    requester_signature: bytes | None
    requester_verifying_key: VerifyingKey | None
    response_timeout_ms: int | None

    @classmethod
    def parse(cls, request: Any) -> WorkOrderRequest:
        """Check a decoded WorkOrderSubmit JSON-RPC request; raise code 2 or 6 on a fault."""
        if not isinstance(request, Mapping):
            raise InvalidParameterError("the work order must be a JSON object (a WorkOrderSubmit request)")
        method = request.get("method")
        if method is not None and method != "WorkOrderSubmit":
            raise InvalidParameterError("the inner request's method must be WorkOrderSubmit")
        params = request.get("params")
        if not isinstance(params, Mapping):
            raise InvalidParameterError("WorkOrderSubmit params must be an object")
        work_order_id = check_id(params.get("workOrderId"), "workOrderId")
        wo_id = work_order_id  # from here on, errors name the (valid hex) work order
        worker_id = check_id(params.get("workerId"), "workerId", work_order_id=wo_id)
        requester_id = check_id(params.get("requesterId"), "requesterId", work_order_id=wo_id)
        requester_nonce = check_nonce(params.get("requesterNonce"), work_order_id=wo_id)

        _check_mode(params, "payloadFormat", SUPPORTED_PAYLOAD_FORMAT, wo_id)
        _check_mode(params, "dataEncryptionAlgorithm", SUPPORTED_DATA_ALGORITHM, wo_id)
        timeout = params.get("responseTimeoutMSecs")
        if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, int) or timeout < 0):
            raise InvalidParameterError("responseTimeoutMSecs must be a non-negative integer", work_order_id=wo_id)
        raw_workload, workload_id = _workload(params, wo_id)
        session_key = _required_hex(params, "encryptedSessionKey", wo_id)
        iv_text = _optional_str(params, "sessionKeyIv", "", wo_id)
        session_key_iv = decode_hex(iv_text, "sessionKeyIv", work_order_id=wo_id) if iv_text else None
        if session_key_iv is not None and len(session_key_iv) != GCM_IV_BYTES:
            raise InvalidParameterError("sessionKeyIv must be 12 bytes (24 hex digits)", work_order_id=wo_id)
        request_hash = _required_hex(params, "encryptedRequestHash", wo_id)
        signature, verifying_key = _requester_signature(params, wo_id)
        _optional_str(params, "workerEncryptionKey", "", wo_id)

        return cls(
            work_order_id=work_order_id,
            worker_id=worker_id,
            requester_id=requester_id,
            requester_nonce=requester_nonce,
            workload_id_text=raw_workload,
            workload_id=workload_id,
            in_data=_parse_items(params.get("inData"), "inData", wo_id, required=True),
            out_data=_parse_items(params.get("outData"), "outData", wo_id, required=False),
            encrypted_session_key=session_key,
            session_key_iv=session_key_iv,
            encrypted_request_hash=request_hash,
            requester_signature=signature,
            requester_verifying_key=verifying_key,
            response_timeout_ms=timeout,
        )

    def request_hash(self) -> bytes:
        """The request hash (§6.6.1) over the fields as sent."""
        return request_hash(
            requester_nonce=self.requester_nonce,
            work_order_id=self.work_order_id,
            worker_id=self.worker_id,
            workload_id=self.workload_id_text,
            requester_id=self.requester_id,
            in_data=[item.text for item in self.in_data],
            out_data=[item.text for item in self.out_data],
        )


@dataclass(slots=True)
class WorkOrderResult:
    """A work-order result (§6.1 response): the request's ids, the worker's nonce and outputs.

    Not frozen: the worker signs the result it has built, then sets `worker_signature`."""

    work_order_id: str
    workload_id: str
    worker_id: str
    requester_id: str
    worker_nonce: str
    out_data: tuple[ItemText, ...]
    worker_signature: str = ""

    def response_hash(self) -> bytes:
        """The response hash (§6.6.2) over the fields as sent."""
        return response_hash(
            worker_nonce=self.worker_nonce,
            work_order_id=self.work_order_id,
            worker_id=self.worker_id,
            workload_id=self.workload_id,
            requester_id=self.requester_id,
            out_data=self.out_data,
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "workOrderId": self.work_order_id,
            "workloadId": self.workload_id,
            "workerId": self.worker_id,
            "requesterId": self.requester_id,
            "workerNonce": self.worker_nonce,
            "workerSignature": self.worker_signature,
            "outData": [item.to_json() for item in self.out_data],
        }

    @classmethod
    def parse(cls, result: Any) -> WorkOrderResult:
        """A decoded result object; `ValueError` if its shape is not a result's."""
        if not isinstance(result, Mapping) or not isinstance(result.get("outData"), list):
            raise ValueError("the reply has neither a result with outData nor an error")
        names = ("workOrderId", "workloadId", "workerId", "requesterId", "workerNonce", "workerSignature")
        texts = [result.get(name) for name in names]
        if not all(value is None or isinstance(value, str) for value in texts):
            raise ValueError("the result's ids, nonce and signature must be strings")
        try:
            items = tuple(ItemText.from_json(item) for item in result["outData"])
        except (TypeError, AttributeError):
            raise ValueError("the result's outData items are malformed") from None
        work_order_id, workload_id, worker_id, requester_id, worker_nonce, signature = (value or "" for value in texts)
        return cls(work_order_id, workload_id, worker_id, requester_id, worker_nonce, items, signature)

"""Parsed, validated work-order requests (EEA TC 1.1 §6.1, §6.5), as typed models that nothing
changes once they are built (slotted, not frozen: a frozen one costs a call per field per order).

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


_b64decode = base64.b64decode
_fromhex = bytes.fromhex  # looked up once: `bytes.fromhex` binds a new method on every use (about 40 % of the call)


def _from_hex(text: str) -> bytes | None:
    """The bytes of an even number of hex digits after an optional `0x`, or None for anything
    else: `bytes.fromhex` skips whitespace, so its result is checked to account for every
    character (a work order id that is echoed into logs and replies must carry none). Done in
    C: hex fields of several KiB pass through here on every order. Text without `0x`, the usual
    case, is decoded at the first try (`x` is not a hex digit)."""
    try:
        raw = _fromhex(text)
    except ValueError:
        if text[:2] not in ("0x", "0X"):
            return None
        try:
            raw = _fromhex(text[2:])
        except ValueError:
            return None
        return raw if 2 * len(raw) == len(text) - 2 else None
    return raw if 2 * len(raw) == len(text) else None


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


def _from_base64(text: str) -> bytes | None:
    """The bytes of standard base64 text as `base64.b64decode(validate=True)` reads it, or None."""
    try:
        return _b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None


def decode_base64(value: Any, field: str, *, work_order_id: str | None = None) -> bytes:
    if not isinstance(value, str):
        raise InvalidParameterError(f"{field} must be a base64 string", work_order_id=work_order_id)
    raw = _from_base64(value)
    if raw is None:
        raise InvalidParameterError(f"{field} is not valid base64", work_order_id=work_order_id)
    return raw


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


_ITEM_TEXTS = ("encryptedDataEncryptionKey", "data", "dataHash", "iv")


def _where(field: str, index: int) -> str:
    return f"{field}[index {index}]."


@dataclass(slots=True)
class DataItem:
    """One inData/outData item (§6.5), its binary fields decoded, its text kept for hashing.
    Not frozen (a frozen one sets each field through `object.__setattr__`, and one or more are
    made per order); nothing changes it after `parse`."""

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
        """Check one item's shape and decode its fields, in one pass over them: the error
        message (code 2 or 6) is only built for a field that fails."""
        if type(raw) is not dict and not isinstance(raw, Mapping):
            raise InvalidParameterError(f"{field} must be an object", work_order_id=work_order_id)
        get = raw.get
        index = get("index")
        if isinstance(index, bool) or not isinstance(index, int) or index < 0:
            raise InvalidParameterError(
                f"{field}.index must be a non-negative integer", work_order_id=work_order_id
            )
        ekey, data_text, hash_text, iv_text = get("encryptedDataEncryptionKey"), get("data"), get("dataHash"), get("iv")
        if not (type(ekey) is str and type(data_text) is str and type(hash_text) is str and type(iv_text) is str):
            where = _where(field, index)  # null or absent is "", anything but text is refused
            ekey, data_text, hash_text, iv_text = (_optional_str(raw, name, where, work_order_id) for name in _ITEM_TEXTS)
        wrapped = None
        if ekey in SESSION_KEY_MARKERS:
            mode = ItemMode.SESSION_KEY
        elif ekey == PLAINTEXT_MARKER:
            mode = ItemMode.PLAINTEXT
        else:
            mode = ItemMode.DATA_KEY
            wrapped = _from_hex(ekey)
            if not wrapped:
                where = _where(field, index)
                decode_hex(ekey, where + "encryptedDataEncryptionKey", work_order_id=work_order_id)  # not hex: raises
                raise InvalidParameterError(f"{where}encryptedDataEncryptionKey is empty", work_order_id=work_order_id)
        if require_data and "data" not in raw:
            raise InvalidParameterError(f"{_where(field, index)}data is required", work_order_id=work_order_id)
        data = _from_base64(data_text)
        if data is None:
            raise InvalidParameterError(f"{_where(field, index)}data is not valid base64", work_order_id=work_order_id)
        data_hash = _from_hex(hash_text) if hash_text else None
        if hash_text and (data_hash is None or len(data_hash) != 32):
            where = _where(field, index)
            decode_hex(hash_text, where + "dataHash", work_order_id=work_order_id)  # not hex: raises
            raise InvalidParameterError(
                f"{where}dataHash must be a SHA-256 digest (64 hex digits)", work_order_id=work_order_id
            )
        iv = _from_hex(iv_text) if iv_text else None
        if iv_text and (iv is None or len(iv) != GCM_IV_BYTES):
            where = _where(field, index)
            decode_hex(iv_text, where + "iv", work_order_id=work_order_id)  # not hex: raises
            raise InvalidParameterError(f"{where}iv must be 12 bytes", work_order_id=work_order_id)
        return cls(index, mode, data, data_hash, iv, wrapped, ItemText(index, hash_text, data_text, ekey, iv_text))


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


def _is_plain_id(value: Any) -> bool:
    """The usual id: text of at most MAX_ID_DIGITS hex digits (`check_id` judges the rest)."""
    return type(value) is str and len(value) <= MAX_ID_DIGITS and _HEX_ID(value) is not None


def _ids(params: Mapping[str, Any]) -> tuple[str, str, str, str]:
    """workOrderId, workerId, requesterId and requesterNonce, each by the id rule (code 2).
    Each check is one test on the usual value; anything else goes to the helper that says what
    is wrong with it (and raises), so the messages live in one place."""
    get = params.get
    work_order_id: Any = get("workOrderId")
    worker_id: Any = get("workerId")
    requester_id: Any = get("requesterId")
    if not _is_plain_id(work_order_id):
        work_order_id = check_id(work_order_id, "workOrderId")
    if not _is_plain_id(worker_id):
        worker_id = check_id(worker_id, "workerId", work_order_id=work_order_id)
    if not _is_plain_id(requester_id):
        requester_id = check_id(requester_id, "requesterId", work_order_id=work_order_id)
    return work_order_id, worker_id, requester_id, check_nonce(get("requesterNonce"), work_order_id=work_order_id)


def _session_fields(params: Mapping[str, Any], wo_id: str) -> tuple[bytes, bytes | None, bytes]:
    """encryptedSessionKey, sessionKeyIv (None when null or "") and encryptedRequestHash, decoded."""
    get = params.get
    text = get("encryptedSessionKey")
    session_key = _from_hex(text) if type(text) is str else None
    if not session_key:
        session_key = _required_hex(params, "encryptedSessionKey", wo_id)
    iv_text = get("sessionKeyIv")
    session_key_iv = None
    if iv_text is not None and iv_text != "":  # null or "": none (Avalon's prefixed IVs)
        session_key_iv = _from_hex(iv_text) if type(iv_text) is str else None
        if session_key_iv is None or len(session_key_iv) != GCM_IV_BYTES:
            decode_hex(_optional_str(params, "sessionKeyIv", "", wo_id), "sessionKeyIv", work_order_id=wo_id)
            raise InvalidParameterError("sessionKeyIv must be 12 bytes (24 hex digits)", work_order_id=wo_id)
    text = get("encryptedRequestHash")
    request_hash = _from_hex(text) if type(text) is str else None
    if not request_hash:
        request_hash = _required_hex(params, "encryptedRequestHash", wo_id)
    return session_key, session_key_iv, request_hash


@dataclass(slots=True)
class WorkOrderRequest:
    """A WorkOrderSubmit request whose shape has been checked (no key has been used yet). Not
    frozen, for the same reason as `DataItem`: fourteen fields set one call each, per order."""

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
        if type(request) is not dict and not isinstance(request, Mapping):
            raise InvalidParameterError("the work order must be a JSON object (a WorkOrderSubmit request)")
        method = request.get("method")
        if method is not None and method != "WorkOrderSubmit":
            raise InvalidParameterError("the inner request's method must be WorkOrderSubmit")
        params = request.get("params")
        if type(params) is not dict and not isinstance(params, Mapping):
            raise InvalidParameterError("WorkOrderSubmit params must be an object")
        get = params.get
        work_order_id, worker_id, requester_id, requester_nonce = _ids(params)
        wo_id = work_order_id  # from here on, errors name the (valid hex) work order
        if get("payloadFormat", SUPPORTED_PAYLOAD_FORMAT) != SUPPORTED_PAYLOAD_FORMAT:
            _check_mode(params, "payloadFormat", SUPPORTED_PAYLOAD_FORMAT, wo_id)
        if get("dataEncryptionAlgorithm", SUPPORTED_DATA_ALGORITHM) != SUPPORTED_DATA_ALGORITHM:
            _check_mode(params, "dataEncryptionAlgorithm", SUPPORTED_DATA_ALGORITHM, wo_id)
        timeout = get("responseTimeoutMSecs")
        if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, int) or timeout < 0):
            raise InvalidParameterError("responseTimeoutMSecs must be a non-negative integer", work_order_id=wo_id)
        raw_workload, workload_id = _workload(params, wo_id)
        session_key, session_key_iv, request_hash = _session_fields(params, wo_id)
        signature: bytes | None = None
        verifying_key: VerifyingKey | None = None
        text, pem = get("requesterSignature"), get("verifyingKey")
        if (text is not None and text != "") or (pem is not None and type(pem) is not str):
            signature, verifying_key = _requester_signature(params, wo_id)
        text = get("workerEncryptionKey")
        if text is not None and type(text) is not str:
            _optional_str(params, "workerEncryptionKey", "", wo_id)  # raises
        out_data = get("outData")

        return cls(
            work_order_id=work_order_id,
            worker_id=worker_id,
            requester_id=requester_id,
            requester_nonce=requester_nonce,
            workload_id_text=raw_workload,
            workload_id=workload_id,
            in_data=_parse_items(get("inData"), "inData", wo_id, required=True),
            out_data=() if out_data is None else _parse_items(out_data, "outData", wo_id, required=False),
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

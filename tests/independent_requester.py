"""An independent, test-only work-order requester.

It shares no code with `avalon_worker`: pycryptodomex does RSA-OAEP and AES-GCM, python-ecdsa does
secp256k1, and the hashes are written again from the protocol notes (EEA TC 1.1 §6.6, hashed the
way Avalon does). A bug shared by the worker and our own client therefore cannot hide from tests
that talk to the worker through this module.

Typical use::

    signup = fetch_signup(endpoint)
    frame, ctx = build_work_order(signup, "python-hello", [ItemSpec(b"World")])
    assert open_response(send(endpoint, frame), ctx) == [b"Hello World"]
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import ecdsa
import zmq
from Cryptodome.Cipher import AES, PKCS1_OAEP
from Cryptodome.Hash import SHA1
from Cryptodome.PublicKey import RSA
from ecdsa.util import sigdecode_der, sigencode_der

__all__ = [
    "DATA_KEY",
    "IV_BYTES",
    "ItemSpec",
    "MalformedReply",
    "ReplyError",
    "RequestContext",
    "RequesterError",
    "VerificationError",
    "aes_gcm_decrypt",
    "aes_gcm_encrypt",
    "build_work_order",
    "concat_items",
    "fetch_signup",
    "frame",
    "open_response",
    "request_hash",
    "reseal",
    "response_hash",
    "send",
    "send_raw",
    "verify_signup",
]

IV_BYTES = 12
KEY_BYTES = 32
TAG_BYTES = 16

# Put this as an outData item's encryptedDataEncryptionKey to have a fresh data key wrapped for it.
DATA_KEY = "data-key"

ItemMode = Literal["session", "plain", "data-key"]
HexStyle = Literal["lower", "upper", "0x"]
SForm = Literal["any", "low", "high"]

_ITEM_FIELDS = ("dataHash", "data", "encryptedDataEncryptionKey", "iv")
_ID_FIELDS = ("workOrderId", "workerId", "workloadId", "requesterId")
_SESSION_MARKERS = (None, "", "null")


class RequesterError(Exception):
    """Base class of everything this module raises about a peer."""


class ReplyError(RequesterError):
    """The worker answered with a JSON-RPC error object."""

    def __init__(self, code: Any, message: Any, data: Any = None, reply_id: Any = None) -> None:
        super().__init__(f"worker error {code}: {message}")
        self.code = code
        self.message = message
        self.data = data
        self.reply_id = reply_id


class MalformedReply(RequesterError):
    """The reply does not have the shape the protocol requires."""


class VerificationError(RequesterError):
    """A signature, hash, tag or copied id in the reply does not check out."""


# Primitives ---------------------------------------------------------------------------------


def sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def aes_gcm_encrypt(key: bytes, iv: bytes, plaintext: bytes) -> bytes:
    """AES-256-GCM without associated data: ciphertext ‖ 16-byte tag."""
    ciphertext, tag = AES.new(key, AES.MODE_GCM, nonce=iv, mac_len=TAG_BYTES).encrypt_and_digest(
        plaintext
    )
    return ciphertext + tag


def aes_gcm_decrypt(key: bytes, iv: bytes, data: bytes) -> bytes:
    """Inverse of `aes_gcm_encrypt`; raises `VerificationError` on a bad tag or input."""
    if len(data) < TAG_BYTES or not iv:
        raise VerificationError("AES-GCM input too short")
    cipher = AES.new(key, AES.MODE_GCM, nonce=iv, mac_len=TAG_BYTES)
    try:
        return cipher.decrypt_and_verify(data[:-TAG_BYTES], data[-TAG_BYTES:])
    except ValueError as exc:
        raise VerificationError("AES-GCM tag does not verify") from exc


def rsa_oaep_encrypt(public_pem: str, plaintext: bytes) -> bytes:
    """RSA-OAEP with SHA-1 and MGF1-SHA-1 (EEA TC 1.1, as Avalon wraps keys)."""
    key = RSA.import_key(public_pem)
    return PKCS1_OAEP.new(key, hashAlgo=SHA1).encrypt(plaintext)


# Hashes (EEA TC 1.1 §6.6.1, §6.6.2, computed on the strings as transmitted) ------------------


def _text(value: Any) -> str:
    # A JSON null for an optional field hashes like an absent one.
    if value is None:
        return ""
    if not isinstance(value, str):
        raise TypeError(f"hashed field must be a string, not {type(value).__name__}")
    return value


def concat_items(items: Iterable[Mapping[str, Any]]) -> str:
    """dataHash+data+encryptedDataEncryptionKey+iv of every item, items in index order."""
    ordered = sorted(items, key=lambda item: item["index"])
    return "".join(_text(item.get(name)) for item in ordered for name in _ITEM_FIELDS)


def request_hash(params: Mapping[str, Any]) -> bytes:
    """The 32-byte request hash of WorkOrderSubmit params."""
    ids = "".join(
        _text(params.get(name))
        for name in ("requesterNonce", "workOrderId", "workerId", "workloadId", "requesterId")
    )
    digest = sha256(ids.encode("utf-8")) + sha256(concat_items(params["inData"]).encode("utf-8"))
    if params.get("outData"):
        digest += sha256(concat_items(params["outData"]).encode("utf-8"))
    return sha256(digest)


def response_hash(result: Mapping[str, Any]) -> bytes:
    """The 32-byte response hash of a work-order result object."""
    ids = "".join(
        _text(result.get(name))
        for name in ("workerNonce", "workOrderId", "workerId", "workloadId", "requesterId")
    )
    return sha256(
        sha256(ids.encode("utf-8")) + sha256(concat_items(result["outData"]).encode("utf-8"))
    )


# Building a request -------------------------------------------------------------------------


@dataclass(frozen=True)
class ItemSpec:
    """One inData item to build.

    mode: "session" (AES-GCM under the session key), "plain" (eKey "-", base64 plaintext) or
    "data-key" (a fresh 32-byte key K, wrapped RSA-OAEP then AES-GCM under the session key with a
    12-byte IV prefix; the data is AES-GCM under K).
    own_iv: a fresh 12-byte `iv` for this item; False sends `iv` "" so the worker falls back to
    sessionKeyIv, or to a 12-byte IV prefix on the data when the request has no sessionKeyIv.
    data_hash: True sends the hex SHA-256 of the plaintext, False omits it, a string is sent as is.
    session_marker: the eKey sent for a "session" item ("null", "", or None to omit the field).
    index: the item's index; None means its position in the list.
    """

    plaintext: bytes
    mode: ItemMode = "session"
    own_iv: bool = True
    data_hash: bool | str = True
    session_marker: str | None = "null"
    index: int | None = None


@dataclass
class RequestContext:
    """What the requester must remember to check and open the reply."""

    signup: dict[str, Any]
    request: dict[str, Any]  # the inner WorkOrderSubmit JSON-RPC request, as sent
    session_key: bytes
    session_key_iv: bytes | None
    outer_id: int | str = 1
    requester_key: ecdsa.SigningKey | None = None
    s_form: SForm = "any"
    # index → data key K the requester supplied for that outData item
    out_data_keys: dict[int, bytes] = field(default_factory=dict)
    # every IV this request used under the session key (a reply must not use them again)
    session_ivs: set[bytes] = field(default_factory=set)

    @property
    def params(self) -> dict[str, Any]:
        return self.request["params"]

    @property
    def inner_id(self) -> Any:
        return self.request["id"]

    @property
    def request_hash(self) -> bytes:
        return request_hash(self.params)


def _styled(raw: bytes, hex_style: HexStyle) -> str:
    text = raw.hex()
    if hex_style == "upper":
        return text.upper()
    if hex_style == "0x":
        return "0x" + text
    if hex_style == "lower":
        return text
    raise ValueError(f"unknown hex_style {hex_style!r}")


def _fresh_session_iv(ctx: RequestContext) -> bytes:
    while True:
        iv = secrets.token_bytes(IV_BYTES)
        if iv not in ctx.session_ivs:
            ctx.session_ivs.add(iv)
            return iv


def _seal_session(ctx: RequestContext, plaintext: bytes, iv: bytes | None) -> bytes:
    """Encrypt under the session key with `iv`, or with a fresh IV sent as a 12-byte prefix."""
    if iv is not None:
        return aes_gcm_encrypt(ctx.session_key, iv, plaintext)
    prefix = _fresh_session_iv(ctx)
    return prefix + aes_gcm_encrypt(ctx.session_key, prefix, plaintext)


def _wrap_data_key(ctx: RequestContext, data_key: bytes) -> str:
    wrapped = rsa_oaep_encrypt(ctx.signup["encryption_key"], data_key)
    return _seal_session(ctx, wrapped, None).hex()


def _build_item(ctx: RequestContext, spec: ItemSpec, position: int) -> dict[str, Any]:
    item: dict[str, Any] = {"index": position if spec.index is None else spec.index}
    if spec.data_hash is True:
        item["dataHash"] = hashlib.sha256(spec.plaintext).hexdigest()
    elif isinstance(spec.data_hash, str):
        item["dataHash"] = spec.data_hash

    if spec.mode == "plain":
        item["data"] = base64.b64encode(spec.plaintext).decode("ascii")
        item["encryptedDataEncryptionKey"] = "-"
        return item

    own_iv = _fresh_session_iv(ctx) if spec.own_iv else None
    if spec.mode == "session":
        iv = own_iv if own_iv is not None else ctx.session_key_iv
        data = _seal_session(ctx, spec.plaintext, iv)
        if spec.session_marker is not None:
            item["encryptedDataEncryptionKey"] = spec.session_marker
    elif spec.mode == "data-key":
        data_key = secrets.token_bytes(KEY_BYTES)
        item["encryptedDataEncryptionKey"] = _wrap_data_key(ctx, data_key)
        iv = own_iv if own_iv is not None else ctx.session_key_iv
        if iv is None:
            iv = secrets.token_bytes(IV_BYTES)
            data = iv + aes_gcm_encrypt(data_key, iv, spec.plaintext)
        else:
            data = aes_gcm_encrypt(data_key, iv, spec.plaintext)
    else:
        raise ValueError(f"unknown item mode {spec.mode!r}")
    item["data"] = base64.b64encode(data).decode("ascii")
    item["iv"] = own_iv.hex() if own_iv is not None else ""
    return item


def _build_out_item(ctx: RequestContext, template: Mapping[str, Any]) -> dict[str, Any]:
    item = dict(template)
    if item.get("encryptedDataEncryptionKey") == DATA_KEY:
        data_key = secrets.token_bytes(KEY_BYTES)
        item["encryptedDataEncryptionKey"] = _wrap_data_key(ctx, data_key)
        ctx.out_data_keys[item["index"]] = data_key
    return item


def frame(request: Mapping[str, Any], outer_id: int | str = 1) -> str:
    """The outer ProcessWorkOrder frame carrying an inner request as a JSON string."""
    return json.dumps(
        {"jsonrpc": "2.0", "id": outer_id, "method": "ProcessWorkOrder", "params": json.dumps(request)}
    )


def _sign(key: ecdsa.SigningKey, digest: bytes, s_form: SForm) -> bytes:
    order = key.curve.order
    r, s = key.sign_digest(digest, sigencode=lambda r, s, _order: (r, s))
    if (s_form == "low" and s > order // 2) or (s_form == "high" and s <= order // 2):
        s = order - s
    return sigencode_der(r, s, order)


def reseal(ctx: RequestContext) -> str:
    """Recompute encryptedRequestHash (and the signature) after editing `ctx.request`.

    Returns the new outer frame. The request hash is encrypted as `build_work_order` does: under
    sessionKeyIv when the request has one, otherwise with a fresh 12-byte IV prefix.
    """
    digest = request_hash(ctx.params)
    ctx.params["encryptedRequestHash"] = _seal_session(ctx, digest, ctx.session_key_iv).hex()
    if ctx.requester_key is not None:
        signature = _sign(ctx.requester_key, digest, ctx.s_form)
        ctx.params["requesterSignature"] = base64.b64encode(signature).decode("ascii")
        ctx.params["verifyingKey"] = ctx.requester_key.get_verifying_key().to_pem().decode("ascii")
    return frame(ctx.request, ctx.outer_id)


def build_work_order(
    signup: Mapping[str, Any],
    workload_name: str,
    items: list[ItemSpec],
    *,
    out_data: list[dict[str, Any]] | None = None,
    sign: bool = False,
    session_key_iv: bool = True,
    inner_id: int | str | None = None,
    outer_id: int | str = 1,
    hex_style: HexStyle = "lower",
    s_form: SForm = "any",
    requester_key: ecdsa.SigningKey | None = None,
    session_key: bytes | None = None,
    fixed_session_key_iv: bytes | None = None,
    ids: Mapping[str, str] | None = None,
    minimal: bool = False,
    extra_params: Mapping[str, Any] | None = None,
) -> tuple[str, RequestContext]:
    """Build a ProcessWorkOrder frame; returns (outer frame text, context for `open_response`).

    The signup is verified first. inData items are sent in the order given (not sorted).
    out_data items are sent as given, except that an item whose encryptedDataEncryptionKey is
    `DATA_KEY` gets a fresh data key wrapped for the worker. Without sessionKeyIv
    (session_key_iv=False) every ciphertext under the session key that has no own `iv` carries a
    12-byte IV prefix. hex_style ("lower", "upper", "0x") applies to the five hex ids, which are
    hashed as sent. sign=True signs the request hash with `requester_key` (a fresh secp256k1 key
    if None); s_form forces a "low" or "high" S, "any" keeps what python-ecdsa produced.
    For known-answer tests: session_key and fixed_session_key_iv replace the random ones; ids
    (workOrderId, requesterId, requesterNonce, workerId, workloadId) are sent exactly as given.
    minimal=True leaves out the optional responseTimeoutMSecs, payloadFormat and
    dataEncryptionAlgorithm, as Avalon's original test client does; extra_params are added to the
    params unchanged (none of them is hashed).
    """
    verify_signup(signup)
    if session_key is None:
        session_key = secrets.token_bytes(KEY_BYTES)
    if inner_id is None:
        inner_id = 2 + secrets.randbelow(2**31)

    ctx = RequestContext(
        signup=dict(signup),
        request={},
        session_key=session_key,
        session_key_iv=None,
        outer_id=outer_id,
        s_form=s_form,
    )
    if session_key_iv:
        ctx.session_key_iv = fixed_session_key_iv or _fresh_session_iv(ctx)
        ctx.session_ivs.add(ctx.session_key_iv)
    if sign:
        ctx.requester_key = requester_key or ecdsa.SigningKey.generate(curve=ecdsa.SECP256k1)

    worker_id_source = signup["verifying_key"].encode("utf-8")
    params: dict[str, Any] = {} if minimal else {
        "responseTimeoutMSecs": 10000,
        "payloadFormat": "JSON-RPC",
        "dataEncryptionAlgorithm": "AES-GCM-256",
    }
    params |= {
        "workOrderId": _styled(secrets.token_bytes(32), hex_style),
        "workerId": _styled(sha256(worker_id_source), hex_style),
        "workloadId": _styled(workload_name.encode("utf-8"), hex_style),
        "requesterId": _styled(secrets.token_bytes(32), hex_style),
        "requesterNonce": _styled(secrets.token_bytes(16), hex_style),
        "encryptedSessionKey": rsa_oaep_encrypt(signup["encryption_key"], session_key).hex(),
    }
    params.update(ids or {})
    if ctx.session_key_iv is not None:
        params["sessionKeyIv"] = ctx.session_key_iv.hex()
    params["inData"] = [_build_item(ctx, spec, n) for n, spec in enumerate(items)]
    if out_data is not None:
        params["outData"] = [_build_out_item(ctx, item) for item in out_data]
    params.update(extra_params or {})

    ctx.request = {"jsonrpc": "2.0", "method": "WorkOrderSubmit", "id": inner_id, "params": params}
    return reseal(ctx), ctx


# Identity -----------------------------------------------------------------------------------


def _load_verifying_key(pem: Any) -> ecdsa.VerifyingKey:
    if not isinstance(pem, str):
        raise MalformedReply("verifying_key is not a PEM string")
    try:
        key = ecdsa.VerifyingKey.from_pem(pem)
    except (ValueError, ecdsa.UnexpectedDER, ecdsa.MalformedPointError) as exc:
        raise MalformedReply("verifying_key is not a PEM public key") from exc
    if key.curve != ecdsa.SECP256k1:
        raise MalformedReply("verifying_key is not on secp256k1")
    return key


def _verify(key: ecdsa.VerifyingKey, signature_der: bytes, digest: bytes, what: str) -> None:
    try:
        key.verify_digest(signature_der, digest, sigdecode=sigdecode_der)
    except (ecdsa.BadSignatureError, ecdsa.BadDigestError, ecdsa.UnexpectedDER) as exc:
        raise VerificationError(f"{what} does not verify") from exc


def verify_signup(signup: Mapping[str, Any]) -> None:
    """Check encryption_key_signature (DER over SHA-256 of the PEM text) against verifying_key."""
    for name in ("verifying_key", "encryption_key", "encryption_key_signature"):
        if not isinstance(signup.get(name), str):
            raise MalformedReply(f"signup has no string {name}")
    key = _load_verifying_key(signup["verifying_key"])
    try:
        RSA.import_key(signup["encryption_key"])
        signature = bytes.fromhex(signup["encryption_key_signature"])
    except ValueError as exc:
        raise MalformedReply("signup encryption key or its signature is malformed") from exc
    _verify(key, signature, sha256(signup["encryption_key"].encode("utf-8")), "encryption_key_signature")


# Opening a reply ----------------------------------------------------------------------------


def _b64(text: Any, what: str) -> bytes:
    if not isinstance(text, str):
        raise MalformedReply(f"{what} is not a string")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise MalformedReply(f"{what} is not base64") from exc


def _hex(text: Any, what: str) -> bytes:
    if not isinstance(text, str):
        raise MalformedReply(f"{what} is not a string")
    try:
        return bytes.fromhex(text)
    except ValueError as exc:
        raise MalformedReply(f"{what} is not hex") from exc


def _mode_of(ekey: Any) -> str:
    if ekey in _SESSION_MARKERS:
        return "session"
    if ekey == "-":
        return "plain"
    return "data-key"


def _open_item(
    ctx: RequestContext, item: Mapping[str, Any], reply_ivs: set[bytes], allow_iv_reuse: bool
) -> bytes:
    index = item["index"]
    ekey = item.get("encryptedDataEncryptionKey")
    data = _b64(item.get("data"), f"outData[{index}].data")
    if ekey == "-":
        return data

    iv_text = item.get("iv") or ""
    if iv_text:
        iv = _hex(iv_text, f"outData[{index}].iv")
    elif ctx.session_key_iv is not None:
        iv = ctx.session_key_iv
    else:
        iv, data = data[:IV_BYTES], data[IV_BYTES:]

    if ekey in _SESSION_MARKERS:
        key = ctx.session_key
        if not allow_iv_reuse:
            if iv in ctx.session_ivs or iv in reply_ivs:
                raise VerificationError(f"outData[{index}] reuses an IV under the session key")
            reply_ivs.add(iv)
    else:
        key = _requested_data_key(ctx, index, ekey)
    return aes_gcm_decrypt(key, iv, data)


def _requested_data_key(ctx: RequestContext, index: Any, ekey: Any) -> bytes:
    sent = next(
        (it for it in ctx.params.get("outData") or [] if it.get("index") == index), None
    )
    if (
        index not in ctx.out_data_keys
        or sent is None
        or not isinstance(ekey, str)
        or ekey.lower() != str(sent.get("encryptedDataEncryptionKey")).lower()
    ):
        raise VerificationError(f"outData[{index}] names a data key the requester did not supply")
    return ctx.out_data_keys[index]


def open_response(
    reply: Mapping[str, Any], ctx: RequestContext, *, allow_iv_reuse: bool = False
) -> list[bytes]:
    """Check a work-order reply end to end and return the output plaintexts in index order.

    Raises `ReplyError` for a JSON-RPC error reply, `MalformedReply` for a wrong shape, and
    `VerificationError` when the worker signature, a copied id, a GCM tag or a dataHash fails, or
    when an output under the session key reuses an IV (unless allow_iv_reuse, for legacy workers).
    When the request had outData, the reply must hold exactly those indices, each in the mode
    requested. An encrypted item's IV is its `iv`, else sessionKeyIv, else a 12-byte prefix on
    its data, for data-key items as for session-key items.
    """
    result = _result_of(reply, ctx)
    out_data = result["outData"]
    for name in _ID_FIELDS:
        if result.get(name) != ctx.params.get(name):
            raise VerificationError(f"result {name} is not the request's")
    try:
        digest = response_hash(result)
    except TypeError as exc:
        raise MalformedReply(f"result has a non-string hashed field: {exc}") from exc
    signature = _b64(result.get("workerSignature"), "workerSignature")
    _verify(_load_verifying_key(ctx.signup["verifying_key"]), signature, digest, "workerSignature")

    indices = [it["index"] for it in out_data]
    if len(set(indices)) != len(indices):
        raise MalformedReply("outData indices repeat")
    requested = ctx.params.get("outData") or []
    if requested:
        wanted = {it["index"]: _mode_of(it.get("encryptedDataEncryptionKey")) for it in requested}
        got = {it["index"]: _mode_of(it.get("encryptedDataEncryptionKey")) for it in out_data}
        if wanted != got:
            raise VerificationError(f"outData modes {got} are not the requested {wanted}")

    reply_ivs: set[bytes] = set()
    plaintexts = []
    for item in sorted(out_data, key=lambda it: it["index"]):
        plaintext = _open_item(ctx, item, reply_ivs, allow_iv_reuse)
        data_hash = item.get("dataHash")
        if data_hash and data_hash.lower() != hashlib.sha256(plaintext).hexdigest():
            raise VerificationError(f"outData[{item['index']}] dataHash does not match")
        plaintexts.append(plaintext)
    return plaintexts


def _result_of(reply: Mapping[str, Any], ctx: RequestContext) -> Mapping[str, Any]:
    """The result object of a well-shaped reply to this request (errors raised as such)."""
    if not isinstance(reply, Mapping):
        raise MalformedReply("reply is not a JSON object")
    if "error" in reply:
        error = reply["error"] if isinstance(reply["error"], Mapping) else {}
        raise ReplyError(error.get("code"), error.get("message"), error.get("data"), reply.get("id"))
    if reply.get("jsonrpc") != "2.0":
        raise MalformedReply("reply is not JSON-RPC 2.0")
    if reply.get("id") != ctx.inner_id or type(reply.get("id")) is not type(ctx.inner_id):
        raise VerificationError(f"reply id {reply.get('id')!r} is not the inner id {ctx.inner_id!r}")
    result = reply.get("result")
    if not isinstance(result, Mapping):
        raise MalformedReply("reply has no result object")
    out_data = result.get("outData")
    if not isinstance(out_data, list) or not out_data:
        raise MalformedReply("result has no outData items")
    if not all(isinstance(it, Mapping) and isinstance(it.get("index"), int) for it in out_data):
        raise MalformedReply("every outData item needs an integer index")
    if not isinstance(result.get("workerNonce"), str) or not result["workerNonce"]:
        raise MalformedReply("result has no workerNonce")
    return result


# Transport ----------------------------------------------------------------------------------


def send_raw(endpoint: str, data: bytes | str, timeout_ms: int = 10000) -> bytes:
    """Send one frame on a fresh REQ socket and return the reply bytes; TimeoutError if none."""
    payload = data.encode("utf-8") if isinstance(data, str) else data
    socket = zmq.Context.instance().socket(zmq.REQ)
    try:
        socket.setsockopt(zmq.LINGER, 0)
        socket.setsockopt(zmq.SNDTIMEO, timeout_ms)
        socket.setsockopt(zmq.RCVTIMEO, timeout_ms)
        socket.connect(endpoint)
        socket.send(payload)
        return socket.recv()
    except zmq.Again as exc:
        raise TimeoutError(f"no reply from {endpoint} within {timeout_ms} ms") from exc
    finally:
        socket.close(linger=0)


def send(endpoint: str, frame_text: str, timeout_ms: int = 10000) -> dict[str, Any]:
    """Send a frame and return the reply parsed as a JSON object."""
    reply = json.loads(send_raw(endpoint, frame_text, timeout_ms).decode("utf-8"))
    if not isinstance(reply, dict):
        raise MalformedReply("reply is not a JSON object")
    return reply


def fetch_signup(endpoint: str, timeout_ms: int = 10000) -> dict[str, Any]:
    """Ask the worker for its signup (the reply is the bare signup object) and verify it."""
    signup = send(
        endpoint,
        json.dumps({"jsonrpc": "2.0", "id": 1, "method": "ProcessWorkerSignup", "params": None}),
        timeout_ms,
    )
    verify_signup(signup)
    return signup

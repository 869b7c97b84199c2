"""The worker's side of a work order, with no I/O: open a request, then seal the results.

`open_work_order` uses the worker's keys to check integrity and decrypt the inputs;
`seal_result` encrypts the workload's outputs and signs the response
(`insecure_seal_result_reusing_session_iv` is the original worker's nonce-reusing way, for
old clients only). Between the two the
caller runs the workload wherever it likes (in-process, or in an isolated process).
"""

from __future__ import annotations

import binascii
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from . import crypto
from .crypto import CryptoError
from .errors import IntegrityError, WorkloadError
from .hashing import ItemText
from .models import DataItem, ItemMode, WorkOrderRequest, WorkOrderResult


def _default_output(index: int) -> DataItem:
    return DataItem(
        index=index, mode=ItemMode.SESSION_KEY, data=b"", data_hash=None, iv=None, wrapped_key=None,
        text=ItemText(index, encrypted_key="null"),
    )


# Output items returned when the request does not say how it wants them (§6.5): one item per
# result, indexed 0, 1, ... in the order the workload returned them, under the session key,
# marked the way Avalon's clients mark it. (Avalon's per-item workloads answer each input
# item; its clients decrypt every item whatever its index.)
DEFAULT_OUTPUT = _default_output(0)

WORKER_NONCE_BYTES = 16
_b2a_base64 = binascii.b2a_base64  # base64.b64encode without its Python wrapper


class WorkerKeys(Protocol):
    """What the core needs from the worker's identity."""

    def decrypt_session_key(self, encrypted: bytes) -> bytes: ...

    def sign_digest(self, digest: bytes) -> bytes: ...


@dataclass(slots=True)
class InputItem:
    """A decrypted input: its index and plaintext. (Not frozen: frozen ones cost a call per
    field, and these are made per order; nothing changes them.)"""

    index: int
    data: bytes


@dataclass(slots=True)
class OpenedWorkOrder:
    """A request that passed every integrity check, with its inputs in index order (not frozen,
    as `InputItem`)."""

    request: WorkOrderRequest
    session_key: bytes
    inputs: tuple[InputItem, ...]
    output_keys: tuple[bytes | None, ...]  # per requested output item: its data key, if any

    def outputs_wanted(self, results: int) -> tuple[DataItem, ...]:
        """The output items for `results` results: the request's outData, else the default."""
        if self.request.out_data:
            return self.request.out_data
        return (DEFAULT_OUTPUT,) if results == 1 else tuple(_default_output(n) for n in range(results))

    def output_keys_for(self, wanted: tuple[DataItem, ...]) -> tuple[bytes | None, ...]:
        return self.output_keys if self.request.out_data else (None,) * len(wanted)


def _unwrap_data_key(wrapped: bytes, session_key: bytes, keys: WorkerKeys) -> bytes:
    # §6.5: a per-item key, RSA-OAEP to the worker, then AES-GCM under the session key (IV prefixed).
    data_key = keys.decrypt_session_key(crypto.aes_gcm_decrypt_prefixed(session_key, wrapped))
    if len(data_key) != crypto.AES_KEY_BYTES:
        raise CryptoError("data key is not 32 bytes")
    return data_key


def _decrypt_item(item: DataItem, session_key: bytes, session_iv: bytes | None, keys: WorkerKeys) -> bytes:
    if item.mode is ItemMode.PLAINTEXT:
        return item.data
    key = session_key if item.mode is ItemMode.SESSION_KEY else _unwrap_data_key(item.wrapped_key or b"", session_key, keys)
    iv = item.iv or session_iv
    if iv is None:
        return crypto.aes_gcm_decrypt_prefixed(key, item.data)
    return crypto.aes_gcm_decrypt(key, iv, item.data)


def open_work_order(request: WorkOrderRequest, keys: WorkerKeys) -> OpenedWorkOrder:
    """Check the request's integrity and decrypt its inputs.

    Every failure raises `IntegrityError` (code 4) with one fixed message; its `step` says
    which check failed, for the worker's log only.
    """
    step = "session key"
    item: DataItem | None = None  # the item being opened: `step` names it ({}) only if it fails
    try:
        session_key = keys.decrypt_session_key(request.encrypted_session_key)
        if len(session_key) != crypto.AES_KEY_BYTES:
            raise CryptoError("session key is not 32 bytes")
        step = "request hash"
        session_iv = request.session_key_iv
        if session_iv is None:
            sent_hash = crypto.aes_gcm_decrypt_prefixed(session_key, request.encrypted_request_hash)
        else:
            sent_hash = crypto.aes_gcm_decrypt(session_key, session_iv, request.encrypted_request_hash)
        digest = request.request_hash()
        if not crypto.digests_equal(sent_hash, digest):
            raise CryptoError("request hash mismatch")
        if request.requester_signature is not None and request.requester_verifying_key is not None:
            step = "requester signature"
            request.requester_verifying_key.verify_digest(request.requester_signature, digest)
        step = "inData[{}]"
        inputs = []
        for item in request.in_data:
            plaintext = _decrypt_item(item, session_key, session_iv, keys)
            if item.data_hash is not None and not crypto.digests_equal(crypto.sha256(plaintext), item.data_hash):
                raise CryptoError("dataHash mismatch")
            inputs.append(InputItem(item.index, plaintext))
        step, item = "outData[{}] data key", None
        output_keys: list[bytes | None] = []
        for item in request.out_data:
            output_keys.append(
                _unwrap_data_key(item.wrapped_key, session_key, keys) if item.wrapped_key is not None else None
            )
    except CryptoError:
        raise IntegrityError(step.format(item.index) if item is not None else step,
                             work_order_id=request.work_order_id) from None
    return OpenedWorkOrder(request, session_key, tuple(inputs), tuple(output_keys))


def _outputs_wanted(opened: OpenedWorkOrder, outputs: Sequence[bytes]) -> tuple[tuple[DataItem, ...], tuple[bytes | None, ...]]:
    wanted = opened.outputs_wanted(len(outputs))
    if len(outputs) != len(wanted) or not outputs:
        raise WorkloadError(
            f"workload {opened.request.workload_id!r} returned {len(outputs)} result(s) "
            f"but the request's outData asks for {len(wanted)}" if outputs else
            f"workload {opened.request.workload_id!r} returned no result",
            work_order_id=opened.request.work_order_id,
        )
    return wanted, opened.output_keys_for(wanted)


def _output_item(item: DataItem, plaintext: bytes, data: bytes, iv_text: str) -> ItemText:
    return ItemText(
        index=item.index,
        data_hash=crypto.sha256(plaintext).hex(),
        data=_b2a_base64(data, newline=False).decode("ascii"),
        encrypted_key=item.text.encrypted_key,
        iv=iv_text,
    )


class _Randomness:
    """The random bytes one result needs, drawn at once (one system call for the IVs and the
    worker nonce) and handed out in turn; no slice is handed out twice."""

    __slots__ = ("_bytes", "_at")

    def __init__(self, random_bytes: Callable[[int], bytes], ivs: int) -> None:
        self._bytes = random_bytes(crypto.GCM_IV_BYTES * ivs + WORKER_NONCE_BYTES)
        self._at = 0

    def take(self, size: int) -> bytes:
        at = self._at
        if at + size > len(self._bytes):
            raise RuntimeError("a result drew more random bytes than it reserved")
        self._at = at + size
        return self._bytes[at : at + size]


def _sign(opened: OpenedWorkOrder, out_data: list[ItemText], keys: WorkerKeys, randomness: _Randomness) -> WorkOrderResult:
    request = opened.request
    result = WorkOrderResult(
        work_order_id=request.work_order_id,
        workload_id=request.workload_id_text,
        worker_id=request.worker_id,
        requester_id=request.requester_id,
        worker_nonce=_b2a_base64(randomness.take(WORKER_NONCE_BYTES), newline=False).decode("ascii"),
        out_data=tuple(out_data),
    )
    result.worker_signature = _b2a_base64(keys.sign_digest(result.response_hash()), newline=False).decode("ascii")
    return result


def seal_result(
    opened: OpenedWorkOrder,
    outputs: Sequence[bytes],
    keys: WorkerKeys,
    *,
    random_bytes: Callable[[int], bytes] = crypto.random_bytes,
) -> WorkOrderResult:
    """Encrypt the workload's outputs as the request asked and sign the response (§6.6.2).

    Each encrypted output gets a fresh random IV, sent in its `iv` field.
    """
    wanted, keys_wanted = _outputs_wanted(opened, outputs)
    randomness = _Randomness(random_bytes, sum(item.mode is not ItemMode.PLAINTEXT for item in wanted))
    out_data = [
        _seal_item(opened, item, data_key, plaintext, randomness)
        for item, data_key, plaintext in zip(wanted, keys_wanted, outputs, strict=True)
    ]
    return _sign(opened, out_data, keys, randomness)


def _seal_item(
    opened: OpenedWorkOrder, item: DataItem, data_key: bytes | None, plaintext: bytes, randomness: _Randomness
) -> ItemText:
    if item.mode is ItemMode.PLAINTEXT:
        return _output_item(item, plaintext, plaintext, "")
    iv = randomness.take(crypto.GCM_IV_BYTES)
    key = opened.session_key if data_key is None else data_key
    return _output_item(item, plaintext, crypto.aes_gcm_encrypt(key, iv, plaintext), iv.hex())


def insecure_seal_result_reusing_session_iv(
    opened: OpenedWorkOrder,
    outputs: Sequence[bytes],
    keys: WorkerKeys,
    *,
    random_bytes: Callable[[int], bytes] = crypto.random_bytes,
) -> WorkOrderResult:
    """INSECURE: the original worker's sealing, for old clients that ignore each item's `iv`.

    Outputs under the session key are encrypted under the request's `sessionKeyIv`, the same
    AES-GCM key and nonce that already protect the request hash and the inputs: anyone who sees
    the traffic can recover plaintext (PROTOCOL §7). Without a `sessionKeyIv` a random IV is
    prefixed to the ciphertext, as Avalon does. Outputs with their own data key get fresh IVs.
    """
    wanted, keys_wanted = _outputs_wanted(opened, outputs)
    session_iv = opened.request.session_key_iv
    fresh = sum(item.mode is ItemMode.DATA_KEY or (item.mode is ItemMode.SESSION_KEY and session_iv is None) for item in wanted)
    randomness = _Randomness(random_bytes, fresh)
    out_data = []
    for item, data_key, plaintext in zip(wanted, keys_wanted, outputs, strict=True):
        if item.mode is not ItemMode.SESSION_KEY:
            out_data.append(_seal_item(opened, item, data_key, plaintext, randomness))
        elif session_iv is not None:
            out_data.append(_output_item(item, plaintext, crypto.aes_gcm_encrypt(opened.session_key, session_iv, plaintext), ""))
        else:
            iv = randomness.take(crypto.GCM_IV_BYTES)
            out_data.append(_output_item(item, plaintext, iv + crypto.aes_gcm_encrypt(opened.session_key, iv, plaintext), ""))
    return _sign(opened, out_data, keys, randomness)

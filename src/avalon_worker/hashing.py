"""Request and response hashes (EEA TC 1.1 §6.6.1, §6.6.2), byte for byte as Avalon computes them.

The spec says to decode fields before hashing; Avalon's components hash the strings exactly as
transmitted (case, `0x` and the literal text "null" or "-" included), and interoperability wins.
Inputs are plain JSON mappings; nothing here sorts or mutates the caller's data.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from .crypto import sha256

_ITEM_FIELDS = ("dataHash", "data", "encryptedDataEncryptionKey", "iv")


def _text(value: Any) -> str:
    # JSON null for an optional field hashes like an absent one.
    return "" if value is None else str(value)


def concat_items(items: Iterable[Mapping[str, Any]]) -> str:
    """The data items' fields concatenated in index order (§6.6.1: items hashed by index)."""
    ordered = sorted(items, key=lambda item: item["index"])
    return "".join(_text(item.get(field)) for item in ordered for field in _ITEM_FIELDS)


def request_hash(params: Mapping[str, Any]) -> bytes:
    """The 32-byte request hash of WorkOrderSubmit params."""
    ids = "".join(
        _text(params.get(field))
        for field in ("requesterNonce", "workOrderId", "workerId", "workloadId", "requesterId")
    )
    parts = sha256(ids.encode("utf-8")) + sha256(concat_items(params["inData"]).encode("utf-8"))
    out_data = params.get("outData")
    if out_data:
        parts += sha256(concat_items(out_data).encode("utf-8"))
    return sha256(parts)


def response_hash(result: Mapping[str, Any]) -> bytes:
    """The 32-byte response hash of a work-order result object."""
    ids = "".join(
        _text(result.get(field))
        for field in ("workerNonce", "workOrderId", "workerId", "workloadId", "requesterId")
    )
    return sha256(
        sha256(ids.encode("utf-8")) + sha256(concat_items(result["outData"]).encode("utf-8"))
    )

"""Request and response hashes (EEA TC 1.1 §6.6.1, §6.6.2), byte for byte as Avalon computes them.

The spec says to decode fields before hashing; Avalon's components hash the strings exactly as
transmitted (case, `0x` and the literal text "null" or "-" included), and interoperability wins.
Inputs are plain JSON mappings; nothing here sorts or mutates the caller's data.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import hashlib

from .crypto import sha256

_ITEM_FIELDS = ("dataHash", "data", "encryptedDataEncryptionKey", "iv")


def _text(value: Any) -> str:
    # JSON null for an optional field hashes like an absent one.
    return "" if value is None else str(value)


def _item_texts(items: Iterable[Mapping[str, Any]]) -> Iterator[str]:
    """The data items' hashed fields as text, items in index order (§6.6.1: items hashed by index)."""
    for item in sorted(items, key=lambda item: item["index"]):
        for field in _ITEM_FIELDS:
            yield _text(item.get(field))


def concat_items(items: Iterable[Mapping[str, Any]]) -> str:
    """The data items' fields concatenated in index order."""
    return "".join(_item_texts(items))


def items_digest(items: Iterable[Mapping[str, Any]]) -> bytes:
    """SHA-256 of `concat_items(items)` in UTF-8, fed field by field: a megabyte item is not
    copied into one joined string first."""
    digest = hashlib.sha256()
    for text in _item_texts(items):
        digest.update(text.encode("utf-8"))
    return digest.digest()


_REQUEST_IDS = ("requesterNonce", "workOrderId", "workerId", "workloadId", "requesterId")
_RESPONSE_IDS = ("workerNonce", "workOrderId", "workerId", "workloadId", "requesterId")


def _ids_digest(fields: Mapping[str, Any], names: tuple[str, ...]) -> bytes:
    return sha256("".join([_text(fields.get(name)) for name in names]).encode("utf-8"))


def request_hash(params: Mapping[str, Any]) -> bytes:
    """The 32-byte request hash of WorkOrderSubmit params."""
    parts = _ids_digest(params, _REQUEST_IDS) + items_digest(params["inData"])
    out_data = params.get("outData")
    if out_data:
        parts += items_digest(out_data)
    return sha256(parts)


def response_hash(result: Mapping[str, Any]) -> bytes:
    """The 32-byte response hash of a work-order result object."""
    return sha256(_ids_digest(result, _RESPONSE_IDS) + items_digest(result["outData"]))

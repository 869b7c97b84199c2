"""Request and response hashes (EEA TC 1.1 §6.6.1, §6.6.2), byte for byte as Avalon computes them.

The spec says to decode fields before hashing; Avalon's components hash the strings exactly as
transmitted (case, `0x` and the literal text "null" or "-" included), and interoperability wins.
So the models keep every hashed field's text as sent (`ItemText`), and hashing works on them;
nothing here sorts or mutates the caller's data.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from operator import attrgetter
from typing import Any


@dataclass(slots=True)
class ItemText:
    """A data item's hashed fields, as transmitted (an absent field or JSON null is "").
    Not frozen: two are made for every order, and a frozen one costs three times as much."""

    index: int
    data_hash: str = ""
    data: str = ""
    encrypted_key: str = ""
    iv: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "dataHash": self.data_hash,
            "data": self.data,
            "encryptedDataEncryptionKey": self.encrypted_key,
            "iv": self.iv,
        }

    @classmethod
    def from_json(cls, item: Mapping[str, Any]) -> ItemText:
        """The hashed fields of a decoded item; `TypeError` if one is neither text nor null."""
        index = item.get("index")
        if isinstance(index, bool) or not isinstance(index, int):
            raise TypeError("index must be an integer")
        texts = (item.get("dataHash"), item.get("data"), item.get("encryptedDataEncryptionKey"), item.get("iv"))
        for value in texts:
            if value is not None and not isinstance(value, str):
                raise TypeError("data item fields must be strings")
        data_hash, data, encrypted_key, iv = texts
        return cls(index, data_hash or "", data or "", encrypted_key or "", iv or "")


_by_index = attrgetter("index")
_sha256 = hashlib.sha256


def _in_index_order(items: Iterable[ItemText]) -> list[ItemText]:
    # §6.6.1: items hashed in index order (a copy: the caller's sequence is not reordered).
    return sorted(items, key=_by_index)


def concat_items(items: Iterable[ItemText]) -> str:
    """The data items' fields concatenated in index order."""
    return "".join(
        item.data_hash + item.data + item.encrypted_key + item.iv for item in _in_index_order(items)
    )


# Items up to this many characters are hashed as one string (one call); a longer one field by
# field, so that a megabyte item is not copied into a joined string first.
_JOIN_CHARS = 16 * 1024


def items_digest(items: Iterable[ItemText]) -> bytes:
    """SHA-256 of `concat_items(items)` in UTF-8."""
    digest = hashlib.sha256()
    update = digest.update
    for item in _in_index_order(items):
        data = item.data
        if len(data) <= _JOIN_CHARS:
            update(f"{item.data_hash}{data}{item.encrypted_key}{item.iv}".encode())
        else:
            update(item.data_hash.encode())
            update(data.encode())
            update(item.encrypted_key.encode())
            update(item.iv.encode())
    return digest.digest()


def _ids_digest(*texts: str) -> bytes:
    return _sha256("".join(texts).encode("utf-8")).digest()


def request_hash(
    *,
    requester_nonce: str,
    work_order_id: str,
    worker_id: str,
    workload_id: str,
    requester_id: str,
    in_data: Sequence[ItemText],
    out_data: Sequence[ItemText] = (),
) -> bytes:
    """The 32-byte request hash; `out_data` is hashed only when non-empty."""
    parts = _ids_digest(requester_nonce, work_order_id, worker_id, workload_id, requester_id) + items_digest(in_data)
    if out_data:
        parts += items_digest(out_data)
    return _sha256(parts).digest()


def response_hash(
    *,
    worker_nonce: str,
    work_order_id: str,
    worker_id: str,
    workload_id: str,
    requester_id: str,
    out_data: Iterable[ItemText],
) -> bytes:
    """The 32-byte response hash of a work-order result."""
    return _sha256(_ids_digest(worker_nonce, work_order_id, worker_id, workload_id, requester_id) + items_digest(out_data)).digest()


def submitted_request_hash(params: Mapping[str, Any]) -> bytes | None:
    """The request hash of a WorkOrderSubmit's decoded params, as the worker computes it, or None
    if a hashed field is not text (an order the worker refuses)."""
    texts: list[Any] = [params.get(name) for name in ("requesterNonce", "workOrderId", "workerId", "workloadId", "requesterId")]
    in_data, out_data = params.get("inData"), params.get("outData") or []
    if not all(isinstance(text, str) for text in texts) or not isinstance(in_data, list) or not isinstance(out_data, list):
        return None
    try:
        in_items = [ItemText.from_json(item) for item in in_data]
        out_items = [ItemText.from_json(item) for item in out_data]
    except (TypeError, AttributeError):  # an item that is not an object, or a field that is not text
        return None
    nonce, work_order_id, worker_id, workload_id, requester_id = texts
    return request_hash(requester_nonce=nonce, work_order_id=work_order_id, worker_id=worker_id, workload_id=workload_id,
                        requester_id=requester_id, in_data=in_items, out_data=out_items)

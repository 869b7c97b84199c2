"""An LRU of unwrapped session keys, so a requester that reuses its session key pays RSA once.

Keyed by SHA-256 of the RSA ciphertext: the same ciphertext always unwraps to the same key, so
the cache changes nothing an attacker can observe except time. Failed unwraps are not cached.
"""

from __future__ import annotations

from collections import OrderedDict

from .core import WorkerKeys
from .crypto import sha256

DEFAULT_SIZE = 4096


class SessionKeyCache:
    """Wraps a worker's keys; `decrypt_session_key` is served from the cache when it can be."""

    def __init__(self, keys: WorkerKeys, size: int = DEFAULT_SIZE) -> None:
        self._keys = keys
        self._size = size
        self._entries: OrderedDict[bytes, bytes] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def decrypt_session_key(self, encrypted: bytes) -> bytes:
        tag = sha256(encrypted)
        key = self._entries.get(tag)
        if key is not None:
            self._entries.move_to_end(tag)
            self.hits += 1
            return key
        key = self._keys.decrypt_session_key(encrypted)
        self.misses += 1
        if self._size > 0:
            self._entries[tag] = key
            if len(self._entries) > self._size:
                self._entries.popitem(last=False)
        return key

    def sign_digest(self, digest: bytes) -> bytes:
        return self._keys.sign_digest(digest)

"""A replay guard: refuse a work order whose `workOrderId` was served within a time window.

The table lives in anonymous shared memory made before the worker processes are forked, so
every process of a pool sees every order; a process-shared lock serialises the lookups. It has
a fixed number of slots: when the probe sequence of an id finds no free or expired slot the
guard is full, and the order is refused with BUSY rather than let through unchecked.
"""

from __future__ import annotations

import hashlib
import mmap
import multiprocessing
import struct
import time
from collections.abc import Callable
from enum import Enum

_SLOT = struct.Struct("<16sd")  # 16 bytes of SHA-256 of the id, expiry (monotonic seconds)
_PROBES = 32
DEFAULT_SLOTS = 1 << 17  # 131,072 ids, 3 MiB


class Seen(Enum):
    """What the guard says about an id."""

    NEW = "new"
    REPLAY = "replay"
    FULL = "full"


class ReplayGuard:
    """Remembers work order ids for `window_s` seconds."""

    def __init__(
        self, window_s: float, slots: int = DEFAULT_SLOTS, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if window_s <= 0 or slots <= 0:
            raise ValueError("the replay window and the slot count must be positive")
        self.window_s = window_s
        self._slots = slots
        self._clock = clock
        self._table = mmap.mmap(-1, slots * _SLOT.size)  # MAP_SHARED | MAP_ANONYMOUS: shared after fork
        self._lock = multiprocessing.get_context("fork").Lock()

    def check_and_record(self, work_order_id: str) -> Seen:
        """Record `work_order_id` (compared without `0x` and case) unless it was seen in the window."""
        normalised = work_order_id[2:] if work_order_id[:2] in ("0x", "0X") else work_order_id
        key = hashlib.sha256(normalised.lower().encode("utf-8")).digest()[:16]
        start = int.from_bytes(key[:8], "little") % self._slots
        now = self._clock()
        with self._lock:
            free = None
            for probe in range(_PROBES):
                offset = ((start + probe) % self._slots) * _SLOT.size
                stored, expiry = _SLOT.unpack_from(self._table, offset)
                if expiry > now and stored == key:
                    return Seen.REPLAY
                if free is None and expiry <= now:
                    free = offset
            if free is None:
                return Seen.FULL
            _SLOT.pack_into(self._table, free, key, now + self.window_s)
        return Seen.NEW

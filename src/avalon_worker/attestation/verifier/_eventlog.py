"""Event logs of a TD and RTMR replay: pure functions over bytes, no I/O.

Two kinds of log explain a TD's runtime measurement registers (RTMR0-3):

- the firmware's **CCEL** (`/sys/firmware/acpi/tables/data/CCEL`), a TCG PC Client crypto-agile
  log: a SHA-1-format "Spec ID Event03" event naming the digest algorithms, then
  `TCG_PCR_EVENT2` records `u32 mr_index ‖ u32 type ‖ u32 count ‖ {u16 alg ‖ digest}* ‖ u32 size
  ‖ data`, where mr_index 1-4 is RTMR0-3 (UEFI CC measurement protocol) and `EV_NO_ACTION`
  events extend nothing; the log area after the last event is padding (0xFF or zeros);
- the **worker's events**, published in its signup as `tdx_rtmr_events`: `{"rtmr", "digest",
  "event", "data"}` where digest = SHA-384 of `data` as canonical JSON.

Extending is `RTMR = SHA384(RTMR ‖ digest)` from 48 zero bytes. A log proves nothing by itself:
only when its replay equals the register a signed quote reports is it what the TD measured.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import EventLogError

RTMR_SIZE = 48
RTMR_COUNT = 4
ALG_SHA1 = 0x0004
ALG_SHA256 = 0x000B
ALG_SHA384 = 0x000C
ALG_SHA512 = 0x000D
EV_NO_ACTION = 0x00000003
SPEC_ID_SIGNATURE = b"Spec ID Event03\x00"
# The CCEL log area is what firmware reserved (LAML, typically 64 KiB to 1 MiB); be generous.
MAX_EVENT_LOG_SIZE = 16 * 1024 * 1024
MAX_WORKER_EVENTS = 1024
_CCEL_TABLE_SIGNATURE = b"CCEL"


def event_digest(data: Any) -> bytes:
    """SHA-384 of `data` as canonical JSON: what a worker event's `digest` must be."""
    text = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha384(text.encode("ascii")).digest()


def extend(register: bytes, digest: bytes) -> bytes:
    """One RTMR extension: SHA384(register ‖ digest)."""
    return hashlib.sha384(register + digest).digest()


def replay(
    events: Iterable[tuple[int, bytes]], *, start: Mapping[int, bytes] | None = None
) -> dict[int, bytes]:
    """The RTMR values that `(rtmr, sha384 digest)` events give, from `start` (else zeros).

    Only registers that some event extends are in the result.
    """
    values: dict[int, bytes] = {}
    for rtmr, digest in events:
        current = values.get(rtmr, (start or {}).get(rtmr, bytes(RTMR_SIZE)))
        values[rtmr] = extend(current, digest)
    return values


@dataclass(frozen=True)
class CcelEvent:
    """One event of a crypto-agile log; `mr_index` 1-4 are RTMR0-3."""

    mr_index: int
    event_type: int
    digests: dict[int, bytes]
    data: bytes = field(repr=False)

    @property
    def rtmr(self) -> int | None:
        """The RTMR this event extends, or None (EV_NO_ACTION, or MR index 0, which is MRTD)."""
        if self.event_type == EV_NO_ACTION or not 1 <= self.mr_index <= RTMR_COUNT:
            return None
        return self.mr_index - 1


@dataclass(frozen=True)
class EventLog:
    """A parsed CCEL: its digest algorithms (id → size) and events in log order."""

    algorithms: dict[int, int]
    events: tuple[CcelEvent, ...]

    def rtmr_events(self) -> list[tuple[int, bytes]]:
        """`(rtmr, sha384 digest)` for every event that extends an RTMR, in order."""
        return [(e.rtmr, e.digests[ALG_SHA384]) for e in self.events if e.rtmr is not None]


class _Cursor:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, n: int, what: str) -> bytes:
        if n > len(self.data) - self.pos:
            raise EventLogError(f"event log truncated: {what} needs {n} bytes at offset {self.pos}")
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def u32(self, what: str) -> int:
        return int(struct.unpack("<I", self.take(4, what))[0])

    def u16(self, what: str) -> int:
        return int(struct.unpack("<H", self.take(2, what))[0])

    def at_padding(self) -> bool:
        """At the end, or at the erased (0xFF) or zeroed rest of the log area: no more events.

        An MR index of 0xFFFFFFFF also ends the log, as it does for go-eventlog: it is where
        firmware stopped writing into the 0xFF-filled area.
        """
        rest = self.data[self.pos :]
        return not rest or rest.startswith(b"\xff\xff\xff\xff") or not rest.strip(b"\x00")


def _spec_id(data: bytes) -> dict[int, int]:
    """The algorithms (id → digest size) of a "Spec ID Event03" event's data."""
    c = _Cursor(data)
    if c.take(16, "Spec ID signature") != SPEC_ID_SIGNATURE:
        raise EventLogError("the first event is not a \"Spec ID Event03\": not a crypto-agile (CCEL) log")
    c.take(8, "Spec ID header")  # platform class, spec version, errata, uintn size
    count = c.u32("number of algorithms")
    if not 1 <= count <= 16:
        raise EventLogError(f"the Spec ID event names {count} digest algorithms")
    algorithms: dict[int, int] = {}
    for _ in range(count):
        alg, size = c.u16("algorithm id"), c.u16("digest size")
        if not 1 <= size <= 64:
            raise EventLogError(f"algorithm {alg:#06x} has a digest size of {size}")
        algorithms[alg] = size
    if ALG_SHA384 not in algorithms or algorithms[ALG_SHA384] != RTMR_SIZE:
        raise EventLogError("the log has no SHA-384 digests, so it cannot explain RTMRs")
    return algorithms


def _event2(c: _Cursor, algorithms: dict[int, int], number: int) -> CcelEvent:
    where = f"event {number}"
    mr_index = c.u32(f"{where} MR index")
    event_type = c.u32(f"{where} type")
    count = c.u32(f"{where} digest count")
    if not 1 <= count <= len(algorithms):
        raise EventLogError(f"{where} has {count} digests; the log uses {len(algorithms)} algorithms")
    digests: dict[int, bytes] = {}
    for _ in range(count):
        alg = c.u16(f"{where} algorithm")
        if alg not in algorithms:
            raise EventLogError(f"{where} has a digest of algorithm {alg:#06x} the Spec ID event does not name")
        digests[alg] = c.take(algorithms[alg], f"{where} digest")
    if ALG_SHA384 not in digests:
        raise EventLogError(f"{where} has no SHA-384 digest")
    data = c.take(c.u32(f"{where} data size"), f"{where} data")
    if mr_index > RTMR_COUNT and event_type != EV_NO_ACTION:
        raise EventLogError(f"{where} is for MR index {mr_index}; a TD has MRTD (0) and RTMR0-3 (1-4)")
    return CcelEvent(mr_index, event_type, digests, data)


def parse_ccel(data: bytes) -> EventLog:
    """Parse a CCEL log area (`/sys/firmware/acpi/tables/data/CCEL`); `EventLogError` if malformed."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise EventLogError(f"an event log is bytes, not {type(data).__name__}")
    data = bytes(data)
    if len(data) > MAX_EVENT_LOG_SIZE:
        raise EventLogError(f"event log of {len(data)} bytes exceeds the {MAX_EVENT_LOG_SIZE}-byte limit")
    if data.startswith(_CCEL_TABLE_SIGNATURE):
        raise EventLogError(
            "this is the CCEL ACPI table, not the log: give /sys/firmware/acpi/tables/data/CCEL"
        )
    c = _Cursor(data)
    # The first event is in the SHA-1 format (TCG_PCClientPCREvent) whatever the log's algorithms.
    c.take(4, "first event MR index")
    if c.u32("first event type") != EV_NO_ACTION:
        raise EventLogError("the first event is not EV_NO_ACTION: not a crypto-agile (CCEL) log")
    c.take(20, "first event digest")
    algorithms = _spec_id(c.take(c.u32("Spec ID event size"), "Spec ID event"))
    events: list[CcelEvent] = []
    while not c.at_padding():
        events.append(_event2(c, algorithms, len(events) + 1))
    return EventLog(algorithms, tuple(events))


@dataclass(frozen=True)
class WorkerEvent:
    """One event the worker extended into an RTMR and published with its signup."""

    rtmr: int
    digest: bytes
    event: str
    data: Any = field(repr=False)


def parse_worker_events(value: Any) -> tuple[WorkerEvent, ...]:
    """The signup's `tdx_rtmr_events`, each digest recomputed from its data.

    Raises `EventLogError` for a malformed list and for any digest that does not hash its data:
    a published event must say exactly what was measured.
    """
    if not isinstance(value, list):
        raise EventLogError("tdx_rtmr_events must be a list of events")
    if len(value) > MAX_WORKER_EVENTS:
        raise EventLogError(f"{len(value)} worker events are more than the {MAX_WORKER_EVENTS} accepted")
    events = []
    for i, item in enumerate(value):
        if not isinstance(item, dict) or set(item) != {"rtmr", "digest", "event", "data"}:
            raise EventLogError(f"worker event {i} must have exactly rtmr, digest, event and data")
        rtmr, digest_hex, name = item["rtmr"], item["digest"], item["event"]
        if not isinstance(rtmr, int) or isinstance(rtmr, bool) or not 0 <= rtmr < RTMR_COUNT:
            raise EventLogError(f"worker event {i} names RTMR {rtmr!r}; there are RTMR0-3")
        if not isinstance(name, str):
            raise EventLogError(f"worker event {i} has no event name")
        try:
            digest = bytes.fromhex(digest_hex)
        except (TypeError, ValueError):
            raise EventLogError(f"worker event {i} digest is not hex") from None
        if len(digest) != RTMR_SIZE:
            raise EventLogError(f"worker event {i} digest must be 48 bytes (SHA-384)")
        try:
            recomputed = event_digest(item["data"])
        except (TypeError, ValueError):
            raise EventLogError(f"worker event {i} data is not JSON") from None
        if not hmac.compare_digest(recomputed, digest):
            raise EventLogError(f"worker event {i} ({name}): its digest is not the SHA-384 of its data")
        events.append(WorkerEvent(rtmr, digest, name, item["data"]))
    return tuple(events)

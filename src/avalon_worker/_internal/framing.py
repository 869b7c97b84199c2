"""The one message format between the supervisor and its worker processes.

Both directions use plain stream socket pairs (no `SOCK_SEQPACKET`, which Gramine lacks), and
every message is a 13-byte header — kind (1 byte), sequence number (8 bytes), payload length
(4 bytes), big-endian — followed by the payload. The supervisor numbers every order; the
process's reply must carry the same number, so a reply can never be taken for another order's.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Sequence

from ..errors import Error

HEADER = struct.Struct(">BQI")
SEQ = struct.Struct(">Q")
ORDER = ord("O")  # supervisor → process: run the request frame in the payload
REVOKE = ord("X")  # supervisor → process: skip orders seq … (payload: last seq) not started yet
REPLY = ord("R")  # process → supervisor: b"method\tworkload\tstatus\n" + the reply frame
SKIPPED = ord("S")  # process → supervisor: a revoked order was not run
KINDS = frozenset({ORDER, REVOKE, REPLY, SKIPPED})
READ_BYTES = 1 << 16
_LARGE = READ_BYTES  # payloads beyond this are received straight into their own buffer

Buffer = bytes | bytearray | memoryview


class FramingError(Error):
    """The peer sent something that is not a message of this format."""


def encode(kind: int, seq: int, *parts: Buffer) -> list[Buffer]:
    """The buffers of one message (the parts are not copied)."""
    return [HEADER.pack(kind, seq, sum(map(len, parts))), *parts]


def unsent(buffers: Sequence[Buffer], sent: int) -> list[memoryview]:
    """What is left of `buffers` once the first `sent` bytes of them are written (not copied)."""
    views = [memoryview(b).cast("B") for b in buffers]
    while views and sent >= len(views[0]):
        sent -= len(views.pop(0))
    if views and sent:
        views[0] = views[0][sent:]
    return views


def send_all(sock: socket.socket, buffers: Sequence[Buffer]) -> None:
    """Write `buffers` completely on a blocking socket, gathered by the kernel."""
    sent = sock.sendmsg(buffers)
    if sent == sum(map(len, buffers)):  # nearly always: one system call
        return
    rest = unsent(buffers, sent)
    while rest:
        rest = unsent(rest, sock.sendmsg(rest))


class Reader:
    """Messages from one socket: `read` makes one system call and returns the messages it
    completed (None at end of file). A large payload is received into its own buffer, not
    copied again."""

    def __init__(self, max_payload: int) -> None:
        self.max_payload = max_payload
        self.drained = False  # the last read returned less than it asked for: nothing was left
        self._buffer = bytearray()
        self._chunk = memoryview(bytearray(READ_BYTES))
        self._large: tuple[int, int, bytearray] | None = None
        self._have = 0

    @property
    def partial(self) -> bool:
        """Part of a message has been received."""
        return bool(self._buffer) or self._large is not None

    def read(self, sock: socket.socket, flags: int = 0) -> list[tuple[int, int, bytearray]] | None:
        """One receive (`BlockingIOError` from a non-blocking socket with nothing to read)."""
        if self._large is not None:
            kind, seq, payload = self._large
            want = len(payload) - self._have
            size = sock.recv_into(memoryview(payload)[self._have :], want, flags)
            if not size:
                return None
            self.drained = size < want
            self._have += size
            if self._have < len(payload):
                return []
            self._large = None
            return [(kind, seq, payload)]
        size = sock.recv_into(self._chunk, READ_BYTES, flags)
        if not size:
            return None
        self.drained = size < READ_BYTES
        if not self._buffer:  # the usual case: parse the read in place, keep only an unfinished tail
            messages, offset = self._parse(self._chunk[:size])
            if offset < size:
                self._buffer += self._chunk[offset:size]
            return messages
        self._buffer += self._chunk[:size]
        messages, offset = self._parse(self._buffer)
        del self._buffer[:offset]
        return messages

    def _parse(self, data: bytearray | memoryview) -> tuple[list[tuple[int, int, bytearray]], int]:
        """The messages complete in `data`, and how many of its bytes they (and the start of a
        large payload, now in its own buffer) took."""
        offset, end = 0, len(data)
        messages: list[tuple[int, int, bytearray]] = []
        with memoryview(data) as view:
            while end - offset >= HEADER.size:
                kind, seq, size = HEADER.unpack_from(view, offset)
                if kind not in KINDS or size > self.max_payload:
                    raise FramingError(f"message kind {kind} of {size} bytes")
                start = offset + HEADER.size
                if start + size <= end:
                    messages.append((kind, seq, bytearray(view[start : start + size])))  # the one copy
                    offset = start + size
                elif size > _LARGE:
                    payload = bytearray(size)
                    self._have = end - start
                    payload[: self._have] = view[start:end]
                    self._large = (kind, seq, payload)
                    offset = end
                    break
                else:
                    break
        return messages, offset

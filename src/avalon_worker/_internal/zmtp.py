"""One ZMTP 3.x connection (ZeroMQ's wire protocol, RFC 23/37), with no I/O.

A `PeerStream` turns the bytes a peer sent into complete multipart messages; `message_buffers`
turns the messages we send into bytes. It speaks what a ZMQ socket speaks over NULL security:
the greeting, the READY handshake, PING/PONG heartbeats and framing. The pool's endpoint is its
user as a ROUTER serving REQ, DEALER and ROUTER peers; the benchmark's load generator uses it as
a DEALER. Anything else (another mechanism, an incompatible socket type, a malformed or oversized
frame) raises `ProtocolError`, after which the connection should be closed, as libzmq does.
"""

from __future__ import annotations

import struct

from ..errors import Error

SIGNATURE_HEAD, SIGNATURE_TAIL = 0xFF, 0x7F
GREETING_BYTES = 64
MORE, LONG, COMMAND = 0x01, 0x02, 0x04
PEER_TYPES = frozenset({b"REQ", b"DEALER", b"ROUTER"})  # what a ROUTER talks to
MAX_FRAMES = 64  # per message: a request is 2 to 4 frames; empty frames must not pile up unbounded
# A frame larger than this that has not fully arrived is kept as the pieces it arrives in and
# joined once, when complete: grown in one buffer it would be copied again and again (and leave
# holes in the heap that the allocator keeps), and a peer that sends most of a frame and stops
# would hold up to twice its size.
LARGE_FRAME_BYTES = 64 * 1024
_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")


class ProtocolError(Error):
    """The peer broke ZMTP or a limit; close its connection."""


def greeting(mechanism: bytes = b"NULL", as_server: bool = False) -> bytes:
    """Our 64-byte greeting: ZMTP 3.1."""
    return (
        bytes([SIGNATURE_HEAD]) + bytes(8) + bytes([SIGNATURE_TAIL, 3, 1])
        + mechanism.ljust(20, b"\x00") + bytes([1 if as_server else 0]) + bytes(31)
    )


def frame(body: bytes | bytearray | memoryview, *, more: bool = False, command: bool = False) -> bytes:
    """The header of one frame followed by its body (a copy: use `frame_header` for large bodies)."""
    return frame_header(len(body), more=more, command=command) + bytes(body)


def frame_header(size: int, *, more: bool = False, command: bool = False) -> bytes:
    flags = (MORE if more else 0) | (COMMAND if command else 0)
    if size > 255:
        return bytes([flags | LONG]) + _U64.pack(size)
    return bytes([flags, size])


def command(name: bytes, data: bytes = b"") -> bytes:
    return frame(bytes([len(name)]) + name + data, command=True)


def ready(socket_type: bytes) -> bytes:
    """A READY command announcing `socket_type`."""
    return command(b"READY", _property(b"Socket-Type", socket_type))


def _property(name: bytes, value: bytes) -> bytes:
    return bytes([len(name)]) + name + _U32.pack(len(value)) + value


def parse_properties(data: bytes) -> dict[bytes, bytes]:
    """The name/value pairs of a READY command's metadata (names are case-insensitive)."""
    found: dict[bytes, bytes] = {}
    offset = 0
    while offset < len(data):
        size = data[offset]
        name = data[offset + 1 : offset + 1 + size]
        offset += 1 + size
        if size == 0 or len(name) != size or offset + 4 > len(data):
            raise ProtocolError("malformed READY metadata")
        (value_size,) = _U32.unpack_from(data, offset)
        offset += 4
        if offset + value_size > len(data):
            raise ProtocolError("malformed READY metadata")
        found[name.lower()] = bytes(data[offset : offset + value_size])
        offset += value_size
    return found


# The header of every short frame, made once: a reply is three frames (routing tag, delimiter,
# body), each of which would otherwise make its header in a call of its own.
_SHORT_HEADERS = (tuple(bytes([0, size]) for size in range(256)), tuple(bytes([MORE, size]) for size in range(256)))


def message_buffers(parts: list[bytes | bytearray | memoryview]) -> list[bytes | bytearray | memoryview]:
    """The buffers that send one multipart message: frame headers and the parts themselves
    (a large part is not copied)."""
    buffers: list[bytes | bytearray | memoryview] = []
    if not parts:
        return buffers
    append = buffers.append
    more = _SHORT_HEADERS[1]
    for part in parts[:-1]:
        size = len(part)
        append(more[size] if size < 256 else frame_header(size, more=True))
        append(part)
    part = parts[-1]
    size = len(part)
    append(_SHORT_HEADERS[0][size] if size < 256 else frame_header(size))
    append(part)
    return buffers


class PeerStream:
    """One peer's connection as a `socket_type` socket sees it (a ROUTER unless told otherwise):
    feed it bytes, take the messages they complete; what the protocol itself must send
    (greeting, READY, PONG) collects in `outgoing`."""

    def __init__(
        self, max_message_bytes: int, socket_type: bytes = b"ROUTER", peer_types: frozenset[bytes] = PEER_TYPES
    ) -> None:
        self.max_message_bytes = max_message_bytes
        self.socket_type = socket_type
        self.peer_types = peer_types
        self.outgoing = bytearray(greeting() + ready(socket_type))  # NULL: READY needs no reply first
        self.peer_type: bytes | None = None
        self._buffer = bytearray()
        self._greeted = False
        self._parts: list[bytes] = []
        self._message_bytes = 0
        self._large: list[bytes] = []  # the pieces of a large frame still arriving
        self._large_flags = self._large_size = self._large_have = 0
        self.backlog = False  # `receive` stopped at its frame budget: call it again (with b"")

    @property
    def buffered(self) -> int:
        """Bytes held for messages not yet complete (and frames not yet parsed)."""
        return len(self._buffer) + self._message_bytes + self._large_have

    def release(self) -> None:
        """Let go of everything buffered (the connection is closed)."""
        self._buffer = bytearray()
        self._parts = []
        self._message_bytes = 0
        self._large = []
        self._large_have = 0

    def receive(self, data: bytes | bytearray | memoryview, max_frames: int = 1 << 62) -> list[list[bytes]]:
        """Take bytes from the peer; return the messages they complete (in order), parsing at
        most `max_frames` frames: beyond that `backlog` is set and the rest waits for the next call."""
        self.backlog = False
        complete: bytes | None = None  # a large frame that this data completes
        if self._large_size:
            complete, data = self._continue_large(data)
            if complete is None:
                return []
        self._buffer += data
        if not self._greeted and not self._check_greeting():
            return []
        return self._parse(max_frames, complete)

    def _parse(self, max_frames: int, complete: bytes | None) -> list[list[bytes]]:
        messages: list[list[bytes]] = []
        buffer, offset, end = self._buffer, 0, len(self._buffer)
        try:
            while complete is not None or offset + 2 <= end:
                if complete is not None:
                    flags, body, complete = self._large_flags, complete, None
                else:
                    if max_frames == 0:
                        self.backlog = True
                        break
                    max_frames -= 1
                    flags, frame, offset = self._frame(buffer, offset, end)
                    if frame is None:
                        break
                    body = frame
                self._take(flags, body, messages)
        finally:
            del buffer[:offset]
        return messages

    def _frame(self, buffer: bytearray, offset: int, end: int) -> tuple[int, bytes | None, int]:
        """The frame at `offset`: its flags, its body (None while it is incomplete) and where the
        next one starts. A large incomplete frame is taken into `_large`, to be continued."""
        flags = buffer[offset]
        if flags & ~(MORE | LONG | COMMAND):
            raise ProtocolError("reserved frame flags are set")
        if flags & LONG:
            if offset + 9 > end:
                return flags, None, offset
            (size,) = _U64.unpack_from(buffer, offset + 1)
            head = 9
        else:
            size, head = buffer[offset + 1], 2
        if size > self.max_message_bytes - self._message_bytes:
            raise ProtocolError(f"a message is larger than {self.max_message_bytes} bytes")
        stop = offset + head + size
        if stop <= end:
            return flags, bytes(buffer[offset + head : stop]), stop
        if size > LARGE_FRAME_BYTES:  # the rest arrives in pieces of its own
            self._large = [bytes(buffer[offset + head : end])]
            self._large_flags, self._large_size, self._large_have = flags, size, end - offset - head
            return flags, None, end
        return flags, None, offset

    def _take(self, flags: int, body: bytes, messages: list[list[bytes]]) -> None:
        """One whole frame: a command is handled, a message part kept; a last part ends a message."""
        if flags & COMMAND:
            if flags & MORE:
                raise ProtocolError("a command frame has the MORE flag")
            self._on_command(body)
            return
        if self.peer_type is None:
            raise ProtocolError("a message arrived before the READY handshake")
        if len(self._parts) == MAX_FRAMES:
            raise ProtocolError(f"a message has more than {MAX_FRAMES} frames")
        self._parts.append(body)
        self._message_bytes += len(body)
        if not flags & MORE:
            messages.append(self._parts)
            self._parts, self._message_bytes = [], 0

    def _continue_large(self, data: bytes | bytearray | memoryview) -> tuple[bytes | None, bytes | bytearray | memoryview]:
        """Take the next piece of the large frame in progress from `data`: the frame, if this
        completes it, and what follows it."""
        want = self._large_size - self._large_have
        piece = bytes(data[:want])
        self._large.append(piece)
        self._large_have += len(piece)
        if self._large_have < self._large_size:
            return None, b""
        complete = b"".join(self._large)
        self._large, self._large_size, self._large_have = [], 0, 0
        return complete, data[want:]

    def _check_greeting(self) -> bool:
        buffer = self._buffer
        if buffer and buffer[0] != SIGNATURE_HEAD:
            raise ProtocolError("not a ZMTP peer")
        if len(buffer) >= 10 and buffer[9] != SIGNATURE_TAIL:
            raise ProtocolError("not a ZMTP peer")
        if len(buffer) >= 11 and buffer[10] < 3:
            raise ProtocolError(f"ZMTP version {buffer[10]} is too old: this worker speaks ZMTP 3 (libzmq 4 or later)")
        if len(buffer) < GREETING_BYTES:
            return False
        mechanism = bytes(buffer[12:32]).rstrip(b"\x00")
        if mechanism != b"NULL":
            raise ProtocolError(f"security mechanism {mechanism[:20]!r} is not offered (only NULL)")
        del buffer[:GREETING_BYTES]
        self._greeted = True
        return True

    def _on_command(self, body: bytes) -> None:
        if not body or len(body) < 1 + body[0]:
            raise ProtocolError("malformed command")
        name, data = body[1 : 1 + body[0]], body[1 + body[0] :]
        if name == b"READY":
            if self.peer_type is not None:
                raise ProtocolError("a second READY")
            peer_type = parse_properties(data).get(b"socket-type")
            if peer_type not in self.peer_types:
                raise ProtocolError(f"a {peer_type!r} socket cannot talk to a {self.socket_type.decode()}")
            self.peer_type = peer_type
        elif name == b"ERROR":
            raise ProtocolError("the peer reported an error")
        elif self.peer_type is None:
            raise ProtocolError("a command other than READY arrived before READY")
        elif name == b"PING":  # ZMTP 3.1 heartbeat: TTL (2 bytes), then up to 16 bytes of context
            self.outgoing += command(b"PONG", data[2:18])
        # PONG and any other command need no answer

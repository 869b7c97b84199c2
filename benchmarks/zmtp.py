"""A minimal ZMTP 3.0 DEALER peer over one plain TCP socket: the benchmark's load generator.

The worker sees an ordinary ZMQ DEALER client (NULL security, REQ-compatible envelopes). Unlike
libzmq, this client has no I/O thread and writes a batch of requests with one system call, so
the load generator takes as little as possible of the CPU it shares with the worker under test.
Only what the benchmark needs is here: one connection, no reconnects, no heartbeats.
"""

from __future__ import annotations

import socket
import struct

_GREETING = b"\xff" + b"\x00" * 8 + b"\x7f" + b"\x03\x00" + b"NULL".ljust(20, b"\x00") + b"\x00" + b"\x00" * 31
_MORE, _LONG, _COMMAND = 0x01, 0x02, 0x04
_U64 = struct.Struct(">Q")


def _frame(body: bytes, more: bool, command: bool = False) -> bytes:
    flags = (_MORE if more else 0) | (_COMMAND if command else 0)
    if len(body) > 255:
        return bytes([flags | _LONG]) + _U64.pack(len(body)) + body
    return bytes([flags, len(body)]) + body


def message(parts: list[bytes]) -> bytes:
    """The bytes of one multipart message."""
    return b"".join(_frame(part, i < len(parts) - 1) for i, part in enumerate(parts))


def _ready(socket_type: bytes) -> bytes:
    name = b"Socket-Type"
    body = b"\x05READY" + bytes([len(name)]) + name + struct.pack(">I", len(socket_type)) + socket_type
    return _frame(body, more=False, command=True)


class DealerConnection:
    """One ZMTP 3.0 DEALER connection to a `tcp://host:port` endpoint."""

    def __init__(self, endpoint: str, timeout_s: float = 120.0) -> None:
        host, _, port = endpoint.removeprefix("tcp://").rpartition(":")
        self.sock = socket.create_connection((host, int(port)), timeout=timeout_s)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._buffer = bytearray()
        self._read = bytearray(1 << 20)  # reused: recv(1 MiB) would allocate and map 1 MiB per read
        self._read_view = memoryview(self._read)
        self.sock.sendall(_GREETING + _ready(b"DEALER"))
        greeting = self._read_exactly(64)
        if greeting[0] != 0xFF or greeting[9] != 0x7F or greeting[10] < 3:
            raise ConnectionError("the peer does not speak ZMTP 3")
        flags, body = self._next_frame()
        if not flags & _COMMAND or not body.startswith(b"\x05READY"):
            raise ConnectionError("the peer did not send READY")

    def send(self, data: bytes) -> None:
        """Send already-encoded messages (see `message`)."""
        self.sock.sendall(data)

    def receive(self) -> list[list[bytes]]:
        """Block until at least one message has arrived; return every complete one."""
        messages: list[list[bytes]] = []
        while not messages:
            messages = self.receive_available()
        return messages

    def receive_available(self) -> list[list[bytes]]:
        """One read (call it when the socket is readable); the messages it completed, maybe none."""
        size = self.sock.recv_into(self._read)
        if not size:
            raise ConnectionError("the worker closed the connection")
        self._buffer += self._read_view[:size]
        return self._complete_messages()

    def close(self) -> None:
        self.sock.close()

    def _read_exactly(self, size: int) -> bytes:
        while len(self._buffer) < size:
            chunk = self.sock.recv(1 << 16)
            if not chunk:
                raise ConnectionError("the worker closed the connection")
            self._buffer += chunk
        data = bytes(self._buffer[:size])
        del self._buffer[:size]
        return data

    def _next_frame(self) -> tuple[int, bytes]:
        flags = self._read_exactly(1)[0]
        size = _U64.unpack(self._read_exactly(8))[0] if flags & _LONG else self._read_exactly(1)[0]
        return flags, self._read_exactly(size)

    def _complete_messages(self) -> list[list[bytes]]:
        messages, buffer, offset, parts = [], self._buffer, 0, []
        start = 0
        while True:
            if offset + 2 > len(buffer):
                break
            flags = buffer[offset]
            if flags & _LONG:
                if offset + 9 > len(buffer):
                    break
                size, head = _U64.unpack_from(buffer, offset + 1)[0], 9
            else:
                size, head = buffer[offset + 1], 2
            end = offset + head + size
            if end > len(buffer):
                break
            if not flags & _COMMAND:  # PING and other commands carry no message
                parts.append(bytes(buffer[offset + head:end]))
                if not flags & _MORE:
                    messages.append(parts)
                    parts = []
                    start = end
            else:
                start = end if not parts else start
            offset = end
        del buffer[:start]
        return messages

"""A ZMTP DEALER connection over one plain TCP socket: the benchmark's load generator.

The worker sees an ordinary ZMQ DEALER client (NULL security, REQ-compatible envelopes). Unlike
libzmq, this client has no I/O thread and writes a batch of requests with one system call, so
the load generator takes as little as possible of the CPU it shares with the worker under test.
The framing is the worker's own (`avalon_worker._internal.zmtp`); real libzmq peers check that in
`tests/test_endpoint.py`. Only what the benchmark needs is here: no reconnects.
"""

from __future__ import annotations

import socket

from avalon_worker._internal.zmtp import PeerStream, message_buffers

MAX_REPLY_BYTES = 1 << 30


def message(parts: list[bytes]) -> bytes:
    """The bytes of one multipart message."""
    return b"".join(message_buffers(parts))


class DealerConnection:
    """One DEALER connection to a `tcp://host:port` endpoint, handshake done."""

    def __init__(self, endpoint: str, timeout_s: float = 120.0) -> None:
        host, _, port = endpoint.removeprefix("tcp://").rpartition(":")
        self.sock = socket.create_connection((host, int(port)), timeout=timeout_s)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.stream = PeerStream(MAX_REPLY_BYTES, socket_type=b"DEALER", peer_types=frozenset({b"ROUTER"}))
        self._read = memoryview(bytearray(1 << 20))  # reused: recv(1 MiB) would allocate and map 1 MiB per read
        self._early: list[list[bytes]] = []
        self._flush_protocol()
        while self.stream.peer_type is None:
            self._early += self.receive_available()

    def send(self, data: bytes) -> None:
        """Send already-encoded messages (see `message`)."""
        self.sock.sendall(data)

    def receive(self) -> list[list[bytes]]:
        """Block until at least one message has arrived; return every complete one."""
        messages, self._early = self._early, []
        while not messages:
            messages = self.receive_available()
        return messages

    def receive_available(self) -> list[list[bytes]]:
        """One read (call it when the socket is readable); the messages it completed, maybe none."""
        size = self.sock.recv_into(self._read)
        if not size:
            raise ConnectionError("the worker closed the connection")
        messages = self.stream.receive(self._read[:size])
        self._flush_protocol()  # a PONG, if the worker sent a PING
        return messages

    def close(self) -> None:
        self.sock.close()

    def _flush_protocol(self) -> None:
        if self.stream.outgoing:
            self.sock.sendall(self.stream.outgoing)
            self.stream.outgoing.clear()

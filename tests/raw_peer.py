"""A raw socket peer's helpers for the tests of the servers (the ZMQ endpoint, the HTTP server,
the listener): what the server sends back, read off a plain socket."""

from __future__ import annotations

import socket


def closed_within(sock: socket.socket, seconds: float = 5.0) -> bool:
    """Whether the server closes `sock` within `seconds` (whatever it sends first is read)."""
    sock.settimeout(seconds)
    try:
        while sock.recv(65536):
            pass
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False
    return True


def read_until_closed(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes `sock` (or resets it)."""
    received = b""
    try:
        while chunk := sock.recv(65536):
            received += chunk
    except ConnectionResetError:
        pass
    return received

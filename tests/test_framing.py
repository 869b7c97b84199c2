"""The supervisor–process message format over a real socket pair: messages split or joined in
any way by the stream come out whole, large payloads included, and bytes that are not a
message are refused."""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Iterator

import pytest

from avalon_worker._internal import framing
from avalon_worker._internal.framing import ORDER, REPLY, REVOKE, FramingError, Reader, encode, send_all


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    writer, reader = socket.socketpair()
    reader.setblocking(False)
    yield writer, reader
    writer.close()
    reader.close()


def read_all(reader: Reader, sock: socket.socket) -> list[tuple[int, int, bytes]]:
    """Everything readable now, as (kind, seq, payload)."""
    found: list[tuple[int, int, bytes]] = []
    while True:
        try:
            messages = reader.read(sock)
        except BlockingIOError:
            return found
        assert messages is not None
        found += [(kind, seq, bytes(payload)) for kind, seq, payload in messages]


def wire(*messages: tuple[int, int, bytes]) -> bytes:
    return b"".join(b"".join(bytes(part) for part in encode(kind, seq, payload)) for kind, seq, payload in messages)


SMALL = [(ORDER, 1, b'{"jsonrpc":"2.0"}'), (REVOKE, 2, framing.SEQ.pack(3)), (REPLY, 3, b"")]


def test_several_messages_in_one_read_come_out_in_order(pair) -> None:
    writer, sock = pair
    writer.sendall(wire(*SMALL))
    assert read_all(Reader(1 << 20), sock) == SMALL


@pytest.mark.parametrize("cut", [1, 5, 12, 13, 14, 29, 30, 31])
def test_a_message_split_anywhere_comes_out_whole(pair, cut: int) -> None:
    writer, sock = pair
    data = wire(*SMALL)
    reader = Reader(1 << 20)
    writer.sendall(data[:cut])
    first = read_all(reader, sock)
    boundaries = {len(wire(*SMALL[:n])) for n in range(len(SMALL) + 1)}
    assert first == SMALL[: len(first)]
    assert reader.partial == (cut not in boundaries)
    writer.sendall(data[cut:])
    assert first + read_all(reader, sock) == SMALL
    assert not reader.partial


def test_a_large_payload_arriving_in_pieces_is_received_into_its_own_buffer(pair) -> None:
    writer, sock = pair
    payload = os.urandom(3 * framing.READ_BYTES + 17)
    data = wire((ORDER, 7, payload), (REPLY, 8, b"after"))
    reader = Reader(1 << 22)
    got: list[tuple[int, int, bytes]] = []
    for start in range(0, len(data), 50_000):
        writer.sendall(data[start : start + 50_000])
        got += read_all(reader, sock)
    assert got == [(ORDER, 7, payload), (REPLY, 8, b"after")]


def test_send_all_writes_a_message_larger_than_the_socket_buffer(pair) -> None:
    writer, sock = pair
    sock.setblocking(True)
    payload = os.urandom(4 * 1024 * 1024)
    reader = Reader(1 << 23)
    sender = threading.Thread(target=send_all, args=(writer, encode(REPLY, 9, b"meta\n", payload)))
    sender.start()
    got: list[tuple[int, int, bytearray]] = []
    while not got:
        messages = reader.read(sock)
        assert messages is not None
        got += messages
    sender.join()
    assert [(kind, seq, bytes(body)) for kind, seq, body in got] == [(REPLY, 9, b"meta\n" + payload)]


@pytest.mark.parametrize("header", [framing.HEADER.pack(ord("Z"), 1, 0), framing.HEADER.pack(ORDER, 1, 2048)])
def test_an_unknown_kind_or_an_oversized_payload_is_refused(pair, header: bytes) -> None:
    writer, sock = pair
    writer.sendall(header)
    with pytest.raises(FramingError):
        Reader(1024).read(sock)


def test_the_end_of_the_stream_is_none(pair) -> None:
    writer, sock = pair
    writer.close()
    assert Reader(1024).read(sock) is None

"""A ZMQ ROUTER endpoint made of plain sockets, driven by the caller's epoll loop.

REQ, DEALER and ROUTER clients (libzmq, pyzmq, Avalon's enclave manager) connect to it as to a
libzmq ROUTER: each message it yields starts with the routing id of the connection it came on,
and a reply sent with that id goes back on that connection (or nowhere, if it has gone). It does
the I/O in the caller's thread, one system call per read or write, where libzmq hands every
message to and from its own I/O thread. Framing lives in `zmtp`; this module only moves bytes.
"""

from __future__ import annotations

import errno
import logging
import os
import select
import socket
import time
from collections import deque
from itertools import count

from ..errors import SetupError
from .zmtp import PeerStream, ProtocolError, message_buffers

logger = logging.getLogger(__name__)

READ_BYTES = 256 * 1024
_IOV_MAX = 512
SMALL_MESSAGE_BYTES = 64 * 1024
ACCEPT_PAUSE_S = 0.1
HANDSHAKE_S = 30.0  # a connection that has not finished the ZMTP handshake by then is closed (as libzmq does)  # smaller messages are joined into one buffer before sending


def send_queued(sock: socket.socket, queue: deque[memoryview]) -> int:
    """Write from the front of `queue` on a non-blocking socket until it is empty or the kernel
    takes no more; return the bytes written (OSError: the connection is broken)."""
    written = 0
    while queue:
        try:
            sent = sock.sendmsg(list(queue)[:_IOV_MAX] if len(queue) > 1 else [queue[0]])
        except (BlockingIOError, InterruptedError):
            break
        written += sent
        while sent and sent >= len(queue[0]):
            sent -= len(queue.popleft())
        if sent:
            queue[0] = queue[0][sent:]
            break  # the kernel took part: the buffer is full
    return written


class EndpointError(SetupError, ValueError):
    """A bind address this endpoint cannot serve."""


def listen(bind: str) -> tuple[socket.socket, str]:
    """A listening socket for `tcp://host:port` (`*` for any host or port) or `ipc://path`, and
    its endpoint as clients should write it; `EndpointError` says why not."""
    try:
        return _listen(bind)
    except OSError as exc:
        raise EndpointError(f"{bind!r}: {exc.strerror or exc}") from None


def _listen(bind: str) -> tuple[socket.socket, str]:
    scheme, _, address = bind.partition("://")
    if scheme == "ipc" and address:
        if address.startswith("@"):  # Linux's abstract namespace, written as libzmq writes it
            path = "\0" + address[1:]
        else:
            path = address
            if os.path.exists(path) and not os.path.isdir(path):
                os.unlink(path)  # as libzmq does: a stale socket file from an earlier run
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind(path)
        sock.listen(128)
        return sock, f"ipc://{address}"
    if scheme != "tcp" or ":" not in address:
        raise EndpointError(f"{bind!r}: give tcp://HOST:PORT (HOST and PORT may be *) or ipc://PATH")
    host, _, port_text = address.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if port_text in ("*", "0"):
        port = 0
    elif port_text.isdigit() and int(port_text) < 65536:
        port = int(port_text)
    else:
        raise EndpointError(f"{bind!r}: the port must be a number or *")
    if host == "*":
        host = "0.0.0.0"
    # IPv4 unless the host is an IPv6 literal, as libzmq does by default: `localhost` must be
    # where libzmq clients (which resolve it to 127.0.0.1) look for it
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        family, kind, proto, _, sockaddr = socket.getaddrinfo(host, port, family, socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
    except socket.gaierror as exc:
        raise EndpointError(f"{bind!r}: cannot resolve {host!r} ({exc.strerror})") from None
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(sockaddr)
    sock.listen(128)
    real_host, real_port = sock.getsockname()[:2]
    shown = f"[{real_host}]" if family == socket.AF_INET6 else real_host
    return sock, f"tcp://{shown}:{real_port}"


class _Peer:
    __slots__ = ("sock", "stream", "routing_id", "queue", "queued_bytes", "queued_messages", "writing")

    def __init__(self, sock: socket.socket, stream: PeerStream, routing_id: bytes) -> None:
        self.sock = sock
        self.stream = stream
        self.routing_id = routing_id
        self.queue: deque[memoryview] = deque()  # bytes not yet written, in order
        self.queued_bytes = 0
        self.queued_messages = 0  # sent since the queue was last empty
        self.writing = False  # registered for EPOLLOUT


class Router:
    """The endpoint. The caller registers nothing itself: `Router` adds its sockets to `poller`,
    and the caller passes every event on a descriptor that is not its own to `on_event`."""

    def __init__(self, bind: str, poller: select.epoll, max_message_bytes: int) -> None:
        self.listener, self.endpoint = listen(bind)
        self.listener.setblocking(False)
        self.poller = poller
        self.max_message_bytes = max_message_bytes
        # a peer that does not read its replies is dropped beyond either (libzmq's send HWM is 1000)
        self.max_queued_bytes = max_message_bytes
        self.max_queued_messages = 1000
        self._accept_paused_until = 0.0
        self._handshakes: deque[tuple[float, _Peer]] = deque()  # (deadline, peer), in accept order
        self.peers: dict[int, _Peer] = {}
        self.by_id: dict[bytes, _Peer] = {}
        self.closed: list[bytes] = []  # routing ids of connections closed since the caller last cleared it
        self._ids = count(1)
        # one read buffer, reused: recv(256 KiB) would allocate (and map) 256 KiB on every read
        self._read_buffer = bytearray(READ_BYTES)
        self._read_view = memoryview(self._read_buffer)
        poller.register(self.listener.fileno(), select.EPOLLIN)

    def next_due(self) -> float | None:
        """When `tick` should next be called: a pause or a handshake runs out. None: no need."""
        if not self._handshakes:  # the usual case, checked on every turn of the loop
            return self._accept_paused_until or None
        due = self._handshakes[0][0]
        return min(due, self._accept_paused_until) if self._accept_paused_until else due

    def tick(self, now: float) -> None:
        """Resume accepting once a pause has run out; close connections whose handshake has not
        finished in time."""
        if self._accept_paused_until and now >= self._accept_paused_until:
            self._accept_paused_until = 0.0
            self.poller.register(self.listener.fileno(), select.EPOLLIN)
        while self._handshakes and self._handshakes[0][0] <= now:
            _, peer = self._handshakes.popleft()
            if peer.stream.peer_type is None and peer.sock.fileno() in self.peers:
                logger.warning("closing a connection that did not finish the ZMTP handshake in %.0f s", HANDSHAKE_S)
                self._drop(peer)

    def on_event(self, fd: int, events: int) -> list[list[bytes]]:
        """Handle a poll event; return the messages that arrived, each led by its routing id."""
        if fd == self.listener.fileno():
            self._accept()
            return []
        peer = self.peers.get(fd)
        if peer is None:
            return []
        if events & select.EPOLLOUT:
            self._flush(peer)
        if not events & (select.EPOLLIN | select.EPOLLHUP | select.EPOLLERR) or fd not in self.peers:
            return []
        try:
            size = peer.sock.recv_into(self._read_buffer)
        except (BlockingIOError, InterruptedError):
            return []
        except OSError:
            size = 0
        if not size:
            self._drop(peer)
            return []
        try:
            messages = peer.stream.receive(self._read_view[:size])
        except ProtocolError as exc:
            logger.warning("closing a client connection: %s", exc)
            self._drop(peer)
            return []
        if peer.stream.outgoing:  # handshake or heartbeat answers
            self._send_protocol(peer)
        routing_id = peer.routing_id
        for message in messages:
            message.insert(0, routing_id)
        return messages

    def send(self, routing_id: bytes, parts: list[bytes | bytearray | memoryview]) -> bool:
        """Send a message to the peer `routing_id`; False if it has gone (the message is dropped)."""
        peer = self.by_id.get(routing_id)
        if peer is None:
            return False
        buffers = message_buffers(parts)
        size = sum(len(b) for b in buffers)
        self._queue(peer, [b"".join(buffers)] if size < SMALL_MESSAGE_BYTES else buffers)
        peer.queued_messages += 1
        if peer.queued_bytes > self.max_queued_bytes or peer.queued_messages > self.max_queued_messages:
            logger.warning("closing a client connection that does not read its replies")
            self._drop(peer)
            return False
        if not peer.writing:
            self._flush(peer)
        return True

    def close(self, linger_s: float = 0.0) -> None:
        """Close every connection, first trying for up to `linger_s` to write what is queued."""
        deadline = time.monotonic() + linger_s
        while (waiting := [peer for peer in self.peers.values() if peer.queue]) and time.monotonic() < deadline:
            writable = select.poll()  # not select(): there may be more than 1,024 descriptors
            for peer in waiting:
                writable.register(peer.sock, select.POLLOUT)
            writable.poll(max(0.0, deadline - time.monotonic()) * 1000)
            for peer in waiting:
                if peer.sock.fileno() in self.peers:
                    self._flush(peer)
        for peer in list(self.peers.values()):
            self._drop(peer)
        if not self._accept_paused_until:
            self.poller.unregister(self.listener.fileno())
        self.listener.close()

    def close_inherited(self) -> None:
        """In a forked child process: close its copies of the sockets, so that a connection the
        parent closes is really closed."""
        self.listener.close()
        for peer in self.peers.values():
            peer.sock.close()

    # internals -----------------------------------------------------------------------------------

    def _accept(self) -> None:
        while True:
            try:
                sock, _ = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    # out of descriptors or memory: stop listening for a moment instead of spinning
                    # on a listener that stays readable; the connected peers are still served
                    logger.warning("cannot accept connections for now: %s", exc.strerror)
                    self.poller.unregister(self.listener.fileno())
                    self._accept_paused_until = time.monotonic() + ACCEPT_PAUSE_S
                return
            sock.setblocking(False)
            if sock.family != socket.AF_UNIX:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            routing_id = b"\x00" + next(self._ids).to_bytes(4, "big")  # libzmq's form of generated ids
            peer = _Peer(sock, PeerStream(self.max_message_bytes), routing_id)
            self.peers[sock.fileno()] = peer
            self.by_id[routing_id] = peer
            self.poller.register(sock.fileno(), select.EPOLLIN)
            self._handshakes.append((time.monotonic() + HANDSHAKE_S, peer))
            self._send_protocol(peer)

    def _send_protocol(self, peer: _Peer) -> None:
        """Send what the protocol itself wrote (greeting, READY, PONG)."""
        self._queue(peer, [bytes(peer.stream.outgoing)])
        peer.stream.outgoing.clear()
        self._flush(peer)

    def _queue(self, peer: _Peer, chunks: list[bytes | bytearray | memoryview]) -> None:
        for chunk in chunks:
            if chunk:
                peer.queue.append(memoryview(chunk))
                peer.queued_bytes += len(chunk)

    def _flush(self, peer: _Peer) -> None:
        queue = peer.queue
        try:
            peer.queued_bytes -= send_queued(peer.sock, queue)
        except OSError:
            self._drop(peer)
            return
        want_write = bool(queue)
        if not queue:
            peer.queued_messages = 0
        if want_write != peer.writing and peer.sock.fileno() in self.peers:
            peer.writing = want_write
            self.poller.modify(peer.sock.fileno(), select.EPOLLIN | (select.EPOLLOUT if want_write else 0))

    def _drop(self, peer: _Peer) -> None:
        fd = peer.sock.fileno()
        if self.peers.pop(fd, None) is None:
            return
        del self.by_id[peer.routing_id]
        self.closed.append(peer.routing_id)
        self.poller.unregister(fd)
        peer.sock.close()
        peer.queue.clear()

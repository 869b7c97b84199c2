"""A ZMQ ROUTER endpoint made of plain sockets, driven by the caller's epoll loop.

REQ, DEALER and ROUTER clients (libzmq, pyzmq, Avalon's enclave manager) connect to it as to a
libzmq ROUTER: each message it yields starts with the routing id of the connection it came on,
and a reply sent with that id goes back on that connection (or nowhere, if it has gone). It does
the I/O in the caller's thread, one system call per read or write, where libzmq hands every
message to and from its own I/O thread. Framing lives in `zmtp`; this module only moves bytes.
"""

from __future__ import annotations

import ctypes
import errno
import logging
import os
import resource
import select
import socket
import time
from collections import deque
from collections.abc import Callable
from itertools import count
from typing import Any, Generic, Protocol, TypeVar

from ..errors import SetupError
from .zmtp import PeerStream, ProtocolError, message_buffers

logger = logging.getLogger(__name__)

READ_BYTES = 256 * 1024
_IOV_MAX = 512
SMALL_MESSAGE_BYTES = 64 * 1024  # smaller messages are joined into one buffer before sending
ACCEPT_PAUSE_S = 0.1
HANDSHAKE_S = 30.0  # a connection that has not finished the ZMTP handshake by then is closed (as libzmq does)
FRAMES_PER_TURN = 256  # frames and commands parsed per connection per turn of the loop
FD_HEADROOM = 64  # descriptors kept for worker processes, metrics and the like below RLIMIT_NOFILE
WARN_EVERY_S = 10.0  # each kind of warning about hostile or broken peers, at most this often
# Closing a connection that held at least this much of unfinished messages hands the freed
# memory back to the system at once: the pieces of a large frame come from the heap, whose
# free space the allocator otherwise keeps (a peer that sends most of a frame and goes would
# leave the supervisor that much larger for good).
TRIM_AFTER_BYTES = 1 << 20


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


class Writer(Protocol):
    """A connection or process with writes queued: `writing` while it waits for the kernel to
    take more (EPOLLOUT), `due` while it waits in an `Outbox`."""

    writing: bool
    due: bool


W = TypeVar("W", bound=Writer)


class Outbox(Generic[W]):
    """The writers given something to send during one turn of the loop, written at its end:
    one system call each, however many messages it was given in the turn."""

    __slots__ = ("_due", "_flush")

    def __init__(self, flush: Callable[[W], None]) -> None:
        self._due: list[W] = []
        self._flush = flush

    def add(self, writer: W) -> None:
        """`writer` has a write queued (a writer dropped meanwhile sets `due` back to False)."""
        if not (writer.writing or writer.due):
            writer.due = True
            self._due.append(writer)

    def write(self, writer: W) -> None:
        """Write what `writer` has queued now, not at the end of the turn."""
        writer.due = False
        if not writer.writing:  # else EPOLLOUT writes it
            self._flush(writer)

    def flush(self) -> None:
        """Write what this turn queued."""
        due, self._due = self._due, []
        for writer in due:
            if writer.due:
                self.write(writer)


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
    __slots__ = ("sock", "stream", "routing_id", "queue", "queued_bytes", "queued_messages", "writing",
                 "reading", "partial", "in_flight", "active", "due")

    def __init__(self, sock: socket.socket, stream: PeerStream, routing_id: bytes) -> None:
        self.sock = sock
        self.stream = stream
        self.routing_id = routing_id
        self.queue: deque[memoryview] = deque()  # bytes not yet written, in order
        self.queued_bytes = 0
        self.queued_messages = 0  # sent since the queue was last empty
        self.writing = False  # registered for EPOLLOUT
        self.reading = True  # registered for EPOLLIN (off while frames wait to be parsed)
        self.partial = 0  # bytes of incomplete messages held for it (counted in Router.partial_bytes)
        self.in_flight = 0  # messages received and not yet answered
        self.active = 0  # the router's turn when it last heard from it
        self.due = False  # waits in the router's outbox


class Router:
    """The endpoint. The caller registers nothing itself: `Router` adds its sockets to `poller`,
    and the caller passes every event on a descriptor that is not its own to `on_event`.

    No peer can exhaust it: each peer's queued writes (replies and protocol answers alike) are
    bounded, partly received messages of all peers together are bounded by `max_partial_bytes`
    (beyond it the largest partial senders are dropped), each peer has at most FRAMES_PER_TURN
    frames parsed per turn (the rest waits in `backlog`: the caller polls without sleeping while
    it is not empty and calls `drain_backlog`), and connections are capped, below the descriptor
    limit, by closing the longest-idle one with nothing in flight, or else refusing the new one;
    a descriptor kept in reserve lets it accept (and so answer or refuse) even when none is left."""

    def __init__(self, bind: str, poller: select.epoll, max_message_bytes: int, *,
                 max_partial_bytes: int | None = None, max_connections: int | None = None) -> None:
        self.listener, self.endpoint = listen(bind)
        self.listener.setblocking(False)
        self.poller = poller
        self.max_message_bytes = max_message_bytes
        # a peer that does not read what it is sent is dropped beyond either (libzmq's send HWM is 1000)
        self.max_queued_bytes = max_message_bytes
        self.max_queued_messages = 1000
        self.max_partial_bytes = max_partial_bytes or max_message_bytes
        self.partial_bytes = 0
        self.outbox: Outbox[_Peer] = Outbox(self._flush)  # the caller flushes it at the end of each turn
        if max_connections is None:
            max_connections = max(16, resource.getrlimit(resource.RLIMIT_NOFILE)[0] - FD_HEADROOM)
        self.max_connections = max_connections
        self._reserve: int | None = self._open_reserve()
        self._accept_paused_until = 0.0
        self._handshakes: deque[tuple[float, _Peer]] = deque()  # (deadline, peer), in accept order
        self.peers: dict[int, _Peer] = {}
        self.by_id: dict[bytes, _Peer] = {}
        self.backlog: dict[int, _Peer] = {}  # peers with frames received but not parsed yet
        self.closed: list[bytes] = []  # routing ids of connections closed since the caller last cleared it
        self._ids = count(1)
        self._turn = 0
        self._warned: dict[str, float] = {}
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
                self._warn("handshake", f"closing connections that did not finish the ZMTP handshake in {HANDSHAKE_S:.0f} s")
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
        return self._parse(peer, self._read_view[:size])

    def drain_backlog(self) -> list[list[bytes]]:
        """Parse the next frames of every peer in `backlog`; return the messages they complete."""
        messages: list[list[bytes]] = []
        for peer in list(self.backlog.values()):
            messages += self._parse(peer, b"")
        return messages

    def send(self, routing_id: bytes, parts: list[bytes | bytearray | memoryview]) -> bool:
        """Send a message to the peer `routing_id`; False if it has gone (the message is dropped)."""
        peer = self.by_id.get(routing_id)
        if peer is None:
            return False
        if peer.in_flight:
            peer.in_flight -= 1
        buffers = message_buffers(parts)
        size = sum(map(len, buffers))
        return self._send(peer, [b"".join(buffers)] if size < SMALL_MESSAGE_BYTES else buffers)

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
        self._close_reserve()

    def close_inherited(self) -> None:
        """In a forked child process: close its copies of the sockets, so that a connection the
        parent closes is really closed."""
        self.listener.close()
        self._close_reserve()
        for peer in self.peers.values():
            peer.sock.close()

    # internals -----------------------------------------------------------------------------------

    def _parse(self, peer: _Peer, data: bytes | memoryview) -> list[list[bytes]]:
        self._turn += 1
        peer.active = self._turn
        stream = peer.stream
        try:
            messages = stream.receive(data, FRAMES_PER_TURN)
        except ProtocolError as exc:
            self._warn("protocol", f"closing a client connection: {exc}")
            self._drop(peer)
            return []
        held = stream.buffered
        if held != peer.partial:
            self.partial_bytes += held - peer.partial
            peer.partial = held
            if self.partial_bytes > self.max_partial_bytes:
                self._shed()
        if stream.outgoing:  # handshake or heartbeat answers
            self._send_protocol(peer)
        fd = peer.sock.fileno()
        if fd not in self.peers:
            return []
        if stream.backlog != (fd in self.backlog):
            if stream.backlog:
                self.backlog[fd] = peer
            else:
                del self.backlog[fd]
            peer.reading = not stream.backlog
            self._watch(peer)
        if messages:
            peer.in_flight += len(messages)
            routing_id = peer.routing_id
            for message in messages:
                message.insert(0, routing_id)
        return messages

    def _shed(self) -> None:
        """Partly received messages take more than their budget: drop the largest senders."""
        for peer in sorted(self.peers.values(), key=lambda p: p.partial, reverse=True):
            if self.partial_bytes <= self.max_partial_bytes:
                break
            self._warn("partial", f"closing connections whose unfinished messages took more than "
                                  f"{self.max_partial_bytes} bytes together")
            self._drop(peer)

    def _warn(self, kind: str, message: str) -> None:
        """Log `message` unless this kind of warning was logged less than WARN_EVERY_S ago."""
        now = time.monotonic()
        if now - self._warned.get(kind, -WARN_EVERY_S) >= WARN_EVERY_S:
            self._warned[kind] = now
            logger.warning("%s", message)

    @staticmethod
    def _open_reserve() -> int | None:
        try:
            return os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return None

    def _close_reserve(self) -> None:
        if self._reserve is not None:
            os.close(self._reserve)
            self._reserve = None

    def _accept_with_reserve(self) -> socket.socket | bool:
        """Out of descriptors: give up the reserved one for a moment to accept the next client.
        Return it if there is room for it, True if it was refused, False if none was waiting."""
        self._close_reserve()
        try:
            sock = self.listener.accept()[0]
        except OSError:
            self._reserve = self._open_reserve()
            return False
        room = self._evict()
        if not room:
            sock.close()
        self._reserve = self._open_reserve()
        return sock if room else True

    def _evict(self) -> bool:
        """Close the longest-idle connection with nothing in flight or queued to make room; False
        if there is none."""
        idle = [peer for peer in self.peers.values() if not peer.in_flight and not peer.queue]
        if not idle:
            self._warn("full", f"refusing a connection: {len(self.peers)} are open and all are busy")
            return False
        # connections that never finished their handshake go first, then the longest idle
        self._drop(min(idle, key=lambda p: (p.stream.peer_type is not None, p.active)))
        return True

    def _accept(self) -> None:
        while True:
            try:
                sock, _ = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE) and self._reserve is not None:
                    accepted = self._accept_with_reserve()
                    if accepted is False:
                        return
                    if accepted is True:
                        continue  # refused: on to the next client waiting
                    sock = accepted
                elif exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    # out of descriptors or memory: stop listening for a moment instead of spinning
                    # on a listener that stays readable; the connected peers are still served
                    self._warn("accept", f"cannot accept connections for now: {exc.strerror}")
                    self.poller.unregister(self.listener.fileno())
                    self._accept_paused_until = time.monotonic() + ACCEPT_PAUSE_S
                    return
                else:
                    return
            else:
                if len(self.peers) >= self.max_connections and not self._evict():
                    sock.close()
                    continue
            sock.setblocking(False)
            if sock.family != socket.AF_UNIX:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            routing_id = b"\x00" + next(self._ids).to_bytes(4, "big")  # libzmq's form of generated ids
            peer = _Peer(sock, PeerStream(self.max_message_bytes), routing_id)
            self._turn += 1
            peer.active = self._turn
            self.peers[sock.fileno()] = peer
            self.by_id[routing_id] = peer
            self.poller.register(sock.fileno(), select.EPOLLIN)
            self._handshakes.append((time.monotonic() + HANDSHAKE_S, peer))
            self._send_protocol(peer)

    def _send_protocol(self, peer: _Peer) -> None:
        """Send what the protocol itself wrote (greeting, READY, PONG), within the peer's limits."""
        data = bytes(peer.stream.outgoing)
        peer.stream.outgoing.clear()
        self._send(peer, [data])

    def _send(self, peer: _Peer, chunks: list[bytes | bytearray | memoryview]) -> bool:
        for chunk in chunks:
            if chunk:
                peer.queue.append(memoryview(chunk))
                peer.queued_bytes += len(chunk)
        peer.queued_messages += 1
        if peer.queued_bytes > self.max_queued_bytes or peer.queued_messages > self.max_queued_messages:
            self._warn("reader", "closing a client connection that does not read what it is sent")
            self._drop(peer)
            return False
        self.outbox.add(peer)
        return True

    def _flush(self, peer: _Peer) -> None:
        queue = peer.queue
        try:
            peer.queued_bytes -= send_queued(peer.sock, queue)
        except OSError:
            self._drop(peer)
            return
        if not queue:
            peer.queued_messages = 0
        if bool(queue) != peer.writing:
            peer.writing = bool(queue)
            self._watch(peer)

    def _watch(self, peer: _Peer) -> None:
        fd = peer.sock.fileno()
        if fd in self.peers:
            self.poller.modify(fd, (select.EPOLLIN if peer.reading else 0) | (select.EPOLLOUT if peer.writing else 0))

    def _drop(self, peer: _Peer) -> None:
        fd = peer.sock.fileno()
        if self.peers.pop(fd, None) is None:
            return
        peer.due = False
        del self.by_id[peer.routing_id]
        self.backlog.pop(fd, None)
        self.closed.append(peer.routing_id)
        self.partial_bytes -= peer.partial
        held, peer.partial = peer.partial, 0
        peer.stream.release()  # a closed connection's buffers go now, not when the last reference does
        self.poller.unregister(fd)
        peer.sock.close()
        peer.queue.clear()
        if held >= TRIM_AFTER_BYTES:
            give_back_memory()


_malloc_trim: Any = None


def give_back_memory() -> None:
    """Return the heap's free memory to the system (glibc's malloc_trim; elsewhere nothing)."""
    global _malloc_trim
    if _malloc_trim is None:
        _malloc_trim = getattr(ctypes.CDLL(None), "malloc_trim", False)
    if _malloc_trim:
        _malloc_trim(0)

"""A ZMQ DEALER connection on the asyncio event loop, over the project's own ZMTP codec (`zmtp`).

The pump reaches a worker's endpoint (`tcp://HOST:PORT` or `ipc://PATH`; the worker's ROUTER, or
a libzmq REP socket) as a DEALER. pyzmq's asyncio socket would do, but every message then crosses
libzmq's I/O thread twice, each crossing a thread wake-up: on a small machine that was the larger
part of the pump's cost per order. Here the bytes go straight between the socket and the event
loop. If the connection drops, it is made again (with a growing pause) and `on_reconnect` is
called: replies to what was sent before are lost with the old connection.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence

from .zmtp import PeerStream, ProtocolError, message_buffers

logger = logging.getLogger(__name__)

PEERS = frozenset({b"ROUTER", b"REP"})
RETRY_FIRST_S = 0.1
QUIET_LOSS_S = 2.0  # a lost connection back within this long is logged once it is back
RETRY_MAX_S = 2.0


def split_endpoint(endpoint: str) -> tuple[str, str | int]:
    """`tcp://HOST:PORT` → (host, port); `ipc://PATH` → ("", path); ValueError otherwise."""
    if endpoint.startswith("ipc://") and len(endpoint) > len("ipc://"):
        return "", endpoint[len("ipc://") :]
    host, sep, port = endpoint.removeprefix("tcp://").rpartition(":")
    if not endpoint.startswith("tcp://") or not sep or not port.isdigit():
        raise ValueError(f"a worker endpoint is tcp://HOST:PORT or ipc://PATH (got {endpoint!r})")
    return host.strip("[]"), int(port)


class _Protocol(asyncio.Protocol):
    def __init__(self, owner: DealerConnection) -> None:
        self.owner = owner
        self.stream = PeerStream(owner.max_message_bytes, socket_type=b"DEALER", peer_types=PEERS)
        self.transport: asyncio.Transport | None = None
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self._flush()

    def data_received(self, data: bytes) -> None:
        try:
            messages = self.stream.receive(data)
        except ProtocolError as exc:
            logger.error("the worker's endpoint broke the ZMQ protocol (%s); connecting again", exc)
            assert self.transport is not None
            self.transport.abort()
            return
        self._flush()  # a PONG, if the worker sent a PING
        if self.stream.peer_type is not None and not self.ready.done():
            self.ready.set_result(None)
        for parts in messages:
            self.owner.on_message(parts)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.ready.done():
            self.ready.set_exception(ConnectionError("the worker's endpoint closed the connection during the handshake"))
        self.owner._lost(self)

    def _flush(self) -> None:
        if self.stream.outgoing and self.transport is not None:
            self.transport.write(bytes(self.stream.outgoing))
            self.stream.outgoing.clear()


class DealerConnection:
    """One DEALER connection; `on_message` gets every multipart message that arrives."""

    def __init__(
        self, endpoint: str, on_message: Callable[[list[bytes]], None], *, max_message_bytes: int = 1 << 30,
        on_reconnect: Callable[[], None] = lambda: None,
    ) -> None:
        split_endpoint(endpoint)  # a ValueError now rather than at the first connect
        self.endpoint = endpoint
        self.on_message = on_message
        self.on_reconnect = on_reconnect
        self.max_message_bytes = max_message_bytes
        self._protocol: _Protocol | None = None
        self._reconnecting: asyncio.Task[None] | None = None
        self._closed = False

    @property
    def connected(self) -> bool:
        protocol = self._protocol
        return protocol is not None and protocol.ready.done() and not protocol.ready.exception()

    async def connect(self, timeout_s: float) -> None:
        """Connect and finish the handshake; OSError or TimeoutError if that fails in time."""
        self._protocol = await asyncio.wait_for(self._open(), timeout_s)

    async def _open(self) -> _Protocol:
        loop = asyncio.get_running_loop()
        host, where = split_endpoint(self.endpoint)
        factory = lambda: _Protocol(self)  # noqa: E731
        if host:
            _, protocol = await loop.create_connection(factory, host, int(where))
        else:
            _, protocol = await loop.create_unix_connection(factory, str(where))
        try:
            await protocol.ready
        except BaseException:
            if protocol.transport is not None:
                protocol.transport.abort()
            raise
        return protocol

    def send(self, *messages: Sequence[bytes]) -> bool:
        """Queue multipart messages, written together (one system call for a batch); False if
        there is no connection right now."""
        if not self.connected:
            return False
        assert self._protocol is not None and self._protocol.transport is not None
        buffers = []
        for parts in messages:
            buffers += message_buffers(list(parts))
        self._protocol.transport.writelines(buffers)
        return True

    def close(self) -> None:
        self._closed = True
        if self._reconnecting is not None:
            self._reconnecting.cancel()
        if self._protocol is not None and self._protocol.transport is not None:
            self._protocol.transport.abort()

    def _lost(self, protocol: _Protocol) -> None:
        if protocol is not self._protocol or self._closed or self._reconnecting is not None:
            return
        self._protocol = None
        self._reconnecting = asyncio.get_running_loop().create_task(self._reconnect())

    async def _reconnect(self) -> None:
        pause = RETRY_FIRST_S
        # Said only once the loss has lasted QUIET_LOSS_S: at a clean stop the worker closes its
        # endpoint a moment before it stops us, and that is no news.
        lost, said = time.monotonic(), False
        try:
            while not self._closed:
                await asyncio.sleep(pause)
                try:
                    self._protocol = await asyncio.wait_for(self._open(), 10.0)
                except (OSError, asyncio.TimeoutError, ProtocolError):
                    pause = min(pause * 2, RETRY_MAX_S)
                    if not said and time.monotonic() - lost >= QUIET_LOSS_S and not self._closed:
                        logger.warning("lost the connection to the worker at %s; connecting again", self.endpoint)
                        said = True
                    continue
                logger.info("connected to the worker at %s again%s", self.endpoint,
                            "" if said else f" (the connection was lost for {time.monotonic() - lost:.1f} s)")
                self.on_reconnect()
                return
        finally:
            self._reconnecting = None

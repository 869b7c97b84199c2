"""HTTP/1.1 for the listener: llhttp's request parser (`httptools`) under an asyncio protocol of ours.

The listener has one kind of request (a JSON-RPC POST to any path) and one kind of answer (200 with a
JSON body), and each order is two requests, so the HTTP server's own cost per request is a large
share of an order's. aiohttp served it until this module: its request objects, routing, response
headers and task per request cost about a quarter of the front door's CPU (docs/performance.md).
What must be mature here is the parser — request framing, chunked bodies, smuggling rules — and
that is llhttp, Node.js's parser, through the binding uvicorn uses. The rest is below: answers in
order, keep-alive, `Expect: 100-continue`, and every bound on what a peer can make us hold.

Bounds, per connection and across them (numbers in `http_guard.HttpLimits` and the listener's
settings):
- a request's head (request line and header fields) is at most MAX_HEAD_BYTES in at most
  MAX_HEADER_FIELDS fields (431 and the connection closed), and complete within
  `header_timeout_s` of its first byte; a connection without a request in progress is closed
  after `idle_timeout_s`;
- a body declared larger than `max_body_bytes` is refused before any of it is read; a chunked one
  when it passes the limit; a body must arrive within `body_timeout_s`; bodies still arriving
  share one `BodyBudget` (one that does not fit is refused at once), a body received whole
  always fits;
- at most MAX_PIPELINED requests are parsed ahead of their answers, and reading stops while the
  peer does not take its answers (the transport's write buffer is full);
- `ConnectionTable` caps the connections: the longest idle one makes room, or, when every
  connection has a request in progress, a new one is answered 503 and closed.

Refusals that the protocol makes itself (not POST, too large, over the budget, too slow) are
answered in order with the others, by the `HttpApp`'s own words, and close the connection.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import socket
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable
from email.utils import formatdate
from typing import Protocol

import httptools

from ..errors import Error
from .http_guard import BACKLOG, BodyBudget, HttpLimits

logger = logging.getLogger(__name__)

MAX_HEAD_BYTES = 64 * 1024
MAX_HEADER_FIELDS = 100
MAX_PIPELINED = 16
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_STATUS = {200: b"200 OK", 400: b"400 Bad Request", 431: b"431 Request Header Fields Too Large",
           503: b"503 Service Unavailable"}


class Refusal(enum.Enum):
    """What the protocol refuses before the app sees a body; the app words the answer."""

    NOT_POST = "not POST"
    TOO_LARGE = "too large"
    OVER_BUDGET = "over the budget"
    TOO_SLOW = "too slow"


class HttpApp(Protocol):
    """What answers the requests: a POST's body to a JSON body (and whether to close after it)."""

    def answer(self, body: bytes) -> Awaitable[tuple[bytes, bool]]: ...

    def refusal(self, why: Refusal) -> bytes: ...


class _Date:
    """The Date header's value, formatted once a second."""

    second = -1
    value = b""

    @classmethod
    def now(cls) -> bytes:
        second = int(time.time())
        if second != cls.second:
            cls.second, cls.value = second, formatdate(second, usegmt=True).encode()
        return cls.value


def response(status: int, body: bytes, *, close: bool, keep_alive_header: bool = False,
             content_type: bytes = b"application/json") -> bytes:
    """A whole HTTP/1.1 response with `body`."""
    connection = b"Connection: close\r\n" if close else b"Connection: keep-alive\r\n" if keep_alive_header else b""
    return b"HTTP/1.1 %s\r\nContent-Type: %s\r\nDate: %s\r\n%sContent-Length: %d\r\n\r\n%s" % (
        _STATUS[status], content_type, _Date.now(), connection, len(body), body)


class ConnectionTable:
    """The open connections of one server: counted, capped, the idle ones in order of idleness,
    and their deadlines checked every `tick_s` (a timer per connection and request would be
    made and cancelled four times an order; a deadline is one assignment)."""

    def __init__(self, limits: HttpLimits, overloaded: bytes, tick_s: float = 1.0) -> None:
        self.limits = limits
        self.tick_s = tick_s
        self._ticking: asyncio.TimerHandle | None = None
        self.cap = limits.connection_cap()
        self.overloaded = response(503, overloaded, close=True)
        self.open: set[HttpConnection] = set()
        self._idle: OrderedDict[HttpConnection, None] = OrderedDict()  # longest idle first
        self.refused = 0
        self.timed_out = 0

    def admit(self) -> bool:
        """Room for one more connection, made by closing the longest idle one if need be."""
        if len(self.open) >= self.cap:
            if not self._idle:
                self.refused += 1
                return False
            next(iter(self._idle)).abort("to make room for a new connection")
        return True

    def opened(self, connection: HttpConnection) -> None:
        self.open.add(connection)
        self._idle[connection] = None

    def busy(self, connection: HttpConnection) -> None:
        self._idle.pop(connection, None)

    def idle(self, connection: HttpConnection) -> None:
        self._idle.pop(connection, None)
        self._idle[connection] = None

    def closed(self, connection: HttpConnection) -> None:
        self.open.discard(connection)
        self._idle.pop(connection, None)

    def start(self) -> None:
        """Check the connections' deadlines every `tick_s` from now on (on the running loop)."""
        self._ticking = asyncio.get_running_loop().call_later(self.tick_s, self._tick)

    def stop(self) -> None:
        if self._ticking is not None:
            self._ticking.cancel()
            self._ticking = None

    def _tick(self) -> None:
        now = time.monotonic()
        for connection in [c for c in self.open if c.deadline and c.deadline <= now]:
            connection.expired()
        self.start()


class _Stop(Error):
    """Raised in a parser callback to stop parsing: the connection has been refused or closed."""


class HttpConnection(asyncio.Protocol):
    """One HTTP/1.1 connection: parses requests, has `app` answer them one by one, in order."""

    def __init__(self, app: HttpApp, table: ConnectionTable, budget: BodyBudget, max_body_bytes: int,
                 body_timeout_s: float) -> None:
        self.app = app
        self.table = table
        self.budget = budget
        self.max_body_bytes = max_body_bytes
        self.body_timeout_s = body_timeout_s
        self.transport: asyncio.Transport | None = None
        self._parser = httptools.HttpRequestParser(self)
        # (body or refusal, keep alive, HTTP/1.0, budget held), in the order the requests came
        self._queue: deque[tuple[bytes | Refusal, bool, bool, int]] = deque()
        self._answering: asyncio.Task[None] | None = None
        self._more: asyncio.Future[None] | None = None  # what the answering task waits on between requests
        self.deadline = 0.0  # time.monotonic() by which the connection must have moved on; 0: none
        self._waiting_s = 0.0
        self._waiting_for = ""
        self._stopped = False  # no more requests are read from this connection
        self._begun = 0  # requests begun
        self._write_paused = False
        self._reading_paused = False
        self._drained: asyncio.Future[None] | None = None
        self._reset()

    def _reset(self) -> None:
        """Between requests: nothing of the next one seen yet."""
        self._in_head = False
        self._in_body = False
        self._streaming = False  # the body did not come with its head: it holds the budget as it arrives
        # Bytes received for a head still arriving, after the read it began in (that read's share of it
        # is not known, and a read is at most 256 KiB): a bound on a head that does not end.
        self._head_bytes = 0
        self._head_size = 0  # the parsed head's URL and fields (a bound on a head that came whole)
        self._fields = 0
        self._declared: int | None = None
        self._continue = False
        self._chunks: list[bytes] = []
        self._size = 0
        self._held = 0

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        if not self.table.admit():
            transport.write(self.table.overloaded)
            transport.close()
            self._stopped = True
            return
        self.table.opened(self)
        self._set_deadline(self.table.limits.idle_timeout_s, "it was idle")

    def data_received(self, data: bytes) -> None:
        if self._stopped:
            return
        head_before = self._begun if self._in_head else -1
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            if not self._stopped:
                self._fail(400, b"this server does not switch protocols")
        except httptools.HttpParserError:
            if not self._stopped:  # a _Stop from a callback arrives wrapped in HttpParserCallbackError
                self._fail(400, b"this is not an HTTP/1.1 request this server understands")
        if self._stopped:
            return
        if self._in_head and self._begun == head_before:  # all of `data` is this head's
            self._head_bytes += len(data)
        if self._in_head and self._head_bytes > MAX_HEAD_BYTES:
            self._fail(431, b"the request's head is larger than %d bytes" % MAX_HEAD_BYTES)
        elif self._in_body and not self._streaming:
            self._body_arrives()

    def eof_received(self) -> bool | None:
        self._stopped = True
        if self._more is not None and not self._more.done():
            self._more.set_result(None)
        return True if self._queue else None  # half-closed: the answers still go out

    def pause_writing(self) -> None:
        self._write_paused = True
        self._sync_reading()

    def resume_writing(self) -> None:
        self._write_paused = False
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)
        self._sync_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stopped = True
        self._clear_deadline()
        self.table.closed(self)
        self.budget.give_back(self._held)
        self._held = 0
        self._chunks = []
        if self._answering is None:
            self._drop_queue()
        for waiting in (self._drained, self._more):
            if waiting is not None and not waiting.done():
                waiting.set_result(None)

    # httptools' callbacks

    def on_message_begin(self) -> None:
        if self._stopped:  # after a request that closes the connection, in the same read
            raise _Stop
        self._begun += 1
        self._in_head = True
        self._set_deadline(self.table.limits.header_timeout_s, "its request's headers did not arrive")

    def on_url(self, url: bytes) -> None:
        self._head_size += len(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._fields += 1
        self._head_size += len(name) + len(value) + 4
        if self._fields > MAX_HEADER_FIELDS or self._head_size > MAX_HEAD_BYTES:
            self._head_too_large()
        size = len(name)
        if size == 14 and name.lower() == b"content-length":
            self._declared = int(value)  # llhttp has checked that it is digits, and the only one
        elif size == 6 and name.lower() == b"expect":
            self._continue = value.lower() == b"100-continue"

    def _head_too_large(self) -> None:
        if self._fields > MAX_HEADER_FIELDS:
            self._fail(431, b"the request has more than %d header fields" % MAX_HEADER_FIELDS)
        else:
            self._fail(431, b"the request's head is larger than %d bytes" % MAX_HEAD_BYTES)
        raise _Stop

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._in_body = True
        self._clear_deadline()
        self.table.busy(self)
        if self._parser.get_method() != b"POST":
            self._refuse(Refusal.NOT_POST)
        elif self._declared is not None and self._declared > self.max_body_bytes:
            self._refuse(Refusal.TOO_LARGE)
        elif self._continue:
            self._write(CONTINUE)

    def on_body(self, chunk: bytes) -> None:
        self._size += len(chunk)
        if self._size > self.max_body_bytes:
            self._refuse(Refusal.TOO_LARGE)
        if self._streaming and self._declared is None:  # chunked and still arriving: room as it comes
            if not self.budget.take(len(chunk)):
                self._refuse(Refusal.OVER_BUDGET)
            self._held += len(chunk)
        self._chunks.append(chunk)

    def on_message_complete(self) -> None:
        body = b"".join(self._chunks)
        if not self._streaming:
            self.budget.take(len(body), received=True)
            self._held += len(body)
        keep_alive = self._parser.should_keep_alive()
        self._clear_deadline()
        self._queue.append((body, keep_alive, self._parser.get_http_version() == "1.0", self._held))
        self._reset()
        if not keep_alive:
            self._stopped = True
        self._answer_queue()

    # the rest

    def _body_arrives(self) -> None:
        """The head is in but not the whole body: the body holds its room in the budget (all of
        a declared one at once) and must arrive within the body's time limit."""
        self._streaming = True
        room = self._declared if self._declared is not None else self._size
        if not self.budget.take(room):
            self._refuse(Refusal.OVER_BUDGET, stop=False)
            return
        self._held += room
        self._set_deadline(self.body_timeout_s, "")

    def _refuse(self, why: Refusal, *, stop: bool = True) -> None:
        """Answer this request with the app's refusal (after those before it) and close."""
        self._clear_deadline()
        self._queue.append((why, False, False, self._held))
        self._held = 0
        self._chunks = []
        self._stopped = True
        self._answer_queue()
        if stop:
            raise _Stop

    def _fail(self, status: int, text: bytes) -> None:
        """Bad HTTP: say so in plain text and close, without waiting for the answers before it."""
        self._stopped = True
        self._clear_deadline()
        self.budget.give_back(self._held)
        self._held = 0
        self._write(response(status, text, close=True, content_type=b"text/plain; charset=utf-8"))
        self.abort(f"bad HTTP ({status})", graceful=True)

    def _answer_queue(self) -> None:
        """Have the connection's answering task answer what is queued: started with the first
        request, it waits between requests rather than ending (a task is dearer than a wake-up)."""
        if self._answering is None:
            self._answering = asyncio.get_running_loop().create_task(self._answer_all())
        elif self._more is not None and not self._more.done():
            self._more.set_result(None)
        self._sync_reading()

    async def _answer_all(self) -> None:
        try:
            while await self._next_request():
                if not await self._answer_first():
                    break
        finally:
            self._answering = None
            self._drop_queue()
        if self._stopped and self.transport is not None and not self.transport.is_closing():
            self.transport.close()  # the peer has sent its last request and has its answers

    async def _next_request(self) -> bool:
        """Wait for a request to answer; False once none will come (the connection is closing,
        or the peer has sent its last)."""
        while not self._queue:
            if self._stopped or self.transport is None or self.transport.is_closing():
                return False
            if not self._in_head and not self._in_body:
                self.table.idle(self)
                self._set_deadline(self.table.limits.idle_timeout_s, "it was idle")
            self._more = asyncio.get_running_loop().create_future()
            await self._more
        return self.transport is not None and not self.transport.is_closing()

    async def _answer_first(self) -> bool:
        """Answer the first request queued; False if the connection closes after it."""
        assert self.transport is not None
        request, keep_alive, http10, held = self._queue[0]
        try:
            if isinstance(request, Refusal):
                body, close = self.app.refusal(request), True
            else:
                body, close = await self.app.answer(request)
        except Exception:  # the app answers every request; this is a bug, not a request's fault
            logger.exception("the HTTP app failed to answer a request; its connection is closed")
            self.abort("the app failed")
            return False
        finally:
            self._queue.popleft()
            self.budget.give_back(held)
        close = close or not keep_alive
        self._write(response(200, body, close=close, keep_alive_header=http10 and not close))
        if close:
            self.abort("", graceful=True)
            return False
        self._sync_reading()
        if self._write_paused and not self.transport.is_closing():
            self._drained = asyncio.get_running_loop().create_future()
            await self._drained
        return True

    def _drop_queue(self) -> None:
        """Give back what the requests not answered hold (the connection is gone)."""
        if self.transport is not None and self.transport.is_closing():
            while self._queue:
                self.budget.give_back(self._queue.popleft()[3])

    def _sync_reading(self) -> None:
        """Read while the peer takes its answers and not too many requests wait for theirs."""
        pause = self._write_paused or len(self._queue) >= MAX_PIPELINED
        if pause != self._reading_paused and self.transport is not None and not self.transport.is_closing():
            self._reading_paused = pause
            if pause:
                self.transport.pause_reading()
            else:
                self.transport.resume_reading()

    def _write(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def _set_deadline(self, seconds: float, why: str) -> None:
        self.deadline = time.monotonic() + seconds
        self._waiting_s, self._waiting_for = seconds, why

    def _clear_deadline(self) -> None:
        self.deadline = 0.0

    def expired(self) -> None:
        """Its deadline passed (`ConnectionTable` checks)."""
        self.deadline = 0.0
        if not self._waiting_for:  # the body's time limit: answered, in order
            self._refuse(Refusal.TOO_SLOW, stop=False)
            return
        self.table.timed_out += 1
        self.abort(f"{self._waiting_for} within {self._waiting_s:g} s")

    def abort(self, why: str, *, graceful: bool = False) -> None:
        """Close the connection (after what was written, if `graceful`)."""
        if why:
            logger.debug("closing an HTTP connection: %s", why)
        self._stopped = True
        self._clear_deadline()
        self.table.closed(self)
        if self.transport is not None:
            if graceful:
                self.transport.close()
            else:
                self.transport.abort()


async def serve_http(sock: socket.socket, app: HttpApp, limits: HttpLimits, *, max_body_bytes: int,
                     body_timeout_s: float, budget: BodyBudget, overloaded: bytes) -> Callable[[], Awaitable[None]]:
    """Serve `app` on the bound, listening socket `sock`; return what stops it (and closes every
    connection)."""
    shortest = min(limits.header_timeout_s, limits.idle_timeout_s, body_timeout_s)
    table = ConnectionTable(limits, overloaded, tick_s=min(1.0, max(0.05, shortest / 4)))
    table.start()

    def connection() -> HttpConnection:
        return HttpConnection(app, table, budget, max_body_bytes, body_timeout_s)

    server = await asyncio.get_running_loop().create_server(connection, sock=sock, backlog=BACKLOG)

    async def close() -> None:
        table.stop()
        server.close()
        for open_connection in list(table.open):
            open_connection.abort("the listener stops")
        await server.wait_closed()

    return close

"""The HTTP/1.1 server under the listener (`front.http_server`), on a real socket, with a small app
of the test's: answers in order, keep-alive and close, `Expect: 100-continue`, the head's bounds,
the body budget given back whatever happens, and reading paused for a peer that does not read.
(The listener's own answers over it: `test_listener.py`.)"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from avalon_worker.front.door import bind_listen
from avalon_worker.front.http_guard import BodyBudget, HttpLimits
from avalon_worker.front.http_server import MAX_HEAD_BYTES, MAX_HEADER_FIELDS, MAX_PIPELINED, Refusal, serve_http

from conftest import wait_for
from raw_peer import closed_within, read_until_closed

MAX_BODY = 4096


class EchoApp:
    """Answers a body `{"n": N, "sleep": S}` with `{"n": N}` after S seconds (so that a later
    request's answer could overtake an earlier one's, were they not kept in order)."""

    def __init__(self) -> None:
        self.answered = 0

    async def answer(self, body: bytes) -> tuple[bytes, bool]:
        try:  # an app answers every body, as the listener does
            request = json.loads(body)
            request["n"]
        except (ValueError, TypeError, KeyError):
            return b'{"bad": true}', False
        await asyncio.sleep(request.get("sleep", 0))
        self.answered += 1
        return json.dumps({"n": request["n"]}).encode(), bool(request.get("close"))

    def refusal(self, why: Refusal) -> bytes:
        return json.dumps({"refused": why.value}).encode()


class Served:
    """`serve_http` with an `EchoApp` on 127.0.0.1, on a loop in a thread of its own."""

    def __init__(self, limits: HttpLimits, budget: int = 1 << 20, body_timeout_s: float = 5.0) -> None:
        self.app = EchoApp()
        self.budget = BodyBudget(budget, trim=lambda: None)
        self.loop = asyncio.new_event_loop()
        sock = bind_listen("127.0.0.1:0")
        self.port = sock.getsockname()[1]
        started = threading.Event()
        self._close: Callable[[], Awaitable[None]] | None = None

        def run() -> None:
            asyncio.set_event_loop(self.loop)
            self._close = self.loop.run_until_complete(serve_http(
                sock, self.app, limits, max_body_bytes=MAX_BODY, body_timeout_s=body_timeout_s, budget=self.budget,
                overloaded=b'{"busy": true}'))
            started.set()
            self.loop.run_forever()
            assert self._close is not None
            self.loop.run_until_complete(self._close())

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()
        assert started.wait(30)

    def connect(self) -> socket.socket:
        return socket.create_connection(("127.0.0.1", self.port), timeout=5)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(30)


@pytest.fixture()
def served() -> Iterator[Served]:
    server = Served(HttpLimits(max_connections=8, header_timeout_s=2.0, idle_timeout_s=5.0))
    yield server
    server.stop()


def post(body: bytes, *, headers: bytes = b"", version: bytes = b"1.1") -> bytes:
    return b"POST /any/path HTTP/%s\r\nHost: x\r\n%sContent-Length: %d\r\n\r\n%s" % (version, headers, len(body), body)


def read_responses(sock: socket.socket, count: int) -> list[tuple[bytes, bytes]]:
    """`count` whole responses (head, body) from `sock`, by their Content-Length."""
    data = b""
    responses: list[tuple[bytes, bytes]] = []
    while len(responses) < count:
        head_end = data.find(b"\r\n\r\n")
        if head_end >= 0:
            head = data[:head_end]
            length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
            if len(data) >= head_end + 4 + length:
                responses.append((head, data[head_end + 4:head_end + 4 + length]))
                data = data[head_end + 4 + length:]
                continue
        chunk = sock.recv(65536)
        if not chunk:
            raise AssertionError(f"closed after {len(responses)} of {count} responses")
        data += chunk
    return responses


def test_pipelined_requests_are_answered_in_the_order_they_came(served: Served) -> None:
    with served.connect() as sock:
        # The first takes longest: answered in arrival order, it is still first.
        sock.sendall(b"".join(post(json.dumps({"n": n, "sleep": 0.05 * (5 - n)}).encode()) for n in range(6)))
        answers = read_responses(sock, 6)
    assert [json.loads(body)["n"] for _, body in answers] == list(range(6))
    assert all(head.startswith(b"HTTP/1.1 200 OK\r\n") and b"Connection: close" not in head for head, _ in answers)
    assert served.budget.held == 0


def test_a_request_asking_to_close_gets_its_answer_then_the_connection_closes(served: Served) -> None:
    with served.connect() as sock:
        sock.sendall(post(b'{"n": 1}', headers=b"Connection: close\r\n") + post(b'{"n": 2}'))
        [(head, body)] = read_responses(sock, 1)
        assert b"\r\nConnection: close\r\n" in head and json.loads(body) == {"n": 1}
        assert closed_within(sock)  # the request after it is not read
    assert served.app.answered == 1


def test_http_1_0_is_closed_after_its_answer_unless_it_asks_for_keep_alive(served: Served) -> None:
    with served.connect() as sock:
        sock.sendall(post(b'{"n": 1}', version=b"1.0", headers=b"Connection: keep-alive\r\n"))
        [(head, _)] = read_responses(sock, 1)
        assert b"\r\nConnection: keep-alive\r\n" in head
        sock.sendall(post(b'{"n": 2}', version=b"1.0"))
        [(head, body)] = read_responses(sock, 1)
        assert b"\r\nConnection: close\r\n" in head and json.loads(body) == {"n": 2}
        assert closed_within(sock)


def test_expect_100_continue_is_answered_before_the_body_is_sent(served: Served) -> None:
    body = b'{"n": 7}'
    with served.connect() as sock:
        sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: %d\r\n\r\n" % len(body))
        assert sock.recv(65536) == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(body)
        [(_, answer)] = read_responses(sock, 1)
    assert json.loads(answer) == {"n": 7}


def test_a_body_declared_too_large_is_refused_before_it_is_sent_even_with_expect(served: Served) -> None:
    with served.connect() as sock:
        sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: %d\r\n\r\n" % (MAX_BODY + 1))
        [(head, body)] = read_responses(sock, 1)
        assert json.loads(body) == {"refused": "too large"} and b"Connection: close" in head
        assert closed_within(sock)
    assert served.budget.held == 0


@pytest.mark.parametrize("head", [
    b"POST / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * MAX_HEAD_BYTES + b"\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-%d: y\r\n" % n for n in range(MAX_HEADER_FIELDS + 1)) + b"\r\n",
])
def test_a_head_too_large_is_431_and_closed_within(served: Served, head: bytes) -> None:
    with served.connect() as sock:
        try:
            sock.sendall(head)
        except OSError:
            pass  # closed while sending: read what came
        response = read_until_closed(sock)
    assert response.startswith(b"HTTP/1.1 431 ")
    with served.connect() as sock:  # and it serves on
        sock.sendall(post(b'{"n": 1}'))
        assert json.loads(read_responses(sock, 1)[0][1]) == {"n": 1}


def test_a_head_that_never_ends_is_431_once_past_the_bound(served: Served) -> None:
    with served.connect() as sock:
        sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nX-Endless: ")
        time.sleep(0.1)
        response = b""
        try:
            for _ in range(64):  # 64 × 16 KiB of one header's value, never a line's end
                sock.sendall(b"a" * 16384)
                time.sleep(0.005)
        except OSError:
            pass
        try:
            while chunk := sock.recv(65536):
                response += chunk
        except ConnectionResetError:
            pass
    assert response.startswith(b"HTTP/1.1 431 ")


@pytest.mark.parametrize("request_bytes", [
    b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",  # two lengths
    b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",  # smuggling
    b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
    b"\x16\x03\x01\x02\x00 not http\r\n\r\n",
])
def test_requests_llhttp_refuses_are_400_in_plain_text_and_closed_within(served: Served, request_bytes: bytes) -> None:
    with served.connect() as sock:
        sock.sendall(request_bytes)
        head, body = read_responses(sock, 1)[0]
        assert head.startswith(b"HTTP/1.1 400 ") and b"text/plain" in head and b"Traceback" not in body
        assert closed_within(sock)
    assert served.app.answered == 0


@pytest.mark.slow  # sends until the server has not read for a second
def test_a_peer_that_reads_no_answers_stops_being_read(served: Served) -> None:
    """Pipelined requests from a peer that never reads: the server stops reading once its answers
    fill the socket, so that what it holds stays bounded, and serves other connections meanwhile."""
    request = post(json.dumps({"n": 0, "pad": "x" * 2000}).encode())
    with served.connect() as greedy:
        greedy.setblocking(False)
        sent = 0
        stalled_since = time.monotonic()
        while time.monotonic() - stalled_since < 1.0:  # send until the server has not read for a second
            try:
                sent += greedy.send(request[sent % len(request):])
                stalled_since = time.monotonic()
            except BlockingIOError:
                time.sleep(0.01)
        answered = served.app.answered
        assert 0 < answered < sent // len(request)
        with served.connect() as other:
            other.sendall(post(b'{"n": 9}'))
            assert json.loads(read_responses(other, 1)[0][1]) == {"n": 9}
        time.sleep(0.3)
        assert served.app.answered == answered + 1  # the greedy peer's requests wait, unread
    assert MAX_PIPELINED >= 1


def test_a_peer_that_leaves_mid_answer_gives_its_bodies_back_to_the_budget(served: Served) -> None:
    with served.connect() as sock:
        sock.sendall(b"".join(post(json.dumps({"n": n, "sleep": 0.2}).encode()) for n in range(3)))
        wait_for(lambda: served.budget.held > 0, "the bodies read, the first answer under way", 5)
    # the first answer finishes after the peer left; the others are dropped
    wait_for(lambda: served.budget.held == 0, "the bodies given back to the budget", 5)


def test_a_body_still_arriving_holds_its_declared_room_until_answered() -> None:
    server = Served(HttpLimits(max_connections=8, header_timeout_s=2.0, idle_timeout_s=5.0), budget=3000)
    try:
        body = json.dumps({"n": 1, "pad": "x" * 2000}).encode()
        with server.connect() as first:
            first.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(body) + body[:10])
            time.sleep(0.2)
            assert server.budget.held == len(body)
            with server.connect() as second:  # does not fit beside it
                second.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(body) + body[:10])
                [(_, refused)] = read_responses(second, 1)
                assert json.loads(refused) == {"refused": "over the budget"} and closed_within(second)
            first.sendall(body[10:])
            assert json.loads(read_responses(first, 1)[0][1]) == {"n": 1}
        time.sleep(0.2)
        assert server.budget.held == 0
    finally:
        server.stop()


def test_a_body_too_slow_is_refused_in_its_turn_and_closed_within() -> None:
    server = Served(HttpLimits(max_connections=8, header_timeout_s=2.0, idle_timeout_s=5.0), body_timeout_s=0.3)
    try:
        with server.connect() as sock:
            sock.sendall(post(json.dumps({"n": 1, "sleep": 0.6}).encode()) + b"POST / HTTP/1.1\r\nContent-Length: 50\r\n\r\n{")
            answers = read_responses(sock, 2)  # the first, slow to answer, still comes first
            assert [json.loads(body) for _, body in answers] == [{"n": 1}, {"refused": "too slow"}]
            assert closed_within(sock)
        assert server.budget.held == 0
    finally:
        server.stop()


_BODIES = st.lists(st.builds(lambda n, pad: json.dumps({"n": n, "pad": pad}).encode(),
                             st.integers(0, 10**6), st.text(max_size=300)), min_size=1, max_size=6)


def _framed(body: bytes, chunked: bool, name_case: int) -> bytes:
    length = b"Content-Length", b"content-length", b"CONTENT-LENGTH"
    if not chunked:
        return b"POST / HTTP/1.1\r\nHost: x\r\n%s: %d\r\n\r\n%s" % (length[name_case], len(body), body)
    half = len(body) // 2
    pieces = b"".join(b"%x\r\n%s\r\n" % (len(piece), piece) for piece in (body[:half], body[half:]) if piece)
    return b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n%s0\r\n\r\n" % pieces


@settings(max_examples=40, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(bodies=_BODIES, chunked=st.lists(st.booleans(), min_size=6, max_size=6), name_case=st.integers(0, 2),
       cuts=st.lists(st.integers(1, 4000), max_size=8))
def test_any_split_of_pipelined_requests_gets_the_same_answers_in_order(
        served: Served, bodies: list[bytes], chunked: list[bool], name_case: int, cuts: list[int]) -> None:
    """However the bytes of pipelined requests (by length or chunked) are cut into reads, each
    request is answered once, whole, in order, and the budget is back to nothing."""
    stream = b"".join(_framed(body, chunked[i], name_case) for i, body in enumerate(bodies))
    points = sorted({cut % len(stream) for cut in cuts} - {0})
    pieces = [stream[start:end] for start, end in zip([0, *points], [*points, len(stream)])]
    with served.connect() as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for piece in pieces:
            sock.sendall(piece)
            time.sleep(0.002)  # most pieces arrive as reads of their own
        answers = read_responses(sock, len(bodies))
    assert [json.loads(body) for _, body in answers] == [{"n": json.loads(body)["n"]} for body in bodies]
    wait_for(lambda: served.budget.held == 0, "the server to let go of every connection's budget", timeout_s=5)


@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_a_mangled_request_is_answered_or_refused_and_the_server_serves_on(
        served: Served, data: st.DataObject, caplog: pytest.LogCaptureFixture) -> None:
    """Bytes of a valid request with some changed, cut or repeated: whatever the server answers,
    it raises nothing (no failure logged), holds no budget afterwards and serves the next
    connection."""
    request = bytearray(post(b'{"n": 5}') + post(b'{"n": 6}'))
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.integers(0, len(request) - 1))
        action = data.draw(st.sampled_from(["flip", "cut", "repeat"]))
        if action == "flip":
            request[at] = data.draw(st.integers(0, 255))
        elif action == "cut":
            del request[at:at + data.draw(st.integers(1, 20))]
        else:
            request[at:at] = request[at:at + data.draw(st.integers(1, 20))]
    with caplog.at_level(logging.WARNING), served.connect() as sock:
        sock.sendall(bytes(request))
        sock.shutdown(socket.SHUT_WR)
        sock.settimeout(5)
        response = read_until_closed(sock)
    assert response == b"" or response.startswith(b"HTTP/1.1 ")
    assert not [record for record in caplog.records if record.levelno >= logging.WARNING]
    with served.connect() as sock:
        sock.sendall(post(b'{"n": 1}'))
        assert json.loads(read_responses(sock, 1)[0][1]) == {"n": 1}
    assert served.budget.held == 0

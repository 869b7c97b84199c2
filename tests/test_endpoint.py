"""The pool's ZMQ endpoint (`zmtp`, `router`): real libzmq peers of every kind a ROUTER serves,
and hostile bytes on a raw TCP socket. The server must answer the first and drop the second
without ever stopping."""

from __future__ import annotations

import json
import os
import resource
import select
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import zmq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from avalon_worker._internal import zmtp
from avalon_worker._internal.router import FRAMES_PER_TURN, EndpointError, Outbox, Router, listen
from avalon_worker.requester import WorkerInfo, build_work_order, open_result

from conftest import MISBEHAVING_REGISTRY, RunningWorker, launch_worker, wait_for
from raw_peer import closed_within

pytestmark = pytest.mark.slow

HELLO_READY = zmtp.greeting(as_server=False) + zmtp.ready(b"DEALER")


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory):
    running = launch_worker(tmp_path_factory.mktemp("state"), ["--workloads", MISBEHAVING_REGISTRY, "--workers", "2"])
    yield running, WorkerInfo.from_signup(running.signup())
    running.stop()


def hello(running: RunningWorker, info: WorkerInfo, sock: zmq.Socket | None = None, name: bytes = b"again") -> None:
    """A hello order answered and verified, on `sock` or on a fresh REQ socket."""
    pending = build_work_order(info, "python-hello", [name])
    if sock is None:
        reply = running.request(pending.frame())
    else:
        sock.send(pending.frame())
        assert sock.poll(20000), "no reply"
        reply = sock.recv_multipart()[-1]
    assert open_result(pending, json.loads(reply), info) == [b"Hello " + name]


def raw_connection(running: RunningWorker) -> socket.socket:
    host, port = running.endpoint.removeprefix("tcp://").rsplit(":", 1)
    return socket.create_connection((host, int(port)), timeout=10)


# real libzmq peers -------------------------------------------------------------------------------


def test_req_dealer_and_router_clients_get_their_replies(served) -> None:
    running, info = served
    context = zmq.Context.instance()
    req = context.socket(zmq.REQ)
    dealer = context.socket(zmq.DEALER)
    router = context.socket(zmq.ROUTER)
    router.setsockopt(zmq.CONNECT_ROUTING_ID, b"worker")  # how a ROUTER client names the server
    for sock in (req, dealer, router):
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(running.endpoint)
    try:
        hello(running, info, req)
        hello(running, info, req, b"twice")
        orders = [build_work_order(info, "python-hello", [f"d{n}".encode()]) for n in range(3)]
        for n, order in enumerate(orders):  # pipelined, each tagged
            dealer.send_multipart([str(n).encode(), b"", order.frame()])
        for _ in orders:
            assert dealer.poll(20000)
            tag, empty, reply = dealer.recv_multipart()
            assert empty == b""
            assert open_result(orders[int(tag)], json.loads(reply), info) == [b"Hello d" + tag]
        order = build_work_order(info, "python-hello", [b"router"])
        time.sleep(0.2)  # a ROUTER drops what it sends before the connection is up
        router.send_multipart([b"worker", b"", order.frame()])
        assert router.poll(20000)
        peer, empty, reply = router.recv_multipart()
        assert (peer, empty) == (b"worker", b"")
        assert open_result(order, json.loads(reply), info) == [b"Hello router"]
    finally:
        for sock in (req, dealer, router):
            sock.close(linger=0)


def test_a_client_with_heartbeats_and_an_identity_waits_out_a_slow_order(served) -> None:
    """ZMTP 3.1 PINGs must be answered, or libzmq drops the connection and the REQ never hears back."""
    running, info = served
    sock = zmq.Context.instance().socket(zmq.REQ)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.ROUTING_ID, b"requester-7")
    sock.setsockopt(zmq.HEARTBEAT_IVL, 50)
    sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, 200)
    sock.connect(running.endpoint)
    try:
        pending = build_work_order(info, "sleep", [b"1.0"])
        sock.send(pending.frame())
        assert sock.poll(20000), "no reply: the connection was dropped for want of PONGs"
        assert open_result(pending, json.loads(sock.recv()), info) == [b"slept 1.0"]
    finally:
        sock.close(linger=0)


@pytest.mark.parametrize("name", ["file", "abstract"])
def test_an_ipc_endpoint_serves_too(tmp_path: Path, name: str) -> None:
    endpoint = f"ipc://{tmp_path / 'worker.sock'}" if name == "file" else f"ipc://@avalon-worker-test-{os.getpid()}"
    running = launch_worker(tmp_path / "state", ["--bind", endpoint, "--workers", "1"])
    try:
        assert running.endpoint == endpoint
        hello(running, WorkerInfo.from_signup(running.signup()))
    finally:
        running.stop()


def test_a_client_that_leaves_with_an_order_in_flight_costs_nothing(served) -> None:
    running, info = served
    sock = zmq.Context.instance().socket(zmq.REQ)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(running.endpoint)
    sock.send(build_work_order(info, "sleep", [b"0.3"]).frame())
    time.sleep(0.05)
    sock.close(linger=0)
    time.sleep(0.4)  # its reply has nowhere to go
    hello(running, info)


# hostile bytes -----------------------------------------------------------------------------------

GARBAGE = [
    b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",  # not ZMTP at all
    b"\xff" + bytes(8) + b"\x7f\x01\x00" + bytes(52),  # ZMTP 2 (libzmq 3)
    b"\xff" + bytes(8) + b"\x7f\x03\x00" + b"CURVE".ljust(20, b"\x00") + bytes(32),  # CURVE, not offered
    zmtp.greeting(as_server=False) + zmtp.ready(b"PUB"),  # a socket type a ROUTER does not talk to
    zmtp.greeting(as_server=False) + zmtp.frame(b"before READY"),
    HELLO_READY + b"\x02" + struct.pack(">Q", 1 << 62),  # a frame of 4 EiB announced
    HELLO_READY + b"\x08\x00",  # reserved flag bits
    HELLO_READY + zmtp.command(b"ERROR", b"\x03bye"),
]


@pytest.mark.parametrize("data", GARBAGE, ids=["http", "zmtp2", "curve", "pub", "early-message", "huge-frame", "flags", "error"])
def test_hostile_bytes_close_that_connection_and_nothing_else(served, data: bytes) -> None:
    running, info = served
    with raw_connection(running) as sock:
        sock.sendall(data)
        assert closed_within(sock, 10)
    hello(running, info)


def test_a_replacement_process_does_not_keep_dropped_connections_open(served) -> None:
    """A process forked while clients are connected must not hold their sockets open."""
    running, info = served
    with raw_connection(running) as idle_client:
        idle_client.sendall(HELLO_READY)
        time.sleep(0.2)
        pending = build_work_order(info, "exit", [b"3"])
        assert "was replaced" in json.loads(running.request(pending.frame()))["error"]["message"]
        idle_client.sendall(zmtp.frame(b"before READY", command=True))  # malformed: dropped now
        assert closed_within(idle_client, 5)
    hello(running, info)


def test_a_raw_peer_that_stalls_mid_frame_blocks_no_one(served) -> None:
    running, info = served
    with raw_connection(running) as sock:
        sock.sendall(HELLO_READY + b"\x02" + struct.pack(">Q", 1000) + b"partial")
        hello(running, info)
        sock.sendall(b"x" * 993)  # completes a one-frame message: a request with no empty delimiter
        sock.settimeout(10)
        got = b""
        while b"send each request" not in got and b"error" not in got:
            chunk = sock.recv(65536)
            assert chunk, "closed instead of answered"
            got += chunk


def test_a_client_that_never_reads_its_replies_is_dropped(served) -> None:
    running, info = served
    # refused by the supervisor itself (two body frames), and the reply echoes the 10 KB envelope
    refused = b"".join(bytes(b) for b in zmtp.message_buffers([b"t" * 10_000, b"", b"two", b"frames"]))
    with raw_connection(running) as sock:
        sock.sendall(HELLO_READY)
        sock.settimeout(30)
        try:
            for _ in range(5_000):  # 50 MB of replies: far beyond the kernel's buffers and 1,000 queued
                sock.sendall(refused)
        except (ConnectionResetError, BrokenPipeError):
            pass
        time.sleep(0.5)
        assert closed_within(sock, 30)
    hello(running, info)


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextmanager
def few_descriptors(running: RunningWorker, spare: int) -> Iterator[list[socket.socket]]:
    """The supervisor's descriptor limit lowered to `spare` more than it uses, for the duration;
    sockets put in the yielded list are closed at the end."""
    pid = running.process.pid
    limits = resource.prlimit(pid, resource.RLIMIT_NOFILE)
    opened: list[socket.socket] = []
    try:
        resource.prlimit(pid, resource.RLIMIT_NOFILE, (len(os.listdir(f"/proc/{pid}/fd")) + spare, limits[1]))
        yield opened
    finally:
        resource.prlimit(pid, resource.RLIMIT_NOFILE, limits)
        for sock in opened:
            sock.close()


def test_out_of_file_descriptors_the_supervisor_does_not_spin(served) -> None:
    running, info = served
    pid = running.process.pid
    with few_descriptors(running, 2) as extra:
        extra += [raw_connection(running) for _ in range(6)]  # the kernel queues them; accept fails
        before = cpu_seconds(pid)
        time.sleep(1.0)
        assert cpu_seconds(pid) - before < 0.5, "the supervisor spins on a listener it cannot accept from"
    hello(running, info)  # accepting resumed


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


PING = zmtp.command(b"PING", b"\x00\x00")
PARTIAL_MARGIN_MIB = 12  # beyond the budget: the read buffer, the last pieces before a drop, the allocator


def test_a_peer_that_pings_and_never_reads_is_dropped(served) -> None:
    """PONGs count against the peer's send limits like replies: the supervisor does not keep
    answering into memory for a peer that never reads."""
    running, info = served
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    host, port = running.endpoint.removeprefix("tcp://").rsplit(":", 1)
    sock.connect((host, int(port)))
    sock.settimeout(10)
    with sock:
        sock.sendall(HELLO_READY)
        burst = PING * 10_000
        try:
            for _ in range(150):  # at most 1.5 million PINGs
                sock.sendall(burst)
        except (ConnectionResetError, BrokenPipeError, TimeoutError):
            pass
        assert closed_within(sock, 20)
    assert rss_mib(running.process.pid) < 300
    hello(running, info)


def _send_most_of_a_frame(running: RunningWorker, size: int, stop: threading.Event) -> None:
    """Connect, send most of a `size`-byte frame and wait; when dropped, come back (as an
    attacker would), until told to stop."""
    chunk = b"x" * (1 << 20)
    while not stop.is_set():
        try:
            with raw_connection(running) as sock:
                sock.sendall(HELLO_READY + b"\x02" + struct.pack(">Q", size))
                for _ in range(size * 9 // 10 // len(chunk)):
                    sock.sendall(chunk)
                sock.settimeout(0.1)
                while not stop.is_set():
                    try:
                        if not sock.recv(65536):
                            break
                    except TimeoutError:
                        pass
        except OSError:
            pass


def test_unfinished_messages_are_bounded_in_total_and_freed_on_close(tmp_path: Path) -> None:
    """Eight peers each send most of a maximal message and stop, and come back when dropped:
    beyond a budget for all partly received messages together the largest senders are dropped,
    the supervisor's memory stays within that budget and a fixed margin all along, and what
    closed connections held is given back at once."""
    running = launch_worker(tmp_path, ["--workers", "1", "--spare-workers", "0", "--max-request-bytes", "8000000"])
    stop = threading.Event()
    attackers = [threading.Thread(target=_send_most_of_a_frame, args=(running, 4 * 8_000_000 - 10, stop)) for _ in range(8)]
    try:
        info = WorkerInfo.from_signup(running.signup())
        pid = running.process.pid
        before = peak = rss_mib(pid)
        budget = 4 * 8_000_000 / (1 << 20)  # the hard limit of one message is also the budget for all of them
        for thread in attackers:
            thread.start()
        until = time.monotonic() + 4
        while time.monotonic() < until:
            peak = max(peak, rss_mib(pid))
            time.sleep(0.002)
        stop.set()
        for thread in attackers:
            thread.join(timeout=60)
        assert peak - before < budget + PARTIAL_MARGIN_MIB, f"{before:.0f} → {peak:.0f} MiB with a budget of {budget:.0f} MiB"
        wait_for(lambda: rss_mib(pid) - before <= PARTIAL_MARGIN_MIB, "closed connections' buffers to be let go",
                 timeout_s=10, every_s=0.05)
        hello(running, info)
    finally:
        stop.set()
        running.stop()


@contextmanager
def router_in_process() -> Iterator[tuple[Router, select.epoll, socket.socket, socket.socket]]:
    """A Router served by the test itself, and two raw client connections to it."""
    poller = select.epoll()
    router = Router("tcp://127.0.0.1:*", poller, max_message_bytes=1 << 20)
    host, port = router.endpoint.removeprefix("tcp://").rsplit(":", 1)
    first, second = (socket.create_connection((host, int(port)), timeout=5) for _ in range(2))
    try:
        yield router, poller, first, second
    finally:
        first.close()
        second.close()
        router.close()
        poller.close()


def pump(router: Router, poller: select.epoll, done: Callable[[], bool], what: str) -> None:
    """Hand the router its events until `done()`."""
    deadline = time.monotonic() + 5
    while not done():
        assert time.monotonic() < deadline, what
        for fd, mask in poller.poll(0.1):
            router.on_event(fd, mask)
        router.outbox.flush()  # as the loop does at the end of each turn


def test_an_outbox_writes_each_writer_once_however_often_it_was_given_something() -> None:
    class Writer:
        def __init__(self) -> None:
            self.writing = self.due = False

    flushed: list[Writer] = []
    outbox: Outbox[Writer] = Outbox(flushed.append)
    first, second, dropped, blocked = Writer(), Writer(), Writer(), Writer()
    blocked.writing = True  # waits for EPOLLOUT: its own event writes it
    for writer in (first, second, first, dropped, blocked, first):
        outbox.add(writer)
    dropped.due = False  # its connection closed meanwhile
    outbox.flush()
    assert flushed == [first, second] and not first.due and not second.due
    outbox.flush()
    assert flushed == [first, second]


def test_replies_of_one_turn_go_out_together_when_the_turn_ends() -> None:
    with router_in_process() as (router, poller, client, _):
        client.sendall(HELLO_READY)
        pump(router, poller, lambda: any(p.stream.peer_type is not None for p in router.peers.values()),
             "the handshake did not finish")
        client.settimeout(5)
        greeting = b""
        while len(greeting) < len(zmtp.greeting(as_server=True)):
            greeting += client.recv(64)
        client.setblocking(False)
        time.sleep(0.05)
        try:
            client.recv(4096)  # the rest of the handshake (READY)
        except BlockingIOError:
            pass
        [peer] = [p for p in router.peers.values() if p.sock.getpeername() == client.getsockname()]
        assert router.send(peer.routing_id, [b"one"]) and router.send(peer.routing_id, [b"two"])
        time.sleep(0.05)
        with pytest.raises(BlockingIOError):
            client.recv(4096)  # nothing is written before the turn ends
        router.outbox.flush()
        client.settimeout(5)
        expected = b"".join(bytes(b) for b in zmtp.message_buffers([b"one"]) + zmtp.message_buffers([b"two"]))
        got = b""
        while len(got) < len(expected):
            got += client.recv(4096)
        assert got == expected


def test_a_flood_of_commands_is_parsed_a_slice_per_turn() -> None:
    """One turn of the loop parses at most FRAMES_PER_TURN frames of a peer; the rest waits, its
    reading paused, while another peer's message in the same turn is served."""
    with router_in_process() as (router, poller, flooder, client):
        flooder.sendall(HELLO_READY)
        client.sendall(HELLO_READY)
        pump(router, poller, lambda: sum(p.stream.peer_type is not None for p in router.peers.values()) == 2,
             "the two connections did not finish their handshakes")
        unknown = zmtp.command(b"X")  # 3 bytes: an unknown command, which ZMTP says to ignore
        flooder.sendall(unknown * 50_000)
        client.sendall(b"".join(bytes(b) for b in zmtp.message_buffers([b"", b"request"])))
        time.sleep(0.2)
        got: list[list[bytes]] = []
        for fd, mask in poller.poll(1):
            got += router.on_event(fd, mask)
        assert [m[1:] for m in got] == [[b"", b"request"]], "the other peer's message waits behind the flood"
        [flooding] = router.backlog.values()
        assert flooding.sock.getpeername() == flooder.getsockname()
        waiting = flooding.stream.buffered
        assert waiting > 10 * FRAMES_PER_TURN * len(unknown)
        router.drain_backlog()
        assert waiting - flooding.stream.buffered == FRAMES_PER_TURN * len(unknown)  # one slice per turn


def test_idle_connections_up_to_the_descriptor_limit_do_not_lock_out_a_new_client(served) -> None:
    """With every descriptor taken by idle peers that finished their handshake, a new client
    is still accepted: the longest-idle connection makes room."""
    running, info = served
    with few_descriptors(running, 20) as idle:
        for _ in range(40):
            idle.append(raw_connection(running))
            idle[-1].sendall(HELLO_READY)
        time.sleep(0.5)
        hello(running, info)
        hello(running, info, name=b"and again")
    hello(running, info)


def test_a_connection_that_never_finishes_its_handshake_is_closed() -> None:
    with router_in_process() as (router, poller, silent, ready):
        ready.sendall(HELLO_READY)
        pump(router, poller, lambda: sorted(p.stream.peer_type or b"" for p in router.peers.values()) == [b"", b"DEALER"],
             "the two connections were not accepted")
        due = router.next_due()
        assert due is not None and due > time.monotonic() + 20  # libzmq's 30 s handshake interval
        router.tick(due)
        assert closed_within(silent, 5)
        assert len(router.peers) == 1  # the peer that finished its handshake stays


@pytest.mark.parametrize("bind, shown", [("tcp://localhost:*", "tcp://127.0.0.1:"), ("tcp://*:0", "tcp://0.0.0.0:"),
                                         ("tcp://[::1]:*", "tcp://[::1]:")])
def test_endpoints_are_read_as_libzmq_reads_them(bind: str, shown: str) -> None:
    try:
        sock, endpoint = listen(bind)
    except EndpointError as exc:
        if "::1" in bind:
            pytest.skip(f"no IPv6 loopback here ({exc})")
        raise
    with sock:
        assert endpoint.startswith(shown) and int(endpoint.rsplit(":", 1)[1]) > 0


def test_a_bad_endpoint_says_what_would_work() -> None:
    for bind in ("udp://127.0.0.1:1", "tcp://127.0.0.1", "tcp://127.0.0.1:http", "tcp://no-such-host.invalid:1"):
        with pytest.raises(EndpointError, match="tcp://HOST:PORT|port must be|cannot resolve"):
            listen(bind)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.lists(st.binary(max_size=64), min_size=1, max_size=5), min_size=1, max_size=4))
def test_any_messages_after_a_valid_handshake_leave_the_server_serving(served, messages: list[list[bytes]]) -> None:
    """Whatever multipart messages a peer sends (empty frames, no delimiter, stray bytes), the
    supervisor answers or ignores them, and the next client is served."""
    running, info = served
    with raw_connection(running) as sock:
        sock.sendall(HELLO_READY + b"".join(b"".join(bytes(b) for b in zmtp.message_buffers(m)) for m in messages))
        time.sleep(0.01)
    hello(running, info)


# the codec on its own ------------------------------------------------------------------------------


def _peer_bytes(messages: list[list[bytes]]) -> bytes:
    return HELLO_READY + zmtp.command(b"PING", b"\x00\x0aping") + b"".join(
        b"".join(bytes(b) for b in zmtp.message_buffers(m)) for m in messages)


@given(
    st.lists(st.lists(st.binary(max_size=300), min_size=1, max_size=4), max_size=5),
    st.lists(st.integers(min_value=1, max_value=400), max_size=30),
)
def test_messages_come_out_whole_however_the_bytes_are_split(messages: list[list[bytes]], cuts: list[int]) -> None:
    data = _peer_bytes(messages)
    stream = zmtp.PeerStream(max_message_bytes=10_000)
    got: list[list[bytes]] = []
    offset = 0
    for cut in [*cuts, len(data)]:
        got += stream.receive(data[offset : offset + cut])
        offset += cut
    got += stream.receive(data[offset:])
    assert got == messages
    assert stream.peer_type == b"DEALER"
    assert bytes(stream.outgoing).endswith(zmtp.command(b"PONG", b"ping"))  # PING answered with its context


@given(st.binary(max_size=400), st.binary(max_size=200))
def test_any_bytes_give_messages_or_a_protocol_error(prefix: bytes, tail: bytes) -> None:
    for data in (prefix + tail, HELLO_READY + prefix + tail):
        stream = zmtp.PeerStream(max_message_bytes=1000)
        try:
            for message in stream.receive(data):
                assert all(isinstance(part, bytes) for part in message)
        except zmtp.ProtocolError:
            pass


def test_a_zmtp_3_0_peer_is_served_like_a_3_1_one() -> None:
    stream = zmtp.PeerStream(max_message_bytes=1000)
    greeting_3_0 = bytearray(zmtp.greeting())
    greeting_3_0[11] = 0  # minor version: libzmq 4.0 and 4.1 speak ZMTP 3.0
    assert stream.receive(bytes(greeting_3_0) + zmtp.ready(b"REQ") + zmtp.frame(b"", more=True) + zmtp.frame(b"x")) == [[b"", b"x"]]


def test_endless_empty_frames_are_refused() -> None:
    stream = zmtp.PeerStream(max_message_bytes=1000)
    stream.receive(HELLO_READY)
    with pytest.raises(zmtp.ProtocolError, match="more than 64 frames"):
        stream.receive(zmtp.frame(b"", more=True) * 10_000)


def test_a_message_over_the_limit_is_refused_before_it_is_buffered() -> None:
    stream = zmtp.PeerStream(max_message_bytes=1000)
    stream.receive(HELLO_READY)
    with pytest.raises(zmtp.ProtocolError, match="larger than 1000"):
        stream.receive(zmtp.frame(b"a" * 600, more=True) + zmtp.frame_header(600))


@pytest.mark.parametrize("cut", [1000, zmtp.LARGE_FRAME_BYTES + 7, 256 * 1024, 1 << 20])
def test_a_large_frame_arriving_in_pieces_comes_out_whole_and_holds_only_what_arrived(cut: int) -> None:
    large = os.urandom(3 * zmtp.LARGE_FRAME_BYTES + 5)
    messages = [[b"", large, b"tail"], [b"", b"next"]]
    data = _peer_bytes(messages)
    stream = zmtp.PeerStream(max_message_bytes=1 << 20)
    got: list[list[bytes]] = []
    before = len(_peer_bytes([]))  # the handshake and a PING
    for offset in range(0, len(data), cut):
        got += stream.receive(data[offset : offset + cut])
        if not got and offset + cut > before:  # all that arrived of the unfinished message is counted
            arrived = offset + cut - before
            assert arrived - 16 <= stream.buffered <= arrived  # less at most the frame headers
    assert got == messages and stream.buffered == 0

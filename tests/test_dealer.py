"""The pump's asyncio DEALER connection against real libzmq sockets (pyzmq) on 127.0.0.1 and
over ipc: round trips through a ROUTER and a REP, PING answered, reconnecting after the peer
went away, and endpoints it refuses."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import zmq

from avalon_worker._internal.dealer import DealerConnection, split_endpoint


class Echo:
    """A libzmq socket in a thread of its own that sends every message back (REP: the body)."""

    def __init__(self, kind: int, endpoint: str = "tcp://127.0.0.1:*", **options: int) -> None:
        self.context = zmq.Context()
        self.kind, self.options = kind, options
        self.stop = threading.Event()
        self.endpoint = self._bind(endpoint)

    def _bind(self, endpoint: str) -> str:
        self.sock = self.context.socket(self.kind)
        for name, value in self.options.items():
            self.sock.setsockopt(getattr(zmq, name), value)
        self.sock.bind(endpoint)
        bound = self.sock.getsockopt_string(zmq.LAST_ENDPOINT)
        self.stop.clear()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()
        return bound

    def _serve(self) -> None:
        while not self.stop.is_set():
            if self.sock.poll(20):
                self.sock.send_multipart(self.sock.recv_multipart())

    def close(self) -> None:
        self.stop.set()
        self.thread.join(5)
        self.sock.close(linger=0)

    def restart(self) -> None:
        """Close the socket (the connection drops) and bind again on the same endpoint (libzmq
        lets go of the port from its I/O thread, a moment after the close)."""
        self.close()
        deadline = time.monotonic() + 10
        while True:
            try:
                self._bind(self.endpoint)
                return
            except zmq.ZMQError:
                self.sock.close(linger=0)
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)


@pytest.fixture()
def router() -> Iterator[Echo]:
    echo = Echo(zmq.ROUTER)
    yield echo
    echo.close()
    echo.context.term()


async def round_trip(dealer: DealerConnection, inbox: asyncio.Queue[list[bytes]], tag: bytes) -> list[bytes]:
    assert dealer.send([tag, b"", b"hello " + tag])
    return await asyncio.wait_for(inbox.get(), 10)


async def open_dealer(endpoint: str, **kwargs: object) -> tuple[DealerConnection, asyncio.Queue[list[bytes]]]:
    inbox: asyncio.Queue[list[bytes]] = asyncio.Queue()
    dealer = DealerConnection(endpoint, inbox.put_nowait, **kwargs)  # type: ignore[arg-type]
    await dealer.connect(10)
    return dealer, inbox


def test_round_trips_through_a_libzmq_router_keep_their_envelope(router: Echo) -> None:
    async def main() -> None:
        dealer, inbox = await open_dealer(router.endpoint)
        for n in range(50):
            tag = n.to_bytes(8, "big")
            assert await round_trip(dealer, inbox, tag) == [tag, b"", b"hello " + tag]
        big = bytes(range(256)) * 4096  # 1 MiB: the long frame form
        assert dealer.send([b"t", b"", big])
        assert (await asyncio.wait_for(inbox.get(), 10))[-1] == big
        dealer.close()

    asyncio.run(main())


def test_a_libzmq_rep_socket_answers_it_too(tmp_path: Path) -> None:
    echo = Echo(zmq.REP, f"ipc://{tmp_path}/rep.sock")
    try:
        async def main() -> None:
            dealer, inbox = await open_dealer(echo.endpoint)
            assert await round_trip(dealer, inbox, b"x") == [b"x", b"", b"hello x"]
            dealer.close()

        asyncio.run(main())
    finally:
        echo.close()
        echo.context.term()


@pytest.mark.slow  # a second of heartbeats
def test_heartbeat_pings_are_answered_and_the_connection_stays() -> None:
    pinging = Echo(zmq.ROUTER, HEARTBEAT_IVL=50, HEARTBEAT_TIMEOUT=300)
    try:
        async def main() -> None:
            reconnects: list[bool] = []
            inbox: asyncio.Queue[list[bytes]] = asyncio.Queue()
            dealer = DealerConnection(pinging.endpoint, inbox.put_nowait, on_reconnect=lambda: reconnects.append(True))
            await dealer.connect(10)
            await asyncio.sleep(1.0)  # twenty PINGs; without PONGs libzmq drops us after 0.3 s
            assert await round_trip(dealer, inbox, b"after") == [b"after", b"", b"hello after"]
            assert reconnects == []
            dealer.close()

        asyncio.run(main())
    finally:
        pinging.close()
        pinging.context.term()


def test_a_dropped_connection_is_made_again_and_reported(router: Echo) -> None:
    async def main() -> None:
        reconnected = asyncio.Event()
        inbox: asyncio.Queue[list[bytes]] = asyncio.Queue()
        dealer = DealerConnection(router.endpoint, inbox.put_nowait, on_reconnect=reconnected.set)
        await dealer.connect(10)
        assert await round_trip(dealer, inbox, b"1") == [b"1", b"", b"hello 1"]
        await asyncio.to_thread(router.restart)
        await asyncio.wait_for(reconnected.wait(), 20)
        assert dealer.connected
        assert await round_trip(dealer, inbox, b"2") == [b"2", b"", b"hello 2"]
        dealer.close()

    asyncio.run(main())


def test_nothing_listening_is_an_os_error_and_a_send_without_connection_is_refused() -> None:
    async def main() -> None:
        dealer = DealerConnection("tcp://127.0.0.1:1", lambda parts: None)
        with pytest.raises(OSError):
            await dealer.connect(5)
        assert not dealer.connected and dealer.send([b"t", b"", b"x"]) is False

    asyncio.run(main())


@pytest.mark.parametrize("endpoint", ["127.0.0.1:7777", "http://127.0.0.1:7777", "tcp://127.0.0.1", "ipc://", "tcp://h:port"])
def test_endpoints_it_cannot_use_are_refused_with_the_forms_it_takes(endpoint: str) -> None:
    with pytest.raises(ValueError, match="tcp://HOST:PORT or ipc://PATH"):
        split_endpoint(endpoint)

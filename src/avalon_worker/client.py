"""A requester over ZMQ: fetch and check a worker's signup, submit work orders, open results.

A thin shell around `requester`; every call has a timeout, so a dead worker is an error
message, not a hang. While it waits, it watches the connection (a ZMQ socket monitor), so
that the message at the end says what went wrong: nothing listening, a peer that does not
speak ZMQ, or a worker that took the order and did not answer in time.
"""

from __future__ import annotations

import itertools
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

import zmq
from zmq.utils.monitor import recv_monitor_message

from . import defaults, jsonio
from .crypto import SigningKey
from .errors import Error, SetupError
from .requester import (
    InputSpec,
    ItemModeName,
    PendingWorkOrder,
    WorkerInfo,
    WorkOrderFailed,
    build_work_order,
    open_result,
)

__all__ = ["DEFAULT_TIMEOUT_S", "BadEndpoint", "OrderClient", "WorkerClient", "WorkerUnavailable", "check_endpoint"]

DEFAULT_TIMEOUT_S = defaults.CLIENT_TIMEOUT_S  # how long each call waits for its reply
ENDPOINT_FORMS = "tcp://HOST:PORT or ipc://PATH"
_monitors = itertools.count()  # numbers the socket monitors' inproc addresses
_MONITORED = (
    zmq.EVENT_CONNECTED | zmq.EVENT_CONNECT_RETRIED | zmq.EVENT_DISCONNECTED
    | zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
)


class WorkerUnavailable(Error):
    """The worker did not answer in time, or its answer was not JSON."""


class BadEndpoint(SetupError, ValueError):
    """An endpoint a client cannot connect to; the message says what to write instead."""


def check_endpoint(endpoint: str) -> str:
    """`endpoint` unchanged if a client can connect to it (tcp://HOST:PORT or ipc://PATH), else
    `BadEndpoint` saying what to write instead."""
    scheme, sep, address = endpoint.partition("://")
    if not sep:
        guess = f" (did you mean tcp://{endpoint}?)" if ":" in endpoint else ""
        raise BadEndpoint(f"{endpoint!r} has no scheme: write {ENDPOINT_FORMS}{guess}")
    if scheme == "ipc" and address:
        return endpoint
    if scheme in ("http", "https"):
        raise BadEndpoint(f"{endpoint!r} is an HTTP address; a worker's ZMQ endpoint is {ENDPOINT_FORMS}")
    if scheme != "tcp":
        raise BadEndpoint(f"{endpoint!r}: scheme {scheme!r} is not supported; write {ENDPOINT_FORMS}")
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise BadEndpoint(f"{endpoint!r}: write tcp://HOST:PORT with a port from 1 to 65535")
    return endpoint


def order_time_limit_s(timeout_s: float) -> float:
    """The time limit a client with `timeout_s` asks for its orders: up to a second less, so
    that the worker's answer that the limit was reached arrives while the client still waits."""
    return timeout_s - min(1.0, timeout_s / 4)


class _Link:
    """What a socket monitor has said about the connection so far."""

    def __init__(self, sock: zmq.Socket[bytes]) -> None:
        # An address of its own: pyzmq's default names the socket's descriptor, which a socket
        # made after this one is closed may reuse while libzmq has not yet let the old name go
        # (it does so on its own thread): "Address already in use".
        self.monitor = sock.get_monitor_socket(_MONITORED, addr=f"inproc://avalon-client-monitor-{next(_monitors)}")
        self.connected = False  # a TCP (or IPC) connection is up
        self.handshaken = False  # ... and the peer completed the ZMTP handshake
        self.refused = False  # a connection attempt failed (refused, unreachable, unresolvable)
        self.not_zmq = False  # the peer accepted a connection but failed the ZMTP handshake

    def read(self) -> None:
        """Take in every event the monitor has queued."""
        while self.monitor.poll(0):
            event = recv_monitor_message(self.monitor)["event"]
            if event == zmq.EVENT_CONNECTED:
                self.connected = True
            elif event == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                self.handshaken, self.not_zmq = True, False
            elif event == zmq.EVENT_CONNECT_RETRIED:
                self.refused = not self.connected
            elif event == zmq.EVENT_DISCONNECTED:
                self.connected = self.handshaken = False
            elif event in (zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL, zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL):
                self.not_zmq = True

    def close(self) -> None:
        self.monitor.close(linger=0)


class OrderClient(ABC):
    """What the clients of both transports share: a work order prepared for the worker, then
    completed (sent, and its result verified and decrypted). `WorkerClient` speaks to a worker's
    ZMQ endpoint, `front.listener_client.ListenerClient` to the HTTP listener in front of it."""

    timeout_s: float
    _next_id: int

    @abstractmethod
    def worker(self) -> WorkerInfo:
        """The worker's signup, fetched once and verified."""

    @abstractmethod
    def complete(self, pending: PendingWorkOrder) -> list[bytes]:
        """Send `pending` and return its verified, decrypted outputs."""

    def _response_time_s(self) -> float:
        """The order's responseTimeoutMSecs, in seconds: a little less than this client's timeout
        (`order_time_limit_s`), so that the worker's own answer says that the limit was reached
        while the client still waits."""
        return order_time_limit_s(self.timeout_s)

    def _request_id(self) -> int:
        self._next_id += 1
        return self._next_id

    def prepare(
        self,
        workload_id: str,
        inputs: Sequence[bytes | InputSpec],
        *,
        requester_key: SigningKey | None = None,
        output_modes: Sequence[ItemModeName] | None = None,
        include_data_hash: bool = True,
    ) -> PendingWorkOrder:
        """A work order for this worker, not sent yet (its id and the keys to open its result).

        `include_data_hash=False` sends no input `dataHash` (see `requester.build_work_order`).
        """
        return build_work_order(
            self.worker(), workload_id, inputs, requester_key=requester_key, output_modes=output_modes,
            include_data_hash=include_data_hash, request_id=self._request_id(),
            response_timeout_ms=int(self._response_time_s() * 1000),
        )

    def submit(
        self,
        workload_id: str,
        inputs: Sequence[bytes | InputSpec],
        *,
        requester_key: SigningKey | None = None,
        output_modes: Sequence[ItemModeName] | None = None,
        include_data_hash: bool = True,
    ) -> list[bytes]:
        """Run a work order and return its verified, decrypted outputs (`prepare`, then `complete`)."""
        return self.complete(self.prepare(workload_id, inputs, requester_key=requester_key, output_modes=output_modes,
                                          include_data_hash=include_data_hash))


class WorkerClient(OrderClient):
    """A connection to one worker endpoint (a REQ socket, recreated after a timeout)."""

    def __init__(
        self,
        endpoint: str,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        context: zmq.Context[zmq.Socket[bytes]] | None = None,
        signup: dict[str, Any] | None = None,
        on_wait: Callable[[str], None] | None = None,
    ) -> None:
        """`signup`: a signup already fetched and checked (e.g. attested); otherwise it is fetched.
        `on_wait` is told, once, when the worker cannot be reached yet and the client keeps
        trying (up to `timeout_s`). An endpoint no client can use raises `BadEndpoint`."""
        self.endpoint = check_endpoint(endpoint)
        self.timeout_s = timeout_s
        self._context = context or zmq.Context.instance()
        self._on_wait = on_wait
        self._socket: zmq.Socket[bytes] | None = None
        self._link: _Link | None = None
        self._next_id = 1
        self._worker: WorkerInfo | None = WorkerInfo.from_signup(signup) if signup is not None else None

    def __enter__(self) -> WorkerClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close(linger=0)
            self._socket = None
        if self._link is not None:
            self._link.close()
            self._link = None

    def call(self, frame: bytes) -> Any:
        """Send one request frame and return the decoded JSON reply."""
        if self._socket is None:
            sock = self._context.socket(zmq.REQ)
            sock.setsockopt(zmq.LINGER, 0)
            sock.setsockopt(zmq.SNDTIMEO, int(self.timeout_s * 1000))
            self._link = _Link(sock)
            sock.connect(self.endpoint)
            self._socket = sock
        try:
            self._socket.send(frame)
        except zmq.Again:
            self._give_up()
        reply = self._socket.recv() if self._wait_for_reply(self._socket) else self._give_up()
        try:
            return jsonio.loads(reply)
        except ValueError:
            raise WorkerUnavailable(f"{self.endpoint} answered with something that is not JSON") from None

    def _wait_for_reply(self, sock: zmq.Socket[bytes]) -> bool:
        """Wait up to the timeout for a reply, watching the connection while it is not up."""
        link = self._link
        assert link is not None
        deadline = time.monotonic() + self.timeout_s
        while (remaining_ms := int((deadline - time.monotonic()) * 1000)) > 0:
            if link.handshaken:  # the usual case: one poll, no monitor traffic
                if sock.poll(remaining_ms, zmq.POLLIN):
                    return True
                link.read()
                continue
            poller = zmq.Poller()
            poller.register(sock, zmq.POLLIN)
            poller.register(link.monitor, zmq.POLLIN)
            if sock in dict(poller.poll(remaining_ms)):
                return True
            link.read()
            if link.not_zmq:
                return False
            if link.refused and self._on_wait is not None:
                self._on_wait(f"cannot connect to {self.endpoint} yet (nothing listening?); "
                              f"retrying for up to {self.timeout_s:g} s")
                self._on_wait = None  # say it once
        return False

    def _give_up(self) -> NoReturn:
        """Raise `WorkerUnavailable` saying what the connection did; close the socket (a REQ
        socket that missed its reply cannot be reused)."""
        link = self._link
        assert link is not None
        link.read()
        if link.not_zmq:
            message = f"{self.endpoint} is not a ZMQ worker endpoint (the peer failed the ZMQ handshake)"
        elif link.handshaken:
            message = (f"{self.endpoint} took the request but did not answer within {self.timeout_s:g} s "
                       "(the work order may need longer: raise --timeout-s)")
        elif link.connected:
            message = (f"{self.endpoint} accepted a connection but never completed the ZMQ handshake "
                       f"within {self.timeout_s:g} s: is it a worker's ZMQ endpoint?")
        else:
            message = (f"no worker at {self.endpoint}: no connection within {self.timeout_s:g} s "
                       "(is it running, and is the address right?)")
        self.close()
        raise WorkerUnavailable(message)

    def signup(self, nonce: bytes | None = None) -> dict[str, Any]:
        """The worker's raw signup document (unverified)."""
        params = {"nonce": nonce.hex()} if nonce is not None else None
        frame = jsonio.dumps({"jsonrpc": "2.0", "id": self._request_id(), "method": "ProcessWorkerSignup", "params": params})
        reply = self.call(frame)
        if isinstance(reply, dict) and "error" in reply:
            error = reply["error"]
            message = error.get("message") if isinstance(error, dict) else error
            raise WorkerUnavailable(f"{self.endpoint} refused the signup request: {str(message)[:500]}")
        if not isinstance(reply, dict):
            raise WorkerUnavailable(f"{self.endpoint} answered the signup request with something other than an object")
        return reply

    def worker(self) -> WorkerInfo:
        """The worker's signup, fetched once and verified."""
        if self._worker is None:
            self._worker = WorkerInfo.from_signup(self.signup())
        return self._worker

    def complete(self, pending: PendingWorkOrder) -> list[bytes]:
        """Send `pending` and return its verified, decrypted outputs.

        Raises `requester.WorkOrderFailed` for an error reply and `requester.VerificationError`
        for a reply that fails verification.
        """
        worker = self.worker()
        sent = time.monotonic()
        reply = self.call(pending.frame(self._request_id()))
        try:
            return open_result(pending, reply, worker)
        except WorkOrderFailed as exc:
            if time.monotonic() - sent >= order_time_limit_s(self.timeout_s):
                exc.hint = (f"this client asked the worker to answer within {order_time_limit_s(self.timeout_s):g} s; "
                            "raise --timeout-s to give it longer")
            raise

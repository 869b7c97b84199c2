"""A requester over ZMQ: fetch and check a worker's signup, submit work orders, open results.

A thin shell around `requester`; every call has a timeout, so a dead worker is an error
message, not a hang.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import zmq

from . import jsonio
from .crypto import SigningKey
from .errors import Error
from .requester import InputSpec, ItemModeName, WorkerInfo, build_work_order, open_result

DEFAULT_TIMEOUT_S = 30.0


class WorkerUnavailable(Error):
    """The worker did not answer in time, or its answer was not JSON."""


class WorkerClient:
    """A connection to one worker endpoint (a REQ socket, recreated after a timeout)."""

    def __init__(
        self,
        endpoint: str,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        context: zmq.Context | None = None,
        signup: dict[str, Any] | None = None,
    ) -> None:
        """`signup`: a signup already fetched and checked (e.g. attested); otherwise it is fetched."""
        self.endpoint = endpoint
        self.timeout_s = timeout_s
        self._context = context or zmq.Context.instance()
        self._socket: zmq.Socket | None = None
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

    def call(self, frame: bytes) -> Any:
        """Send one request frame and return the decoded JSON reply."""
        if self._socket is None:
            sock = self._context.socket(zmq.REQ)
            sock.setsockopt(zmq.LINGER, 0)
            timeout_ms = int(self.timeout_s * 1000)
            sock.setsockopt(zmq.SNDTIMEO, timeout_ms)
            sock.setsockopt(zmq.RCVTIMEO, timeout_ms)
            sock.connect(self.endpoint)
            self._socket = sock
        try:
            self._socket.send(frame)
            reply = self._socket.recv()
        except zmq.Again:
            self.close()  # a REQ socket that missed its reply cannot be reused
            raise WorkerUnavailable(
                f"no reply from {self.endpoint} within {self.timeout_s:g} s: is the worker running and reachable?"
            ) from None
        try:
            return jsonio.loads(reply)
        except ValueError:
            raise WorkerUnavailable(f"{self.endpoint} answered with something that is not JSON") from None

    def _request_id(self) -> int:
        self._next_id += 1
        return self._next_id

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

    def submit(
        self,
        workload_id: str,
        inputs: Sequence[bytes | InputSpec],
        *,
        requester_key: SigningKey | None = None,
        output_modes: Sequence[ItemModeName] | None = None,
        include_data_hash: bool = True,
    ) -> list[bytes]:
        """Run a work order and return its verified, decrypted outputs.

        `include_data_hash=False` sends no input `dataHash` (see `requester.build_work_order`).
        Raises `requester.WorkOrderFailed` for an error reply and `requester.VerificationError`
        for a reply that fails verification.
        """
        worker = self.worker()
        pending = build_work_order(
            worker, workload_id, inputs, requester_key=requester_key, output_modes=output_modes,
            include_data_hash=include_data_hash, request_id=self._request_id(),
        )
        reply = self.call(pending.frame(self._request_id()))
        return open_result(pending, reply, worker)

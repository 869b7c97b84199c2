"""The ZMQ transport: a REP-compatible JSON-RPC endpoint around a `Processor`.

It moves frames and enforces the request size limit; it knows nothing of work orders. It
answers every frame, and stops only when asked to (SIGTERM/SIGINT via `StopFlag`), after
replying to the request in hand.
"""

from __future__ import annotations

import logging
import signal
from collections.abc import Callable
from types import FrameType

import zmq

from .errors import ErrorCode
from .processor import Processor, encode, error_reply

logger = logging.getLogger(__name__)

# 16 MiB of input is ~22 MiB once base64-encoded inside a JSON string inside a JSON string.
DEFAULT_MAX_REQUEST_BYTES = 32 * 1024 * 1024
# Frames up to this multiple of the limit are received and refused with a clear error; larger
# ones are dropped by ZMQ itself before they reach memory (the peer is disconnected).
HARD_LIMIT_FACTOR = 4
POLL_MS = 200


class StopFlag:
    """Set by SIGTERM/SIGINT (or by hand); the serving loop checks it between requests."""

    def __init__(self) -> None:
        self.is_set = False

    def set(self, signum: int | None = None, frame: FrameType | None = None) -> None:
        self.is_set = True

    def install(self) -> None:
        signal.signal(signal.SIGTERM, self.set)
        signal.signal(signal.SIGINT, self.set)


def refuse_frame(body: list, limit: int) -> bytes | None:
    """The error reply for a request body (its frames) that is too large or not one frame, else None."""
    size = sum(len(part) for part in body)
    if size > limit:
        message = f"request is {size} bytes; this worker accepts at most {limit} (see --max-request-bytes)"
    elif len(body) != 1:
        message = "send each request as one frame"
    else:
        return None
    return encode(error_reply(None, ErrorCode.INVALID_PARAMETER, message))


def bind_socket(context: zmq.Context, bind: str, socket_type: int, max_request_bytes: int) -> tuple[zmq.Socket, str]:
    """Bind a socket with the size limit and no lingering; return it and its real endpoint."""
    sock = context.socket(socket_type)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.MAXMSGSIZE, max_request_bytes * HARD_LIMIT_FACTOR)
    sock.bind(bind)
    return sock, sock.getsockopt_string(zmq.LAST_ENDPOINT)


def serve(
    processor: Processor,
    bind: str,
    *,
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
    stop: StopFlag | None = None,
    on_ready: Callable[[str], None] | None = None,
) -> None:
    """Serve requests one at a time on a REP socket until `stop` is set."""
    stop = stop or StopFlag()
    context = zmq.Context()
    sock, endpoint = bind_socket(context, bind, zmq.REP, max_request_bytes)
    if on_ready is not None:
        on_ready(endpoint)
    try:
        while not stop.is_set:
            if not sock.poll(POLL_MS, zmq.POLLIN):
                continue
            parts = sock.recv_multipart(copy=False)
            refusal = refuse_frame(parts, max_request_bytes)
            sock.send(refusal if refusal is not None else processor.handle(parts[0].bytes))
    finally:
        sock.close(linger=0)
        context.term()
    logger.info("stopped")

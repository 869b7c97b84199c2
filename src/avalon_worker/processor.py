"""JSON-RPC dispatch: one request frame in, one reply frame out, no I/O.

`Processor.handle` never raises and always returns a reply: a REP socket left without one
would hang Avalon's enclave manager forever.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from . import jsonio
from .core import open_work_order, seal_result
from .errors import ErrorCode, InvalidParameterError, IntegrityError, WorkloadError, WorkOrderError
from .identity import Identity
from .models import WorkOrderRequest
from .session_cache import DEFAULT_SIZE as DEFAULT_CACHE_SIZE
from .session_cache import SessionKeyCache
from .attestation.providers import AttestationProvider
from .signup import signup_document
from .workload.registry import WorkloadRegistry, WorkloadRunError

logger = logging.getLogger(__name__)


def error_reply(reply_id: Any, code: int, message: str, work_order_id: str | None = None) -> dict[str, Any]:
    """A JSON-RPC error object in the shape Avalon's clients read."""
    error: dict[str, Any] = {"code": int(code), "message": message}
    if work_order_id is not None:
        error["data"] = {"workOrderId": work_order_id}
    return {"jsonrpc": "2.0", "id": reply_id, "error": error}


def encode(reply: dict[str, Any]) -> bytes:
    return jsonio.dumps(reply)


def jsonrpc_id(message: Any) -> Any:
    """The request's id if JSON-RPC allows it (a string or a number), else null."""
    value = message.get("id") if isinstance(message, dict) else None
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        return None
    if isinstance(value, int) and not -(2**63) <= value < 2**64:
        return None  # beyond what JSON libraries round-trip exactly
    return value


@dataclass(frozen=True)
class Outcome:
    """A reply frame and what happened, for logs and metrics (never payloads)."""

    reply: bytes
    method: str
    workload: str = "-"
    status: str = "ok"
    milliseconds: float = 0.0


def _bad_frame(message: str, reply_id: Any = None) -> Outcome:
    return Outcome(encode(error_reply(reply_id, ErrorCode.INVALID_PARAMETER, message)), "invalid", status="error 2")


class Processor:
    """Turns request frames into reply frames for one worker identity."""

    def __init__(
        self,
        identity: Identity,
        registry: WorkloadRegistry,
        *,
        attestation: AttestationProvider | None = None,
        reuse_session_iv: bool = False,
        session_cache_size: int = DEFAULT_CACHE_SIZE,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.identity = identity
        self.keys = SessionKeyCache(identity, session_cache_size)
        self.registry = registry
        self.attestation = attestation
        self.reuse_session_iv = reuse_session_iv
        self._clock = clock
        self._signup = encode(signup_document(identity, attestation))

    def handle(self, frame: bytes | bytearray) -> bytes:
        """Answer one request frame."""
        return self.process(frame).reply

    def process(self, frame: bytes | bytearray) -> Outcome:
        """Answer one request frame, and say what happened."""
        try:
            message = jsonio.loads(frame)  # orjson checks UTF-8 itself: no decoded copy of the frame
        except (ValueError, RecursionError):
            try:
                bytes(frame).decode("utf-8")
            except UnicodeDecodeError:
                return _bad_frame("request is not UTF-8 text")
            return _bad_frame("request is not valid JSON (or is nested too deeply)")
        outer_id = jsonrpc_id(message)
        method = message.get("method") if isinstance(message, dict) else None
        if method == "ProcessWorkerSignup":
            return Outcome(self._signup_reply(message.get("params"), outer_id), "signup")
        if method == "ProcessWorkOrder":
            return self._work_order(message.get("params"), outer_id)
        if not isinstance(message, dict):
            return _bad_frame("request must be a JSON-RPC object")
        return _bad_frame("unknown method: use ProcessWorkerSignup or ProcessWorkOrder", outer_id)

    def _signup_reply(self, params: Any, outer_id: Any) -> bytes:
        if params is None or params == {} or params == []:
            return self._signup
        nonce_hex = params.get("nonce") if isinstance(params, dict) else None
        try:
            nonce = bytes.fromhex(nonce_hex) if isinstance(nonce_hex, str) else None
        except ValueError:
            nonce = None
        if nonce is None or not 0 < len(nonce) <= 64:
            return encode(
                error_reply(outer_id, ErrorCode.INVALID_PARAMETER, 'signup params must be null or {"nonce": "<hex, 1 to 64 bytes>"}')
            )
        try:
            return encode(signup_document(self.identity, self.attestation, nonce))
        except Exception as exc:  # the attestation device failed; say so, keep serving
            logger.error("signup with nonce failed: %s", type(exc).__name__)
            return encode(error_reply(outer_id, ErrorCode.UNKNOWN_ERROR, "the worker could not produce a fresh quote"))

    def _work_order(self, params: Any, outer_id: Any) -> Outcome:
        started = self._clock()
        reply_id: Any = outer_id
        work_order_id: str | None = None
        workload = "-"
        try:
            if isinstance(params, str):
                try:
                    inner = jsonio.loads(params)
                except (ValueError, RecursionError):
                    raise InvalidParameterError("params is not a valid JSON WorkOrderSubmit request") from None
            elif isinstance(params, dict):
                inner = params
            else:
                raise InvalidParameterError("params must be the WorkOrderSubmit request as a JSON string")
            if isinstance(inner, dict) and "id" in inner:
                reply_id = jsonrpc_id(inner)
            request = WorkOrderRequest.parse(inner)
            work_order_id = request.work_order_id
            workload = request.workload_id
            if workload not in self.registry:
                raise InvalidParameterError(
                    f"workload {workload[:64]!r} is not registered; this worker runs {', '.join(self.registry.names())}",
                    work_order_id=work_order_id,
                )
            opened = open_work_order(request, self.keys)
            try:
                outputs = self.registry.run(workload, opened.inputs)
            except WorkloadRunError as exc:
                raise WorkloadError(str(exc), work_order_id=work_order_id) from None
            reply = seal_result(opened, outputs, self.keys, reuse_session_iv=self.reuse_session_iv)
            status, detail = "ok", ""
        except WorkOrderError as exc:
            reply = error_reply(reply_id, exc.code, exc.message, exc.work_order_id)
            status, detail = f"error {int(exc.code)}", f" ({exc.step})" if isinstance(exc, IntegrityError) else ""
        except Exception as exc:  # a bug of ours: answer, log the type only, keep serving
            reply = error_reply(reply_id, ErrorCode.UNKNOWN_ERROR, "internal error in the worker", work_order_id)
            status, detail = "error 1", f" (internal {type(exc).__name__})"
        elapsed_ms = (self._clock() - started) * 1000
        logger.info("work order %s workload=%r %s%s %.1f ms", work_order_id or "-", workload[:64], status, detail, elapsed_ms)
        known = workload if workload in self.registry else "-"  # metrics label only registered names
        return Outcome(encode(reply), "work-order", known, status, elapsed_ms)

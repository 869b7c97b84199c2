"""JSON-RPC dispatch: one request frame in, one reply frame out, no I/O.

`Processor.handle` never raises and always returns a reply: a REP socket left without one
would hang Avalon's enclave manager forever. The signup document comes from a function the
caller hands in (`signup.signup_function`), so nothing here talks to an attestation device.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from . import jsonio, jsonrpc, receipt
from .core import OpenedWorkOrder, WorkerKeys, open_work_order, seal_result
from .errors import BusyError, ErrorCode, IntegrityError, InvalidParameterError, WorkOrderError
from .identity import Identity
from .models import WorkOrderRequest, WorkOrderResult, is_hex, strip_0x
from .orderlog import OrderLog
from .replay import ReplayGuard, Seen
from .session_cache import DEFAULT_SIZE as DEFAULT_CACHE_SIZE
from .session_cache import SessionKeyCache
from .workload.registry import WorkloadRegistry

logger = logging.getLogger(__name__)

SealFunction = Callable[[OpenedWorkOrder, Sequence[bytes], WorkerKeys], WorkOrderResult]
SIGNUP_PARAMS = 'signup params must be null or {"nonce": "<hex, 1 to 64 bytes>"}'


@dataclass(slots=True)
class Outcome:
    """A reply frame and what happened, for logs and metrics (never payloads). Not frozen: one
    is made per order, and a frozen one costs a call per field."""

    reply: bytes
    method: str
    workload: str = "-"
    status: str = "ok"
    milliseconds: float = 0.0
    work_order_id: str | None = None


def _refused(reply_to: Any, exc: WorkOrderError) -> Outcome:
    return Outcome(jsonrpc.error_for(exc, reply_to), "invalid", status=f"error {int(exc.code)}")


class Processor:
    """Turns request frames into reply frames for one worker identity.

    `signup(nonce)` makes the signup document. `seal` encrypts and signs results
    (`core.seal_result`; the legacy `core.insecure_seal_result_reusing_session_iv` only for old
    clients). With `worker_id`, orders addressed to another worker are refused (code 2); with
    `replay_guard`, an order whose workOrderId was served within its window is refused (code 2).
    """

    def __init__(
        self,
        identity: Identity,
        registry: WorkloadRegistry,
        signup: Callable[[bytes | None], Mapping[str, Any]],
        *,
        seal: SealFunction = seal_result,
        worker_id: str | None = None,
        replay_guard: ReplayGuard | None = None,
        session_cache_size: int = DEFAULT_CACHE_SIZE,
        clock: Callable[[], float] = time.perf_counter,
        order_log: OrderLog | None = None,
    ) -> None:
        self.identity = identity
        self.keys = SessionKeyCache(identity, session_cache_size)
        self.registry = registry
        self._make_signup = signup
        self._seal = seal
        self._worker_id = strip_0x(worker_id).lower() if worker_id else None
        self._replay_guard = replay_guard
        self._clock = clock
        self.order_log = order_log  # the per-order line's cheap writer; else it goes through logging
        self._signup = jsonio.dumps(signup(None))
        self._updater_id = identity.worker_id  # the worker's id and key in its receipt updates
        self._verifying_key = identity.verifying_key_pem

    def handle(self, frame: bytes | bytearray) -> bytes:
        """Answer one request frame."""
        return self.process(frame).reply

    def process(self, frame: bytes | bytearray) -> Outcome:
        """Answer one request frame, and say what happened."""
        try:
            message, outer_id = jsonrpc.decode_request(frame, "request", "request must be a JSON-RPC object")
        except InvalidParameterError as exc:
            return _refused(None, exc)
        method = message.get("method")
        if method == "ProcessWorkerSignup":
            return Outcome(self._signup_reply(message.get("params"), outer_id), "signup")
        if method == "ProcessWorkOrder":
            return self._work_order(message.get("params"), outer_id, message.get("receiptUpdate") is True)
        return _refused(outer_id, InvalidParameterError("unknown method: use ProcessWorkerSignup or ProcessWorkOrder"))

    def _signup_reply(self, params: Any, outer_id: Any) -> bytes:
        if params is None or params == {} or params == []:
            return self._signup
        nonce_hex = params.get("nonce") if isinstance(params, dict) else None
        try:
            nonce = bytes.fromhex(nonce_hex) if isinstance(nonce_hex, str) and is_hex(nonce_hex) else None
        except ValueError:
            nonce = None
        if nonce is None or not 0 < len(nonce) <= 64:
            return jsonrpc.invalid(outer_id, SIGNUP_PARAMS)
        try:
            return jsonio.dumps(self._make_signup(nonce))
        except Exception as exc:  # the attestation device failed; say so, keep serving
            logger.error("signup with nonce failed: %s", type(exc).__name__)
            return jsonrpc.error_reply(outer_id, ErrorCode.UNKNOWN_ERROR, "the worker could not produce a fresh quote")

    def _check_addressing(self, request: WorkOrderRequest) -> None:
        if self._worker_id is not None and strip_0x(request.worker_id).lower() != self._worker_id:
            raise InvalidParameterError(
                "workerId is not this worker's id: fetch its signup and address the order to its worker_id",
                work_order_id=request.work_order_id,
            )

    def _check_replay(self, request: WorkOrderRequest) -> None:
        if self._replay_guard is None:
            return
        seen = self._replay_guard.check_and_record(request.work_order_id)
        if seen is Seen.REPLAY:
            raise InvalidParameterError(
                f"workOrderId was already served within the last {self._replay_guard.window_s:g} s: "
                "send each work order once, under a new workOrderId",
                work_order_id=request.work_order_id,
            )
        if seen is Seen.FULL:
            raise BusyError("the replay guard is full: try again later", work_order_id=request.work_order_id)

    def _run(self, request: WorkOrderRequest) -> WorkOrderResult:
        if request.workload_id not in self.registry:
            raise InvalidParameterError(
                f"workload {request.workload_id[:64]!r} is not registered; "
                f"this worker runs {', '.join(self.registry.names())}",
                work_order_id=request.work_order_id,
            )
        self._check_addressing(request)
        opened = open_work_order(request, self.keys)
        self._check_replay(request)  # after the integrity checks: a forgery cannot use up an id
        outputs = self.registry.run(request.workload_id, opened.inputs)
        return self._seal(opened, outputs, self.keys)

    def _work_order(self, params: Any, outer_id: Any, with_receipt_update: bool = False) -> Outcome:
        """Answer a ProcessWorkOrder; `with_receipt_update`: add the worker's signed update to the
        order's receipt to the reply, as its `receiptUpdate` member (`receipt.worker_update`)."""
        started = self._clock()
        reply_to: Any = outer_id
        work_order_id: str | None = None
        workload = "-"
        update: tuple[int, str] | None = None  # the receipt update's type and data
        try:
            inner, reply_to = jsonrpc.read_work_order(params, outer_id)
            request = WorkOrderRequest.parse(inner)
            work_order_id, workload = request.work_order_id, request.workload_id
            result = self._run(request)
            reply = jsonrpc.result_reply(reply_to, result.to_json())
            status, detail = "ok", ""
            if with_receipt_update:
                update = receipt.COMPLETED, result.response_hash().hex()
        except WorkOrderError as exc:
            work_order_id = exc.work_order_id or work_order_id
            reply = jsonrpc.error_reply(reply_to, exc.code, exc.message, work_order_id)
            status, detail = f"error {int(exc.code)}", f" ({exc.step})" if isinstance(exc, IntegrityError) else ""
            update = (receipt.FAILED, str(int(exc.code))) if with_receipt_update else None
        except Exception as exc:  # a bug of ours: answer, log the type only, keep serving
            reply = jsonrpc.error_reply(reply_to, ErrorCode.UNKNOWN_ERROR, "internal error in the worker", work_order_id)
            status, detail = "error 1", f" (internal {type(exc).__name__})"
            update = (receipt.FAILED, str(int(ErrorCode.UNKNOWN_ERROR))) if with_receipt_update else None
        if update is not None and work_order_id is not None:
            signed = receipt.worker_update(self.identity, self._verifying_key, work_order_id, self._updater_id, *update)
            reply = jsonrpc.with_member(reply, "receiptUpdate", signed)
        elapsed_ms = (self._clock() - started) * 1000
        if self.order_log is not None:
            self.order_log.line(work_order_id or "-", workload[:64], status + detail, elapsed_ms)
        else:
            logger.info("work order %s workload=%r %s%s %.1f ms", work_order_id or "-", workload[:64], status, detail, elapsed_ms)
        known = workload if workload in self.registry else "-"  # metrics label only registered names
        return Outcome(reply, "work-order", known, status, elapsed_ms, work_order_id)

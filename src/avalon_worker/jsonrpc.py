"""JSON-RPC 2.0 as this worker speaks it: decoding frames, the id rule, and every reply.

Each frame is decoded once, and the nested WorkOrderSubmit string once; everything after
works on the decoded values. Every error reply of the worker, the supervisor and the
in-process server is built here, so they all follow one id rule:

- An id must be a string, a number or null (JSON-RPC 2.0 §4); anything else is refused with
  error 2. Integers are echoed exactly, whatever their size.
- A reply to a work order carries the inner WorkOrderSubmit request's id when it has one, else
  the outer ProcessWorkOrder id; results and errors alike. An inner id that breaks the rule
  is answered with the outer id; an outer one with null.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from . import jsonio
from .errors import ErrorCode, InvalidParameterError, WorkOrderError
from .models import is_hex, is_id, strip_0x

ID_RULE = "the JSON-RPC id must be a string, a number or null"
# Beyond 2**53 a float may be an integer orjson could not keep exact; such frames are re-read.
_EXACT_FLOAT_LIMIT = 2.0**53


def is_valid_id(value: Any) -> bool:
    """True for a string, a (finite) number or null: the ids JSON-RPC 2.0 allows."""
    if value is None or isinstance(value, str):
        return True
    if isinstance(value, int):
        return not isinstance(value, bool)
    return isinstance(value, float) and math.isfinite(value)


def _inexact_id(message: Any) -> bool:
    value = message.get("id") if isinstance(message, dict) else None
    return isinstance(value, float) and abs(value) >= _EXACT_FLOAT_LIMIT and value.is_integer()


def decode(data: bytes | bytearray | memoryview | str, what: str) -> Any:
    """Decode one JSON text; raise code 2 saying what `what` is not."""
    try:
        message = jsonio.loads(data)  # orjson checks UTF-8 itself: no decoded copy of the frame
    except (ValueError, RecursionError):
        if not isinstance(data, str):
            try:
                bytes(data).decode("utf-8")
            except UnicodeDecodeError:
                raise InvalidParameterError(f"{what} is not UTF-8 text") from None
        raise InvalidParameterError(f"{what} is not valid JSON (or is nested too deeply)") from None
    if type(message) is dict and type(message.get("id")) is float and _inexact_id(message):
        message = jsonio.loads_exact(data)
    return message


def decode_request(data: bytes | bytearray | memoryview | str, what: str, shape: str) -> tuple[dict[str, Any], Any]:
    """Decode one JSON-RPC request: the object and the id its reply carries. Raise code 2
    saying what `what` is not, or that it must be `shape` (an object)."""
    message = decode(data, what)
    if not isinstance(message, dict):
        raise InvalidParameterError(shape)
    return message, reply_id(message)


def reply_id(message: Mapping[str, Any], fallback: Any = None) -> Any:
    """The id a reply to `message` carries: its own if it has one, else `fallback`.

    Raises `InvalidParameterError` (to be answered with `fallback`) if its id breaks the rule.
    """
    if "id" not in message:
        return fallback
    value = message["id"]
    if type(value) is int or type(value) is str:  # the usual ids, without a call
        return value
    if not is_valid_id(value):
        raise InvalidParameterError(f"{ID_RULE}, not {_json_type(value)}")
    return value


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "true or false"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def read_work_order(params: Any, outer_id: Any) -> tuple[Mapping[str, Any], Any]:
    """The WorkOrderSubmit request a ProcessWorkOrder carries, and the id its reply carries.

    `params` is the request as a JSON string (Avalon's form) or, leniently, as an object.
    """
    if isinstance(params, str):
        inner = decode(params, "params (the WorkOrderSubmit request)")
    elif isinstance(params, dict):
        inner = params
    else:
        raise InvalidParameterError("params must be the WorkOrderSubmit request as a JSON string")
    if not isinstance(inner, dict):
        raise InvalidParameterError("the work order must be a JSON object (a WorkOrderSubmit request)")
    return inner, reply_id(inner, outer_id)


def error_reply(reply_to: Any, code: int, message: str, work_order_id: str | None = None) -> bytes:
    """A JSON-RPC error reply in the shape Avalon's clients read."""
    error: dict[str, Any] = {"code": int(code), "message": message}
    if work_order_id is not None:
        error["data"] = {"workOrderId": work_order_id}
    return jsonio.dumps({"jsonrpc": "2.0", "id": reply_to, "error": error})


def error_for(exc: WorkOrderError, reply_to: Any) -> bytes:
    """The error reply for a `WorkOrderError`."""
    return error_reply(reply_to, exc.code, exc.message, exc.work_order_id)


def invalid(reply_to: Any, message: str) -> bytes:
    """An error 2 reply."""
    return error_reply(reply_to, ErrorCode.INVALID_PARAMETER, message)


def result_reply(reply_to: Any, result: Mapping[str, Any]) -> bytes:
    """A JSON-RPC result reply."""
    return jsonio.dumps({"jsonrpc": "2.0", "id": reply_to, "result": result})


def with_member(reply: bytes, name: str, value: Any) -> bytes:
    """A reply object (as `result_reply` and `error_reply` make them) with one more member."""
    return reply[:-1] + b"," + jsonio.dumps(name) + b":" + jsonio.dumps(value) + b"}"


def inspect_request(frame: bytes | memoryview) -> tuple[Any, str | None, str, int | None]:
    """(reply id, workOrderId, workload, responseTimeoutMSecs) of a request frame, as far as they
    can be read: what the supervisor needs to answer for a request its worker did not answer."""
    reply_to: Any = None
    work_order_id: str | None = None
    workload = "-"
    timeout_ms: int | None = None
    try:
        outer = decode(frame, "request")
        if not isinstance(outer, dict):
            return reply_to, work_order_id, workload, timeout_ms
        reply_to = reply_id(outer)
        inner, reply_to = read_work_order(outer.get("params"), reply_to)
        params = inner.get("params")
        if isinstance(params, dict):
            raw_id = params.get("workOrderId")
            work_order_id = raw_id if is_id(raw_id) else None
            raw = params.get("workloadId")
            if isinstance(raw, str) and is_hex(raw):
                workload = bytes.fromhex(strip_0x(raw)).decode("utf-8")
            timeout = params.get("responseTimeoutMSecs")
            if isinstance(timeout, int) and not isinstance(timeout, bool) and timeout > 0:
                timeout_ms = timeout
    except (InvalidParameterError, UnicodeDecodeError):
        pass
    return reply_to, work_order_id, workload, timeout_ms

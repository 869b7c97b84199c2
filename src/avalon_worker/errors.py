"""Errors that carry an EEA TC v1.1 error code.

The protocol core raises these; only the processor at the boundary turns them into JSON-RPC
error objects. Messages are meant for the requester: they say what to fix and never contain
keys or plaintext.
"""

from __future__ import annotations

from enum import IntEnum


class ErrorCode(IntEnum):
    """EEA TC v1.1 generic error codes (§6.2), plus Avalon's BUSY."""

    SUCCESS = 0
    UNKNOWN_ERROR = 1
    INVALID_PARAMETER = 2
    ACCESS_DENIED = 3
    INVALID_SIGNATURE = 4
    PENDING = 5
    UNSUPPORTED_MODE = 6
    BUSY = 8


class WorkOrderError(Exception):
    """A failure the requester is told about, with its spec error code."""

    code: ErrorCode = ErrorCode.UNKNOWN_ERROR

    def __init__(self, message: str, *, work_order_id: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.work_order_id = work_order_id


class InvalidParameterError(WorkOrderError):
    """Malformed frame, JSON, field, encoding, or unknown workload (code 2)."""

    code = ErrorCode.INVALID_PARAMETER


class IntegrityError(WorkOrderError):
    """Any failed decryption, hash or signature check (code 4).

    Every integrity failure carries the same message so that a peer learns nothing about
    which step failed; `step` names it for the worker's own log.
    """

    code = ErrorCode.INVALID_SIGNATURE
    MESSAGE = (
        "work order integrity check failed: check the session key, IVs, request hash, "
        "dataHash values and requester signature"
    )

    def __init__(self, step: str, *, work_order_id: str | None = None) -> None:
        super().__init__(self.MESSAGE, work_order_id=work_order_id)
        self.step = step


class UnsupportedModeError(WorkOrderError):
    """Unsupported payload format or encryption algorithm (code 6)."""

    code = ErrorCode.UNSUPPORTED_MODE


class WorkloadError(WorkOrderError):
    """The workload raised, failed, or ran out of time or memory (code 1)."""

    code = ErrorCode.UNKNOWN_ERROR


class BusyError(WorkOrderError):
    """The worker's queue is full; try again later (Avalon's BUSY, 8)."""

    code = ErrorCode.BUSY

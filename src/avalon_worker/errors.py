"""Every error this package raises, under one root: `Error`, whose `diagnostics()` a person can act on.

`WorkOrderError` and its subclasses carry an EEA TC v1.1 error code: the protocol core raises
them and only `jsonrpc` turns them into JSON-RPC error objects. Their messages are meant for
the requester: they say what to fix and never contain keys or plaintext.

The command line catches `Error` once, prints `diagnostics()` and exits with `exit_status`.
"""

from __future__ import annotations

from enum import IntEnum


class Error(Exception):
    """The root of every error of this package.

    `message` says what happened; `hint`, when there is one, what to do about it.
    `exit_status` is what the command line exits with: 1 when something failed a check or
    could not be reached, 2 when the set-up or the command itself is wrong.
    """

    hint: str = ""
    exit_status: int = 1

    def __init__(self, message: str = "", *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if hint is not None:
            self.hint = hint

    def diagnostics(self) -> str:
        """The message and, when there is one, what to do about it."""
        if not self.hint:
            return self.message
        return f"{self.message}\n  hint: {self.hint}"


class SetupError(Error):
    """A problem with how the program was started (arguments, files, state); exit status 2."""

    exit_status = 2


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


class WorkOrderError(Error):
    """A failure the requester is told about, with its spec error code."""

    code: ErrorCode = ErrorCode.UNKNOWN_ERROR

    def __init__(self, message: str, *, work_order_id: str | None = None) -> None:
        super().__init__(message)
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
    """The workload raised, failed, or ran out of time or memory (code 1).

    The message names the workload and the problem, never the inputs.
    """

    code = ErrorCode.UNKNOWN_ERROR


class BusyError(WorkOrderError):
    """The worker cannot take the order now; try again later (Avalon's BUSY, 8)."""

    code = ErrorCode.BUSY

"""Text handling as the C++ of Avalon's example workloads does it, on bytes, so that their
Python versions answer byte for byte what Avalon's worker answers for the same input.

`stoi` is `std::stoi` (base 10, via `strtol`); `tokens` is the `strtok_r(str.c_str(), " ")`
loop the wallet and file workloads split their input with; `int32` is the wrap-around of a
32-bit `int` addition on the x86-64 builds Avalon's enclaves run.
"""

from __future__ import annotations

from ...errors import Error

INT_MIN = -(2**31)
INT_MAX = 2**31 - 1
_C_SPACE = frozenset(b" \t\n\v\f\r")  # isspace() in the C locale, which strtol skips
_DIGITS = frozenset(b"0123456789")


class StoiError(Error):
    """What `std::stoi` throws; the workloads turn it into Avalon's answer texts."""


class InvalidArgument(StoiError):
    """`std::invalid_argument`: no digits to convert."""


class OutOfRange(StoiError):
    """`std::out_of_range`: the number does not fit an `int`."""


def c_string(data: bytes) -> bytes:
    """What `.c_str()` shows of a `std::string` holding `data`: everything before the first NUL."""
    return data.split(b"\0", 1)[0]


def stoi(token: bytes) -> int:
    """`std::stoi(token)`: leading white space skipped, an optional sign, then the digits up to
    the first non-digit ("12abc" is 12); `InvalidArgument` if there are none, `OutOfRange`
    beyond a 32-bit int."""
    text = c_string(token)
    start = 0
    while start < len(text) and text[start] in _C_SPACE:
        start += 1
    end = start + 1 if start < len(text) and text[start] in b"+-" else start
    digits_from = end
    while end < len(text) and text[end] in _DIGITS:
        end += 1
    if end == digits_from:
        raise InvalidArgument
    significant = text[digits_from:end].lstrip(b"0")
    if len(significant) > 10:  # beyond any int, and too long for int() to parse cheaply
        raise OutOfRange
    value = int(text[start:end])
    if not INT_MIN <= value <= INT_MAX:
        raise OutOfRange
    return value


def int32(value: int) -> int:
    """`value` wrapped to a 32-bit int, as an overflowing `int` addition comes out."""
    return (value - INT_MIN) % 2**32 + INT_MIN


def c_divide(a: int, b: int) -> int:
    """C's integer division, which truncates toward zero."""
    quotient = abs(a) // abs(b)
    return quotient if (a < 0) == (b < 0) else -quotient


def to_string(value: int) -> bytes:
    """`std::to_string(int)`."""
    return str(value).encode("ascii")


def tokens(data: bytes) -> list[bytes]:
    """The words `strtok_r(data.c_str(), " ", ...)` yields: split on spaces only (a tab is part
    of a word), runs of spaces count as one, and nothing after a NUL."""
    return [word for word in c_string(data).split(b" ") if word]

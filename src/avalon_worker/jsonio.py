"""JSON encoding and decoding on the hot path, through orjson.

JSON was about 15 % of the worker's CPU time for a small work order with a reused session key
(two decodes of the nested request and one encode of the reply), and orjson does the same work
several times faster than the standard library.
"""

from __future__ import annotations

import json
from typing import Any

import orjson

JSONDecodeError = orjson.JSONDecodeError  # a ValueError


def loads(data: bytes | bytearray | memoryview | str) -> Any:
    """Decode JSON text; raises `JSONDecodeError` (a ValueError) on bad input or deep nesting.

    Integers beyond 64 bits come back as floats (orjson's choice); `loads_exact` keeps them.
    """
    return orjson.loads(data)


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def loads_exact(data: bytes | bytearray | memoryview | str) -> Any:
    """Decode JSON text that `loads` accepted, keeping integers of any size exact.

    The standard library accepts everything orjson accepts and more; NaN and Infinity, which
    only it would take, are refused here too.
    """
    text = bytes(data).decode("utf-8") if not isinstance(data, str) else data
    return json.loads(text, parse_constant=_refuse_constant)


def dumps(value: Any) -> bytes:
    """Compact UTF-8 JSON."""
    try:
        return orjson.dumps(value)
    except TypeError:  # integers beyond 64 bits, which the standard library can still write
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode("utf-8")

"""`python-fib`: the Fibonacci number at the position given by the first input item."""

from __future__ import annotations

import re
from collections.abc import Sequence

from ..base import Workload, WorkloadFailure

# F(10000) has 2,090 digits; far beyond this a request is a way to burn the worker's time.
MAX_POSITION = 10_000
_INTEGER = re.compile(r"[+-]?[0-9]+")


def fibonacci(n: int) -> int:
    a, b = 0, 1
    for _ in range(n):
        a, b = b, a + b
    return a


class FibonacciWorkload(Workload):
    def run(self, inputs: Sequence[bytes]) -> bytes:
        text = inputs[0].decode("utf-8", errors="replace").strip()
        if not _INTEGER.fullmatch(text):
            raise WorkloadFailure("python-fib expects a decimal integer position")
        if text.startswith("-") and text.strip("-0"):
            raise WorkloadFailure("python-fib expects a position of 0 or more")
        digits = text.lstrip("+-").lstrip("0")
        if len(digits) > len(str(MAX_POSITION)) or int(digits or "0") > MAX_POSITION:
            raise WorkloadFailure(f"python-fib accepts positions up to {MAX_POSITION}")
        n = int(digits or "0")
        return f"Fibonacci number at position {n} = {fibonacci(n)}".encode("utf-8")

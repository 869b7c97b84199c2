"""`python-hello`: greets the name in the first input item."""

from __future__ import annotations

from collections.abc import Sequence

from ..base import Workload, WorkloadFailure


class HelloWorkload(Workload):
    def run(self, inputs: Sequence[bytes]) -> bytes:
        try:
            name = inputs[0].decode("utf-8")
        except UnicodeDecodeError:
            raise WorkloadFailure("python-hello expects its first input item to be UTF-8 text") from None
        return b"Hello " + name.encode("utf-8")

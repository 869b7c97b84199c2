"""`echo-result`: the plaintexts of all input items, concatenated in index order."""

from __future__ import annotations

from collections.abc import Sequence

from ..base import Workload


class EchoWorkload(Workload):
    def run(self, inputs: Sequence[bytes]) -> bytes:
        return b"".join(inputs)

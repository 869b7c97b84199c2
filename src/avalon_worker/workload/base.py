"""Base classes for workloads.

`Workload` is the API for new code: `run(inputs)` gets the plaintext of every input item in
index order and returns the result bytes (or a list, one per requested output item). Raise
`WorkloadFailure` with a message that is safe to send back in clear. A workload that keeps
files sets `uses_data_dir` and is created with `data_dir`, a folder of its own in the worker's
state directory.

`LegacyWorkload` is the original worker's API, kept so its workloads run unchanged:
`execute(in_data_array) -> (ok, bytes)`, where each item is a dict with plaintext `data` bytes.
They subclass it by the original worker's name and path, `avalon_worker.workload.workload.WorkLoad`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, ClassVar

from ..errors import Error


class WorkloadFailure(Error):
    """A workload's own, deliberate failure; its message is returned to the requester in clear.

    Never put input data in it: error replies are not encrypted.
    """


class Workload(ABC):
    """A workload for this worker: plaintext inputs in, plaintext result(s) out."""

    # True for a workload that keeps files: the registry then creates it as
    # `cls(data_dir=...)`, with `<state dir>/workloads/<workload id>` (None when the registry
    # was loaded without a state directory). The folder is the workload's to create, on first
    # use, so that a worker that fails its start-up checks leaves nothing behind.
    uses_data_dir: ClassVar[bool] = False

    @abstractmethod
    def run(self, inputs: Sequence[bytes]) -> bytes | Sequence[bytes]:
        """Compute the result from the inputs (index order)."""


class LegacyWorkload(ABC):
    """The original worker's workload API, which its workloads subclass as
    `avalon_worker.workload.workload.WorkLoad`."""

    def __init__(self) -> None:
        super().__init__()

    @abstractmethod
    def execute(self, in_data_array: list[dict[str, Any]]) -> tuple[bool, bytes]:
        """Run on items with plaintext `data` bytes; return (status, result bytes)."""

"""How `run-orders` and `demo` show their results: a row per work order as it completes.

On a terminal the table fits its width (long inputs and results end in an ellipsis, the
work-order id shows its first 8 digits, which `avalon-worker result` takes as well, if the
terminal is wide enough for it) and the
reasons of failed orders that were cut are printed whole under it; piped, every value is
printed whole; `--json` prints one JSON object per order. Control characters in inputs and
results are shown escaped, so that one value cannot break the table.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TextIO

HEADER = ("id", "workload", "input", "ms", "status", "result")
ID_WIDTH = 8  # on a terminal: the id's first digits, a prefix `result` takes
MS_WIDTH = 8
STATUS_WIDTH = len("verified")
MIN_RESULT_WIDTH = 12  # inputs get at most a third of a terminal line, results never less than this
_CONTROL = {code: f"\\x{code:02x}" for code in [*range(0x20), 0x7F]} | {0x0A: "\\n", 0x09: "\\t", 0x0D: "\\r"}


@dataclass(frozen=True)
class Outcome:
    """One work order's row: `result` is the verified output, or why it failed."""

    workload: str
    input: str
    ok: bool
    result: str
    ms: float
    work_order_id: str = ""
    pending: bool = False  # not failed: not done within the client's time limit (`result` fetches it)

    @property
    def status(self) -> str:
        return "verified" if self.ok else "pending" if self.pending else "FAILED"


def printable(text: str) -> str:
    """`text` with control characters escaped (a newline becomes the two characters \\n)."""
    return text.translate(_CONTROL)


def fit(text: str, width: int, ellipsis: str) -> str:
    """`text` cut to `width` characters, ending in `ellipsis` if it was cut."""
    if len(text) <= width:
        return text
    return text[: max(0, width - len(ellipsis))] + ellipsis[:width]


class Table:
    """A row per order, printed as it completes. `width` is the terminal's (values are cut to fit it),
    or None when the output is not a terminal (values are printed whole)."""

    def __init__(self, out: TextIO, orders: Sequence[tuple[str, str]], width: int | None) -> None:
        self.out = out
        self.width = width
        self.ellipsis = "…" if _can_encode(out, "…") else "..."
        self.id_width = 64  # whole, when piped
        self.workload_width = max([len(HEADER[1]), *(len(printable(w)) for w, _ in orders)])
        self.input_width = max([len(HEADER[2]), *(len(printable(i)) for _, i in orders)])
        self.result_width: int | None = None
        self.cut: list[Outcome] = []  # failed orders whose reason did not fit: printed whole at the end
        if width is not None:  # one column spare: a line as wide as the terminal wraps on some
            room = width - 1 - (self.workload_width + MS_WIDTH + STATUS_WIDTH + 4 * 2)
            # The id only where it leaves the input and the result their least.
            self.id_width = ID_WIDTH if room - ID_WIDTH - 2 >= len(HEADER[2]) + MIN_RESULT_WIDTH else 0
            room -= self.id_width + 2 if self.id_width else 0
            self.input_width = max(len(HEADER[2]), min(self.input_width, room // 3))
            self.result_width = max(MIN_RESULT_WIDTH, room - self.input_width)

    def _line(self, work_order: str, workload: str, input: str, ms: str, status: str, result: str) -> str:
        cut = self.ellipsis
        if self.width is not None:
            input = fit(input, self.input_width, cut)
            result = fit(result, self.result_width or 0, cut)
        columns = (work_order[:self.id_width].ljust(self.id_width),) if self.id_width else ()
        return "  ".join((*columns, workload.ljust(self.workload_width), input.ljust(self.input_width),
                          ms.rjust(MS_WIDTH), status.ljust(STATUS_WIDTH), result)).rstrip()

    def start(self) -> None:
        print(self._line(*HEADER), file=self.out, flush=True)

    def row(self, outcome: Outcome) -> None:
        result = printable(outcome.result)
        line = self._line(outcome.work_order_id or "-", printable(outcome.workload), printable(outcome.input),
                          f"{outcome.ms:.1f}", outcome.status, result)
        if not outcome.ok and self.result_width is not None and len(result) > self.result_width:
            self.cut.append(outcome)
        print(line, file=self.out, flush=True)

    def summary(self, text: str) -> None:
        """A line under the table; the first comes after the failures that were cut, printed whole."""
        for outcome in self.cut:
            print(f"{outcome.status} {outcome.work_order_id[:max(self.id_width, ID_WIDTH)]} {outcome.workload}: "
                  f"{printable(outcome.result)}", file=self.out)
        self.cut = []
        print(text, file=self.out, flush=True)


class JsonLines:
    """One JSON object per order, every value whole; the summary goes to `err`."""

    def __init__(self, out: TextIO, err: TextIO) -> None:
        self.out = out
        self.err = err

    def start(self) -> None:
        pass

    def row(self, outcome: Outcome) -> None:
        record = {"workOrderId": outcome.work_order_id, "workload": outcome.workload, "input": outcome.input,
                  "status": outcome.status.lower(), "result": outcome.result, "ms": round(outcome.ms, 3)}
        print(json.dumps(record, ensure_ascii=False), file=self.out, flush=True)

    def summary(self, text: str) -> None:
        print(text, file=self.err, flush=True)


def terminal_width(out: TextIO) -> int | None:
    """The width to fit, if `out` is a terminal (COLUMNS wins, as everywhere); else None."""
    isatty = getattr(out, "isatty", None)
    if not (callable(isatty) and isatty()):
        return None
    return shutil.get_terminal_size().columns


def _can_encode(out: TextIO, text: str) -> bool:
    try:
        text.encode(getattr(out, "encoding", None) or "ascii")
    except (UnicodeEncodeError, LookupError):
        return False
    return True

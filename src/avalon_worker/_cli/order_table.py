"""How `run-orders` and `demo` show their results: a row per work order as it completes.

On a terminal the table fits its width (long inputs and results end in an ellipsis); piped,
every value is printed whole; `--json` prints one JSON object per order. Control characters
in inputs and results are shown escaped, so that one value cannot break the table.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TextIO

HEADER = ("workload", "input", "ms", "status", "result")
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

    @property
    def status(self) -> str:
        return "verified" if self.ok else "FAILED"


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
        self.workload_width = max([len(HEADER[0]), *(len(printable(w)) for w, _ in orders)])
        self.input_width = max([len(HEADER[1]), *(len(printable(i)) for _, i in orders)])
        self.result_width: int | None = None
        if width is not None:  # one column spare: a line as wide as the terminal wraps on some
            room = width - 1 - (self.workload_width + MS_WIDTH + STATUS_WIDTH + 4 * 2)
            self.input_width = max(len(HEADER[1]), min(self.input_width, room // 3))
            self.result_width = max(MIN_RESULT_WIDTH, room - self.input_width)

    def _line(self, workload: str, input: str, ms: str, status: str, result: str) -> str:
        cut = self.ellipsis
        if self.width is not None:
            input = fit(input, self.input_width, cut)
            result = fit(result, self.result_width or 0, cut)
        return "  ".join((workload.ljust(self.workload_width), input.ljust(self.input_width),
                          ms.rjust(MS_WIDTH), status.ljust(STATUS_WIDTH), result)).rstrip()

    def start(self) -> None:
        print(self._line(*HEADER), file=self.out, flush=True)

    def row(self, outcome: Outcome) -> None:
        line = self._line(printable(outcome.workload), printable(outcome.input), f"{outcome.ms:.1f}",
                          outcome.status, printable(outcome.result))
        print(line, file=self.out, flush=True)

    def summary(self, text: str) -> None:
        print(text, file=self.out, flush=True)


class JsonLines:
    """One JSON object per order, every value whole; the summary goes to `err`."""

    def __init__(self, out: TextIO, err: TextIO) -> None:
        self.out = out
        self.err = err

    def start(self) -> None:
        pass

    def row(self, outcome: Outcome) -> None:
        record = {"workload": outcome.workload, "input": outcome.input, "status": outcome.status.lower(),
                  "result": outcome.result, "ms": round(outcome.ms, 3)}
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

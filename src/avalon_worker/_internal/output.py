"""A worker process's standard output and error, taken from its workloads and kept out of the log.

A workload's `print`, a C library's write to descriptor 2, a process it starts: all of it went
to the worker's own standard output (where `serve` says where it listens) and standard error
(the log), where a workload could forge log lines or flood the log, and could block on a pipe
that nobody read. In each worker process `OutputCapture` points descriptors 1 and 2 at a pipe
that a thread of its own drains at once, so a workload never waits on its output; the worker's
own log moves to a copy of the old descriptor 2. Below DEBUG nothing more is done: what a
workload writes is read and dropped. At DEBUG, after each order, what the order wrote is logged
on one line naming the order, its first `SHOWN_BYTES` escaped (no line break or control
character of the workload's reaches the log), with the count of all it wrote.

To know where one order's output ends, the process writes a marker of its own (random, per
process) into the pipe after the order and waits for the thread to reach it; only when the order
wrote something, which one `FIONREAD` and a counter tell.
"""

from __future__ import annotations

import fcntl
import logging
import os
import struct
import sys
import termios
import threading
from typing import Any

logger = logging.getLogger("avalon_worker.workload")

SHOWN_BYTES = 4096  # of one order's output, in the DEBUG line; the rest is counted
_READ_BYTES = 65536


def _move_log(stream: Any, order_log: Any) -> None:
    """Point the logging handlers that write to descriptor 2, and the order log, at `stream`."""
    loggers = [logging.getLogger(), *(item for item in logging.Logger.manager.loggerDict.values()
                                      if isinstance(item, logging.Logger))]
    for each in loggers:
        for handler in each.handlers:
            if isinstance(handler, logging.StreamHandler) and _on_descriptor_2(handler.stream):
                handler.setStream(stream)
    if order_log is not None and _on_descriptor_2(order_log.stream):
        order_log.stream = stream


def _on_descriptor_2(stream: Any) -> bool:
    try:
        return bool(stream.fileno() == 2)
    except (AttributeError, OSError, ValueError):
        return False


class OutputCapture:
    """Descriptors 1 and 2 of this process into a pipe drained by a thread (see the module
    docstring). `start` once, in a worker process just forked; `order_done` after each order."""

    def __init__(self, read_end: int, debug: bool) -> None:
        self.debug = debug
        self._read_end = read_end
        self._marker = b"\n\x00avalon-worker " + os.urandom(12).hex().encode() + b"\x00\n"
        self._lock = threading.Condition()
        self._total = 0  # bytes read since the last marker
        self._shown = bytearray()  # the first SHOWN_BYTES of them
        self._tail = b""  # what may be the start of a marker split between two reads
        self._markers = 0  # markers the thread has reached
        threading.Thread(target=self._drain, name="workload-output", daemon=True).start()

    @classmethod
    def start(cls, order_log: Any = None) -> OutputCapture:
        """Take descriptors 1 and 2 from this process's workloads; its log (logging's handlers on
        descriptor 2, and `order_log`) goes on where it went."""
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (AttributeError, OSError, ValueError):
                pass
        log = os.fdopen(os.dup(2), "w", buffering=1, encoding="utf-8", errors="backslashreplace")
        _move_log(log, order_log)
        read_end, write_end = os.pipe()
        os.dup2(write_end, 1)
        os.dup2(write_end, 2)
        os.close(write_end)
        return cls(read_end, logger.isEnabledFor(logging.DEBUG))

    def _drain(self) -> None:
        while True:
            try:
                data = os.read(self._read_end, _READ_BYTES)
            except OSError:
                return
            if not data:
                return
            if self.debug:
                self._take(data)

    def _take(self, data: bytes) -> None:
        with self._lock:
            data = self._tail + data
            while (at := data.find(self._marker)) >= 0:
                self._keep(data[:at])
                data = data[at + len(self._marker):]
                self._markers += 1
                self._lock.notify_all()
            keep = len(self._marker) - 1  # a marker's beginning waits for the rest of it
            self._tail = data[-keep:] if len(data) > keep else data
            self._keep(data[: len(data) - len(self._tail)])

    def _keep(self, data: bytes) -> None:
        self._total += len(data)
        room = SHOWN_BYTES - len(self._shown)
        if room > 0:
            self._shown += data[:room]

    def order_done(self, work_order_id: str | None) -> None:
        """At DEBUG: log what the order that just ended wrote, if anything."""
        if not self.debug:
            return
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        try:
            pending = struct.unpack("i", fcntl.ioctl(self._read_end, termios.FIONREAD, b"\0\0\0\0"))[0]
        except OSError:  # a library OS without FIONREAD on pipes: look with a marker every time
            pending = 1
        with self._lock:
            if not pending and not self._total and not self._tail:
                return
            wanted = self._markers + 1
        os.write(1, self._marker)
        with self._lock:
            self._lock.wait_for(lambda: self._markers >= wanted, timeout=5.0)
            total, shown = self._total, bytes(self._shown)
            self._total, self._shown = 0, bytearray()
        if total:
            text = shown.decode("utf-8", "backslashreplace").encode("unicode_escape").decode("ascii")
            logger.debug("work order %s: the workload wrote %d bytes: %s%s", work_order_id or "-", total, text,
                         "…" if total > len(shown) else "")

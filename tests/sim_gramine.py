"""A simulated Gramine /dev/attestation tree on a real file system (GRAMINE.md §1.1).

- ``attestation_type``: "dcap" (no newline) or whatever the test asks for.
- ``my_target_info``: 512 bytes, MRENCLAVE at offset 0.
- ``user_report_data``: a FIFO. Whatever was written since the last quote is the report data:
  truncated to 64 bytes, short writes zero-padded, as Gramine treats one write(). (A FIFO is a
  byte stream, so several writes between two quotes are seen as one; the worker writes once.)
  Reading it back is not simulated.
- ``quote``: a symlink to a FIFO served by a thread, so content is made at each open: every
  open gets a fresh quote, signed through the test PKI, over the report data of that moment
  (the link moves to a new FIFO per open, so one reader never sees two quotes).
- ``fail_with_eacces()`` points ``quote`` at a write-only sysctl, so open() fails with a real
  EACCES from the kernel (even for root), as Gramine's quote file does when AESM fails;
  ``heal()`` points it back.
"""

from __future__ import annotations

import errno
import os
import threading
from pathlib import Path
from typing import Any

from attestation_fixtures import MRENCLAVE, QuoteFactory

# Mode 0200 sysctls: reading them is refused with EACCES whatever the caller's privileges.
WRITE_ONLY_SYSCTLS = ("/proc/sys/vm/compact_memory", "/proc/sys/net/ipv4/route/flush")


def eacces_target() -> str | None:
    """A path whose open-for-read fails with EACCES on this machine, if there is one."""
    for path in WRITE_ONLY_SYSCTLS:
        try:
            os.close(os.open(path, os.O_RDONLY))
        except OSError as exc:
            if exc.errno == errno.EACCES:
                return path
    return None


class SimulatedGramine:
    """Serve a /dev/attestation look-alike under `root` until `stop()`."""

    def __init__(
        self,
        root: Path,
        factory: QuoteFactory,
        *,
        attestation_type: str | None = "dcap",
        with_quote: bool = True,
        mrenclave: bytes = MRENCLAVE,
        quote_version: int = 3,
        **body_fields: Any,
    ) -> None:
        self.root = Path(root)
        self.factory = factory
        self.mrenclave = mrenclave
        self.quote_version = quote_version
        self.body_fields = body_fields
        self.report_data = bytes(64)
        self.quotes_served = 0
        self._attestation_type = attestation_type
        self._with_quote = with_quote
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._rd_fd: int | None = None
        self._fifo = self.root / ".quote.0.fifo"
        self._fifo_count = 0
        self._failing_target: str | None = None
        self._link_lock = threading.Lock()

    def __enter__(self) -> SimulatedGramine:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        if self._attestation_type is not None:
            (self.root / "attestation_type").write_bytes(self._attestation_type.encode())
        target_info = bytearray(512)
        target_info[0:32] = self.mrenclave
        (self.root / "my_target_info").write_bytes(bytes(target_info))
        keys = self.root / "keys"
        keys.mkdir(exist_ok=True)
        if not self._with_quote:
            return
        os.mkfifo(self.root / "user_report_data")
        # Held open so writers never block and the data waits in the pipe until a quote is made.
        self._rd_fd = os.open(self.root / "user_report_data", os.O_RDONLY | os.O_NONBLOCK)
        self._fifo = self._new_fifo()
        self._point_quote()
        self._thread = threading.Thread(target=self._serve_quotes, name="sim-gramine-quote", daemon=True)
        self._thread.start()

    def fail_with_eacces(self) -> None:
        target = eacces_target()
        assert target is not None, "no EACCES source on this machine"
        with self._link_lock:
            self._failing_target = target
            self._point_quote()

    def heal(self) -> None:
        with self._link_lock:
            self._failing_target = None
            self._point_quote()

    def _new_fifo(self) -> Path:
        self._fifo_count += 1
        path = self.root / f".quote.{self._fifo_count}.fifo"
        os.mkfifo(path)
        return path

    def _point_quote(self) -> None:
        target = self._failing_target or self._fifo.name
        tmp = self.root / ".quote.tmp"
        os.symlink(target, tmp)
        os.replace(tmp, self.root / "quote")

    def _drain_report_data(self) -> None:
        assert self._rd_fd is not None
        chunks = []
        while True:
            try:
                chunk = os.read(self._rd_fd, 4096)
            except BlockingIOError:
                break
            if not chunk:
                break
            chunks.append(chunk)
        if chunks:
            data = b"".join(chunks)
            self.report_data = data[:64].ljust(64, b"\x00")

    def _serve_quotes(self) -> None:
        while not self._stop.is_set():
            current = self._fifo
            fd = os.open(current, os.O_WRONLY)  # blocks until someone opens `quote`
            try:
                if self._stop.is_set():
                    return
                # Each open gets its own pipe: the next open goes to a new FIFO, so a reader
                # still draining this one can never receive a second quote.
                with self._link_lock:
                    self._fifo = self._new_fifo()
                    self._point_quote()
                # The writer finished its write(2) before opening `quote`: the bytes are in the pipe.
                self._drain_report_data()
                quote = self.factory.quote(
                    self.report_data, version=self.quote_version, mrenclave=self.mrenclave, **self.body_fields
                )
                self.quotes_served += 1
                view = memoryview(quote)
                while view:
                    try:
                        written = os.write(fd, view)
                    except BrokenPipeError:
                        break
                    view = view[written:]
            finally:
                os.close(fd)
                os.unlink(current)

    def stop(self) -> None:
        self._stop.set()
        thread = self._thread
        while thread is not None and thread.is_alive():
            # An O_RDWR open counts as a reader, releasing the thread's blocking open.
            poke = os.open(self._fifo, os.O_RDWR | os.O_NONBLOCK)
            os.close(poke)
            thread.join(timeout=0.05)
        if self._rd_fd is not None:
            os.close(self._rd_fd)
            self._rd_fd = None

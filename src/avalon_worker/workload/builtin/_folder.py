"""A workload's own folder in the worker's state directory, shared by every worker process.

Created on first use, mode 0700 like the state directory (under Gramine-SGX it lies on the
state directory's encrypted mount). Changes that read, then write, hold an exclusive `flock` on
a lock file, because the worker processes of one worker run orders side by side; files are
replaced whole (written aside, synced, renamed), so a reader sees the old or the new contents
and a crash leaves one of the two.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ..base import WorkloadFailure

LOCK_NAME = ".lock"


class WorkloadFolder:
    """The folder of the workload named `workload` (None: the worker has no state directory)."""

    def __init__(self, path: Path | None, workload: str) -> None:
        self._path = path
        self._workload = workload

    def path(self) -> Path:
        """The folder, created if it is not there yet."""
        if self._path is None:
            raise WorkloadFailure(f"{self._workload} keeps files, and this worker was started without a state directory")
        try:
            self._path.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError:
            raise WorkloadFailure(f"{self._workload} cannot create its folder in the worker's state directory") from None
        return self._path

    @contextmanager
    def locked(self) -> Iterator[Path]:
        """The folder, under an exclusive lock that every worker process takes for a change."""
        folder = self.path()
        try:
            fd = os.open(folder / LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError:
            raise WorkloadFailure(f"{self._workload} cannot open its lock file") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield folder
        finally:
            os.close(fd)  # closing releases the lock


def read_file(path: Path) -> bytes | None:
    """The file's contents, or None if it is not there."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None


def replace_file(path: Path, data: bytes) -> None:
    """Write `data` as the whole of `path`: aside first, synced, then renamed over it."""
    aside = path.with_name(f".{path.name}.{os.getpid()}.new")
    fd = os.open(aside, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(aside, path)
    except BaseException:
        aside.unlink(missing_ok=True)
        raise

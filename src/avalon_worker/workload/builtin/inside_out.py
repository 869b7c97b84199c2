"""`inside-out-eval`: Avalon's file read/write workload, with its files kept in a folder of
the worker's own.

From hyperledger/avalon `examples/apps/inside_out_eval/workload/` (`inside_out_eval_logic.cpp`,
`inside_out_eval_plug-in.cpp`) and the file handler it calls, `tc/sgx/trusted_worker_manager/
enclave_untrusted/enclave_bridge/file_io_processor.cpp` (commit cf762fd, Apache-2.0). Each input
item is `read <name>` or `write <name> <content>` (words split on spaces, so the content is one
word); each gets an output item of its own, `RESULT: <file content>`, `RESULT: FILE WRITE
SUCCESS`, `RESULT: FAILED TO READ: Unable to open file`, `RESULT: Insufficient arguments passed
for i/o operation`, or `RESULT: ` for any other command, as Avalon answers them.

Where we differ on purpose: Avalon's worker opened any path the requester named, outside the
enclave, with the enclave manager's rights (its README reads files under /project). Here a name
is a plain file name (letters, digits, `.`, `_`, `-`, not starting with `.`), kept in
`<state dir>/workloads/inside-out-eval/files/`; anything else is answered
`FAILED TO READ: Unable to open file (...)`. Files hold at most 1,024 bytes (Avalon's
`MAX_FILE_SIZE`; it failed on larger ones) and the folder at most 1,000 files.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from ..base import Workload
from ._cpp_text import c_string, tokens
from ._folder import WorkloadFolder, read_file, replace_file

MAX_FILE_BYTES = 1024
MAX_FILES = 1000
_PLAIN_NAME = re.compile(rb"[A-Za-z0-9_][A-Za-z0-9._-]{0,99}")

INSUFFICIENT = b"Insufficient arguments passed for i/o operation"
READ_FAILED = b"FAILED TO READ: Unable to open file"
WRITE_FAILED = b"FAILED TO WRITE: Unable to open file"
WRITTEN = b"FILE WRITE SUCCESS"
NOT_PLAIN = b" (file names are plain names in this worker's inside-out-eval folder, without '/')"


class InsideOutWorkload(Workload):
    """`InsideOutEvalLogic::ProcessRequest` for each input item."""

    uses_data_dir = True

    def __init__(self, data_dir: Path | None) -> None:
        self.folder = WorkloadFolder(data_dir, "inside-out-eval")

    def run(self, inputs: Sequence[bytes]) -> list[bytes]:
        return [self.process(text) for text in inputs]

    def process(self, text: bytes) -> bytes:
        """The answer to one input item."""
        words = tokens(text)
        command = words[0] if words else b""
        if command == b"read":
            outcome = self.read(words[1]) if len(words) == 2 else INSUFFICIENT
        elif command == b"write":
            outcome = self.write(words[1], words[2]) if len(words) == 3 else INSUFFICIENT
        else:
            outcome = b"" if words else INSUFFICIENT
        return b"RESULT: " + c_string(outcome)

    def read(self, name: bytes) -> bytes:
        if not _PLAIN_NAME.fullmatch(name):
            return READ_FAILED + NOT_PLAIN
        try:
            data = read_file(self.folder.path() / "files" / name.decode("ascii"))
        except OSError:
            data = None
        if data is None:
            return READ_FAILED
        if len(data) > MAX_FILE_BYTES:
            return b"FAILED TO READ: the file is larger than %d bytes" % MAX_FILE_BYTES
        return data

    def write(self, name: bytes, content: bytes) -> bytes:
        if not _PLAIN_NAME.fullmatch(name):
            return WRITE_FAILED + NOT_PLAIN
        if len(content) > MAX_FILE_BYTES:
            return b"FAILED TO WRITE: the content is larger than %d bytes" % MAX_FILE_BYTES
        with self.folder.locked() as folder:
            files = folder / "files"
            path = files / name.decode("ascii")
            try:
                files.mkdir(mode=0o700, exist_ok=True)
                if not path.exists() and sum(1 for _ in files.iterdir()) >= MAX_FILES:
                    return b"FAILED TO WRITE: the folder is full (%d files)" % MAX_FILES
                replace_file(path, content)
            except OSError:
                return WRITE_FAILED
        return WRITTEN

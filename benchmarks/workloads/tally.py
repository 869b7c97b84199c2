"""A workload that records each time it runs, for `benchmarks/redteam.py`: it appends its input
(an order's tag) to the file named by `AVALON_TALLY_FILE`, one line per run, so that an order
run twice shows as two lines."""

from __future__ import annotations

import os
import time
from collections.abc import Sequence

from avalon_worker.workload import Workload


class TallyWorkload(Workload):
    def run(self, inputs: Sequence[bytes]) -> bytes:
        tag = inputs[0]
        handle = os.open(os.environ["AVALON_TALLY_FILE"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(handle, tag + b"\n")  # one short append: whole, whoever else appends
        finally:
            os.close(handle)
        time.sleep(0.02)  # long enough that kills land while orders run
        return b"tallied " + tag

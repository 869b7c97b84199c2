"""Workloads that misbehave on purpose, for the pool's isolation tests."""

from __future__ import annotations

import ctypes
import os
import time

from avalon_worker.workload import Workload


class SleepWorkload(Workload):
    def run(self, inputs):
        time.sleep(float(inputs[0]))
        return b"slept " + inputs[0]


class ExitWorkload(Workload):
    def run(self, inputs):
        os._exit(3)


class MemoryErrorWorkload(Workload):
    def run(self, inputs):
        raise MemoryError


class HogWorkload(Workload):
    """Allocates and touches the given number of MiB."""

    def run(self, inputs):
        block = bytearray(int(inputs[0]) * 1024 * 1024)
        return bytes(block[:1])


class SpinWorkload(Workload):
    def run(self, inputs):
        while True:
            pass


class SegfaultWorkload(Workload):
    def run(self, inputs):
        ctypes.string_at(0)
        return b"unreachable"

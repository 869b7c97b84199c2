"""Workloads that misbehave on purpose, for the pool's isolation tests."""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys
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


class DescendantWorkload(Workload):
    """Starts a long-lived process whose command line carries the input, then sleeps for the
    time given after the marker: a descendant the worker must not leave behind."""

    def run(self, inputs):
        marker, _, seconds = inputs[0].decode().partition(" ")
        subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)", marker])
        time.sleep(float(seconds or 0))
        return b"started " + marker.encode()


_ESCAPE = """
import os, time
left, done = os.pipe()
if os.fork():
    os.read(left, 1)
    os._exit(0)  # once the grandchild has left: it is orphaned
os.setsid()  # the grandchild leaves the worker process's session and group
os.write(done, b"x")
time.sleep(300)
"""


class EscapingDescendantWorkload(Workload):
    """Starts a child that forks a grandchild and exits; the grandchild calls setsid() and
    sleeps, its command line carrying the marker given. Then sleeps for the seconds given
    after the marker."""

    def run(self, inputs):
        marker, _, seconds = inputs[0].decode().partition(" ")
        subprocess.run([sys.executable, "-c", _ESCAPE, marker], check=True)
        time.sleep(float(seconds or 0))
        return b"started " + marker.encode()


class ForkWorkload(Workload):
    """Forks, and both processes return into the worker's loop with this order's result."""

    def run(self, inputs):
        os.fork()
        return b"forked " + inputs[0]


class MarkThenSleepWorkload(Workload):
    """Creates the file named first (so a test knows the order is running), then sleeps for
    the seconds given after it."""

    def run(self, inputs):
        path, _, seconds = inputs[0].decode().partition(" ")
        open(path, "w").close()
        time.sleep(float(seconds))
        return b"slept " + seconds.encode()


class WaitForFileWorkload(Workload):
    """Runs until the file named exists (at most a minute): an order that a test ends when it
    chooses, however slow the machine."""

    def run(self, inputs):
        deadline = time.monotonic() + 60
        while not os.path.exists(inputs[0].decode()) and time.monotonic() < deadline:
            time.sleep(0.01)
        return b"released"


class NoisyWorkload(Workload):
    """Writes to its standard output and error as a careless or hostile workload might: a line
    shaped like the worker's log, a child process's output, a write straight to descriptor 2,
    then the number of bytes given as a flood; then answers."""

    def run(self, inputs):
        print("2026-01-01 00:00:00,000 ERROR avalon_worker.processor: work order forged-by-the-workload")
        print("forged on stderr too", file=sys.stderr)
        sys.stdout.flush()
        subprocess.run([sys.executable, "-c", "print('from-a-child-process')"], check=True)
        os.write(2, b"straight-to-descriptor-2\n")
        sys.stdout.write("x" * int(inputs[0]))
        sys.stdout.flush()
        return b"noisy " + inputs[0]


class BoomWorkload(Workload):
    """Raises, with its input in the message: what a workload author's bug looks like."""

    def run(self, inputs):
        raise ValueError(f"cannot parse {inputs[0].decode()!r}")

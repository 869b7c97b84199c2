"""Loaded by `benchmarks/profile_orders.py` into `serve` (through PYTHONPATH): a cProfile per
process, the supervisor's and each worker process's, timing CPU (not wall) time, switched on by SIGUSR1 and written out by
SIGUSR2 to $AVALON_PROFILE_DIR/<supervisor|worker>-<pid>.prof. Not part of the package."""

from __future__ import annotations

import cProfile
import os
import signal
import time
from typing import Any

_OUT = os.environ.get("AVALON_PROFILE_DIR")
_state: dict[str, Any] = {"role": "supervisor", "profile": cProfile.Profile(time.process_time)}


def _start(signum: int, frame: Any) -> None:
    _state["profile"].enable()


def _stop(signum: int, frame: Any) -> None:
    profile = _state["profile"]
    profile.disable()
    profile.dump_stats(f"{_OUT}/{_state['role']}-{os.getpid()}.prof")


def _in_child() -> None:
    _state["role"], _state["profile"] = "worker", cProfile.Profile(time.process_time)


if _OUT:
    signal.signal(signal.SIGUSR1, _start)
    signal.signal(signal.SIGUSR2, _stop)
    os.register_at_fork(after_in_child=_in_child)

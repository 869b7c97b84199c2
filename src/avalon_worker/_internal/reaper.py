"""What a workload starts dies with its order, and worker processes die with the supervisor.

A workload may start processes that leave the worker process's group (`setsid`, `setpgid`) or
fork twice so that their parent is gone. Linux's child subreaper attribute makes such orphans
come to the nearest subreaper among their ancestors rather than to init: each worker process is
one, so whatever its order left running is among its children when the order is done, and the
supervisor is one, so whatever a dead worker process leaves is among the supervisor's children.
Killing children, reaping them and looking again (their orphans have come up by then) reaches
every descendant whatever session or group it moved to.

Where the kernel has no such attribute (Gramine's library OS), a process group is all there is:
the supervisor still kills each worker process's group.
"""

from __future__ import annotations

import ctypes
import errno
import logging
import os
import signal
from collections.abc import Collection

logger = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1
_PR_SET_CHILD_SUBREAPER = 36
_libc: ctypes.CDLL | None = None


def _prctl(option: int, value: int) -> bool:
    """prctl(option, value); False where the kernel (or library OS) does not have the option."""
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    if _libc.prctl(option, value, 0, 0, 0) == 0:
        return True
    error = ctypes.get_errno()
    if error in (errno.ENOSYS, errno.EINVAL):
        logger.debug("prctl option %d is not available here (%s)", option, os.strerror(error))
        return False
    raise OSError(error, f"prctl({option}, {value}) failed")


def become_subreaper() -> bool:
    """Make orphaned descendants of this process its children; False where that is not available."""
    return _prctl(_PR_SET_CHILD_SUBREAPER, 1)


def die_with_parent(parent: int) -> None:
    """In a process just forked from `parent`: be killed when `parent` dies; exit at once if
    it has died already (before the request took effect)."""
    _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:
        os._exit(1)


def has_children() -> bool:
    """Whether this process has any child, running or not yet reaped (one system call)."""
    try:
        os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:
        return False
    return True


def children(pid: int) -> list[int]:
    """The children of process `pid`, from every thread's list in /proc, or where the kernel
    keeps no such lists (CONFIG_PROC_CHILDREN), from every process's parent in /proc."""
    found: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return found
    for task in tasks:
        try:
            with open(f"/proc/{pid}/task/{task}/children", "rb") as handle:
                found += map(int, handle.read().split())
        except FileNotFoundError:
            return _children_by_parent(pid)
        except OSError:  # the thread has ended
            pass
    return found


def _children_by_parent(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat", "rb") as handle:
                    stat = handle.read()
            except OSError:
                continue
            fields = stat[stat.rfind(b")") + 2 :].split()  # the name in parentheses may hold anything
            if len(fields) > 1 and int(fields[1]) == pid:
                found.append(int(entry))
    return found


def kill_children(keep: Collection[int] = ()) -> int:
    """SIGKILL and reap every child of this process but `keep`, then the orphans that come up
    from them, until none is left; return how many were killed."""
    me = os.getpid()
    killed = 0
    while found := [pid for pid in children(me) if pid not in keep]:
        for pid in found:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for pid in found:
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:  # reaped elsewhere, or not ours after all
                pass
        killed += len(found)
    return killed

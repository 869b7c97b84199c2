"""The pool's event loop: one thread, one epoll, carrying out the scheduler's actions.

It owns what the scheduler does not: the endpoint's sockets (`router.Router`), the worker
processes and their socket pairs, signals and the clock. Each process is forked into a
process group of its own, which is killed with it (time limit, replacement, shutdown); what
left the group comes to the supervisor, a subreaper, when the process dies, and is killed when
the process is reaped (`reaper`). A worker process dies with the supervisor. With
`--workers 0` the one "process" is the supervisor itself: an order runs in place when the
scheduler hands it over.
"""

from __future__ import annotations

import logging
import os
import resource
import select
import signal
import socket
import time
from collections import deque
from collections.abc import Callable, Collection
from typing import Any, Protocol

from . import child, framing, reaper
from .router import FD_HEADROOM, Outbox, Router, send_queued
from .scheduler import Kill, Metrics, Pin, PoolConfig, Reply, Revoke, Scheduler, Send, Spawn

logger = logging.getLogger(__name__)

# Frames up to this multiple of --max-request-bytes are received and refused with a clear error;
# larger ones are refused from their header, before they reach memory (the peer is disconnected).
HARD_LIMIT_FACTOR = 4
MAX_POLL_S = 0.2  # the stop flag is seen within this long
READS_PER_TURN = 64  # reads of one process's socket per turn of the loop, while a message is unfinished
PAIR_BUFFER_BYTES = 4 * 1024 * 1024  # asked for each end of a process's socket pair (the kernel may give less)
HELPER_CHECK_S = 0.5  # how often a helper process is looked after


class Helper(Protocol):
    """A process the supervisor keeps beside its worker processes (the HTTP front door), looked
    after from the loop: no thread, since the supervisor forks."""

    def check(self, now: float) -> None:
        """Look after the process (the time from `time.monotonic`)."""

    def pids(self) -> Collection[int]:
        """The helper's processes, which are not orphans to kill."""

    def close_inherited(self) -> None:
        """In a worker process just forked: close what the helper holds."""


class StopFlag:
    """Set by SIGTERM/SIGINT (or by hand); the loop then answers what it holds and stops.

    A second signal forces the stop: the loop answers what it still holds with an error and
    kills its processes; an order running in the loop's own process (`--workers 0`) is
    interrupted. `forced_by` is the signal that forced it (0 when set by hand).
    """

    def __init__(self) -> None:
        self.is_set = False
        self.forced = False
        self.forced_by = 0
        self.interruptible = False  # an order runs in this process and may be interrupted

    def set(self, signum: int | None = None, frame: Any = None) -> None:
        if self.is_set:
            self.forced, self.forced_by = True, signum or 0
            if self.interruptible:
                raise KeyboardInterrupt
        elif self.interruptible:  # the loop is busy with that order: say it here
            _say_draining(1, 0, float("inf"))
        self.is_set = True

    def install(self) -> None:
        signal.signal(signal.SIGTERM, self.set)
        signal.signal(signal.SIGINT, self.set)


class _Child:
    """A forked worker process and the supervisor's end of its socket pair."""

    __slots__ = ("id", "pid", "sock", "fd", "reader", "out", "writing", "due")

    def __init__(self, id: int, pid: int, sock: socket.socket, max_payload: int) -> None:
        self.id = id
        self.pid = pid
        self.sock = sock
        self.fd = sock.fileno()
        self.reader = framing.Reader(max_payload)
        self.out: deque[memoryview] = deque()  # bytes not yet written, in order
        self.writing = False  # registered for EPOLLOUT
        self.due = False  # waits in the loop's outbox


def describe_exit(status: int) -> str:
    """How a process ended, from its wait status."""
    if os.WIFSIGNALED(status):
        try:
            return f"was killed by {signal.Signals(os.WTERMSIG(status)).name}"
        except ValueError:
            return f"was killed by signal {os.WTERMSIG(status)}"
    return f"exited with status {os.waitstatus_to_exitcode(status)}"


def _say_draining(running: int, queued: int, within_s: float) -> None:
    """Tell the person who stopped the worker what it is waiting for."""
    if running or queued:
        limit = f" (within {within_s:.0f} s, their time limit)" if within_s != float("inf") else ""
        logger.warning("stopping: answering %d work order(s) in progress and %d queued%s; "
                       "send the signal again (Ctrl-C) to stop now", running, queued, limit)


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except OSError:  # gone already, or not a group leader (no process groups here)
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _widen(sock: socket.socket) -> None:
    """Let a megabyte order or reply go in one write where the system allows (net.core.wmem_max
    caps it; a stream socket pair's bytes in flight count against the sender's buffer): fewer
    wake-ups of the supervisor and the process while it crosses, so the process waits less."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, PAIR_BUFFER_BYTES)
    except OSError:  # a library OS may not have the option; the default buffer still works
        pass


class Loop:
    """Serves one endpoint with `scheduler`'s decisions and `process`'s answers."""

    def __init__(self, process: Callable[[bytes | bytearray], Any], config: PoolConfig, metrics: Metrics | None = None,
                 idle: Callable[[], None] = lambda: None, order_log: Any = None) -> None:
        self.process = process
        self.idle = idle  # called before waiting for work (flushes the order log)
        self.order_log = order_log  # stays on the log in worker processes, whose standard error workloads get
        self.config = config
        self.cpus = sorted(os.sched_getaffinity(0)) if config.pin_cpus else []
        self.scheduler = Scheduler(config, metrics, self.cpus)
        self.max_payload = config.max_request_bytes * HARD_LIMIT_FACTOR
        self.children: dict[int, _Child] = {}  # by scheduler id
        self.by_fd: dict[int, _Child] = {}
        self.poller = select.epoll()
        self.router: Router | None = None
        self._stop = StopFlag()
        self._outbox: Outbox[_Child] = Outbox(self._flush)  # orders and revocations, written at the end of each turn
        self._helpers: set[int] = set()  # children of this process that are not worker processes (the HTTP front door)
        self.helper: Helper | None = None

    def serve(self, bind: str, *, stop: StopFlag, on_ready: Callable[[str], None] | None = None,
              helper: Helper | None = None) -> None:
        """Serve until `stop` is set, then answer everything in flight and stop the processes;
        `helper.check` is called every HELPER_CHECK_S meanwhile."""
        self.helper = helper
        scheduler = self.scheduler
        # every worker process (and a replacement being forked) holds two descriptors here
        processes = scheduler.workers + scheduler.spares + 1
        connections = max(16, resource.getrlimit(resource.RLIMIT_NOFILE)[0] - FD_HEADROOM - 2 * processes)
        self.router = router = Router(bind, self.poller, self.max_payload, max_connections=connections)
        clean = False
        try:
            if self.config.workers:
                reaper.become_subreaper()  # what a dead worker process leaves comes here, to be killed
            self._do(scheduler.start(time.monotonic()))
            spare = self.cpus[self.config.workers :]
            if spare:  # the supervisor keeps off the worker processes' cores
                os.sched_setaffinity(0, spare)
            if on_ready is not None:
                on_ready(router.endpoint)
            if self.config.workers:  # no order has run yet: every other child is one of ours
                self._helpers = set(reaper.children(os.getpid())) - {target.pid for target in self.children.values()}
            self._stop = stop
            self._run(stop)
            clean = not stop.forced
        finally:
            self._shutdown(clean)
        logger.info("stopped")

    def _run(self, stop: StopFlag) -> None:  # noqa: C901 -- the hot loop stays one function: no call per event
        scheduler, router, poller, by_fd = self.scheduler, self.router, self.poller, self.by_fd
        assert router is not None
        reporting = scheduler._reporting
        helper, helper_due = self.helper, 0.0
        while True:
            if stop.is_set and not scheduler.stopping:
                self._do(scheduler.stop(time.monotonic()))
                _say_draining(*scheduler.in_flight(time.monotonic()))
            if stop.forced:
                self._abort()
                return
            if scheduler.finished:
                return
            now = time.monotonic()
            due = scheduler.next_timer()
            router_due = router.next_due()
            if router_due is not None and (due is None or router_due < due):
                due = router_due
            wait = MAX_POLL_S if due is None else min(MAX_POLL_S, max(0.0, due - now))
            if router.backlog:  # frames already received wait to be parsed: don't sleep
                wait = 0.0
            if wait:
                self.idle()
            self._outbox.flush()  # what this turn sent, in one write per process and per client
            router.outbox.flush()
            pause = scheduler.coalesce_s()
            if pause:
                time.sleep(pause)
            events = poller.poll(wait)
            now = time.monotonic()
            for fd, mask in events:
                process = by_fd.get(fd)
                if process is not None:
                    self._on_child(process, mask, now)
                else:
                    for parts in router.on_event(fd, mask):
                        self._do(scheduler.message_arrived(parts, now))
            if router.backlog:
                for parts in router.drain_backlog():
                    self._do(scheduler.message_arrived(parts, now))
            if router.closed:
                for routing_id in router.closed:
                    self._do(scheduler.connection_closed(routing_id, now))
                router.closed.clear()
            if due is not None and now >= due:
                now = time.monotonic()
                self._do(scheduler.time_passed(now))
                router.tick(now)
            if helper is not None and now >= helper_due:
                helper.check(now)
                helper_due = now + HELPER_CHECK_S
            if reporting:
                scheduler.report()

    # actions -------------------------------------------------------------------------------------

    def _do(self, actions: list[Any]) -> None:
        """Carry out `actions`, and those that their outcomes call for, in order."""
        scheduler = self.scheduler
        index = 0
        while index < len(actions):
            action = actions[index]
            index += 1
            kind = type(action)
            if kind is Reply:
                envelope = action.envelope
                assert self.router is not None
                self.router.send(envelope[0], [*envelope[1:], action.frame])
            elif kind is Send:
                target = self.children.get(action.process)
                if target is None:  # in-process
                    outcome = self._run_here(action.frame)
                    if outcome is None:  # a forced stop interrupted it
                        return
                    meta = f"{outcome.method}\t{outcome.workload}\t{outcome.status}\n".encode()
                    actions += scheduler.replied(action.process, action.seq, meta + outcome.reply, time.monotonic())
                else:
                    # an order the process waits for goes now, not after the rest of the turn
                    self._write(target, framing.encode(framing.ORDER, action.seq, action.frame), at_once=not action.ahead)
            elif kind is Revoke:
                target = self.children[action.process]
                # written now, with what was queued before it: `_quiet` looks at what is left
                self._write(target, framing.encode(framing.REVOKE, action.first, framing.SEQ.pack(action.last)), at_once=True)
                actions += scheduler.revoked(action.process, self._quiet(target), time.monotonic())
            elif kind is Kill:
                actions += self._kill(self.children[action.process])
            elif kind is Spawn:
                self._spawn(action.process, action.cpu)
            elif kind is Pin:
                self._pin(self.children[action.process].pid, action.cpu)

    def _run_here(self, frame: bytes) -> Any:
        """Run an order in this process (`--workers 0`); None if a forced stop interrupted it."""
        assert self.router is not None
        self.router.outbox.flush()  # the replies so far go out before this order holds the loop
        stop = self._stop
        stop.interruptible = True
        try:
            return self.process(frame)
        except KeyboardInterrupt:
            if not stop.forced:
                raise
            return None
        finally:
            stop.interruptible = False

    def _abort(self) -> None:
        """A forced stop: answer every order still held, with an error, and stop at once."""
        answered = self.scheduler.abort(time.monotonic())
        logger.warning("stopping now: %d work order(s) answered with an error", len(answered))
        self._do(answered)

    def _spawn(self, process_id: int, cpu: int | None) -> None:
        if self.config.workers == 0:
            return  # the supervisor runs orders itself
        parent_end, child_end = socket.socketpair()
        for end in (parent_end, child_end):
            _widen(end)
        supervisor = os.getpid()
        pid = os.fork()
        if pid == 0:  # the worker process: never returns into the supervisor's code
            status = 0
            try:
                reaper.die_with_parent(supervisor)
                try:
                    os.setpgid(0, 0)
                except OSError:
                    pass
                parent_end.close()
                for other in self.children.values():
                    other.sock.close()
                if self.router is not None:
                    self.router.close_inherited()
                if self.helper is not None:
                    self.helper.close_inherited()
                self.poller.close()
                child.run(child_end, self.process, self.config.memory_limit_bytes, self.max_payload, self.idle,
                          self.order_log)
            except BaseException:  # noqa: BLE001 - the supervisor sees the exit and answers for us
                status = 1
            finally:
                os._exit(status)
        try:
            os.setpgid(pid, pid)  # also here: whichever runs first, the group exists before any kill
        except OSError:
            pass
        if cpu is not None:
            self._pin(pid, cpu)
        child_end.close()
        parent_end.setblocking(False)
        target = _Child(process_id, pid, parent_end, self.max_payload)
        self.children[process_id] = target
        self.by_fd[target.fd] = target
        self.poller.register(target.fd, select.EPOLLIN)

    @staticmethod
    def _pin(pid: int, cpu: int) -> None:
        try:
            os.sched_setaffinity(pid, {cpu})
        except OSError:  # it has died already: its exit is on its way
            pass

    def _write(self, target: _Child, buffers: list[Any], *, at_once: bool) -> None:
        """Queue `buffers` for the process, and write what is queued now (`at_once`) or at the
        end of the loop's turn."""
        for buffer in buffers:
            if len(buffer):
                target.out.append(memoryview(buffer).cast("B"))
        if at_once:
            self._outbox.write(target)
        else:
            self._outbox.add(target)

    def _flush(self, target: _Child) -> None:
        out = target.out
        try:
            send_queued(target.sock, out)
        except OSError:  # it has died: its end of file is on its way
            out.clear()
        want = bool(out)
        if want != target.writing and target.id in self.children:
            target.writing = want
            self.poller.modify(target.fd, select.EPOLLIN | (select.EPOLLOUT if want else 0))

    def _quiet(self, target: _Child) -> bool:
        """After a REVOKE: it is all written and nothing from the process waits to be read, so the
        process has not finished its running order and will read the REVOKE before the next."""
        if target.out or target.reader.partial:
            return False
        return not select.select([target.sock], [], [], 0)[0]

    # process events ------------------------------------------------------------------------------

    def _on_child(self, target: _Child, mask: int, now: float) -> None:
        if mask & select.EPOLLOUT:
            self._flush(target)
        if not mask & (select.EPOLLIN | select.EPOLLHUP | select.EPOLLERR):
            return
        actions, ended = self._receive(target, now, everything=False)
        self._do(actions)
        if ended and target.id in self.children:
            _kill_group(target.pid)  # whatever its workload left behind goes with it
            self._do(self._reap(target, now))

    def _receive(self, target: _Child, now: float, *, everything: bool) -> tuple[list[Any], bool]:
        """Read what the process sent — until its last message is whole (a large reply in one
        turn of the loop, not one turn per piece), or, with `everything`, all there is; return
        the scheduler's actions and whether its end is closed (or it sent garbage)."""
        scheduler = self.scheduler
        reader = target.reader
        actions: list[Any] = []
        for _ in range(1 << 20 if everything else READS_PER_TURN):
            try:
                messages = reader.read(target.sock)
            except (BlockingIOError, InterruptedError):
                return actions, False
            except framing.FramingError:
                return actions + scheduler.garbled(target.id, now), True
            except OSError:
                messages = None
            if messages is None:
                return actions, True
            for kind, seq, payload in messages:
                if kind == framing.REPLY:
                    actions += scheduler.replied(target.id, seq, payload, now)
                elif kind == framing.SKIPPED:
                    actions += scheduler.skipped(target.id, seq, now)
                else:
                    return actions + scheduler.garbled(target.id, now), True
            if not (everything or reader.partial):
                break
        return actions, False

    def _kill(self, target: _Child) -> list[Any]:
        _kill_group(target.pid)
        now = time.monotonic()
        actions, _ = self._receive(target, now, everything=True)  # what it sent before it died still counts
        return actions + self._reap(target, now)

    def _reap(self, target: _Child, now: float) -> list[Any]:
        _, status = os.waitpid(target.pid, 0)
        self._forget(target)
        self._kill_orphans()
        return self.scheduler.exited(target.id, describe_exit(status), now)

    def _kill_orphans(self) -> None:
        """Kill the descendants of dead worker processes that left their process group: once
        their process has been reaped, they are this process's children."""
        keep = self._helpers.union(target.pid for target in self.children.values())
        if self.helper is not None:
            keep.update(self.helper.pids())
        reaper.kill_children(keep)

    def _forget(self, target: _Child) -> None:
        target.due = False
        del self.children[target.id]
        del self.by_fd[target.fd]
        self.poller.unregister(target.fd)
        target.sock.close()

    def _shutdown(self, clean: bool) -> None:
        self.idle()
        targets = list(self.children.values())
        for target in targets:
            if not clean:
                _kill_group(target.pid)
            self._forget(target)  # end of file: an idle process returns and exits
        for target in targets:
            os.waitpid(target.pid, 0)
            try:
                os.killpg(target.pid, signal.SIGKILL)  # what its workloads left behind in its group
            except OSError:
                pass
        if targets:
            self._kill_orphans()
        if self.router is not None:
            self.router.close(linger_s=1.0)
        self.poller.close()

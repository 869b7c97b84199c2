"""Every decision of the pool, with no I/O (in the manner of h11).

`Scheduler` takes events — a message arrived, a process replied, skipped, or exited, time
passed, a connection closed, stop — each with the current time passed in, and returns actions
for the event loop to carry out: spawn, pin, send an order, revoke orders, kill, reply. It
owns the queue, the prefetch, the time limits and the replacement of processes; the loop owns
sockets, processes and the clock. Unit tests drive it with a fake clock and no processes.
Each order and each process is in one named state at a time, and changes it only by a move
its kind's table holds (`ORDER_MOVES`, `PROCESS_MOVES`).

Rules:
- An order goes to an idle process, else waits in a queue bounded in orders and in bytes,
  else is answered BUSY (8). While stopping, new orders are answered BUSY and the rest finish.
- A busy process may hold up to PREFETCH_DEPTH small orders behind the one it runs, each newer
  than those it holds. If the running order turns slow (INSPECT_AFTER_S), those are revoked
  and go to the next free process.
  A process has one inspection timer at a time, moved on to its next running order when it
  fires too early for that one: not one timer per order.
- Every order carries a sequence number; a reply must echo the number of the order its process
  runs. Anything else stops that process and answers its orders with error 1.
- Time limits run from receipt, on timers. The operator's limit is the same for every order, so
  those timers run out in arrival order and wait in a plain queue; a requester's own limits and
  inspections are kept in heaps. The operator's limit (`timeout_s`) is the only one
  that kills: the order is answered with error 1 and its process killed. A requester's shorter
  `responseTimeoutMSecs` only answers that requester early (error 1); its process runs on,
  bounded by the operator's limit, its late reply is dropped and the process is reused (a new
  process is a new enclave under SGX: a requester must not be able to force one per order). An
  order whose limit passes before it starts is answered without running or killing anything.
- A lost process's running order is answered with error 1, the orders it had not started are
  requeued in front, and a warm spare takes its place (a new spare is started behind it).
"""

from __future__ import annotations

import heapq
import logging
import math
import re
from collections import deque
from dataclasses import dataclass
from enum import Enum
from itertools import count, islice
from typing import Any, Protocol, TypeVar

from .. import defaults
from ..errors import Error, ErrorCode
from ..jsonrpc import error_reply, inspect_request, invalid

logger = logging.getLogger(__name__)

INSPECT_AFTER_S = 0.05  # a running order this old is read for its ids and its own time limit
PREFETCH_MAX_BYTES = 256 * 1024  # larger orders are never sent ahead (their byte work dwarfs the hand-off)
PREFETCH_DEPTH = 4  # orders that may wait in a busy process behind the running one
# Under saturation (every process has PREFETCH_DEPTH orders waiting) the loop lets events gather
# for at most COALESCE_MAX_S and one typical order's service time, never for orders under
# COALESCE_MIN_SERVICE_S (there the timer's own wake-up would cost more than it saves).
COALESCE_MAX_S = 0.0005
COALESCE_MIN_SERVICE_S = 0.0002
_SCAN_BYTES = 64 * 1024  # how far into a request its responseTimeoutMSecs is looked for on arrival
_TIMEOUT_KEY = b"responseTimeoutMSecs"
_TIMEOUT_VALUE = re.compile(rb'\\*"\s*:\s*(\d{1,10})(?![\d.eE])')  # 1.5 is no limit of 1 ms


@dataclass(frozen=True)
class PoolConfig:
    """How the pool runs; the CLI fills it from its options. `workers=0` runs orders in the
    supervisor's own process, one at a time, with no time limits."""

    workers: int
    timeout_s: float | None = None  # None: defaults.TIMEOUT_S with worker processes, none in-process
    memory_limit_bytes: int | None = None
    queue_limit: int = defaults.QUEUE_LIMIT
    queue_bytes_limit: int = 128 * 1024 * 1024  # the queue's frames together: BUSY beyond either limit
    max_request_bytes: int = defaults.MAX_REQUEST_BYTES
    prefetch: bool = True
    pin_cpus: bool = False
    spares: int | None = None  # warm processes kept ready to replace a lost one; None: defaults.SPARE_WORKERS (0 in-process)

    def __post_init__(self) -> None:
        if self.workers < 0 or self.queue_limit < 0 or (self.spares or 0) < 0:
            raise ValueError("--workers, --queue-limit and --spare-workers must be ≥ 0")
        if self.timeout_s is not None and self.timeout_s <= 0:
            raise ValueError("--timeout-s must be > 0")
        if self.workers == 0:
            given = [name for name, value in (("--timeout-s", self.timeout_s), ("--memory-limit-mb", self.memory_limit_bytes),
                                              ("--pin-cpus", self.pin_cpus), ("--spare-workers", self.spares)) if value]
            if given:
                raise ValueError(f"{' and '.join(given)} {'needs' if len(given) == 1 else 'need'} worker processes: "
                                 "with --workers 0 orders run in the "
                                 "supervisor itself, which cannot be stopped, limited or pinned per order")



# actions ---------------------------------------------------------------------------------------
# (plain dataclasses, not frozen: two are made for every order, and frozen ones cost three times as much)


@dataclass(slots=True)
class Spawn:
    """Start process `process` (pinned to core `cpu`, if given)."""

    process: int
    cpu: int | None


@dataclass(slots=True)
class Pin:
    """Pin process `process` to core `cpu` (a spare taking a lost process's place)."""

    process: int
    cpu: int


@dataclass(slots=True)
class Send:
    """Hand order `seq` to process `process`: at once if the process waits for it, else
    (`ahead`: sent ahead of the order it runs) with the turn's other writes."""

    process: int
    seq: int
    frame: bytes
    ahead: bool = False


@dataclass(slots=True)
class Revoke:
    """Ask process `process` to skip orders `first`…`last` it has not started; then tell the
    scheduler (`revoked`) whether the process certainly had not started the first of them:
    nothing from it was waiting to be read after the request was written."""

    process: int
    first: int
    last: int


@dataclass(slots=True)
class Kill:
    """Kill process `process` and its descendants; then pass on what it had sent, and `exited`."""

    process: int


@dataclass(slots=True)
class Reply:
    """Send `frame` to the client: `envelope[0]` is its routing id, the rest go before the frame."""

    envelope: list[bytes]
    frame: bytes | bytearray | memoryview


Action = Spawn | Pin | Send | Revoke | Kill | Reply


class Metrics:
    """What the pool reports; the default does nothing (see `metrics.PrometheusMetrics`)."""

    def observe(self, method: str, workload: str, status: str, seconds: float) -> None: ...

    def set_queue_depth(self, depth: int) -> None: ...

    def set_pool_size(self, alive: int, busy: int) -> None: ...


# states ----------------------------------------------------------------------------------------
# Every state of an order and of a process, and every move between them, in one table per kind
# (in the manner of h11's `_state.py`). A state changes only through `_move`, which refuses a
# move its kind's table does not hold: that is a bug in this module, never bad input. What is
# data rather than state stays in attributes: which process holds an order, whether its request
# has been parsed, which order a process was killed for, whether its inspection timer is set.


class OrderState(Enum):
    """Where an order is, from receipt to answer (the moves: `ORDER_MOVES`)."""

    __hash__ = object.__hash__  # Enum's own hashes the name in Python code: `_move` looks states up on every order's path

    RECEIVED = "received"  # has just arrived: queued, given to a process or answered before the event ends
    QUEUED = "queued"  # waits in the queue for a process
    SENT_AHEAD = "sent ahead"  # written to a busy process, behind the order it runs
    RUNNING = "running"  # its process's running order
    REVOKING = "revoking"  # revoked while its process may have started it: its reply or its skip report will say
    ANSWERED = "answered"  # answered at its requester's limit while it runs on: its reply is dropped
    ANSWERED_REVOKING = "answered revoking"  # answered at its requester's limit while REVOKING: its reply or skip ends it
    DONE = "done"  # answered, or dropped with its client's connection


class ProcessState(Enum):
    """What a worker process is to the pool (the moves: `PROCESS_MOVES`)."""

    __hash__ = object.__hash__

    SPARE = "spare"  # started and kept warm, to take a lost process's place
    IDLE = "idle"  # in the pool, with no order (in `Scheduler.idle`)
    BUSY = "busy"  # in the pool, running an order, with orders perhaps sent ahead
    KILLED = "killed"  # killed by the pool (time limit, stop): what it sent before it died still counts
    DISTRUSTED = "distrusted"  # sent what was not the reply to its order: killed, and nothing it sends counts
    EXITED = "exited"  # gone


RECEIVED, QUEUED, SENT_AHEAD, RUNNING, REVOKING, ANSWERED, ANSWERED_REVOKING, DONE = OrderState
SPARE, IDLE, BUSY, KILLED, DISTRUSTED, EXITED = ProcessState
_ANSWERED = frozenset({ANSWERED, ANSWERED_REVOKING})  # answered early, still held by their process
_REVOKED = frozenset({REVOKING, ANSWERED_REVOKING})  # revoked: the process may report them skipped

ORDER_MOVES: frozenset[tuple[OrderState, OrderState]] = frozenset({
    (RECEIVED, RUNNING),  # a process was idle
    (RECEIVED, QUEUED),  # none was, and the queue has room
    (RECEIVED, DONE),  # answered BUSY: the queue is full, or the worker is stopping
    (QUEUED, RUNNING),  # a process is free
    (QUEUED, SENT_AHEAD),  # a busy process has room behind a running order that is small and not slow
    (QUEUED, DONE),  # its time limit passed while it waited, its client went, or a forced stop answered it
    (SENT_AHEAD, RUNNING),  # the order before it was answered
    (SENT_AHEAD, REVOKING),  # taken back: the order before it turned slow, or its own time limit passed
    (SENT_AHEAD, QUEUED),  # its process died before it began
    (SENT_AHEAD, DONE),  # as it went back: its limit had passed; its process was distrusted; a forced stop
    (RUNNING, ANSWERED),  # its requester's limit passed
    (RUNNING, DONE),  # its reply; its process died or was killed at the operator's limit; a forced stop
    (REVOKING, QUEUED),  # skipped, for certain or as the process reported; or its process died first
    (REVOKING, ANSWERED_REVOKING),  # its requester's limit passed when the process may have started it
    (REVOKING, DONE),  # its reply (it had started); its limit passed as it went back; its process died; a forced stop
    (ANSWERED, DONE),  # its reply, dropped; its process died or was killed
    (ANSWERED_REVOKING, DONE),  # its reply, dropped; its skip report; its process died or was killed
})

PROCESS_MOVES: frozenset[tuple[ProcessState, ProcessState]] = frozenset({
    (SPARE, IDLE),  # takes a lost process's place
    (SPARE, DISTRUSTED),  # sent anything at all
    (SPARE, EXITED),
    (IDLE, BUSY),  # given an order
    (IDLE, DISTRUSTED),  # sent anything at all
    (IDLE, EXITED),
    (BUSY, IDLE),  # its last order answered, or skipped
    (BUSY, KILLED),  # its running order reached the operator's limit, or a stop waits for no one's order
    (BUSY, DISTRUSTED),  # a reply for another order than the one it runs, a skip never asked for, garbage
    (BUSY, EXITED),  # died
    (KILLED, DISTRUSTED),  # sent such a thing before it died
    (KILLED, EXITED),
    (DISTRUSTED, EXITED),
})

# the tables by state of departure, for `_move`: a dict and a set lookup, no tuple built per move
_NEXT = {state: frozenset(to for at, to in ORDER_MOVES | PROCESS_MOVES if at is state) for state in (*OrderState, *ProcessState)}


class IllegalMove(Error):
    """A state change that `ORDER_MOVES` or `PROCESS_MOVES` does not hold: a bug in the scheduler."""

    hint = "this is a bug in the worker's scheduler, not in any request: please report it with this message"


_S = TypeVar("_S", OrderState, ProcessState)


class _Stateful(Protocol[_S]):
    state: _S


def _move(thing: _Stateful[_S], to: _S) -> None:
    """Move an order or a process to state `to`, if its table holds the move."""
    if to not in _NEXT[thing.state]:
        raise IllegalMove(f"{thing!r} cannot move to {to.name}")
    thing.state = to


# what the scheduler keeps ----------------------------------------------------------------------


class Job:
    """One order from receipt to answer."""

    __slots__ = ("seq", "envelope", "frame", "received", "deadline", "kill_at", "started", "process", "state",
                 "inspected", "reply_id", "work_order_id", "workload")

    def __init__(self, seq: int, envelope: list[bytes], frame: bytes, received: float, deadline: float, kill_at: float) -> None:
        self.seq = seq
        self.envelope = envelope
        self.frame = frame
        self.received = received
        self.deadline = deadline  # answered by then (the requester's limit, or the operator's)
        self.kill_at = kill_at  # its process is killed if still running it then (the operator's limit)
        self.started = 0.0  # when it became its process's running order
        self.process: _Process | None = None  # the process it was given to: set from SENT_AHEAD or RUNNING on
        self.state = RECEIVED
        self.inspected = False  # its request has been parsed: slow, failed or answered by us, in whatever state
        self.reply_id: Any = None
        self.work_order_id: str | None = None
        self.workload = "-"

    def __repr__(self) -> str:
        return f"order {self.seq} ({self.state.name})"

    def inspect(self) -> None:
        """Read the request's ids and time limit (once, and only for a slow or failed order)."""
        if self.inspected:
            return
        self.inspected = True
        self.reply_id, self.work_order_id, self.workload, timeout_ms = inspect_request(self.frame)
        if timeout_ms:
            self.deadline = min(self.deadline, self.received + timeout_ms / 1000)


class _Process:
    __slots__ = ("id", "cpu", "state", "jobs", "revoked", "timed_out", "inspecting")

    def __init__(self, id: int, cpu: int | None, state: ProcessState) -> None:
        self.id = id
        self.cpu = cpu
        self.state = state
        self.jobs: deque[Job] = deque()  # the running order, then the ones sent ahead
        self.revoked: set[int] = set()  # revoked orders it will report as skipped
        self.timed_out: Job | None = None  # the order it was killed for
        self.inspecting = False  # an inspection timer is set for it (its entry in `Scheduler._inspections`)

    def __repr__(self) -> str:
        return f"process {self.id} ({self.state.name})"


class Scheduler:
    """The pool's decisions. Every method takes the time as `now` (monotonic seconds) and
    returns the actions to carry out, in order."""

    def __init__(self, config: PoolConfig, metrics: Metrics | None = None, cpus: list[int] | None = None) -> None:
        self.config = config
        self.inline = config.workers == 0
        self.workers = config.workers or 1
        self.timeout_s = math.inf if self.inline else (config.timeout_s or defaults.TIMEOUT_S)
        self.spares = 0 if self.inline else (defaults.SPARE_WORKERS if config.spares is None else config.spares)
        self.prefetch = config.prefetch and not self.inline
        self.metrics = metrics or Metrics()
        self._reporting = type(self.metrics) is not Metrics  # skip bookkeeping nobody reads
        self._cpus = cpus or []
        self.processes: dict[int, _Process] = {}
        self.idle: deque[_Process] = deque()
        self._spares: deque[_Process] = deque()
        self.queue: deque[Job] = deque()
        self.queued_bytes = 0
        self.stopping = False
        self._jobs: dict[int, Job] = {}  # every order not yet answered or still running, by sequence number
        self._abandoned = 0  # of those, orders answered at their requester's limit that still run
        # timers; entries of orders already answered are dropped lazily
        self._limits: deque[tuple[float, int]] = deque()  # (kill_at, seq): the operator's limit, in arrival order
        self._timers: list[tuple[float, int]] = []  # (when, seq): every other limit of an order, a heap
        self._inspections: list[tuple[float, int]] = []  # (when, process id), a heap: one per busy process at most
        self._seqs = count(1)
        self._ids = count(1)
        self._service_s = 0.0  # recent orders' time from start to reply, averaged
        self._actions: list[Action] = []

    # events ------------------------------------------------------------------------------------

    def start(self, now: float) -> list[Action]:
        """Start the processes."""
        for n in range(self.workers):
            self._spawn(self._cpus[n % len(self._cpus)] if self._cpus else None, spare=False)
        self._keep_spares()
        return self._take()

    def message_arrived(self, parts: list[bytes], now: float) -> list[Action]:
        """A client's message, led by its routing id (as the router yields it)."""
        limit = self.config.max_request_bytes
        if len(parts) == 2 and parts[1]:  # a DEALER's one frame, no delimiter: the common case
            envelope, frame = parts[:1], parts[1]
            if len(frame) > limit:
                return self._too_large(envelope, len(frame))
        else:  # an envelope, an empty delimiter, the body (REQ clients, or DEALERs that tag requests)
            try:
                split = parts.index(b"")
            except ValueError:  # no delimiter: the routing id, then the body
                split = 0
            envelope, body = parts[: split + 1], parts[split + 1 :]
            size = len(body[0]) if len(body) == 1 else sum(len(part) for part in body)
            if size > limit:
                return self._too_large(envelope, size)
            if len(body) != 1:
                self._reply(envelope, invalid(None, "send each request as one frame"))
                return self._take()
            frame = body[0]
        kill_at = deadline = now + self.timeout_s
        if not self.inline:
            timeout_ms = scan_timeout_ms(frame)
            if timeout_ms:
                deadline = min(deadline, now + timeout_ms / 1000)
        job = Job(next(self._seqs), envelope, frame, now, deadline, kill_at)
        if self.stopping:
            self._refuse(job, ErrorCode.BUSY, "the worker is shutting down; send this work order elsewhere or later", "busy", now)
        elif self.idle:
            self._admit(job)
            self._run_on_idle(job, now)
        elif len(self.queue) < self.config.queue_limit and self.queued_bytes + len(frame) <= self.config.queue_bytes_limit:
            self._admit(job)
            _move(job, QUEUED)
            self.queue.append(job)
            self.queued_bytes += len(frame)
            self._fill_ahead(now)
        else:
            self._refuse(job, ErrorCode.BUSY, "the worker is busy (its queue is full); try again later", "busy", now)
        return self._take()

    def replied(self, process_id: int, seq: int, payload: bytes | bytearray, now: float) -> list[Action]:
        """Process `process_id` sent a reply for order `seq`: `b"method\\tworkload\\tstatus\\n"`
        followed by the reply frame."""
        process = self.processes.get(process_id)
        if process is None or process.state is DISTRUSTED:
            return self._take()
        jobs = process.jobs
        if not jobs or jobs[0].seq != seq:
            self._distrust(process, f"a reply for order {seq}")
            return self._take()
        job = jobs.popleft()
        del self._jobs[seq]
        answered = job.state in _ANSWERED  # its requester had its answer at its own time limit
        _move(job, DONE)
        self._service_s += (now - job.started - self._service_s) / 16  # moving average of service time
        # keep the process busy first: the reply can go out while it works
        if jobs:
            self._began(process, jobs[0], now)  # the order sent ahead runs now
            if self.queue:
                self._fill_ahead_of(process, now)
        elif process.state is BUSY:
            if self.queue:
                self._run(process, self._dequeue(), now)
            else:
                _move(process, IDLE)
                self.idle.append(process)
        if answered:
            self._abandoned -= 1
            return self._take()
        split = payload.index(b"\n")
        self._actions.append(Reply(job.envelope, memoryview(payload)[split + 1 :]))  # not _reply: one call fewer per order
        if self._reporting:
            method, workload, status = bytes(payload[:split]).decode().split("\t")
            self.metrics.observe(method, workload, status, now - job.received)
        return self._take()

    def skipped(self, process_id: int, seq: int, now: float) -> list[Action]:
        """Process `process_id` did not run revoked order `seq`."""
        process = self.processes.get(process_id)
        if process is None or process.state is DISTRUSTED:
            return self._take()
        if seq in process.revoked:
            process.revoked.discard(seq)
            return self._take()
        job = next((job for job in process.jobs if job.seq == seq and job.state in _REVOKED), None)
        if job is None:
            self._distrust(process, f"order {seq} skipped")
            return self._take()
        was_running = process.jobs[0] is job
        process.jobs.remove(job)
        if not process.jobs:
            if process.state is BUSY:
                _move(process, IDLE)
                self.idle.append(process)
        elif was_running:  # it skipped what it was to run next: the one behind runs now
            self._began(process, process.jobs[0], now)
        if job.state is ANSWERED_REVOKING:  # answered at its requester's limit while it might have run: it did not
            self._abandoned -= 1
            del self._jobs[job.seq]
            _move(job, DONE)
            self._dispatch_queue(now)
        else:
            self._requeue([job], now)
        return self._take()

    def garbled(self, process_id: int, now: float) -> list[Action]:
        """Process `process_id` sent bytes that are not a message."""
        process = self.processes.get(process_id)
        if process is not None and process.state is not DISTRUSTED:
            self._distrust(process, "bytes that are not a message")
        return self._take()

    def revoked(self, process_id: int, certain: bool, now: float) -> list[Action]:
        """The outcome of a `Revoke`: if `certain`, the process will skip every revoked order."""
        process = self.processes.get(process_id)
        if process is None:
            return self._take()
        # not the running order: one revoked before, too late, is the one the process runs
        revoking = [job for job in islice(process.jobs, 1, None) if job.state is REVOKING]
        if certain:
            for job in revoking:
                process.jobs.remove(job)
                process.revoked.add(job.seq)
            self._requeue(revoking, now)
        return self._take()

    def exited(self, process_id: int, how: str, now: float) -> list[Action]:
        """Process `process_id` is gone (`how`: "was killed by SIGKILL", "exited with status 3")."""
        process = self.processes.pop(process_id, None)
        if process is None:
            return self._take()
        distrusted = process.state is DISTRUSTED
        if process.state is IDLE:
            self.idle.remove(process)
        spare = process in self._spares  # a spare that was distrusted stays there until now
        if spare:
            self._spares.remove(process)
        _move(process, EXITED)
        jobs = list(process.jobs)
        if jobs:
            first = jobs[0]
            first.inspect()
            if distrusted:
                reason = "sent a reply that was not for its order"
                lost = jobs
            else:
                lost, rest = jobs[:1], jobs[1:]
                reason = "exceeded its time limit" if process.timed_out is first else how
                self._requeue(rest, now)
            if process.timed_out is first:
                logger.error("work order %s workload=%r: time limit exceeded, process replaced", first.work_order_id or "-", first.workload)
                message, status = f"workload {first.workload!r} exceeded its time limit; its process was stopped and replaced", "timeout"
            else:
                if not (first.state in _ANSWERED and self.stopping):  # else stopped by us, for no one
                    logger.error("work order %s workload=%r: worker process %s", first.work_order_id or "-", first.workload, reason)
                message, status = f"the workload's process {reason} before answering; it was replaced", "error 1"
            for job in lost:
                if job.state in _ANSWERED:  # answered at its requester's limit already
                    self._abandoned -= 1
                    del self._jobs[job.seq]
                    _move(job, DONE)
                else:
                    self._refuse(job, ErrorCode.UNKNOWN_ERROR, message, status, now)
        if spare:
            self._keep_spares()
        elif not (self.stopping and not self.queue):
            self._replace(process)
        self._dispatch_queue(now)
        return self._take()

    def time_passed(self, now: float) -> list[Action]:
        """Act on every timer due by `now`."""
        limits, timers, inspections, jobs = self._limits, self._timers, self._inspections, self._jobs
        while limits and limits[0][0] <= now:
            job = jobs.get(limits.popleft()[1])
            if job is not None:
                self._check(job, now)
        while timers and timers[0][0] <= now:
            job = jobs.get(heapq.heappop(timers)[1])
            if job is not None:
                self._check(job, now)
        while inspections and inspections[0][0] <= now:
            process = self.processes.get(heapq.heappop(inspections)[1])
            if process is not None:
                process.inspecting = False
                self._inspect(process, now)
        return self._take()

    def connection_closed(self, routing_id: bytes, now: float) -> list[Action]:
        """A client has gone: its queued orders are dropped (their replies could go nowhere)."""
        if self.queue:
            for job in [job for job in self.queue if job.envelope[0] == routing_id]:
                self.queue.remove(job)
                self.queued_bytes -= len(job.frame)
                del self._jobs[job.seq]
                _move(job, DONE)
        return self._take()

    def stop(self, now: float) -> list[Action]:
        """Answer new orders BUSY from now on; finish the rest."""
        self.stopping = True
        return self._take()

    def abort(self, now: float) -> list[Action]:
        """Stop now: answer every order not yet answered with an error — BUSY (8) for those no
        process has been given, 1 for the rest — and take no more. The loop then kills the processes."""
        self.stopping = True
        for job in list(self._jobs.values()):
            if job.state in _ANSWERED:
                continue
            if job.state is QUEUED:
                self._refuse(job, ErrorCode.BUSY, "the worker was stopped before it ran this work order; "
                             "send it elsewhere or later", "busy", now)
            else:
                self._refuse(job, ErrorCode.UNKNOWN_ERROR, "the worker was stopped before this work order finished",
                             "error 1", now)
        self.queue.clear()
        self.queued_bytes = 0
        return self._take()

    # questions from the loop ---------------------------------------------------------------------

    def in_flight(self, now: float) -> tuple[int, int, float]:
        """Orders given to a process, orders queued, and the seconds until the last of their
        time limits (inf when an order has none)."""
        queued = len(self.queue)
        latest = max((job.deadline for job in self._jobs.values() if job.state not in _ANSWERED), default=now)
        return len(self._jobs) - self._abandoned - queued, queued, latest - now

    @property
    def finished(self) -> bool:
        """Stopping, every order has been answered, and no process runs one any more."""
        return self.stopping and not self._jobs

    def next_timer(self) -> float | None:
        """When `time_passed` should next be called (None: no timer is set)."""
        limits, timers, jobs = self._limits, self._timers, self._jobs
        while limits and limits[0][1] not in jobs:
            limits.popleft()
        while timers and timers[0][1] not in jobs:
            heapq.heappop(timers)
        # the earliest of the three heads, without a list: this runs on every turn of the loop
        due = limits[0][0] if limits else None
        if timers and (due is None or timers[0][0] < due):
            due = timers[0][0]
        inspections = self._inspections
        if inspections and (due is None or inspections[0][0] < due):
            due = inspections[0][0]
        return due

    def coalesce_s(self) -> float:
        """How long the loop may let events gather before it polls: under saturation, a moment,
        so that it handles replies and requests in batches (fewer wake-ups per order)."""
        if self._service_s < COALESCE_MIN_SERVICE_S or not self.prefetch:
            return 0.0
        for process in self.processes.values():
            if process.state is not SPARE and len(process.jobs) <= PREFETCH_DEPTH:
                return 0.0
        return min(COALESCE_MAX_S, self._service_s)

    def report(self) -> None:
        """Pass the queue depth and pool size on to the metrics."""
        if self._reporting:
            active = len(self.processes) - len(self._spares)
            self.metrics.set_queue_depth(len(self.queue))
            self.metrics.set_pool_size(active, active - len(self.idle))

    # internals -----------------------------------------------------------------------------------

    def _take(self) -> list[Action]:
        if self.stopping and self._abandoned and len(self._jobs) == self._abandoned:
            # every requester has its answer: orders still running for nobody are not waited for
            for job in self._jobs.values():
                if job.process is not None:
                    self._kill(job.process)
        actions, self._actions = self._actions, []
        return actions

    def _spawn(self, cpu: int | None, spare: bool) -> _Process:
        process = _Process(next(self._ids), cpu, SPARE if spare else IDLE)
        self.processes[process.id] = process
        (self._spares if spare else self.idle).append(process)
        self._actions.append(Spawn(process.id, cpu))
        return process

    def _keep_spares(self) -> None:
        while len(self._spares) < self.spares and not self.stopping:
            self._spawn(None, spare=True)

    def _replace(self, lost: _Process) -> None:
        """A spare (or a new process) takes the lost one's place and core."""
        process = next((process for process in self._spares if process.state is SPARE), None)
        if process is not None:
            self._spares.remove(process)
            _move(process, IDLE)
            process.cpu = lost.cpu
            self.idle.append(process)
            if lost.cpu is not None:
                self._actions.append(Pin(process.id, lost.cpu))
        else:
            self._spawn(lost.cpu, spare=False)
        self._keep_spares()

    def _admit(self, job: Job) -> None:
        jobs = self._jobs
        jobs[job.seq] = job
        if job.kill_at != math.inf:
            limits = self._limits
            if len(limits) > 4 * len(jobs) + 256:  # drop stale entries now and then (one order may hold the front)
                self._limits = limits = deque(entry for entry in limits if entry[1] in jobs)
            limits.append((job.kill_at, job.seq))
        if job.deadline < job.kill_at:
            self._timer(job.deadline, job.seq)

    def _timer(self, when: float, seq: int) -> None:
        timers = self._timers
        if len(timers) > 4 * len(self._jobs) + 256:  # drop stale entries now and then
            self._timers = timers = [entry for entry in timers if entry[1] in self._jobs]
            heapq.heapify(timers)
        heapq.heappush(timers, (when, seq))

    def _inspect_at(self, process: _Process, when: float) -> None:
        """Look at `process`'s running order at `when`, unless a look is set for it already."""
        if not process.inspecting:
            process.inspecting = True
            heapq.heappush(self._inspections, (when, process.id))

    def _reply(self, envelope: list[bytes], frame: bytes | bytearray | memoryview) -> None:
        self._actions.append(Reply(envelope, frame))

    def _too_large(self, envelope: list[bytes], size: int) -> list[Action]:
        """Refuse a request of `size` bytes, over --max-request-bytes, unread."""
        limit = self.config.max_request_bytes
        self._reply(envelope, invalid(None, f"request is {size} bytes; this worker accepts at most {limit} (see --max-request-bytes)"))
        return self._take()

    def _refuse(self, job: Job, code: ErrorCode, message: str, status: str, now: float) -> None:
        """Answer `job` ourselves, with an error."""
        job.inspect()
        self._jobs.pop(job.seq, None)
        _move(job, DONE)
        self._reply(job.envelope, error_reply(job.reply_id, code, message, job.work_order_id))
        self.metrics.observe("work-order", job.workload, status, now - job.received)

    def _run_on_idle(self, job: Job, now: float) -> None:
        """Hand `job` to the process idle the longest."""
        process = self.idle.popleft()
        _move(process, BUSY)
        self._run(process, job, now)

    def _run(self, process: _Process, job: Job, now: float) -> None:
        """Hand `job` to busy `process`, which holds no order."""
        job.process = process
        process.jobs.append(job)
        self._began(process, job, now)
        self._actions.append(Send(process.id, job.seq, job.frame))

    def _began(self, process: _Process, job: Job, now: float) -> None:
        """`job` is `process`'s running order from `now`. It is inspected at INSPECT_AFTER_S if
        orders wait behind it, or if its time limit could lie beyond what was scanned. An order
        revoked too late stays REVOKING: its process may skip it yet."""
        if job.state is not REVOKING:
            _move(job, RUNNING)
        job.started = now
        if now >= job.deadline:  # its timer fired while it waited in the process (revoked too late)
            self._timer(now, job.seq)
        if not (process.inspecting or self.inline or job.inspected) and (len(process.jobs) > 1 or len(job.frame) > _SCAN_BYTES):
            self._inspect_at(process, now + INSPECT_AFTER_S)

    def _dequeue(self) -> Job:
        job = self.queue.popleft()
        self.queued_bytes -= len(job.frame)
        return job

    def _requeue(self, jobs: list[Job], now: float) -> None:
        """Put orders no process has started back at the front of the queue, in order."""
        for job in reversed(jobs):
            job.process = None
            if now >= job.deadline:
                self._refuse(job, ErrorCode.UNKNOWN_ERROR, "the work order waited past its time limit; it was not run", "timeout", now)
                continue
            _move(job, QUEUED)
            self.queue.appendleft(job)
            self.queued_bytes += len(job.frame)
        self._dispatch_queue(now)

    def _dispatch_queue(self, now: float) -> None:
        while self.queue and self.idle:
            self._run_on_idle(self._dequeue(), now)
        self._fill_ahead(now)

    def _fill_ahead(self, now: float) -> None:
        if self.queue and self.prefetch:
            for process in self.processes.values():
                if 0 < len(process.jobs) <= PREFETCH_DEPTH:  # busy, with room behind its order
                    self._fill_ahead_of(process, now)

    def _fill_ahead_of(self, process: _Process, now: float) -> None:
        """Send small queued orders ahead to a busy process, up to PREFETCH_DEPTH, unless its
        running order is slow or large (leave them for a free process). Only orders newer than
        its last go: a process holds its orders in rising sequence, so that a `Revoke` of the
        tail of them (`first`…`last`) names no other (an order requeued from a dead process is
        older than those queued after it, and waits for a free process instead)."""
        if not self.prefetch or process.state is not BUSY:
            return
        running = process.jobs[0]
        if running.state is not RUNNING or running.inspected or len(running.frame) > PREFETCH_MAX_BYTES or now - running.started >= INSPECT_AFTER_S:
            return
        queue, jobs = self.queue, process.jobs
        alone = len(jobs) == 1
        while queue and len(jobs) <= PREFETCH_DEPTH and len(queue[0].frame) <= PREFETCH_MAX_BYTES and queue[0].seq > jobs[-1].seq:
            job = queue.popleft()  # not _dequeue: one call fewer per order
            self.queued_bytes -= len(job.frame)
            _move(job, SENT_AHEAD)
            job.process = process
            jobs.append(job)
            self._actions.append(Send(process.id, job.seq, job.frame, ahead=True))
        if alone and len(jobs) > 1:  # orders wait behind it now: look at it if it turns slow
            self._inspect_at(process, running.started + INSPECT_AFTER_S)

    def _check(self, job: Job, now: float) -> None:
        """A timer of `job` is due."""
        state, process = job.state, job.process
        if process is None:  # queued
            if now >= job.deadline:
                self.queue.remove(job)
                self.queued_bytes -= len(job.frame)
                self._refuse(job, ErrorCode.UNKNOWN_ERROR, "the work order waited past its time limit; it was not run", "timeout", now)
            return
        if process.state is not BUSY:  # killed: its exit answers for its orders
            return
        if process.jobs[0] is job:  # it runs, or may (REVOKING): only the operator's limit stops it
            if now >= job.kill_at:
                process.timed_out = job
                self._kill(process)
            elif now >= job.deadline and state not in _ANSWERED:
                self._answer_early(job, now)
        elif now >= job.deadline and state is SENT_AHEAD:  # not started: take it and those behind back
            at = process.jobs.index(job)
            self._revoke(process, list(process.jobs)[at:])

    def _inspect(self, process: _Process, now: float) -> None:
        """`process`'s inspection timer is due: if its running order has run INSPECT_AFTER_S, read
        its ids and its own time limit, and take back the orders waiting behind it; if a newer
        order runs, look again when that one has run as long."""
        if process.state is not BUSY:
            return
        running = process.jobs[0]
        if running.inspected:
            return
        due = running.started + INSPECT_AFTER_S
        if now < due:
            if len(process.jobs) > 1 or len(running.frame) > _SCAN_BYTES:
                self._inspect_at(process, due)
            return
        running.inspect()
        if running.deadline <= now:
            self._check(running, now)
        elif running.deadline < running.kill_at:
            self._timer(running.deadline, running.seq)
        if len(process.jobs) > 1 and process.state is BUSY:  # don't leave orders behind a slow one
            self._revoke(process, list(process.jobs)[1:])

    def _answer_early(self, job: Job, now: float) -> None:
        """The requester's own limit has passed while `job` runs: answer it now, and let the
        process run on to the operator's limit (`kill_at`), when a timer kills it."""
        job.inspect()
        _move(job, ANSWERED if job.state is RUNNING else ANSWERED_REVOKING)
        self._abandoned += 1
        logger.warning("work order %s workload=%r: the requester's time limit passed; answered, its process runs on",
                       job.work_order_id or "-", job.workload)
        self._reply(job.envelope, error_reply(job.reply_id, ErrorCode.UNKNOWN_ERROR,
                                              f"workload {job.workload!r} exceeded its time limit (responseTimeoutMSecs)",
                                              job.work_order_id))
        self.metrics.observe("work-order", job.workload, "timeout", now - job.received)

    def _revoke(self, process: _Process, jobs: list[Job]) -> None:
        jobs = [job for job in jobs if job.state is SENT_AHEAD]
        if jobs:
            for job in jobs:
                _move(job, REVOKING)
            self._actions.append(Revoke(process.id, jobs[0].seq, jobs[-1].seq))

    def _kill(self, process: _Process) -> None:
        """Kill `process` if it is busy (a killed one is on its way out)."""
        if process.state is BUSY:
            _move(process, KILLED)
            self._actions.append(Kill(process.id))

    def _distrust(self, process: _Process, what: str) -> None:
        logger.error("worker process %d sent %s, which is not the reply to its order: stopping it", process.id, what)
        killed = process.state is KILLED
        if process.state is IDLE:
            self.idle.remove(process)
        _move(process, DISTRUSTED)
        if not killed:
            self._actions.append(Kill(process.id))


def scan_timeout_ms(frame: bytes) -> int | None:
    """A request's responseTimeoutMSecs as found in its first bytes without parsing it (None if
    absent or 0). A requester can only shorten its own order's limit with it."""
    at = frame.find(_TIMEOUT_KEY, 0, _SCAN_BYTES)
    if at < 0:
        return None
    match = _TIMEOUT_VALUE.match(frame, at + len(_TIMEOUT_KEY))
    return int(match[1]) or None if match else None

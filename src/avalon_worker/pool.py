"""A pool of worker processes behind one ZMQ endpoint.

The supervisor (this process) owns the endpoint (`router.Router`, a ZMQ ROUTER over plain
sockets) that REQ clients and Avalon's enclave manager talk to unchanged. It hands each request to an idle worker process over a socket pair,
queues a bounded number when all are busy and answers BUSY (8) beyond that. It enforces the time
limit of each work order: a workload that hangs, exits or crashes costs its own process, which is
replaced, and the supervisor answers for the order. Worker processes are forked after the
identity is loaded, so all share it; they use no ZMQ, only their socket pairs.

Hand-off: each process has a "slot", a SOCK_SEQPACKET pair, and every order reaches it through
that slot as one record, in order: a small order inline, a large one as a token that says "read
the next order from your channel". While a process works, the supervisor may put the next small
queued orders in its slot (prefetch, up to PREFETCH_DEPTH), so the process goes straight on. The
supervisor keeps the process's end of the slot too: if the running order turns out slow, or the
process dies, it takes back what is still slotted — each record is received by exactly one reader, so an order is
never run twice and never stuck behind a slow one for longer than the inspection delay. Where
SOCK_SEQPACKET pairs cannot be made (or with --no-prefetch) orders go over the channel alone.
"""

from __future__ import annotations

import logging
import os
import resource
import select
import signal
import socket
import struct
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from . import jsonio
from .errors import ErrorCode
from .models import strip_0x
from .processor import Processor, encode, error_reply, jsonrpc_id
from .router import Router
from .server import HARD_LIMIT_FACTOR, StopFlag, refuse_frame

logger = logging.getLogger(__name__)

_HEADER = struct.Struct(">cI")  # message kind, payload length
KIND_WORK = b"W"  # supervisor → worker: a request frame
KIND_REPLY = b"R"  # worker → supervisor: "method\tworkload\tstatus\n" then the reply frame
SLOT_INLINE = b"F"  # slot record: this byte, then the order's frame
SLOT_ON_CHANNEL = b"C"  # slot record: the order follows on the channel
# A request still running after this long is read by the supervisor for its ids and its own
# responseTimeoutMSecs; quick ones (nearly all) are never parsed twice.
INSPECT_AFTER_S = 0.05
SLOT_MAX_BYTES = 64 * 1024  # larger orders are never prefetched (their byte work dwarfs the hand-off)
PREFETCH_DEPTH = 2  # orders that may wait in a busy process's slot behind the running one
# Under saturation (every process has PREFETCH_DEPTH orders waiting) the supervisor lets events
# gather for a moment and handles them together: for at most COALESCE_MAX_S and at most one
# typical order's service time, so a process still has an order in hand when the supervisor
# comes back to it. Never for orders under COALESCE_MIN_SERVICE_S: there the timer's own
# wake-up would cost more than it saves.
COALESCE_MAX_S = 0.0005
COALESCE_MIN_SERVICE_S = 0.0002


@dataclass(frozen=True)
class PoolConfig:
    """How the pool runs; the CLI fills it from its options."""

    workers: int
    timeout_s: float = 60.0
    memory_limit_bytes: int | None = None
    queue_limit: int = 256
    queue_bytes_limit: int = 128 * 1024 * 1024  # the queue's frames together: BUSY beyond either limit
    max_request_bytes: int = 32 * 1024 * 1024
    prefetch: bool = True
    pin_cpus: bool = False


class PoolMetrics:
    """What the supervisor reports; the default does nothing (see `metrics.PrometheusMetrics`)."""

    def observe(self, method: str, workload: str, status: str, seconds: float) -> None: ...

    def set_queue_depth(self, depth: int) -> None: ...

    def set_pool_size(self, alive: int, busy: int) -> None: ...


@dataclass
class _Job:
    envelope: list[bytes]
    frame: bytes
    received: float
    deadline: float
    started: float = 0.0  # when it became its process's running order
    inspected: bool = False
    reply_id: Any = None
    work_order_id: str | None = None
    workload: str = "-"

    def inspect(self) -> None:
        """Read the request's ids and time limit (once, and only for a slow request)."""
        self.inspected = True
        self.reply_id, self.work_order_id, self.workload, timeout_ms = inspect_request(self.frame)
        if timeout_ms:
            self.deadline = min(self.deadline, self.received + timeout_ms / 1000)


@dataclass
class _Worker:
    pid: int
    channel: _Channel
    slot: socket.socket | None = None  # the supervisor's end of the next-order slot
    slot_reader: socket.socket | None = None  # the process's end, kept to take an order back
    cpu: int | None = None  # the core it is pinned to (--pin-cpus)
    jobs: deque[_Job] = field(default_factory=deque)  # the running order, then a slotted one
    fileno: int = field(init=False)

    def __post_init__(self) -> None:
        self.fileno = self.channel.sock.fileno()

    def sockets(self) -> list[socket.socket]:
        return [s for s in (self.channel.sock, self.slot, self.slot_reader) if s is not None]

    def take_back(self) -> int:
        """Take back every order still waiting in the slot (the last ones of `jobs`: the slot
        holds a suffix of them, in order); return how many."""
        taken = 0
        while self.slot_reader is not None:
            try:
                self.slot_reader.recv(SLOT_MAX_BYTES + 1, socket.MSG_DONTWAIT)
            except OSError:  # BlockingIOError when the slot is empty
                break
            taken += 1
        return taken


class _Channel:
    """Length-prefixed messages over one end of a socket pair, read through a buffer so that
    messages that arrive together cost one system call."""

    READ_SIZE = 1 << 16

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._buffer = bytearray()
        self._read = memoryview(bytearray(self.READ_SIZE))  # reused, not allocated per read

    def send(self, kind: bytes, *parts: bytes | bytearray | memoryview) -> None:
        """One message made of `parts`, gathered by the kernel (large payloads are not copied)."""
        size = sum(len(part) for part in parts)
        buffers = [memoryview(_HEADER.pack(kind, size)), *(memoryview(part).cast("B") for part in parts)]
        while buffers:
            sent = self.sock.sendmsg(buffers)
            while buffers and sent >= len(buffers[0]):
                sent -= len(buffers[0])
                buffers.pop(0)
            if buffers and sent:
                buffers[0] = buffers[0][sent:]

    def _fill(self) -> bool:
        size = self.sock.recv_into(self._read)
        if not size:
            return False
        self._buffer += self._read[:size]
        return True

    def _complete(self) -> tuple[bytes, bytes | bytearray] | None:
        if len(self._buffer) < _HEADER.size:
            return None
        kind, size = _HEADER.unpack_from(self._buffer)
        end = _HEADER.size + size
        if len(self._buffer) < end:
            return None
        payload = bytes(self._buffer[_HEADER.size:end])
        del self._buffer[:end]
        return kind, payload

    def _read_rest(self) -> tuple[bytes, bytes | bytearray] | None:
        """Block until the message begun in the buffer is complete (a large one: read it in place)."""
        while len(self._buffer) < _HEADER.size:
            if not self._fill():
                return None
        kind, size = _HEADER.unpack_from(self._buffer)
        have = len(self._buffer) - _HEADER.size
        if have >= size:
            return self._complete()
        payload = bytearray(size)
        payload[:have] = self._buffer[_HEADER.size:]
        self._buffer.clear()
        view = memoryview(payload)
        while have < size:
            n = self.sock.recv_into(view[have:], size - have)
            if n == 0:
                return None
            have += n
        return kind, payload  # a bytearray: large messages are not copied again

    def has_message(self) -> bool:
        """A complete message is already buffered."""
        if len(self._buffer) < _HEADER.size:
            return False
        return len(self._buffer) >= _HEADER.size + _HEADER.unpack_from(self._buffer)[1]

    def receive(self) -> tuple[bytes, bytes | bytearray] | None:
        """The next message, blocking; None when the other end has closed."""
        message = self._complete()
        return message if message is not None else self._read_rest()

    def receive_ready(self) -> list[tuple[bytes, bytes | bytearray]] | None:
        """After a poll said readable: every message now available (at least one); None at EOF."""
        if not self._fill():
            return None
        messages = []
        while (message := self._complete()) is not None:
            messages.append(message)
        if not messages:  # a message larger than one read: finish it
            message = self._read_rest()
            if message is None:
                return None
            messages.append(message)
        return messages


def _next_frame(channel: _Channel, slot: socket.socket | None, record: memoryview) -> bytes | bytearray | None:
    """The next order (None when the supervisor has gone): from the slot, which carries every
    order in the order it was sent, or from the channel alone when there is no slot. `record`
    is a reusable buffer for one slot record."""
    if slot is None:
        message = channel.receive()
        return None if message is None else message[1]
    size = slot.recv_into(record)
    if not size:
        return None
    if record[0] == SLOT_INLINE[0]:
        return bytes(record[1:size])
    message = channel.receive()
    return None if message is None else message[1]


def _worker_main(channel: _Channel, slot: socket.socket | None, processor: Processor, memory_limit: int | None) -> None:
    """The body of a worker process: answer frames until the supervisor goes away."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the supervisor, which drains us
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    if memory_limit:
        resource.setrlimit(resource.RLIMIT_AS, (memory_limit, memory_limit))

    record = memoryview(bytearray(SLOT_MAX_BYTES + 1))
    while (frame := _next_frame(channel, slot, record)) is not None:
        outcome = processor.process(frame)
        meta = f"{outcome.method}\t{outcome.workload}\t{outcome.status}\n".encode()
        channel.send(KIND_REPLY, meta, outcome.reply)


def _describe_exit(status: int) -> str:
    if os.WIFSIGNALED(status):
        try:
            return f"was killed by {signal.Signals(os.WTERMSIG(status)).name}"
        except ValueError:
            return f"was killed by signal {os.WTERMSIG(status)}"
    return f"exited with status {os.waitstatus_to_exitcode(status)}"


class Pool:
    """The supervisor: routes frames to worker processes and answers for the ones that fail."""

    def __init__(self, processor: Processor, config: PoolConfig, metrics: PoolMetrics | None = None) -> None:
        if config.workers < 1:
            raise ValueError("a pool needs at least one worker process")
        self.processor = processor
        self.config = config
        self.prefetch = config.prefetch
        self.metrics = metrics or PoolMetrics()
        self._reporting = type(self.metrics) is not PoolMetrics  # skip metrics bookkeeping nobody reads
        self.workers: dict[int, _Worker] = {}
        self.idle: deque[_Worker] = deque()
        self.queue: deque[_Job] = deque()
        self.queued_bytes = 0  # the frames waiting in `queue`
        self._service_s = 0.0  # recent orders' time from start to reply, averaged
        self._poller = select.epoll()
        self._router: Router | None = None
        self._cpus = sorted(os.sched_getaffinity(0)) if config.pin_cpus else []

    def _pin(self) -> None:
        """With --pin-cpus: the supervisor moves to the cores no worker process has, if any are left,
        so that it never preempts one (on a machine with cores to spare)."""
        spare = self._cpus[self.config.workers :]
        if spare:
            os.sched_setaffinity(0, spare)

    # worker processes ------------------------------------------------------------------------

    def _slot_pair(self) -> tuple[socket.socket, socket.socket] | None:
        if not self.prefetch:
            return None
        try:
            pair = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            pair[0].setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 * SLOT_MAX_BYTES)
            return pair
        except OSError:
            logger.info("no SOCK_SEQPACKET socket pairs here: prefetch is off")
            self.prefetch = False
            return None

    def _spawn(self, cpu: int | None = None) -> _Worker:
        """Fork a worker process (pinned to core `cpu`, if given)."""
        parent_end, child_end = socket.socketpair()
        slot_pair = self._slot_pair()
        pid = os.fork()
        if pid == 0:  # the worker process: never returns into the supervisor's code
            status = 0
            try:
                parent_end.close()
                if slot_pair is not None:
                    slot_pair[0].close()
                for other in self.workers.values():
                    for sock in other.sockets():
                        sock.close()
                if self._router is not None:
                    self._router.close_inherited()
                self._poller.close()
                if cpu is not None:
                    os.sched_setaffinity(0, {cpu})
                slot = slot_pair[1] if slot_pair is not None else None
                _worker_main(_Channel(child_end), slot, self.processor, self.config.memory_limit_bytes)
            except BaseException:  # noqa: BLE001 - the supervisor sees the exit and answers for us
                status = 1
            finally:
                os._exit(status)
        child_end.close()
        slot, slot_reader = slot_pair or (None, None)
        worker = _Worker(pid, _Channel(parent_end), slot=slot, slot_reader=slot_reader, cpu=cpu)
        self.workers[worker.fileno] = worker
        self._poller.register(worker.fileno, select.EPOLLIN)
        self.idle.append(worker)
        return worker

    def _retire(self, worker: _Worker) -> str:
        """Kill and reap a worker process; return how it ended."""
        self._poller.unregister(worker.fileno)
        del self.workers[worker.fileno]
        if worker in self.idle:
            self.idle.remove(worker)
        worker.channel.sock.close()
        try:
            os.kill(worker.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        _, status = os.waitpid(worker.pid, 0)
        return _describe_exit(status)

    def _lose(self, router: Router, worker: _Worker, message: str, status: str) -> None:
        """A process is gone: requeue an order it never received, answer for the one it was running."""
        self._reclaim(worker)
        for sock in (worker.slot, worker.slot_reader):
            if sock is not None:
                sock.close()
        for job in worker.jobs:
            self._refuse(router, job, ErrorCode.UNKNOWN_ERROR, message.format(workload=job.workload), status)
        self._spawn(worker.cpu)  # the replacement takes over its core

    # requests ----------------------------------------------------------------------------------

    def _reply(self, router: Router, envelope: list[bytes], frame: bytes | memoryview) -> None:
        router.send(envelope[0], [*envelope[1:], frame])

    def _refuse(self, router: Router, job: _Job, code: ErrorCode, message: str, status: str) -> None:
        if not job.inspected:
            job.inspect()
        self._reply(router, job.envelope, encode(error_reply(job.reply_id, code, message, job.work_order_id)))
        self.metrics.observe("work-order", job.workload, status, time.monotonic() - job.received)

    def _dispatch(self, job: _Job) -> None:
        worker = self.idle.popleft()
        worker.jobs.append(job)
        job.started = time.monotonic()
        try:
            if worker.slot is None:
                worker.channel.send(KIND_WORK, job.frame)
            elif len(job.frame) <= SLOT_MAX_BYTES:
                worker.slot.sendmsg([SLOT_INLINE, job.frame])
            else:  # the token first: the process reads the channel while this is being sent
                worker.slot.send(SLOT_ON_CHANNEL)
                worker.channel.send(KIND_WORK, job.frame)
        except OSError:
            pass  # the process died; its socket reports EOF on the next poll and we answer then

    def _prefetch_into(self, worker: _Worker) -> None:
        """Queue small orders in a busy process's slot behind its running one, up to
        PREFETCH_DEPTH, unless the running order is slow or large (leave them for a free process)."""
        if not (self.prefetch and worker.jobs and worker.slot is not None):
            return
        running = worker.jobs[0]
        if running.inspected or len(running.frame) > SLOT_MAX_BYTES:
            return
        while self.queue and len(worker.jobs) <= PREFETCH_DEPTH and len(self.queue[0].frame) <= SLOT_MAX_BYTES:
            try:
                worker.slot.sendmsg([SLOT_INLINE, self.queue[0].frame], [], socket.MSG_DONTWAIT)
            except OSError:
                return
            worker.jobs.append(self._take())

    def _take(self) -> _Job:
        """The oldest queued order, out of the queue."""
        job = self.queue.popleft()
        self.queued_bytes -= len(job.frame)
        return job

    def _reclaim(self, worker: _Worker) -> None:
        """Requeue, at the front and in order, the orders a process has not received yet."""
        for _ in range(worker.take_back()):
            job = worker.jobs.pop()
            self.queue.appendleft(job)
            self.queued_bytes += len(job.frame)

    def _assign(self) -> None:
        while self.queue and self.idle:
            self._dispatch(self._take())
        if self.queue and self.prefetch:
            for worker in self.workers.values():
                self._prefetch_into(worker)

    def _accept(self, router: Router, parts: list[bytes], stopping: bool) -> None:
        split = next((i for i, part in enumerate(parts) if not part), 0)
        envelope, body = parts[: split + 1], parts[split + 1 :]
        now = time.monotonic()
        job = _Job(envelope, body[0] if len(body) == 1 else b"", now, now + self.config.timeout_s)
        refusal = refuse_frame(body, self.config.max_request_bytes)
        if refusal is not None:
            self._reply(router, envelope, refusal)
        elif stopping:
            self._refuse(router, job, ErrorCode.BUSY, "the worker is shutting down; send this work order elsewhere or later", "busy")
        elif self.idle:
            self._dispatch(job)
        elif len(self.queue) < self.config.queue_limit and self.queued_bytes + len(job.frame) <= self.config.queue_bytes_limit:
            self.queue.append(job)
            self.queued_bytes += len(job.frame)
        else:
            self._refuse(router, job, ErrorCode.BUSY, "the worker is busy (its queue is full); try again later", "busy")

    def _on_readable(self, router: Router, worker: _Worker) -> None:
        try:
            messages = worker.channel.receive_ready()
        except OSError:
            messages = None
        for kind, payload in messages or ():
            self._on_message(router, worker, kind, payload)
        if messages is None:
            how = self._retire(worker)
            if worker.jobs:
                logger.error("work order %s workload=%r: worker process %s", worker.jobs[0].work_order_id or "-",
                             worker.jobs[0].workload, how)
            self._lose(router, worker, f"the workload's process {how} before answering; it was replaced", "error 1")

    def _on_message(self, router: Router, worker: _Worker, kind: bytes, payload: bytes | bytearray) -> None:
        if kind != KIND_REPLY or not worker.jobs:
            return
        job = worker.jobs.popleft()
        now = time.monotonic()
        self._service_s += (now - job.started - self._service_s) / 16  # moving average of service time
        if worker.jobs:
            worker.jobs[0].started = now  # the slotted order runs now
        else:
            self.idle.append(worker)
        if self.queue:  # keep the process busy first: the reply can go out while it works
            if worker.jobs:
                self._prefetch_into(worker)
            else:
                self._dispatch(self._take())
        split = payload.index(b"\n")
        self._reply(router, job.envelope, memoryview(payload)[split + 1 :])
        if self._reporting:
            method, workload, status = payload[:split].decode().split("\t")
            self.metrics.observe(method, workload, status, time.monotonic() - job.received)

    def _expire(self, router: Router, now: float) -> None:
        for worker in list(self.workers.values()):
            if not worker.jobs:
                continue
            job = worker.jobs[0]
            if not job.inspected and now - job.started >= INSPECT_AFTER_S:
                job.inspect()
                if len(worker.jobs) > 1:  # don't leave orders behind a slow one
                    self._reclaim(worker)
                    if not worker.jobs:  # it had not even received this one: hand it out again
                        self.idle.append(worker)
                        continue
            if now >= job.deadline:
                if select.select([worker.channel.sock], [], [], 0)[0]:
                    continue  # it answered just now: read that first
                self._retire(worker)
                logger.error("work order %s workload=%r: time limit exceeded, process replaced", job.work_order_id or "-", job.workload)
                self._lose(router, worker, "workload {workload!r} exceeded its time limit; its process was stopped and replaced", "timeout")

    def _coalesce(self) -> None:
        """Under saturation, let events gather before handling them: fewer wake-ups per order."""
        if self._service_s < COALESCE_MIN_SERVICE_S or not self.prefetch:
            return
        if all(len(worker.jobs) > PREFETCH_DEPTH for worker in self.workers.values()):
            time.sleep(min(COALESCE_MAX_S, self._service_s))

    # the loop ------------------------------------------------------------------------------------

    def serve(self, bind: str, *, stop: StopFlag, on_ready: Callable[[str], None] | None = None) -> None:
        """Serve until `stop` is set, then answer everything in flight and stop the workers."""
        for n in range(self.config.workers):
            self._spawn(self._cpus[n % len(self._cpus)] if self._cpus else None)
        self._pin()
        router = self._router = Router(bind, self._poller, self.config.max_request_bytes * HARD_LIMIT_FACTOR)
        if on_ready is not None:
            on_ready(router.endpoint)
        try:
            while True:
                stopping = stop.is_set
                busy = len(self.workers) - len(self.idle)
                if stopping and busy == 0 and not self.queue:
                    break
                now = time.monotonic()
                due = now + 0.2
                for worker in self.workers.values():
                    if worker.jobs:
                        job = worker.jobs[0]
                        due = min(due, job.deadline if job.inspected else job.started + INSPECT_AFTER_S)
                router_due = router.next_due()
                if router_due is not None:
                    due = min(due, router_due)
                self._coalesce()
                try:
                    events = self._poller.poll(max(0.0, due - now))
                except InterruptedError:
                    events = []
                for fd, mask in events:
                    if fd in self.workers:
                        self._on_readable(router, self.workers[fd])
                    else:
                        for parts in router.on_event(fd, mask):
                            self._accept(router, parts, stopping)
                if self.queue:
                    self._assign()
                now = time.monotonic()
                if now >= due:
                    self._expire(router, now)
                    router.tick(now)
                if self._reporting:
                    self.metrics.set_queue_depth(len(self.queue))
                    self.metrics.set_pool_size(len(self.workers), len(self.workers) - len(self.idle))
        finally:
            for worker in list(self.workers.values()):
                for sock in worker.sockets():
                    sock.close()  # EOF: the worker process returns and exits
            for worker in list(self.workers.values()):
                os.waitpid(worker.pid, 0)
            self.workers.clear()
            router.close(linger_s=1.0)
            self._poller.close()
        logger.info("stopped")


def inspect_request(frame: bytes | memoryview) -> tuple[Any, str | None, str, int | None]:
    """(reply id, workOrderId, workload, responseTimeoutMSecs) of a request frame, as far as they
    can be read: what the supervisor needs to answer for a request its worker did not answer."""
    reply_id, work_order_id, workload, timeout_ms = None, None, "-", None
    try:
        outer = jsonio.loads(frame)
        reply_id = jsonrpc_id(outer)
        inner = jsonio.loads(outer["params"]) if isinstance(outer.get("params"), str) else outer.get("params")
        if isinstance(inner, dict):
            if "id" in inner:
                reply_id = jsonrpc_id(inner)
            params = inner.get("params")
            if isinstance(params, dict):
                work_order_id = params.get("workOrderId") if isinstance(params.get("workOrderId"), str) else None
                raw = params.get("workloadId")
                if isinstance(raw, str):
                    workload = bytes.fromhex(strip_0x(raw)).decode("utf-8")
                timeout = params.get("responseTimeoutMSecs")
                if isinstance(timeout, int) and not isinstance(timeout, bool) and timeout > 0:
                    timeout_ms = timeout
    except (ValueError, TypeError, AttributeError, KeyError, RecursionError, UnicodeDecodeError):
        pass
    return reply_id, work_order_id, workload, timeout_ms

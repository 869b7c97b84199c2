"""A pool of worker processes behind one ZMQ endpoint.

The supervisor (this process) owns a ROUTER socket that REQ clients and Avalon's enclave
manager talk to unchanged. It hands each request to an idle worker process over a socket pair,
queues a bounded number when all are busy and answers BUSY (8) beyond that. It enforces the time
limit of each work order: a workload that hangs, exits or crashes costs its own process, which is
replaced, and the supervisor answers for the order. Worker processes are forked after the
identity is loaded, so all share it; they use no ZMQ, only their socket pair.
"""

from __future__ import annotations

import json
import logging
import os
import resource
import signal
import socket
import struct
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import zmq

from .errors import ErrorCode
from .processor import Processor, encode, error_reply
from .server import StopFlag, bind_socket, oversize_reply

logger = logging.getLogger(__name__)

_HEADER = struct.Struct(">cI")  # message kind, payload length
KIND_WORK = b"W"  # supervisor → worker: a request frame
KIND_STARTED = b"S"  # worker → supervisor: a workload is starting (JSON: id, workOrderId, workload, timeout ms)
KIND_REPLY = b"R"  # worker → supervisor: JSON outcome line, newline, reply frame
BUSY_ID_PARSE_LIMIT = 1 << 20  # parse larger refused frames for their id? no: answer with a null id


@dataclass(frozen=True)
class PoolConfig:
    """How the pool runs; the CLI fills it from its options."""

    workers: int
    timeout_s: float = 60.0
    memory_limit_bytes: int | None = None
    queue_limit: int = 256
    max_request_bytes: int = 32 * 1024 * 1024


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
    reply_id: Any = None
    work_order_id: str | None = None
    workload: str = "-"
    deadline: float | None = None


@dataclass
class _Worker:
    pid: int
    sock: socket.socket
    job: _Job | None = None
    fileno: int = field(init=False)

    def __post_init__(self) -> None:
        self.fileno = self.sock.fileno()


def _send(sock: socket.socket, kind: bytes, payload: bytes) -> None:
    header = _HEADER.pack(kind, len(payload))
    if len(payload) < 65536:
        sock.sendall(header + payload)  # one system call for the common small message
    else:
        sock.sendall(header)
        sock.sendall(payload)


def _recv_exact(sock: socket.socket, size: int) -> bytes | None:
    buffer = bytearray(size)
    view = memoryview(buffer)
    got = 0
    while got < size:
        n = sock.recv_into(view[got:], size - got)
        if n == 0:
            return None
        got += n
    return bytes(buffer)


def _recv(sock: socket.socket) -> tuple[bytes, bytes] | None:
    header = _recv_exact(sock, _HEADER.size)
    if header is None:
        return None
    kind, size = _HEADER.unpack(header)
    payload = _recv_exact(sock, size) if size else b""
    return None if payload is None else (kind, payload)


def _worker_main(sock: socket.socket, processor: Processor, memory_limit: int | None) -> None:
    """The body of a worker process: answer frames until the supervisor goes away."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the supervisor, which drains us
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    if memory_limit:
        resource.setrlimit(resource.RLIMIT_AS, (memory_limit, memory_limit))

    def started(reply_id: Any, work_order_id: str, workload: str, timeout_ms: int | None) -> None:
        _send(sock, KIND_STARTED, json.dumps([reply_id, work_order_id, workload, timeout_ms]).encode())

    while True:
        message = _recv(sock)
        if message is None:
            return
        outcome = processor.process(message[1], started)
        meta = json.dumps([outcome.method, outcome.workload, outcome.status]).encode()
        _send(sock, KIND_REPLY, meta + b"\n" + outcome.reply)


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
        self.metrics = metrics or PoolMetrics()
        self.workers: dict[int, _Worker] = {}
        self.idle: deque[_Worker] = deque()
        self.queue: deque[_Job] = deque()
        self._poller = zmq.Poller()

    # worker processes ------------------------------------------------------------------------

    def _spawn(self) -> _Worker:
        parent_end, child_end = socket.socketpair()
        pid = os.fork()
        if pid == 0:  # the worker process: never returns into the supervisor's code
            status = 0
            try:
                parent_end.close()
                for other in self.workers.values():
                    other.sock.close()
                _worker_main(child_end, self.processor, self.config.memory_limit_bytes)
            except BaseException:  # noqa: BLE001 - the supervisor sees the exit and answers for us
                status = 1
            finally:
                os._exit(status)
        child_end.close()
        worker = _Worker(pid, parent_end)
        self.workers[worker.fileno] = worker
        self._poller.register(worker.fileno, zmq.POLLIN)
        self.idle.append(worker)
        return worker

    def _retire(self, worker: _Worker, *, kill: bool) -> str:
        """Remove a worker process; return how it ended."""
        self._poller.unregister(worker.fileno)
        del self.workers[worker.fileno]
        if worker in self.idle:
            self.idle.remove(worker)
        worker.sock.close()
        if kill:
            try:
                os.kill(worker.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        _, status = os.waitpid(worker.pid, 0)
        return _describe_exit(status)

    # requests ----------------------------------------------------------------------------------

    def _reply(self, router: zmq.Socket, envelope: list[bytes], frame: bytes) -> None:
        router.send_multipart([*envelope, frame], copy=len(frame) < 65536)

    def _refuse(self, router: zmq.Socket, job: _Job, code: ErrorCode, message: str, status: str) -> None:
        reply_id = job.reply_id
        if reply_id is None and len(job.frame) <= BUSY_ID_PARSE_LIMIT:
            reply_id = _inner_id(job.frame)
        self._reply(router, job.envelope, encode(error_reply(reply_id, code, message, job.work_order_id)))
        self.metrics.observe("work-order", job.workload, status, time.monotonic() - job.received)

    def _dispatch(self, job: _Job) -> None:
        worker = self.idle.popleft()
        worker.job = job
        try:
            _send(worker.sock, KIND_WORK, job.frame)
        except OSError:
            pass  # the process died; its socket reports EOF on the next poll and we answer then

    def _accept(self, router: zmq.Socket, parts: list[bytes], stopping: bool) -> None:
        split = next((i for i, part in enumerate(parts) if not part), 0)
        envelope, body = parts[: split + 1], parts[split + 1 :]
        job = _Job(envelope, body[0] if len(body) == 1 else b"", time.monotonic())
        size = sum(len(part) for part in body)
        if size > self.config.max_request_bytes:
            self._reply(router, envelope, oversize_reply(size, self.config.max_request_bytes))
        elif len(body) != 1:
            self._reply(router, envelope, encode(error_reply(None, ErrorCode.INVALID_PARAMETER, "send each request as one frame")))
        elif stopping:
            self._refuse(router, job, ErrorCode.BUSY, "the worker is shutting down; send this work order elsewhere or later", "busy")
        elif self.idle:
            self._dispatch(job)
        elif len(self.queue) < self.config.queue_limit:
            self.queue.append(job)
        else:
            self._refuse(router, job, ErrorCode.BUSY, "the worker is busy (its queue is full); try again later", "busy")

    def _on_message(self, router: zmq.Socket, worker: _Worker) -> None:
        try:
            message = _recv(worker.sock)
        except OSError:
            message = None
        job = worker.job
        if message is None:
            how = self._retire(worker, kill=True)
            if job is not None:
                logger.error("work order %s workload=%r: worker process %s", job.work_order_id or "-", job.workload, how)
                self._refuse(router, job, ErrorCode.UNKNOWN_ERROR, f"the workload's process {how} before answering; it was replaced", "error 1")
            self._replace()
            return
        kind, payload = message
        if kind == KIND_STARTED and job is not None:
            job.reply_id, job.work_order_id, job.workload, timeout_ms = json.loads(payload)
            limit = self.config.timeout_s
            if timeout_ms:
                limit = min(limit, timeout_ms / 1000)
            job.deadline = time.monotonic() + limit
        elif kind == KIND_REPLY and job is not None:
            meta, _, reply = payload.partition(b"\n")
            method, workload, status = json.loads(meta)
            self._reply(router, job.envelope, reply)
            self.metrics.observe(method, workload, status, time.monotonic() - job.received)
            worker.job = None
            self.idle.append(worker)

    def _replace(self) -> None:
        self._spawn()

    def _expire(self, router: zmq.Socket, now: float) -> None:
        for worker in list(self.workers.values()):
            job = worker.job
            if job is not None and job.deadline is not None and now >= job.deadline:
                self._retire(worker, kill=True)
                logger.error("work order %s workload=%r: time limit exceeded, process replaced", job.work_order_id or "-", job.workload)
                self._refuse(
                    router, job, ErrorCode.UNKNOWN_ERROR,
                    f"workload {job.workload!r} exceeded its time limit; its process was stopped and replaced", "timeout",
                )
                self._replace()

    # the loop ------------------------------------------------------------------------------------

    def serve(self, bind: str, *, stop: StopFlag, on_ready: Callable[[str], None] | None = None) -> None:
        """Serve until `stop` is set, then answer everything in flight and stop the workers."""
        for _ in range(self.config.workers):
            self._spawn()
        context = zmq.Context()
        router, endpoint = bind_socket(context, bind, zmq.ROUTER, self.config.max_request_bytes)
        self._poller.register(router, zmq.POLLIN)
        if on_ready is not None:
            on_ready(endpoint)
        try:
            while True:
                stopping = stop.is_set
                busy = len(self.workers) - len(self.idle)
                if stopping and busy == 0 and not self.queue:
                    break
                now = time.monotonic()
                deadlines = [w.job.deadline for w in self.workers.values() if w.job is not None and w.job.deadline]
                wait = min([0.2, *(max(0.0, d - now) for d in deadlines)])
                for target, _ in self._poller.poll(int(wait * 1000) + 1):
                    if target is router:
                        while True:
                            try:
                                parts = router.recv_multipart(zmq.NOBLOCK)
                            except zmq.Again:
                                break
                            self._accept(router, parts, stopping)
                    elif target in self.workers:
                        self._on_message(router, self.workers[target])
                while self.queue and self.idle:
                    self._dispatch(self.queue.popleft())
                self._expire(router, time.monotonic())
                self.metrics.set_queue_depth(len(self.queue))
                self.metrics.set_pool_size(len(self.workers), len(self.workers) - len(self.idle))
        finally:
            for worker in list(self.workers.values()):
                worker.sock.close()  # EOF: the worker process returns and exits
            for worker in list(self.workers.values()):
                os.waitpid(worker.pid, 0)
            self.workers.clear()
            router.close(linger=1000)
            context.term()
        logger.info("stopped")


def _inner_id(frame: bytes) -> Any:
    """The id to echo on a refusal: the inner request's if it can be read, else the outer one."""
    try:
        outer = json.loads(frame)
        inner = json.loads(outer["params"]) if isinstance(outer.get("params"), str) else None
        source = inner if isinstance(inner, dict) and "id" in inner else outer
        value = source.get("id")
    except (ValueError, TypeError, AttributeError, KeyError, RecursionError, UnicodeDecodeError):
        return None
    return value if isinstance(value, (str, int, float)) and not isinstance(value, bool) else None

"""The scheduler against a model of its worker processes and its loop, under random events.

Each simulated process behaves as `_internal/child.py` does: it reads everything sent to it
before it starts an order, skips (and reports) the revoked orders it holds, and runs the rest
in order; the simulated loop carries out the scheduler's actions as `_internal/loop.py` does
(a revocation is certain when nothing from the process waits to be read; a killed process's
last messages are read before its exit). Seeded random walks interleave arrivals, progress, replies
read late, time, crashes, garbage, closed connections and a stop. After every event no order
has been answered twice or started twice and each state agrees with the lists that hold it;
after a drain, every order whose client stayed has exactly one answer.
"""

from __future__ import annotations

import json
import random
from collections import Counter, deque
from dataclasses import dataclass, field

from test_scheduler import META, request

from avalon_worker._internal.scheduler import (
    Kill,
    OrderState,
    Pin,
    PoolConfig,
    ProcessState,
    Reply,
    Revoke,
    Scheduler,
    Send,
    Spawn,
)

HEAD = (OrderState.RUNNING, OrderState.REVOKING, OrderState.ANSWERED, OrderState.ANSWERED_REVOKING)
BEHIND = (OrderState.SENT_AHEAD, OrderState.REVOKING)


@dataclass
class FakeProcess:
    """A worker process as child.py runs: `inbox` is what the supervisor wrote and it has not
    read, `outbox` what it wrote and the supervisor has not read."""

    inbox: deque[tuple[str, int, int, bytes]] = field(default_factory=deque)
    pending: deque[tuple[int, bytes]] = field(default_factory=deque)
    running: tuple[int, bytes] | None = None
    outbox: deque[tuple[str, int, bytes]] = field(default_factory=deque)

    def step(self, started: Counter[int]) -> None:
        """Finish the running order, or read everything and start the next."""
        if self.running is not None:
            seq, frame = self.running
            reply = json.dumps({"jsonrpc": "2.0", "id": json.loads(frame)["id"], "result": "ok"}).encode()
            self.outbox.append(("reply", seq, META + reply))
            self.running = None
            return
        while self.inbox:
            kind, first, last, frame = self.inbox.popleft()
            if kind == "order":
                self.pending.append((first, frame))
            else:
                for order in [order for order in self.pending if first <= order[0] <= last]:
                    self.pending.remove(order)
                    self.outbox.append(("skipped", order[0], b""))
        if self.pending:
            self.running = self.pending.popleft()
            started[self.running[0]] += 1


class Harness:
    """The scheduler, the simulated processes and what the requesters received."""

    def __init__(self, config: PoolConfig) -> None:
        self.s = Scheduler(config)
        self.now = 0.0
        self.processes: dict[int, FakeProcess] = {}
        self.answers: Counter[int] = Counter()  # by order number (= request id = client)
        self.started: Counter[int] = Counter()  # by sequence number
        self.arrived = 0
        self.gone: set[int] = set()  # orders whose client closed its connection
        self.do(self.s.start(self.now))

    # what the loop does with the scheduler's actions
    def do(self, actions: list) -> None:
        index = 0
        while index < len(actions):
            action = actions[index]
            index += 1
            kind = type(action)
            if kind is Spawn:
                self.processes[action.process] = FakeProcess()
            elif kind is Send:
                self.processes[action.process].inbox.append(("order", action.seq, action.seq, action.frame))
            elif kind is Revoke:
                process = self.processes[action.process]
                process.inbox.append(("revoke", action.first, action.last, b""))
                actions += self.s.revoked(action.process, not process.outbox, self.now)
            elif kind is Kill:
                actions += self.read_all(action.process) + self.s.exited(action.process, "was killed by SIGKILL", self.now)
                del self.processes[action.process]
            elif kind is Reply:
                self.answers[json.loads(bytes(action.frame))["id"]] += 1
            else:
                assert kind is Pin

    def read_one(self, process_id: int) -> list:
        kind, seq, payload = self.processes[process_id].outbox.popleft()
        if kind == "reply":
            return self.s.replied(process_id, seq, payload, self.now)
        return self.s.skipped(process_id, seq, self.now)

    def read_all(self, process_id: int) -> list:
        actions: list = []
        while process_id in self.processes and self.processes[process_id].outbox:
            actions += self.read_one(process_id)
        return actions

    # events
    def arrive(self, timeout_ms: int, pad: int) -> None:
        self.arrived += 1
        n = self.arrived
        self.do(self.s.message_arrived([b"client-%d" % n, request(n, timeout_ms=timeout_ms, pad=pad)], self.now))

    def tick(self, seconds: float) -> None:
        self.now += seconds
        due = self.s.next_timer()
        if due is not None and self.now >= due:
            self.do(self.s.time_passed(self.now))

    def pick(self, choice: int) -> int | None:
        ids = sorted(self.processes)
        return ids[choice % len(ids)] if ids else None

    def event(self, kind: str, choice: int) -> None:
        process_id = self.pick(choice)
        if kind == "arrive":
            self.arrive((0, 0, 0, 2, 5, 30, 200)[choice % 7], 300_000 if choice % 97 == 0 else 0)
        elif kind == "tick":
            self.tick((0.0005, 0.001, 0.003, 0.02, 0.06, 1.0, 61.0)[choice % 7])
        elif kind == "close" and self.arrived:
            n = choice % self.arrived + 1
            self.gone.add(n)
            self.do(self.s.connection_closed(b"client-%d" % n, self.now))
        elif kind == "stop":
            self.do(self.s.stop(self.now))
        elif process_id is None:
            return
        elif kind == "step":
            self.processes[process_id].step(self.started)
        elif kind == "read" and self.processes[process_id].outbox:
            self.do(self.read_one(process_id))
        elif kind == "crash":  # what it sent before it died is read and acted on first
            self.do(self.read_all(process_id))
            if process_id in self.processes:
                del self.processes[process_id]
                self.do(self.s.exited(process_id, "exited with status 3", self.now))
        elif kind == "garbage":
            self.do(self.s.garbled(process_id, self.now))

    def drain(self) -> None:
        """Stop, and let every process run and every message be read until the pool is done."""
        self.do(self.s.stop(self.now))
        for _ in range(1000):
            if self.s.finished:
                return
            for process_id in list(self.processes):
                if process_id in self.processes:
                    self.processes[process_id].step(self.started)
                    self.do(self.read_all(process_id))
            self.tick(0.5)
        raise AssertionError(f"the pool never finished: {self.s._jobs}")

    # what must hold
    def check(self) -> None:
        s = self.s
        assert max(self.answers.values(), default=0) <= 1, "an order was answered twice"
        assert max(self.started.values(), default=0) <= 1, "an order was started twice"
        assert set(s.processes) == set(self.processes)
        for process in s.processes.values():
            assert (process.state is ProcessState.IDLE) == (process in s.idle)
            assert process.state is not ProcessState.SPARE or process in s._spares
            assert process.state in (ProcessState.BUSY, ProcessState.KILLED, ProcessState.DISTRUSTED) or not process.jobs
            assert process.state is not ProcessState.BUSY or process.jobs
            seqs = [job.seq for job in process.jobs]
            assert seqs == sorted(seqs)
            for at, job in enumerate(process.jobs):
                assert job.process is process and job.state in (HEAD if at == 0 else BEHIND)
        assert all((job.state is OrderState.QUEUED) == (job in s.queue) for job in s._jobs.values())
        assert all(job.process is None for job in s.queue)
        assert s._abandoned == sum(job.state in (OrderState.ANSWERED, OrderState.ANSWERED_REVOKING) for job in s._jobs.values())
        assert s.queued_bytes == sum(len(job.frame) for job in s.queue)


KINDS = ["arrive", "step", "read", "tick", "crash", "garbage", "close", "stop"]
WEIGHTS = [16, 20, 20, 16, 1, 1, 1, 0.3]  # mostly work; deaths, garbage and a stop are rare
WALKS = 400  # a second or two; before the fixes the state tables led to, 11 of them answered an order twice
STEPS = 200


def walk(seed: int) -> None:
    """One random run of the pool from `seed`: a configuration, STEPS events, then a drain."""
    rnd = random.Random(seed)
    config = PoolConfig(workers=rnd.randint(1, 3), spares=rnd.randint(0, 1), prefetch=rnd.random() < 0.7,
                        queue_limit=rnd.choice([1, 4, 256]), timeout_s=rnd.choice([0.04, 1.0, 60.0]))
    harness = Harness(config)
    for _ in range(rnd.randint(0, STEPS)):
        harness.event(rnd.choices(KINDS, WEIGHTS)[0], rnd.randint(0, 10_000))
        harness.check()
    harness.drain()
    harness.check()
    unanswered = [n for n in range(1, harness.arrived + 1) if harness.answers[n] != 1 and n not in harness.gone]
    assert unanswered == [], f"orders never answered: {unanswered}"


def test_every_order_is_answered_once_and_run_at_most_once() -> None:
    # seeded walks rather than hypothesis: its short, evenly drawn event lists never reached the
    # interleavings (a revocation whose outcome is uncertain, then a limit) that these do
    for seed in range(WALKS):
        try:
            walk(seed)
        except Exception as error:  # an unkept promise, or IllegalMove
            raise AssertionError(f"walk {seed} (reproduce with walk({seed})): {error!r}") from error

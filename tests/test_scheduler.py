"""The pool's scheduler in-process: events in, actions out, a fake clock, no processes."""

from __future__ import annotations

import json
from typing import Any

import pytest

from avalon_worker._internal import scheduler
from avalon_worker._internal.scheduler import (
    COALESCE_MAX_S,
    INSPECT_AFTER_S,
    ORDER_MOVES,
    PREFETCH_DEPTH,
    PREFETCH_MAX_BYTES,
    PROCESS_MOVES,
    IllegalMove,
    Job,
    Kill,
    Metrics,
    OrderState,
    Pin,
    PoolConfig,
    ProcessState,
    Reply,
    Revoke,
    Scheduler,
    Send,
    Spawn,
    _move,
    _Process,
    scan_timeout_ms,
)
from avalon_worker.jsonrpc import inspect_request

META = b"work-order\thello\tok\n"


def request(n: int = 1, timeout_ms: int = 0, pad: int = 0, workload: str = "hello") -> bytes:
    """A ProcessWorkOrder frame as Avalon sends it: the WorkOrderSubmit request as a string."""
    inner = {"jsonrpc": "2.0", "id": n, "method": "WorkOrderSubmit",
             "params": {"responseTimeoutMSecs": timeout_ms, "workOrderId": f"{n:064x}",
                        "workloadId": workload.encode().hex(), "pad": "x" * pad}}
    return json.dumps({"jsonrpc": "2.0", "id": n, "method": "ProcessWorkOrder", "params": json.dumps(inner)}).encode()


def client(n: int) -> list[bytes]:
    """A REQ client's envelope: routing id, empty delimiter."""
    return [b"\x00client-%d" % n, b""]


def arrive(s: Scheduler, n: int, now: float, **kwargs: int) -> list:
    return s.message_arrived([*client(n), request(n, **kwargs)], now)


def of(actions: list, kind: type) -> list:
    return [action for action in actions if type(action) is kind]


def replies(actions: list) -> list[tuple[bytes, dict]]:
    """(routing id, decoded reply) of every Reply."""
    return [(a.envelope[0], json.loads(bytes(a.frame))) for a in of(actions, Reply)]


def answer(s: Scheduler, send: Send, now: float, text: bytes = b'{"result":"ok"}') -> list:
    return s.replied(send.process, send.seq, META + text, now)


class Recorder(Metrics):
    def __init__(self) -> None:
        self.seen: list[tuple[str, str, str]] = []
        self.depth = self.size = None

    def observe(self, method: str, workload: str, status: str, seconds: float) -> None:
        self.seen.append((method, workload, status))

    def set_queue_depth(self, depth: int) -> None:
        self.depth = depth

    def set_pool_size(self, alive: int, busy: int) -> None:
        self.size = (alive, busy)


def started(config: PoolConfig, metrics: Metrics | None = None, cpus: list[int] | None = None) -> tuple[Scheduler, list]:
    s = Scheduler(config, metrics, cpus)
    return s, s.start(0.0)


class TestStart:
    def test_workers_and_one_warm_spare_are_spawned(self) -> None:
        s, actions = started(PoolConfig(workers=2))
        assert [type(a) for a in actions] == [Spawn, Spawn, Spawn]
        assert len({a.process for a in actions}) == 3

    def test_processes_are_pinned_round_robin_and_the_spare_floats(self) -> None:
        _, actions = started(PoolConfig(workers=3, pin_cpus=True, spares=1), cpus=[4, 5])
        assert [a.cpu for a in actions] == [4, 5, 4, None]

    def test_in_process_mode_has_one_process_no_spare_and_no_timers(self) -> None:
        s, actions = started(PoolConfig(workers=0))
        assert [type(a) for a in actions] == [Spawn]
        [send] = of(arrive(s, 1, 1.0, timeout_ms=5), Send)
        assert s.next_timer() is None
        assert replies(answer(s, send, 99.0))[0][1] == {"result": "ok"}


class TestConfig:
    @pytest.mark.parametrize("option, kwargs", [("--timeout-s", {"timeout_s": 5.0}), ("--memory-limit-mb", {"memory_limit_bytes": 1 << 20}),
                                                ("--pin-cpus", {"pin_cpus": True}), ("--spare-workers", {"spares": 2})])
    def test_options_that_need_processes_are_refused_in_process(self, option: str, kwargs: dict) -> None:
        with pytest.raises(ValueError, match=f"^{option} needs worker processes"):
            PoolConfig(workers=0, **kwargs)

    def test_several_such_options_are_named_together(self) -> None:
        with pytest.raises(ValueError, match="^--timeout-s and --pin-cpus need worker processes"):
            PoolConfig(workers=0, timeout_s=5.0, pin_cpus=True)

    def test_queue_limit_and_prefetch_hold_in_process(self) -> None:
        PoolConfig(workers=0, queue_limit=3, prefetch=False)

    @pytest.mark.parametrize("kwargs", [{"workers": -1}, {"workers": 1, "timeout_s": 0}, {"workers": 1, "spares": -1}])
    def test_bad_numbers_are_refused(self, kwargs: dict) -> None:
        with pytest.raises(ValueError):
            PoolConfig(**kwargs)


class TestDispatch:
    def test_an_order_goes_to_an_idle_process_and_its_reply_to_its_client(self) -> None:
        s, _ = started(PoolConfig(workers=1))
        [send] = arrive(s, 1, 0.0)
        assert type(send) is Send and json.loads(send.frame)["id"] == 1
        actions = answer(s, send, 0.01)
        assert replies(actions) == [(b"\x00client-1", {"result": "ok"})]
        assert of(actions, Reply)[0].envelope == client(1)

    def test_a_request_too_large_or_in_two_frames_is_refused_without_a_process(self) -> None:
        s, _ = started(PoolConfig(workers=1, max_request_bytes=100))
        [(_, big)] = replies(s.message_arrived([*client(1), b"x" * 101], 0.0))
        assert big["error"]["code"] == 2 and "request is 101 bytes" in big["error"]["message"]
        [(_, two)] = replies(s.message_arrived([*client(1), b"a", b"b"], 0.0))
        assert "one frame" in two["error"]["message"]

    def test_a_dealers_request_without_a_delimiter_is_answered_to_its_routing_id_alone(self) -> None:
        s, _ = started(PoolConfig(workers=1, max_request_bytes=len(request(1))))
        [send] = s.message_arrived([b"\x00dealer", request(1)], 0.0)
        [reply] = of(answer(s, send, 0.01), Reply)
        assert reply.envelope == [b"\x00dealer"]
        [(_, big)] = replies(s.message_arrived([b"\x00dealer", request(10)], 0.0))
        assert "request is" in big["error"]["message"]
        [(_, two)] = replies(s.message_arrived([b"\x00dealer", b"a", b"b"], 0.0))
        assert "one frame" in two["error"]["message"]

    def test_orders_queue_then_go_out_in_arrival_order(self) -> None:
        s, _ = started(PoolConfig(workers=1, prefetch=False))
        [first] = arrive(s, 1, 0.0)
        assert arrive(s, 2, 0.0) == [] and arrive(s, 3, 0.0) == []
        [second] = of(answer(s, first, 0.1), Send)
        [third] = of(answer(s, second, 0.2), Send)
        assert [json.loads(x.frame)["id"] for x in (first, second, third)] == [1, 2, 3]

    def test_a_reply_for_another_order_stops_the_process_and_is_never_delivered(self) -> None:
        s, _ = started(PoolConfig(workers=1, prefetch=False))
        [send] = arrive(s, 1, 0.0)
        arrive(s, 2, 0.0)  # queued behind
        actions = s.replied(send.process, send.seq + 1, META + b'{"result":"someone else"}', 0.01)
        assert actions == [Kill(send.process)]
        assert s.replied(send.process, send.seq, META + b'{"result":"late"}', 0.01) == []  # nothing more is believed
        actions = s.exited(send.process, "was killed by SIGKILL", 0.02)
        [(who, reply)] = replies(actions)
        assert who == b"\x00client-1" and reply["error"]["code"] == 1 and "not for its order" in reply["error"]["message"]
        assert reply["id"] == 1 and reply["error"]["data"] == {"workOrderId": f"{1:064x}"}
        [send2] = of(actions, Send)  # the queued order goes to the spare that took over
        assert json.loads(send2.frame)["id"] == 2 and send2.process != send.process

    def test_bytes_that_are_not_a_message_stop_the_process(self) -> None:
        s, _ = started(PoolConfig(workers=1))
        [send] = arrive(s, 1, 0.0)
        assert s.garbled(send.process, 0.0) == [Kill(send.process)]

    def test_a_skip_report_for_an_order_never_revoked_stops_the_process(self) -> None:
        s, _ = started(PoolConfig(workers=1))
        [send] = arrive(s, 1, 0.0)
        assert s.skipped(send.process, send.seq, 0.0) == [Kill(send.process)]


class TestQueueBounds:
    def test_busy_beyond_the_queue_limit_at_once(self) -> None:
        s, _ = started(PoolConfig(workers=1, queue_limit=1, prefetch=False))
        arrive(s, 1, 0.0)
        assert arrive(s, 2, 0.0) == []
        [(who, reply)] = replies(arrive(s, 3, 0.0))
        assert who == b"\x00client-3" and reply["error"]["code"] == 8 and reply["id"] == 3

    def test_busy_beyond_the_queue_bytes(self) -> None:
        size = len(request(2, pad=1000))
        s, _ = started(PoolConfig(workers=1, queue_bytes_limit=2 * size + 10, prefetch=False))
        arrive(s, 1, 0.0)
        assert arrive(s, 2, 0.0, pad=1000) == [] and arrive(s, 3, 0.0, pad=1000) == []
        assert replies(arrive(s, 4, 0.0, pad=1000))[0][1]["error"]["code"] == 8
        assert s.queued_bytes == 2 * size

    def test_a_closed_connection_takes_its_queued_orders_with_it(self) -> None:
        s, _ = started(PoolConfig(workers=1, prefetch=False))
        [first] = arrive(s, 1, 0.0)
        arrive(s, 2, 0.0)
        arrive(s, 3, 0.0)
        assert s.connection_closed(b"\x00client-2", 0.0) == []
        [send] = of(answer(s, first, 0.1), Send)
        assert json.loads(send.frame)["id"] == 3 and s.queued_bytes == 0


class TestPrefetch:
    def test_a_busy_process_holds_up_to_the_depth_behind_its_running_order(self) -> None:
        s, _ = started(PoolConfig(workers=1))
        held = PREFETCH_DEPTH + 1  # the running order and the ones behind it
        sends = [arrive(s, n, 0.0) for n in range(1, held + 2)]
        assert [len(of(a, Send)) for a in sends] == [1] * held + [0]
        assert len(s.queue) == 1
        [topped_up] = of(answer(s, sends[0][0], 0.001), Send)  # as soon as a reply arrives
        assert json.loads(topped_up.frame)["id"] == held + 1

    def test_nothing_is_sent_ahead_of_or_behind_a_large_order(self) -> None:
        s, _ = started(PoolConfig(workers=1))
        arrive(s, 1, 0.0, pad=PREFETCH_MAX_BYTES)
        assert arrive(s, 2, 0.0) == []
        s2, _ = started(PoolConfig(workers=1))
        arrive(s2, 1, 0.0)
        assert arrive(s2, 2, 0.0, pad=PREFETCH_MAX_BYTES) == []

    def test_without_prefetch_one_order_per_process(self) -> None:
        s, _ = started(PoolConfig(workers=1, prefetch=False))
        arrive(s, 1, 0.0)
        assert arrive(s, 2, 0.0) == []

    def test_orders_behind_a_slow_one_are_revoked_and_go_to_the_next_free_process(self) -> None:
        s, _ = started(PoolConfig(workers=2))
        [slow] = arrive(s, 1, 0.0)
        [other] = arrive(s, 2, 0.0)
        [ahead] = arrive(s, 3, 0.0)  # sent ahead behind one of them
        assert s.time_passed(INSPECT_AFTER_S - 0.001) == []
        actions = s.time_passed(INSPECT_AFTER_S)
        revoke = next(a for a in actions if type(a) is Revoke)
        assert revoke.process == ahead.process and revoke.first == revoke.last == ahead.seq
        runner = other if ahead.process == other.process else slow
        assert s.revoked(revoke.process, True, INSPECT_AFTER_S) == []  # no process is free yet
        free = slow if runner is other else other
        [resent] = of(answer(s, free, 0.06), Send)
        assert resent.seq == ahead.seq and resent.process == free.process
        assert s.skipped(revoke.process, ahead.seq, 0.07) == []  # the expected report, ignored

    def test_an_order_sent_ahead_says_so_and_one_the_process_waits_for_does_not(self) -> None:
        s, _ = started(PoolConfig(workers=1))
        [first] = arrive(s, 1, 0.0)
        [ahead] = arrive(s, 2, 0.0)
        assert (first.ahead, ahead.ahead) == (False, True)  # the loop writes the first at once

    def test_a_busy_process_has_one_inspection_timer_not_one_per_order(self) -> None:
        s, _ = started(PoolConfig(workers=1, timeout_s=60))
        sends = [send for n in range(1, PREFETCH_DEPTH + 2) for send in arrive(s, n, 0.0)]
        for n in range(PREFETCH_DEPTH + 2, 500):  # each reply lets one more order go ahead
            now = n * 0.0001
            sends += of(answer(s, sends.pop(0), now), Send)
            sends += of(arrive(s, n, now), Send)
            assert len(s._inspections) == 1 and s._timers == []
        assert of(s.time_passed(0.05), Revoke) == []  # the order running then began after 0.0498

    def test_an_inspection_due_for_a_finished_order_looks_at_the_next_when_it_has_run_as_long(self) -> None:
        s, _ = started(PoolConfig(workers=1))
        [first] = arrive(s, 1, 0.0)
        [second] = arrive(s, 2, 0.0)
        [third] = arrive(s, 3, 0.0)
        answer(s, first, 0.03)  # the second runs from 0.03, the third waits behind it
        assert s.time_passed(INSPECT_AFTER_S) == []
        assert s.next_timer() == pytest.approx(0.03 + INSPECT_AFTER_S)
        [revoke] = of(s.time_passed(0.03 + INSPECT_AFTER_S), Revoke)
        assert revoke.first == revoke.last == third.seq

    def test_an_uncertain_revoke_waits_for_the_process_to_say_what_it_did(self) -> None:
        s, _ = started(PoolConfig(workers=1))
        [first] = arrive(s, 1, 0.0)
        [second] = arrive(s, 2, 0.0)
        [third] = arrive(s, 3, 0.0)
        [revoke] = of(s.time_passed(INSPECT_AFTER_S), Revoke)
        assert (revoke.first, revoke.last) == (second.seq, third.seq)
        assert s.revoked(first.process, False, INSPECT_AFTER_S) == []  # it may have moved on already
        assert replies(answer(s, first, 0.051))[0][0] == b"\x00client-1"
        assert replies(answer(s, second, 0.052))[0][0] == b"\x00client-2"  # it had started the next one
        [resent] = of(s.skipped(first.process, third.seq, 0.053), Send)  # ... but not the third
        assert resent.seq == third.seq and resent.process == first.process  # free again: it takes it

    def test_an_order_answered_at_its_limit_while_its_revocation_was_uncertain_is_answered_once(self) -> None:
        s, _ = started(PoolConfig(workers=1, timeout_s=60))
        [first] = arrive(s, 1, 0.0)
        [ahead] = arrive(s, 2, 0.0, timeout_ms=3)
        assert s.time_passed(0.003) == [Revoke(first.process, ahead.seq, ahead.seq)]
        assert s.revoked(first.process, False, 0.003) == []  # it may start the order before it reads the revocation
        answer(s, first, 0.004)
        [(who, reply)] = replies(s.time_passed(0.004))  # its requester's limit: answered while it may run
        assert who == b"\x00client-2" and "exceeded its time limit" in reply["error"]["message"]
        assert s.skipped(first.process, ahead.seq, 0.005) == []  # it had not: nothing more is owed
        assert s.in_flight(0.005) == (0, 0, 0.0)
        [send] = arrive(s, 3, 0.006)  # and the process is free
        assert send.process == first.process

    def test_when_the_process_skips_the_order_it_would_run_next_the_one_behind_runs_from_then(self) -> None:
        s, _ = started(PoolConfig(workers=1, timeout_s=60))
        [first] = arrive(s, 1, 0.0)
        [second] = arrive(s, 2, 0.0, timeout_ms=3)
        s.time_passed(0.003)
        assert s.revoked(first.process, False, 0.003) == []
        [third] = arrive(s, 3, 0.003)  # sent ahead behind the revoked one
        answer(s, first, 0.004)
        [(who, reply)] = replies(s.skipped(first.process, second.seq, 0.004))
        assert who == b"\x00client-2" and "was not run" in reply["error"]["message"]
        [ahead] = arrive(s, 4, 0.005)  # the third runs since 0.004, not for 50 ms: more may go ahead of it
        assert ahead.process == first.process and ahead.ahead
        assert s.time_passed(INSPECT_AFTER_S) == []  # and it is looked at when it has run 50 ms
        assert s.time_passed(0.004 + INSPECT_AFTER_S) == [Revoke(first.process, ahead.seq, ahead.seq)]

    def test_orders_go_ahead_in_sequence_so_that_a_revocation_names_exactly_the_ones_taken_back(self) -> None:
        # a process holds its orders in rising sequence: a Revoke's range [first, last] is what
        # the process skips, and an order requeued from a dead process is older than the rest
        s, _ = started(PoolConfig(workers=2, spares=0, timeout_s=60))
        sends = [send for n in range(1, 7) for send in of(arrive(s, n, 0.0), Send)]
        [late] = arrive(s, 7, 0.0, timeout_ms=5)
        dead, other = sends[0].process, late.process
        assert dead != other and [send.process for send in sends].count(dead) == 5
        actions = s.exited(dead, "exited with status 3", 0.001)
        assert all(send.process != other for send in of(actions, Send))  # older than what it holds: not ahead of it
        [revoke] = of(s.time_passed(0.005), Revoke)
        assert revoke == Revoke(other, late.seq, late.seq)

    def test_a_certain_revocation_leaves_the_order_the_process_runs(self) -> None:
        # the second order's uncertain revocation came too late: the process runs it, and the
        # later, certain revocation of the third cannot take the second back
        s, _ = started(PoolConfig(workers=1, timeout_s=60))
        [first] = arrive(s, 1, 0.0)
        [second] = arrive(s, 2, 0.0, timeout_ms=3)
        assert s.time_passed(0.003) == [Revoke(first.process, second.seq, second.seq)]
        assert s.revoked(first.process, False, 0.003) == []
        [third] = arrive(s, 3, 0.003, timeout_ms=1)
        answer(s, first, 0.0045)
        actions = s.time_passed(0.0045)
        assert Revoke(first.process, third.seq, third.seq) in actions
        actions += s.revoked(first.process, True, 0.0045)
        actions += answer(s, second, 0.005, b'{"result":"late"}')
        assert of(actions, Kill) == []
        assert sorted(who for who, _ in replies(actions)) == [b"\x00client-2", b"\x00client-3"]  # each answered once
        assert s.in_flight(0.005) == (0, 0, 0.0)
        assert arrive(s, 4, 0.006)[0].process == first.process


class TestTimeLimits:
    def test_a_requests_own_limit_is_a_timer_to_the_millisecond(self) -> None:
        s, _ = started(PoolConfig(workers=1, timeout_s=60))
        arrive(s, 1, 10.0, timeout_ms=7)
        assert s.next_timer() == pytest.approx(10.007)
        assert s.time_passed(10.0069) == []
        [(who, reply)] = replies(s.time_passed(10.007))
        assert who == b"\x00client-1" and reply["error"]["code"] == 1 and "exceeded its time limit" in reply["error"]["message"]

    def test_a_requests_own_limit_answers_it_but_the_process_runs_on_and_is_reused(self) -> None:
        s, spawned = started(PoolConfig(workers=1, timeout_s=60))
        [send] = arrive(s, 1, 0.0, timeout_ms=1)
        actions = s.time_passed(0.001)
        assert of(actions, Kill) == [] and len(of(actions, Reply)) == 1
        assert arrive(s, 2, 0.002) == []  # its process is still busy: the next order waits
        actions = answer(s, send, 0.5, b'{"result":"late"}')
        assert of(actions, Reply) == []  # the late result goes nowhere
        [second] = of(actions, Send)
        assert second.process == send.process and json.loads(second.frame)["id"] == 2
        assert replies(answer(s, second, 0.6)) == [(b"\x00client-2", {"result": "ok"})]
        assert of(actions, Spawn) == [] and set(s.processes) == {a.process for a in spawned}

    def test_many_orders_with_a_one_millisecond_limit_replace_no_process(self) -> None:
        s, spawned = started(PoolConfig(workers=2, timeout_s=60))
        seen: list = []
        running: list[tuple[float, Send]] = []  # each order takes its process 3 ms
        now = 0.0
        for n in range(1, 21):
            seen += arrive(s, n, now, timeout_ms=1)
            for _ in range(4):
                now = round(now + 0.001, 3)
                seen += s.time_passed(now)
                running += [(now + 0.003, send) for send in seen if type(send) is Send]
                seen = [a for a in seen if type(a) is not Send]
                for done in [entry for entry in running if entry[0] <= now]:
                    running.remove(done)
                    seen += answer(s, done[1], now)
            assert len([r for r in replies(seen) if r[0] == b"\x00client-%d" % n]) == 1
        assert of(seen, Kill) == [] and of(seen, Spawn) == []
        assert set(s.processes) == {a.process for a in spawned}

    def test_the_operators_limit_still_kills_an_order_answered_at_the_requesters(self) -> None:
        s, spawned = started(PoolConfig(workers=1, timeout_s=2))
        [send] = arrive(s, 1, 0.0, timeout_ms=5)
        assert len(of(s.time_passed(0.005), Reply)) == 1
        assert s.next_timer() == pytest.approx(2.0)
        assert s.time_passed(2.0) == [Kill(send.process)]
        actions = s.exited(send.process, "was killed by SIGKILL", 2.0)
        assert of(actions, Reply) == []  # answered once, at 5 ms
        assert spawned[1].process in s.processes and len(of(actions, Spawn)) == 1  # the spare took over

    def test_a_stop_does_not_wait_for_orders_already_answered_at_their_requesters_limit(self) -> None:
        s, _ = started(PoolConfig(workers=1, timeout_s=60))
        [send] = arrive(s, 1, 0.0, timeout_ms=1)
        s.time_passed(0.001)
        assert s.in_flight(0.002) == (0, 0, 0.0)
        assert s.stop(0.002) == [Kill(send.process)]
        assert not s.finished
        assert of(s.exited(send.process, "was killed by SIGKILL", 0.003), Reply) == []
        assert s.finished

    def test_the_configured_limit_applies_when_the_request_has_none(self) -> None:
        s, _ = started(PoolConfig(workers=1, timeout_s=2))
        [send] = arrive(s, 1, 0.0)
        s.time_passed(1.999)
        assert s.time_passed(2.0) == [Kill(send.process)]

    def test_a_killed_order_is_answered_and_a_spare_takes_the_core(self) -> None:
        s, spawned = started(PoolConfig(workers=1, timeout_s=1, pin_cpus=True), cpus=[3])
        spare = spawned[1].process
        [send] = arrive(s, 1, 0.0)
        arrive(s, 2, 0.5)  # sent ahead
        s.time_passed(1.0)
        actions = s.exited(send.process, "was killed by SIGKILL", 1.0)
        [(who, reply)] = replies(actions)
        assert who == b"\x00client-1" and "exceeded its time limit" in reply["error"]["message"]
        assert Pin(spare, 3) in actions
        assert [a.seq for a in of(actions, Send)] == [send.seq + 1]  # the order it never began, requeued
        assert of(actions, Spawn) == [Spawn(of(actions, Spawn)[0].process, None)]  # a new spare

    def test_a_queued_order_past_its_limit_is_answered_without_killing_anyone(self) -> None:
        s, _ = started(PoolConfig(workers=1, prefetch=False))
        arrive(s, 1, 0.0)
        arrive(s, 2, 0.0, timeout_ms=5)
        actions = s.time_passed(0.005)
        [(who, reply)] = replies(actions)
        assert who == b"\x00client-2" and "was not run" in reply["error"]["message"]
        assert of(actions, Kill) == []

    def test_an_order_sent_ahead_and_past_its_limit_is_revoked(self) -> None:
        s, _ = started(PoolConfig(workers=1))
        [first] = arrive(s, 1, 0.0)
        [ahead] = arrive(s, 2, 0.0, timeout_ms=3)
        [revoke] = s.time_passed(0.003)
        assert revoke == Revoke(first.process, ahead.seq, ahead.seq)
        [(who, reply)] = replies(s.revoked(first.process, True, 0.003))
        assert who == b"\x00client-2" and "was not run" in reply["error"]["message"]

    def test_a_reply_read_after_the_kill_is_still_delivered(self) -> None:
        s, _ = started(PoolConfig(workers=1, timeout_s=1))
        [send] = arrive(s, 1, 0.0)
        s.time_passed(1.0)
        assert replies(answer(s, send, 1.0)) == [(b"\x00client-1", {"result": "ok"})]
        actions = s.exited(send.process, "was killed by SIGKILL", 1.0)
        assert of(actions, Reply) == []

    def test_the_heap_of_timers_stays_small_under_a_long_run(self) -> None:
        s, _ = started(PoolConfig(workers=1, timeout_s=60))
        for n in range(5000):
            [send] = of(arrive(s, n, n * 0.001), Send)
            answer(s, send, n * 0.001)
        assert len(s._timers) + len(s._limits) < 300


class TestDeath:
    def test_a_dead_process_costs_its_running_order_and_the_rest_are_requeued(self) -> None:
        s, _ = started(PoolConfig(workers=1))
        [first] = arrive(s, 1, 0.0)
        [second] = arrive(s, 2, 0.0)
        actions = s.exited(first.process, "exited with status 3", 0.01)
        [(who, reply)] = replies(actions)
        assert who == b"\x00client-1" and "exited with status 3" in reply["error"]["message"]
        [resent] = of(actions, Send)
        assert resent.seq == second.seq and resent.process != first.process

    def test_a_lost_spare_is_replaced_by_another_spare(self) -> None:
        s, spawned = started(PoolConfig(workers=1))
        actions = s.exited(spawned[1].process, "exited with status 1", 0.0)
        assert [type(a) for a in actions] == [Spawn]

    def test_without_a_spare_a_new_process_is_spawned(self) -> None:
        s, spawned = started(PoolConfig(workers=1, spares=0))
        [send] = arrive(s, 1, 0.0)
        actions = s.exited(send.process, "was killed by SIGSEGV", 0.0)
        assert len(of(actions, Spawn)) == 1 and len(of(actions, Reply)) == 1

    def test_events_for_unknown_processes_are_ignored(self) -> None:
        s, _ = started(PoolConfig(workers=1))
        for event in (s.replied(99, 1, META, 0.0), s.skipped(99, 1, 0.0), s.garbled(99, 0.0),
                      s.revoked(99, True, 0.0), s.exited(99, "gone", 0.0)):
            assert event == []


class TestStop:
    def test_stop_refuses_new_orders_and_finishes_the_rest(self) -> None:
        s, _ = started(PoolConfig(workers=1, prefetch=False))
        [first] = arrive(s, 1, 0.0)
        arrive(s, 2, 0.0)
        s.stop(0.1)
        assert not s.finished
        [(_, busy)] = replies(arrive(s, 3, 0.1))
        assert busy["error"]["code"] == 8 and "shutting down" in busy["error"]["message"]
        [second] = of(answer(s, first, 0.2), Send)
        assert not s.finished
        answer(s, second, 0.3)
        assert s.finished

    def test_no_spare_is_started_while_stopping(self) -> None:
        s, spawned = started(PoolConfig(workers=1))
        [send] = arrive(s, 1, 0.0)
        s.stop(0.0)
        actions = s.exited(send.process, "exited with status 3", 0.0)
        assert of(actions, Spawn) == [] and s.finished


    def test_in_flight_says_what_a_stop_waits_for(self) -> None:
        s, _ = started(PoolConfig(workers=1, timeout_s=60, prefetch=False))
        arrive(s, 1, 0.0)
        arrive(s, 2, 5.0, timeout_ms=10_000)
        s.stop(6.0)
        assert s.in_flight(6.0) == (1, 1, 54.0)

    def test_abort_answers_everything_at_once_and_finishes(self) -> None:
        s, _ = started(PoolConfig(workers=1, prefetch=False))
        arrive(s, 1, 0.0)
        arrive(s, 2, 0.0)
        answered = dict(replies(s.abort(1.0)))
        assert answered[b"\x00client-1"]["error"]["code"] == 1
        assert "stopped before this work order finished" in answered[b"\x00client-1"]["error"]["message"]
        assert answered[b"\x00client-2"]["error"]["code"] == 8  # never started: send it elsewhere
        assert s.finished and s.in_flight(1.0) == (0, 0, 0.0)
        assert replies(arrive(s, 3, 1.0))[0][1]["error"]["code"] == 8


class TestReporting:
    def test_metrics_see_outcomes_queue_depth_and_pool_size(self) -> None:
        recorder = Recorder()
        s, _ = started(PoolConfig(workers=1, queue_limit=0, prefetch=False), recorder)
        [send] = arrive(s, 1, 0.0)
        arrive(s, 2, 0.0)  # BUSY
        s.report()
        assert recorder.size == (1, 1) and recorder.depth == 0
        answer(s, send, 0.1)
        assert recorder.seen == [("work-order", "hello", "busy"), ("work-order", "hello", "ok")]

    def test_under_saturation_the_loop_may_let_events_gather(self) -> None:
        s, _ = started(PoolConfig(workers=1))
        assert s.coalesce_s() == 0.0
        held = PREFETCH_DEPTH + 1
        sends = [of(arrive(s, n, 0.0), Send) for n in range(1, held + 1)]
        assert s.coalesce_s() == 0.0  # service time unknown yet
        answer(s, sends[0][0], 0.01)  # a 10 ms order: the average moves towards it
        assert s.coalesce_s() == 0.0  # room behind the running order: dispatch at once
        arrive(s, held + 1, 0.01)
        assert s.coalesce_s() == COALESCE_MAX_S


class TestRequestReading:
    @pytest.mark.parametrize("frame, expected", [
        (request(1, timeout_ms=250), 250), (request(1, timeout_ms=0), None), (b'{"responseTimeoutMSecs": 12}', 12),
        (b"{}", None), (b'{"responseTimeoutMSecs":"x"}', None), (b'{"responseTimeoutMSecs": 1.5}', None),
        (b'{"responseTimeoutMSecs": 2e3}', None), (b"x" * 70_000 + b'"responseTimeoutMSecs":5', None),
    ])
    def test_the_time_limit_is_found_without_parsing(self, frame: bytes, expected: int | None) -> None:
        assert scan_timeout_ms(frame) == expected

    def test_ids_workload_and_limit_are_read_from_a_request(self) -> None:
        assert inspect_request(request(4, timeout_ms=30, workload="echo")) == (4, f"{4:064x}", "echo", 30)

    @pytest.mark.parametrize("frame", [b"not json", b"[]", b'{"params": 5}', b'{"params": "{\\"params\\": {\\"workloadId\\": \\"zz\\"}}"}'])
    def test_unreadable_requests_give_what_can_be_read(self, frame: bytes) -> None:
        reply_id, work_order_id, workload, timeout = inspect_request(frame)
        assert (work_order_id, workload, timeout) == (None, "-", None)


# states ------------------------------------------------------------------------------------------
# One short scenario per move of the state tables (some make several): `SCENARIOS` below maps every
# move to the scenario that makes it, and TestStates checks that it does.

OS, PS = OrderState, ProcessState


def _an_order_to_an_idle_process() -> None:
    s, _ = started(PoolConfig(workers=1))
    arrive(s, 1, 0.0)


def _one_queued() -> tuple[Scheduler, Send]:
    """One process runs an order and a second waits in the queue."""
    s, _ = started(PoolConfig(workers=1, prefetch=False))
    [first] = arrive(s, 1, 0.0)
    arrive(s, 2, 0.0)
    return s, first


def _received_to_done() -> None:
    s, _ = started(PoolConfig(workers=1))
    s.stop(0.0)
    arrive(s, 1, 0.0)


def _queued_to_running() -> None:
    s, first = _one_queued()
    answer(s, first, 0.1)


def _queued_to_done() -> None:
    s, _ = _one_queued()
    s.connection_closed(b"\x00client-2", 0.0)


def _one_sent_ahead() -> tuple[Scheduler, Send]:
    """One process runs an order with a second sent ahead of it."""
    s, _ = started(PoolConfig(workers=1))
    [first] = arrive(s, 1, 0.0)
    arrive(s, 2, 0.0)
    return s, first


def _sent_ahead_to_running() -> None:
    s, first = _one_sent_ahead()
    answer(s, first, 0.01)


def _sent_ahead_to_revoking() -> None:
    s, _ = _one_sent_ahead()
    s.time_passed(INSPECT_AFTER_S)


def _sent_ahead_to_queued() -> None:
    s, first = _one_sent_ahead()
    s.exited(first.process, "exited with status 3", 0.01)


def _sent_ahead_to_done() -> None:
    s, first = _one_sent_ahead()
    s.garbled(first.process, 0.01)
    s.exited(first.process, "was killed by SIGKILL", 0.01)


def _running_to_answered() -> None:
    s, _ = started(PoolConfig(workers=1, timeout_s=60))
    arrive(s, 1, 0.0, timeout_ms=1)
    s.time_passed(0.001)


def _an_order_answered() -> None:
    s, _ = started(PoolConfig(workers=1))
    [send] = arrive(s, 1, 0.0)
    answer(s, send, 0.01)


def _revoking_to_queued() -> None:
    s, first = _one_sent_ahead()
    s.time_passed(INSPECT_AFTER_S)
    s.revoked(first.process, True, INSPECT_AFTER_S)


def _revoked_too_late(s: Scheduler) -> tuple[Send, Send]:
    """The second order is revoked at its limit, uncertainly, then heads its process's orders."""
    [first] = arrive(s, 1, 0.0)
    [second] = arrive(s, 2, 0.0, timeout_ms=3)
    s.time_passed(0.003)
    s.revoked(first.process, False, 0.003)
    answer(s, first, 0.004)
    return first, second


def _revoking_to_answered_revoking() -> None:
    s, _ = started(PoolConfig(workers=1, timeout_s=60))
    _revoked_too_late(s)
    s.time_passed(0.004)


def _revoking_to_done() -> None:
    s, _ = started(PoolConfig(workers=1, timeout_s=60))
    _, second = _revoked_too_late(s)
    answer(s, second, 0.004)  # it had started it: its reply came before its limit was acted on


def _answered_to_done() -> None:
    s, _ = started(PoolConfig(workers=1, timeout_s=60))
    [send] = arrive(s, 1, 0.0, timeout_ms=1)
    s.time_passed(0.001)
    answer(s, send, 0.5)


def _answered_revoking_to_done() -> None:
    s, _ = started(PoolConfig(workers=1, timeout_s=60))
    first, second = _revoked_too_late(s)
    s.time_passed(0.004)
    s.skipped(first.process, second.seq, 0.005)


def _a_busy_process_dies() -> None:
    s, _ = started(PoolConfig(workers=1))
    [send] = arrive(s, 1, 0.0)
    s.exited(send.process, "exited with status 3", 0.01)  # the spare takes its place


def _the_idle_process_and_the_spare_send_garbage() -> None:
    s, spawned = started(PoolConfig(workers=1))
    for spawn in reversed(spawned):  # the spare first, or it would take the idle one's place
        s.garbled(spawn.process, 0.0)


def _the_idle_process_and_the_spare_die() -> None:
    s, spawned = started(PoolConfig(workers=1))
    for spawn in reversed(spawned):  # the spare first, or it would take the idle one's place
        s.exited(spawn.process, "was killed by SIGSEGV", 0.0)


def _busy_to_killed() -> None:
    s, _ = started(PoolConfig(workers=1, timeout_s=1))
    arrive(s, 1, 0.0)
    s.time_passed(1.0)


def _busy_to_distrusted() -> None:
    s, _ = started(PoolConfig(workers=1))
    [send] = arrive(s, 1, 0.0)
    s.replied(send.process, send.seq + 1, META, 0.01)


def _killed_to_distrusted() -> None:
    s, _ = started(PoolConfig(workers=1, timeout_s=1))
    [send] = arrive(s, 1, 0.0)
    s.time_passed(1.0)
    s.skipped(send.process, send.seq, 1.0)  # read from it after the kill: never revoked


def _killed_to_exited() -> None:
    s, _ = started(PoolConfig(workers=1, timeout_s=1))
    [send] = arrive(s, 1, 0.0)
    s.time_passed(1.0)
    s.exited(send.process, "was killed by SIGKILL", 1.0)


def _distrusted_to_exited() -> None:
    s, _ = started(PoolConfig(workers=1))
    [send] = arrive(s, 1, 0.0)
    s.garbled(send.process, 0.0)
    s.exited(send.process, "was killed by SIGKILL", 0.0)


SCENARIOS = {
    (OS.RECEIVED, OS.RUNNING): _an_order_to_an_idle_process,
    (OS.RECEIVED, OS.QUEUED): _one_queued,
    (OS.RECEIVED, OS.DONE): _received_to_done,
    (OS.QUEUED, OS.RUNNING): _queued_to_running,
    (OS.QUEUED, OS.SENT_AHEAD): _one_sent_ahead,
    (OS.QUEUED, OS.DONE): _queued_to_done,
    (OS.SENT_AHEAD, OS.RUNNING): _sent_ahead_to_running,
    (OS.SENT_AHEAD, OS.REVOKING): _sent_ahead_to_revoking,
    (OS.SENT_AHEAD, OS.QUEUED): _sent_ahead_to_queued,
    (OS.SENT_AHEAD, OS.DONE): _sent_ahead_to_done,
    (OS.RUNNING, OS.ANSWERED): _running_to_answered,
    (OS.RUNNING, OS.DONE): _an_order_answered,
    (OS.REVOKING, OS.QUEUED): _revoking_to_queued,
    (OS.REVOKING, OS.ANSWERED_REVOKING): _revoking_to_answered_revoking,
    (OS.REVOKING, OS.DONE): _revoking_to_done,
    (OS.ANSWERED, OS.DONE): _answered_to_done,
    (OS.ANSWERED_REVOKING, OS.DONE): _answered_revoking_to_done,
    (PS.SPARE, PS.IDLE): _a_busy_process_dies,
    (PS.SPARE, PS.DISTRUSTED): _the_idle_process_and_the_spare_send_garbage,
    (PS.SPARE, PS.EXITED): _the_idle_process_and_the_spare_die,
    (PS.IDLE, PS.BUSY): _an_order_to_an_idle_process,
    (PS.IDLE, PS.DISTRUSTED): _the_idle_process_and_the_spare_send_garbage,
    (PS.IDLE, PS.EXITED): _the_idle_process_and_the_spare_die,
    (PS.BUSY, PS.IDLE): _an_order_answered,
    (PS.BUSY, PS.KILLED): _busy_to_killed,
    (PS.BUSY, PS.DISTRUSTED): _busy_to_distrusted,
    (PS.BUSY, PS.EXITED): _a_busy_process_dies,
    (PS.KILLED, PS.DISTRUSTED): _killed_to_distrusted,
    (PS.KILLED, PS.EXITED): _killed_to_exited,
    (PS.DISTRUSTED, PS.EXITED): _distrusted_to_exited,
}


@pytest.fixture
def moves(monkeypatch: pytest.MonkeyPatch) -> list[tuple[object, object]]:
    """Every move the scheduler makes, in order (each still made, and checked, by `_move`)."""
    made: list[tuple[object, object]] = []

    def recording(thing: Any, to: Any) -> None:
        before = thing.state
        _move(thing, to)
        made.append((before, to))

    monkeypatch.setattr(scheduler, "_move", recording)
    return made


class TestStates:
    def test_every_move_of_the_tables_has_a_scenario_here(self) -> None:
        assert set(SCENARIOS) == ORDER_MOVES | PROCESS_MOVES

    @pytest.mark.parametrize("move", list(SCENARIOS), ids=lambda move: f"{move[0].name}->{move[1].name}")
    def test_each_move_is_made_by_its_scenario(self, move: tuple[Any, Any], moves: list) -> None:
        SCENARIOS[move]()
        assert move in moves

    @pytest.mark.parametrize("kind, table", [(OrderState, ORDER_MOVES), (ProcessState, PROCESS_MOVES)])
    def test_every_other_move_raises_and_changes_nothing(self, kind: type, table: frozenset) -> None:
        thing = Job(1, client(1), request(1), 0.0, 1.0, 1.0) if kind is OrderState else _Process(1, None, ProcessState.IDLE)
        refused = 0
        for before in kind:
            for to in kind:
                if (before, to) in table:
                    continue
                thing.state = before
                with pytest.raises(IllegalMove, match=rf"\({before.name}\) cannot move to {to.name}$"):
                    _move(thing, to)
                assert thing.state is before
                refused += 1
        assert refused == len(kind) ** 2 - len(table)

    def test_a_move_from_one_kind_to_the_other_raises(self) -> None:
        with pytest.raises(IllegalMove):
            _move(Job(1, client(1), request(1), 0.0, 1.0, 1.0), ProcessState.IDLE)  # type: ignore[arg-type]

    def test_an_illegal_move_says_it_is_a_bug_and_which_move(self) -> None:
        with pytest.raises(IllegalMove) as raised:
            _move(_Process(7, None, ProcessState.EXITED), ProcessState.IDLE)
        assert raised.value.diagnostics().splitlines() == [
            "process 7 (EXITED) cannot move to IDLE",
            "  hint: this is a bug in the worker's scheduler, not in any request: please report it with this message"]

    def test_states_mirror_the_lists_that_hold_them(self, moves: list) -> None:
        # orders through the queue, ahead, a slow one's revocation, a death and its replacement
        s, spawned = started(PoolConfig(workers=2, timeout_s=60))
        sends = [send for n in range(1, 9) for send in of(arrive(s, n, 0.0), Send)]
        s.time_passed(INSPECT_AFTER_S)
        s.revoked(sends[0].process, True, INSPECT_AFTER_S)
        s.exited(sends[1].process, "exited with status 3", 0.06)
        for process in s.processes.values():
            assert (process.state is ProcessState.IDLE) == (process in s.idle)
            assert (process.state is ProcessState.SPARE) == (process in s._spares)
            assert (process.state is ProcessState.BUSY) == bool(process.jobs)
            for at, job in enumerate(process.jobs):
                assert job.process is process
                assert job.state in ((OrderState.RUNNING,) if at == 0 else (OrderState.SENT_AHEAD, OrderState.REVOKING))
        assert all((job.state is OrderState.QUEUED) == (job in s.queue) for job in s._jobs.values())
        assert len(moves) > 20

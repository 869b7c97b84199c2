"""The pump's decisions in-process: `PumpCore` driven by events and a fake clock.

Store calls the core asks for run against a real SQLite store in a temporary directory (its
failures are injected where a real store cannot be made to fail on cue: the core only sees the
exception); the worker is simulated by the replies the tests hand back. A seeded random walk at
the end interleaves submits, replies, BUSY, lost connections, store failures and time, and checks
that every order ends with exactly the outcome its worker gave, stored once.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from pathlib import Path

import pytest

from avalon_worker.front.pump_core import (
    SIGNUP_TAG,
    Complete,
    Heartbeat,
    Lease,
    PumpConfig,
    PumpCore,
    Purge,
    Release,
    Renew,
    Send,
    StoreCall,
    Wait,
    expiry_interval,
    interpret_reply,
    unstorable,
    work_order_frame,
    worker_id_of,
)
from avalon_worker.store import (
    Completion,
    Handoff,
    LeasedOrder,
    NewOrder,
    OrderState,
    ReceiptUpdate,
    StoreError,
    StoreRefused,
)
from avalon_worker.store.sqlite import SQLiteStore

WORKER = "a" * 64
OWNER = "pump-test"
T0 = 1_000_000.0
CONFIG = PumpConfig(lease_s=9.0, max_in_flight=4, poll_s=0.5, heartbeat_s=5.0, purge_every_s=60.0,
                    pending_ttl_s=3600.0, stuck_after_s=300.0, busy_backoff_s=0.05, store_retry_s=1.0)


def oid(number: int) -> str:
    return f"{number:064x}"


def request(number: int) -> bytes:
    return json.dumps({"jsonrpc": "2.0", "id": number, "method": "WorkOrderSubmit",
                       "params": {"workOrderId": oid(number), "workerId": WORKER}}).encode()


def result(frame: bytes) -> bytes:
    """The worker's reply to a ProcessWorkOrder frame: a result naming the order it answers."""
    inner = json.loads(json.loads(frame)["params"])
    return json.dumps({"jsonrpc": "2.0", "id": 1, "result": {"answered": inner["params"]["workOrderId"]}}).encode()


def busy() -> bytes:
    return b'{"jsonrpc":"2.0","id":1,"error":{"code":8,"message":"busy"}}'


class Harness:
    """A core, a real SQLite store that carries out its store calls, and what was sent."""

    def __init__(self, store: SQLiteStore, config: PumpConfig = CONFIG) -> None:
        self.store = store
        self.core = PumpCore(config, OWNER, WORKER, started=T0)
        self.now = T0
        self.connected = True
        self.sent: dict[bytes, bytes] = {}  # tag → frame, not answered yet
        self.calls: list[StoreCall] = []
        self.stored: list[Completion] = []  # what `finished` said was stored (the listener is told)

    def submit(self, *numbers: int) -> None:
        accepted = self.store.submit([NewOrder(oid(n), WORKER, request(n)) for n in numbers], self.now)
        assert all(outcome.value == "accepted" for outcome in accepted)

    def step(self) -> Send | StoreCall | Wait:
        """Ask for one action and carry it out."""
        action = self.core.next_action(self.now, self.connected)
        if isinstance(action, Send):
            self.sent.update(action.messages)
        elif not isinstance(action, Wait):
            self.calls.append(action)
            self.stored += self.core.finished(action, action.run(self.store), self.now)
        return action

    def until_wait(self, limit: int = 100) -> Wait:
        for _ in range(limit):
            action = self.step()
            if isinstance(action, Wait):
                return action
        raise AssertionError(f"no Wait after {limit} actions: {self.calls[-5:]}")

    def answer_all(self, reply: object = result) -> list[bytes]:
        tags = list(self.sent)
        for tag in tags:
            frame = self.sent.pop(tag)
            assert self.core.answered(tag, reply(frame) if callable(reply) else reply)  # type: ignore[operator]
        return tags

    def state(self, number: int) -> OrderState | None:
        status = self.store.status(oid(number))
        return None if status is None else status.state

    def kinds(self) -> list[str]:
        return [type(call).__name__ for call in self.calls]


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SQLiteStore]:
    opened = SQLiteStore(tmp_path)
    yield opened
    opened.close()


@pytest.fixture
def h(store: SQLiteStore) -> Harness:
    return Harness(store)


def test_at_start_it_leases_sends_renews_and_sends_a_heartbeat_then_waits(h: Harness) -> None:
    h.submit(1, 2)
    wait = h.until_wait()
    assert h.kinds() == ["Lease", "Renew", "Heartbeat"]
    lease = h.calls[0]
    assert isinstance(lease, Lease) and (lease.worker_id, lease.owner, lease.limit) == (WORKER, OWNER, 4)
    assert sorted(json.loads(json.loads(frame)["params"])["id"] for frame in h.sent.values()) == [1, 2]
    renew = h.calls[1]
    assert isinstance(renew, Renew) and sorted(renew.ids) == [oid(1), oid(2)]
    # A partial batch: the next look is after poll_s (the earliest timer).
    assert wait.until == T0 + CONFIG.poll_s


def test_a_full_lease_is_followed_by_another_at_once(h: Harness) -> None:
    h.submit(*range(1, 7))
    h.step()  # Lease 4 of 6
    h.step()  # Send
    assert len(h.sent) == 4
    h.answer_all()
    h.until_wait()
    # The room freed by the answers is filled at once: no poll_s wait.
    assert h.kinds()[:3] == ["Lease", "Complete", "Lease"]
    assert len(h.sent) == 2


def test_no_lease_while_the_worker_is_not_connected(h: Harness) -> None:
    h.submit(1)
    h.connected = False
    wait = h.until_wait()
    assert "Lease" not in h.kinds() and not h.sent
    assert wait.until == T0 + CONFIG.lease_s / 3  # the next renewal: nothing else is due
    h.connected = True
    h.until_wait()
    assert "Lease" in h.kinds() and len(h.sent) == 1


def test_a_wake_leases_before_the_poll_is_due(h: Harness) -> None:
    h.until_wait()
    h.submit(1)
    h.now += 0.1
    assert isinstance(h.step(), Wait)  # nothing said the order is there
    h.core.wake()
    assert isinstance(h.step(), Lease)
    assert isinstance(h.step(), Send)


def test_outcomes_are_stored_first_and_only_first_outcomes_are_reported(h: Harness) -> None:
    h.submit(1, 2)
    h.until_wait()
    tags = sorted(h.sent)
    h.store.complete([Completion(oid(2), b'{"earlier":1}', False)], h.now)  # e.g. a slower pump's
    h.answer_all()
    h.now += 1
    action = h.step()
    assert isinstance(action, Complete) and len(action.completions) == 2
    assert [item.work_order_id for item in h.stored] == [oid(1)]
    assert json.loads(h.store.status(oid(1)).outcome) == {"answered": oid(1)}  # type: ignore[union-attr]
    assert not h.core.answered(tags[0], b"{}")  # answered already: a second reply is not an order's


def test_an_error_reply_is_stored_as_an_error_and_an_unreadable_one_as_error_1(h: Harness) -> None:
    h.submit(1, 2)
    h.until_wait()
    first, second = sorted(h.sent)
    h.core.answered(first, b'{"jsonrpc":"2.0","id":1,"error":{"code":2,"message":"bad"}}')
    h.core.answered(second, b"not json")
    h.sent.clear()
    h.until_wait()
    for number, code in ((1, 2), (2, 1)):
        status = h.store.status(oid(number))
        assert status is not None and status.is_error and json.loads(status.outcome)["code"] == code


def test_busy_gives_the_order_back_and_pauses_sending_for_the_backoff(h: Harness) -> None:
    h.submit(1)
    h.until_wait()
    h.answer_all(busy())
    action = h.step()
    assert isinstance(action, Release) and action.ids == [oid(1)] and action.busy
    wait = h.step()
    assert isinstance(wait, Wait) and h.state(1) is OrderState.PENDING
    h.core.wake()
    wait = h.step()
    assert isinstance(wait, Wait) and wait.until == h.now + CONFIG.busy_backoff_s
    h.now = wait.until
    assert isinstance(h.step(), Lease)
    assert isinstance(h.step(), Send) and len(h.sent) == 1


def test_a_lost_connection_gives_its_orders_back_and_their_late_replies_are_ignored(h: Harness) -> None:
    h.submit(1, 2)
    h.until_wait()
    tags = list(h.sent)
    h.core.connection_lost()
    assert not h.core.in_flight
    action = h.step()
    assert isinstance(action, Release) and sorted(action.ids) == [oid(1), oid(2)] and not action.busy
    assert not h.core.answered(tags[0], result(h.sent[tags[0]]))
    assert h.state(1) is OrderState.PENDING


def test_orders_handed_over_are_sent_before_any_lease_and_the_handoff_leaves_room(h: Harness) -> None:
    assert h.core.handoff().limit == 2 * CONFIG.max_in_flight
    handed = [LeasedOrder(oid(n), request(n), 1, T0 + 9) for n in range(1, 7)]
    h.core.take(handed)
    action = h.step()
    assert isinstance(action, Send) and len(action.messages) == CONFIG.max_in_flight  # the room, no more
    assert len(h.core.ready) == 2 and h.core.handoff().limit == 2
    assert isinstance(h.step(), Renew)  # no lease: the worker has no room


def test_held_orders_are_renewed_every_third_of_the_lease_and_stuck_ones_given_back(store: SQLiteStore) -> None:
    h = Harness(store, PumpConfig(lease_s=9.0, max_in_flight=2, heartbeat_s=100, purge_every_s=1000, stuck_after_s=20))
    h.submit(1, 2)
    h.until_wait()
    handoff = Handoff(WORKER, OWNER, 9.0, 1)  # order 3 is committed leased to this pump, as a listener does
    third = [NewOrder(oid(3), WORKER, request(3))]
    h.core.take(handoff.taken(third, store.submit(third, h.now, handoff), h.now))
    first = sorted(h.sent)[0]
    h.core.answered(first, result(h.sent.pop(first)))  # its outcome is not stored yet
    h.now += 3.0  # a third of the lease
    h.calls.clear()
    h.until_wait()
    assert h.kinds() == ["Complete", "Renew"]
    renew = h.calls[1]
    assert isinstance(renew, Renew) and sorted(renew.ids) == [oid(2), oid(3)]  # in flight and handed over
    assert renew.run(store) == 2  # both still leased to this pump
    assert len(h.sent) == 2  # order 3 went out as soon as order 1's answer made room
    h.now += 21.0  # both unanswered for longer than stuck_after_s
    h.calls.clear()
    h.until_wait()
    assert h.kinds()[:2] == ["Release", "Lease"]  # given back first, then leased again (the worker has room)
    assert sorted(h.calls[0].ids) == [oid(2), oid(3)]  # type: ignore[union-attr]
    lease = h.calls[1]
    assert isinstance(lease, Lease) and lease.limit == 2


def test_renewal_names_outcomes_not_stored_yet(h: Harness) -> None:
    h.submit(1, 2)
    h.until_wait()
    first = sorted(h.sent)[0]
    h.core.answered(first, result(h.sent.pop(first)))
    assert sorted(h.core.held()) == [oid(1), oid(2)]


def test_heartbeat_purge_then_expire_each_on_their_interval(store: SQLiteStore) -> None:
    config = PumpConfig(heartbeat_s=5.0, purge_every_s=60.0, pending_ttl_s=100.0, lease_s=900.0, poll_s=1000.0)
    h = Harness(store, config)
    h.until_wait()
    assert h.kinds() == ["Lease", "Heartbeat"]
    h.calls.clear()
    h.now += 5.0
    h.until_wait()
    assert h.kinds() == ["Heartbeat"]
    h.calls.clear()
    h.now = T0 + 60.0
    wait = h.until_wait()
    assert h.kinds() == ["Heartbeat", "Purge", "Expire"]
    assert wait.until == T0 + 65.0  # the next heartbeat
    h.calls.clear()
    h.now = T0 + 60.0 + expiry_interval(60.0, 100.0)  # a quarter of the pending limit: 25 s
    h.until_wait()
    assert h.kinds() == ["Heartbeat", "Purge", "Expire"]


def test_expire_ends_the_orders_of_a_silent_worker(store: SQLiteStore, caplog: pytest.LogCaptureFixture) -> None:
    config = PumpConfig(pending_ttl_s=40.0, purge_every_s=10.0, poll_s=1000.0, lease_s=900.0, heartbeat_s=900)
    h = Harness(store, config)
    h.core.worker_id = "c" * 64  # its pump is this one; the orders are another (silent) worker's
    h.submit(1)
    h.now = T0 + 50.0
    h.until_wait()
    assert "Expire" in h.kinds() and h.state(1) is OrderState.DONE
    assert "1 work orders waited 40 s" in caplog.text


def test_answers_hold_back_neither_the_orders_handed_over_nor_a_lease_that_is_due(h: Harness) -> None:
    """Under load answers come all the time: the orders waiting for the worker go out first,
    and after each batch of outcomes a due lease goes before the next batch."""
    h.submit(1, 2, 3, 4)
    h.until_wait()
    handoff = Handoff(WORKER, OWNER, 9.0, 2)
    more = [NewOrder(oid(n), WORKER, request(n)) for n in (5, 6)]
    h.core.take(handoff.taken(more, h.store.submit(more, h.now, handoff), h.now))
    for tag in sorted(h.sent)[:2]:
        h.core.answered(tag, result(h.sent.pop(tag)))
    send = h.core.next_action(h.now, True)
    assert isinstance(send, Send) and len(send.messages) == 2  # before the outcomes are stored
    h.sent.update(send.messages)
    complete = h.core.next_action(h.now, True)
    assert isinstance(complete, Complete)
    first = sorted(h.sent)[0]
    h.core.answered(first, result(h.sent.pop(first)))  # while the outcomes are being stored
    h.submit(7)
    h.core.wake()
    h.stored += h.core.finished(complete, complete.run(h.store), h.now)
    lease = h.step()
    assert isinstance(lease, Lease) and lease.limit == 1
    assert isinstance(h.step(), Send)
    assert isinstance(h.step(), Complete)
    assert sorted(item.work_order_id for item in h.stored) == [oid(1), oid(2), oid(3)]


def test_a_store_failure_keeps_the_outcomes_pauses_the_store_and_tries_them_first(h: Harness) -> None:
    h.submit(1, 2)
    h.until_wait()
    h.answer_all()
    h.now += 1
    call = h.core.next_action(h.now, True)
    assert isinstance(call, Complete)
    h.core.failed(call, StoreError("the database went away"), h.now)
    h.core.wake()
    h.submit(3)
    wait = h.step()
    assert isinstance(wait, Wait) and wait.until == h.now + CONFIG.store_retry_s  # no store call meanwhile
    h.now = wait.until
    h.calls.clear()
    h.until_wait()
    assert h.kinds()[0] == "Complete" and h.calls[0].completions == call.completions  # type: ignore[union-attr]
    assert h.state(1) is h.state(2) is OrderState.DONE
    # Every timer starts again after the pause: the lease of order 3, a renewal, a heartbeat.
    assert h.kinds()[1:] == ["Lease", "Renew", "Heartbeat"]


def test_a_failed_give_back_is_tried_again_and_a_refused_one_is_left_to_its_lease(h: Harness) -> None:
    h.submit(1, 2)
    h.until_wait()
    h.core.connection_lost()
    call = h.core.next_action(h.now, True)
    assert isinstance(call, Release)
    h.core.failed(call, StoreError("away"), h.now)
    h.now += CONFIG.store_retry_s
    again = h.core.next_action(h.now, True)
    assert isinstance(again, Release) and again.ids == call.ids
    h.core.failed(again, StoreRefused("no"), h.now)
    h.now += CONFIG.store_retry_s
    assert not isinstance(h.core.next_action(h.now, False), Release)


def test_a_refused_outcome_is_found_by_splitting_and_replaced_by_an_error(h: Harness) -> None:
    h.submit(1, 2, 3)
    h.until_wait()
    h.answer_all()
    refused_id = oid(2)
    while True:
        action = h.core.next_action(h.now, True)
        if not isinstance(action, Complete):
            break
        if any(item.work_order_id == refused_id and item != unstorable(refused_id) for item in action.completions):
            h.calls.append(action)
            h.core.failed(action, StoreRefused("too large"), h.now)
        else:
            h.calls.append(action)
            h.stored += h.core.finished(action, action.run(h.store), h.now)
    sizes = [len(call.completions) for call in h.calls if isinstance(call, Complete)]
    assert sizes == [3, 1, 2, 1, 1, 1]  # [1|2,3] → [2|3] → [unstorable 2], [3]
    status = h.store.status(refused_id)
    assert status is not None and "could not be stored" in json.loads(status.outcome)["message"]
    assert sorted(item.work_order_id for item in h.stored) == [oid(1), oid(2), oid(3)]


def test_an_error_the_store_refuses_too_is_left_to_its_lease(h: Harness, caplog: pytest.LogCaptureFixture) -> None:
    h.submit(1)
    h.until_wait()
    h.answer_all()
    for _ in range(2):
        action = h.core.next_action(h.now, True)
        assert isinstance(action, Complete)
        h.core.failed(action, StoreRefused("nothing fits"), h.now)
    assert not h.core.refused and not h.core.unsaved
    assert "refuses even an error" in caplog.text


def test_on_stop_outcomes_are_stored_nothing_is_sent_and_the_rest_given_back(h: Harness) -> None:
    h.submit(1, 2, 3)
    h.until_wait()
    h.core.take([LeasedOrder(oid(9), request(9), 1, T0 + 9)])
    first = sorted(h.sent)[0]
    h.core.answered(first, result(h.sent.pop(first)))
    h.core.stop()
    h.core.wake()
    h.calls.clear()
    wait = h.until_wait()
    assert h.kinds() == ["Complete"] and wait.until == float("inf")
    h.core.give_back()
    h.calls.clear()
    h.until_wait()
    assert h.kinds() == ["Release"]
    assert sorted(h.calls[0].ids) == [oid(2), oid(3), oid(9)]  # type: ignore[union-attr]
    assert h.state(2) is OrderState.PENDING


def test_a_store_call_must_be_reported_before_the_next_action(h: Harness) -> None:
    call = h.core.next_action(h.now, True)
    assert isinstance(call, Lease)
    with pytest.raises(AssertionError):
        h.core.next_action(h.now, True)
    with pytest.raises(AssertionError):
        h.core.finished(Heartbeat(WORKER, h.now), None, h.now)


def _done_and_due_for_purge(h: Harness, caplog: pytest.LogCaptureFixture, *numbers: int) -> None:
    """Run orders `numbers` to their outcomes, then move to the first purge (with no retention,
    every outcome is due), logging at INFO and with no store call counted yet."""
    h.submit(*numbers)
    h.until_wait()
    h.answer_all()
    h.until_wait()
    caplog.set_level("INFO")
    h.now = T0 + 60.0
    h.calls.clear()


def test_a_purge_is_said_in_the_log(store: SQLiteStore, caplog: pytest.LogCaptureFixture) -> None:
    h = Harness(store, PumpConfig(result_ttl_s=0.0, purge_every_s=60.0, pending_ttl_s=3600.0))
    _done_and_due_for_purge(h, caplog, 1)
    h.until_wait()
    assert h.kinds()[-2:] == ["Purge", "Expire"] and h.state(1) is None
    assert "deleted 1 work-order results older than 0 s" in caplog.text


def test_a_long_purge_goes_slice_by_slice_between_the_orders_and_is_said_once(
        store: SQLiteStore, caplog: pytest.LogCaptureFixture) -> None:
    """Results past their time are deleted a slice per store call, each slice after the order
    work that is due (a purge never holds the store for long), and the log says the total once."""
    h = Harness(store, PumpConfig(result_ttl_s=0.0, purge_every_s=60.0, pending_ttl_s=3600.0, purge_slice=2,
                                  max_in_flight=8))
    _done_and_due_for_purge(h, caplog, *range(1, 6))
    while not isinstance(action := h.step(), Purge):
        assert not isinstance(action, Wait)
    assert action.limit == 2 and h.kinds().count("Purge") == 1
    h.submit(6)  # an order arrives while the first slice is deleted
    h.core.wake()
    h.until_wait()
    kinds = h.kinds()
    assert kinds.count("Purge") == 3 and kinds.index("Lease") < kinds.index("Purge", 1)  # the order before the next slice
    assert [h.state(n) for n in range(1, 6)] == [None] * 5
    assert caplog.text.count("deleted 5 work-order results older than 0 s") == 1
    assert "deleted 2 " not in caplog.text


def test_replies_are_read_as_the_worker_writes_them() -> None:
    assert interpret_reply("x", b'{"result":{"a":1}}') == Completion("x", b'{"a":1}', False)
    assert interpret_reply("x", busy()) is None
    assert interpret_reply("x", b'{"error":{"code":5,"message":"m"}}') == Completion("x", b'{"code":5,"message":"m"}', True)
    for unreadable in (b"[", b"[1]", b'{"result":1}', b'{"error":{"code":"5"}}', b"[" * 100_000):
        outcome = interpret_reply("x", unreadable)
        assert outcome is not None and outcome.is_error and json.loads(outcome.outcome)["code"] == 1


def test_the_workers_receipt_update_is_kept_with_the_outcome() -> None:
    update = {"workOrderId": "0xAB", "updaterId": "0xCD", "updateType": 3, "updateData": "2", "updateSignature": "s"}
    reply = json.dumps({"error": {"code": 2, "message": "m"}, "receiptUpdate": update}).encode()
    outcome = interpret_reply("ab", reply)
    assert outcome is not None and outcome.receipt_update == ReceiptUpdate("cd", 3, json.dumps(update, separators=(",", ":")).encode())
    for malformed in ({**update, "updateType": "3"}, {**update, "updateType": True}, {**update, "updaterId": 5}, "x"):
        outcome = interpret_reply("ab", json.dumps({"result": {}, "receiptUpdate": malformed}).encode())
        assert outcome is not None and outcome.receipt_update is None and not outcome.is_error


def test_frames_ids_and_intervals() -> None:
    frame = json.loads(work_order_frame(b'{"id":7}', 3))
    assert frame == {"jsonrpc": "2.0", "id": 3, "method": "ProcessWorkOrder", "params": '{"id":7}', "receiptUpdate": True}
    assert worker_id_of({"worker_id": "0xABC"}) == "abc"
    pem = "-----BEGIN PUBLIC KEY-----\n"
    assert worker_id_of({"verifying_key": pem}) == __import__("hashlib").sha256(pem.encode()).hexdigest()
    assert expiry_interval(60, 100) == 25 and expiry_interval(60, 3600) == 60 and expiry_interval(60, 0.1) == 0.25
    assert SIGNUP_TAG == bytes(8)


class Walk:
    """A random walk's events on a harness: what a listener, the worker, the connection, the
    store and the clock may do between two actions of the core."""

    def __init__(self, h: Harness, rng: random.Random) -> None:
        self.h = h
        self.rng = rng
        self.next_number = 1
        self.fail_next = 0

    def submit(self) -> None:
        numbers = range(self.next_number, self.next_number + self.rng.randint(1, 4))
        self.next_number = numbers[-1] + 1
        if self.rng.random() < 0.5:  # as the listener in the pump's process: committed leased to it
            orders = [NewOrder(oid(n), WORKER, request(n)) for n in numbers]
            handoff = self.h.core.handoff()
            self.h.core.take(handoff.taken(orders, self.h.store.submit(orders, self.h.now, handoff), self.h.now))
        else:
            self.h.submit(*numbers)
            if self.rng.random() < 0.5:
                self.h.core.wake()

    def reply(self) -> None:
        tag = self.rng.choice(list(self.h.sent))
        frame = self.h.sent.pop(tag)
        self.h.core.answered(tag, busy() if self.rng.random() < 0.15 else result(frame))

    def drop(self) -> None:
        self.h.core.connection_lost()
        self.h.sent.clear()  # their replies are lost with the connection
        self.h.connected = self.rng.random() < 0.7

    def event(self) -> None:
        roll = self.rng.random()
        if roll < 0.15:
            self.submit()
        elif roll < 0.45 and self.h.sent:
            self.reply()
        elif roll < 0.5:
            self.drop()
        elif roll < 0.55:
            self.fail_next = self.rng.randint(1, 2)
        elif roll < 0.7:
            self.h.now += self.rng.choice([0.01, 0.1, 0.5, 1.0, 4.0])
            self.h.connected = True

    def act(self) -> None:
        """One action of the core, its store call failing if a failure was injected."""
        action = self.h.core.next_action(self.h.now, self.h.connected)
        if isinstance(action, Send):
            self.h.sent.update(action.messages)
        elif not isinstance(action, Wait):
            if self.fail_next:
                self.fail_next -= 1
                self.h.core.failed(action, StoreError("injected"), self.h.now)
            else:
                self.h.stored += self.h.core.finished(action, action.run(self.h.store), self.h.now)

    def calm(self) -> None:
        """Connected, no failures, the worker answers everything sent, until every order is done."""
        self.h.connected = True
        for _ in range(2_000):
            self.h.answer_all()
            action = self.h.step()
            if isinstance(action, Wait):
                if all(self.h.state(n) is OrderState.DONE for n in range(1, self.next_number)):
                    return
                self.h.now = max(action.until, self.h.now + 0.01)


@pytest.mark.parametrize("seed", range(20))
def test_random_walk_every_order_ends_once_with_its_workers_answer(store: SQLiteStore, seed: int) -> None:
    """Submits, hand-overs, replies (some BUSY), lost connections, store failures and time, in
    random order: no order is ever answered twice in the store, and once the walk stops
    disturbing, every order ends with its worker's answer."""
    h = Harness(store, PumpConfig(lease_s=3.0, max_in_flight=3, poll_s=0.5, heartbeat_s=1.0, purge_every_s=5.0,
                                  pending_ttl_s=10_000.0, stuck_after_s=30.0, busy_backoff_s=0.05))
    walk = Walk(h, random.Random(seed))
    for _ in range(300):
        walk.event()
        walk.act()
    walk.calm()
    stored_ids = [item.work_order_id for item in h.stored]
    assert len(stored_ids) == len(set(stored_ids)) == walk.next_number - 1
    for number in range(1, walk.next_number):
        status = h.store.status(oid(number))
        assert status is not None and status.state is OrderState.DONE and not status.is_error
        assert json.loads(status.outcome) == {"answered": oid(number)}

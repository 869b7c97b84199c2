"""The one admission rule both stores call (`store/admission.py`), as a pure function; the store
contract (tests/test_store.py) checks that each backend keeps it."""

from __future__ import annotations

from avalon_worker.store import Handoff, NewOrder, SubmitOutcome
from avalon_worker.store.admission import admit

A, B = "a" * 64, "b" * 64
ACCEPTED, DUPLICATE, FULL = SubmitOutcome.ACCEPTED, SubmitOutcome.DUPLICATE, SubmitOutcome.QUEUE_FULL


def order(number: int, worker: str = A, size: int = 10) -> NewOrder:
    return NewOrder(f"{number:064x}", worker, b"x" * size)


def test_new_orders_under_the_limits_are_accepted_and_counted_per_worker() -> None:
    orders = [order(1), order(2, B, 5), order(3)]
    admission = admit(orders, existing={}, queued={}, max_pending=10, max_pending_bytes=100)
    assert admission.outcomes == [ACCEPTED] * 3
    assert admission.chosen == orders
    assert admission.added == {A: (2, 20), B: (1, 5)}
    assert admission.handed == frozenset()


def test_an_id_twice_in_a_submit_or_already_stored_is_a_duplicate_and_not_counted() -> None:
    orders = [order(1), order(1), order(2)]
    admission = admit(orders, existing={order(2).work_order_id: False}, queued={}, max_pending=10, max_pending_bytes=100)
    assert admission.outcomes == [ACCEPTED, DUPLICATE, DUPLICATE]
    assert admission.chosen == [order(1)] and admission.added == {A: (1, 10)}


def test_an_order_an_earlier_attempt_of_the_call_wrote_is_accepted_once_and_not_written_again() -> None:
    orders = [order(1), order(1)]
    admission = admit(orders, existing={order(1).work_order_id: True}, queued={}, max_pending=10, max_pending_bytes=100)
    assert admission.outcomes == [ACCEPTED, DUPLICATE]
    assert admission.chosen == [] and admission.added == {}


def test_a_duplicate_is_a_duplicate_even_when_the_queue_is_full() -> None:
    admission = admit([order(1)], existing={order(1).work_order_id: False}, queued={A: (5, 50)}, max_pending=5,
                      max_pending_bytes=100)
    assert admission.outcomes == [DUPLICATE]


def test_the_queue_limit_in_orders_counts_what_is_queued_and_what_this_submit_added() -> None:
    orders = [order(n) for n in range(1, 5)] + [order(9, B)]
    admission = admit(orders, existing={}, queued={A: (1, 10)}, max_pending=3, max_pending_bytes=10_000)
    assert admission.outcomes == [ACCEPTED, ACCEPTED, FULL, FULL, ACCEPTED]
    assert admission.added == {A: (2, 20), B: (1, 10)}


def test_the_queue_limit_in_bytes_lets_a_smaller_order_through() -> None:
    orders = [order(1, size=60), order(2, size=50), order(3, size=30)]
    admission = admit(orders, existing={}, queued={A: (0, 10)}, max_pending=10, max_pending_bytes=100)
    assert admission.outcomes == [ACCEPTED, FULL, ACCEPTED]  # 10 + 60 + 30 = 100: exactly at the limit
    assert admission.added == {A: (2, 90)}


def test_a_handoff_takes_the_first_accepted_orders_of_its_worker_up_to_its_limit() -> None:
    orders = [order(1), order(2, B), order(3), order(4), order(5)]
    handoff = Handoff(A, "pump-1", 10.0, 2)
    admission = admit(orders, existing={order(3).work_order_id: False}, queued={}, max_pending=10,
                      max_pending_bytes=10_000, handoff=handoff, now=5.0)
    assert admission.handed == {order(1).work_order_id, order(4).work_order_id}
    assert [leased.work_order_id for leased in handoff.taken(orders, admission.outcomes, 5.0)] == sorted(admission.handed)

"""Which submitted orders a store takes: one rule for every backend, with no I/O.

A backend reads what the rule needs inside its submit's transaction (which of the ids exist,
how much each worker has queued), calls `admit`, and writes what it chose. Rules, in order, for
each order of a submit:
- an id already in this submit, or already in the store, is a duplicate (pending, leased or
  done alike); an id the store holds because an earlier attempt of this very call committed it
  (a commit whose acknowledgement was lost) is accepted, not a duplicate of itself;
- an order that would take its worker's pending queue past `max_pending` orders or
  `max_pending_bytes` request bytes is refused as queue full (counting the orders accepted
  before it in this submit);
- the rest are accepted, and with a hand-off the first `handoff.limit` of them addressed to its
  worker are committed leased to its owner (`Handoff.taken`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from .base import Handoff, NewOrder, SubmitOutcome


@dataclass(frozen=True)
class Admission:
    """What `admit` decided for one submit."""

    outcomes: list[SubmitOutcome]  # one per order, in order
    chosen: list[NewOrder]  # the orders to write, in order
    handed: frozenset[str]  # ids of those of `chosen` to write leased to the hand-off's owner
    added: dict[str, tuple[int, int]]  # worker id → (orders, request bytes) `chosen` adds to its queue


def admit(
    orders: Sequence[NewOrder],
    *,
    existing: Mapping[str, bool],
    queued: Mapping[str, Sequence[int]],
    max_pending: int,
    max_pending_bytes: int,
    handoff: Handoff | None = None,
    now: float = 0.0,
) -> Admission:
    """Decide a submit. `existing`: the ids of `orders` the store holds, each True if an earlier
    attempt of this call wrote it; `queued`: worker id → (orders, request bytes) not done yet."""
    outcomes: list[SubmitOutcome] = []
    chosen: list[NewOrder] = []
    added: dict[str, tuple[int, int]] = {}
    seen: set[str] = set()
    for order in orders:
        if order.work_order_id in seen or order.work_order_id in existing:
            mine = order.work_order_id not in seen and existing.get(order.work_order_id, False)
            outcomes.append(SubmitOutcome.ACCEPTED if mine else SubmitOutcome.DUPLICATE)
            seen.add(order.work_order_id)
            continue
        seen.add(order.work_order_id)
        count, size = queued.get(order.worker_id, (0, 0))
        more_count, more_size = added.get(order.worker_id, (0, 0))
        if count + more_count >= max_pending or size + more_size + len(order.request) > max_pending_bytes:
            outcomes.append(SubmitOutcome.QUEUE_FULL)
            continue
        added[order.worker_id] = (more_count + 1, more_size + len(order.request))
        chosen.append(order)
        outcomes.append(SubmitOutcome.ACCEPTED)
    handed = frozenset(
        leased.work_order_id
        for leased in (handoff.taken(chosen, [SubmitOutcome.ACCEPTED] * len(chosen), now) if handoff else [])
    )
    return Admission(outcomes, chosen, handed, added)

"""The replay guard in-process, with a fake clock: window, normalisation, a full table."""

from __future__ import annotations

import os

from avalon_worker.replay import ReplayGuard, Seen


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_an_id_is_new_once_then_a_replay_until_the_window_ends() -> None:
    clock = Clock()
    guard = ReplayGuard(60, slots=64, clock=clock)
    assert guard.check_and_record("ab" * 32) is Seen.NEW
    clock.now += 59.9
    assert guard.check_and_record("ab" * 32) is Seen.REPLAY
    clock.now += 0.2
    assert guard.check_and_record("ab" * 32) is Seen.NEW


def test_ids_compare_without_case_or_prefix() -> None:
    guard = ReplayGuard(60, slots=64, clock=Clock())
    assert guard.check_and_record("0xAB12") is Seen.NEW
    assert guard.check_and_record("ab12") is Seen.REPLAY
    assert guard.check_and_record("ab13") is Seen.NEW


def test_a_full_table_refuses_rather_than_forgets() -> None:
    clock = Clock()
    guard = ReplayGuard(60, slots=8, clock=clock)
    results = [guard.check_and_record(f"{n:04x}") for n in range(9)]
    assert results[:8] == [Seen.NEW] * 8
    assert results[8] is Seen.FULL
    assert all(guard.check_and_record(f"{n:04x}") is Seen.REPLAY for n in range(8))
    clock.now += 61
    assert guard.check_and_record("0008") is Seen.NEW


def test_a_forked_process_sees_what_the_parent_recorded_and_the_other_way_round() -> None:
    guard = ReplayGuard(60, slots=64)
    guard.check_and_record("aa")
    pid = os.fork()
    if pid == 0:
        ok = guard.check_and_record("aa") is Seen.REPLAY and guard.check_and_record("bb") is Seen.NEW
        os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert guard.check_and_record("bb") is Seen.REPLAY

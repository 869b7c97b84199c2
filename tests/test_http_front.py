"""The front door's supervision decisions (`RestartPolicy`), with the time passed in, the bound
HTTP port (`bind_listen`) and the settings `serve` hands its process (`FrontConfig`). The processes
themselves are driven in `test_listener_end_to_end.py`."""

from __future__ import annotations

import socket

import pytest

from avalon_worker.errors import SetupError
from avalon_worker.front.door import FrontConfig, RestartPolicy, bind_listen
from avalon_worker.front.http_guard import BodyBudget, HttpLimits


class TestFrontConfig:
    def test_the_settings_cross_to_the_process_whole_and_the_store_stays_out_of_them(self) -> None:
        config = FrontConfig(endpoint="tcp://127.0.0.1:7777", listen="127.0.0.1:0", store="postgresql://u:secret@h/db",
                             max_request_bytes=1 << 20, result_ttl_s=7.5, lease_s=2.0, max_in_flight=3, max_pending=9,
                             log_level="DEBUG", heartbeat_s=0.5, stale_after_s=4.0,
                             limits=HttpLimits(5, 1.5, 2.5, 4096), pending_ttl_s=60.0)
        text = config.to_json()
        assert "secret" not in text and "postgresql" not in text
        assert FrontConfig.from_json(text, config.store) == config

    def test_settings_that_are_not_a_front_doors_are_refused(self) -> None:
        with pytest.raises((ValueError, TypeError)):
            FrontConfig.from_json('{"endpoint": "tcp://127.0.0.1:1", "surprise": 1, "limits": {}}', "store")


class TestRestartPolicy:
    def test_a_front_door_that_never_served_is_not_started_again(self) -> None:
        assert RestartPolicy().stopped(started=0.0, served=False, now=1.0) is None

    def test_a_front_door_that_served_is_started_again_with_a_growing_pause(self) -> None:
        policy = RestartPolicy(first_delay_s=0.5, max_delay_s=2.0, stable_after_s=30.0)
        policy.ready()
        pauses = []
        now = 100.0
        for _ in range(4):
            again = policy.stopped(started=now - 1, served=True, now=now)
            assert again is not None
            pauses.append(again - now)
            now = again + 1
            policy.ready()
        assert pauses == [0.5, 1.0, 2.0, 2.0]

    def test_the_pause_is_short_again_after_a_long_stable_run(self) -> None:
        policy = RestartPolicy(first_delay_s=0.5, stable_after_s=30.0)
        policy.ready()
        assert policy.stopped(started=0.0, served=True, now=1.0) == 1.5
        assert policy.stopped(started=1.5, served=True, now=2.0) == 3.0
        assert policy.stopped(started=3.0, served=True, now=100.0) == 100.5

    def test_starts_that_never_serve_are_given_up_after_the_limit(self) -> None:
        policy = RestartPolicy(max_failed_starts=3)
        policy.ready()
        now = 10.0
        assert policy.stopped(started=0.0, served=True, now=now) is not None  # killed while serving
        for attempt in range(1, 4):
            again = policy.stopped(started=now, served=False, now=now + 0.5)
            if attempt < 3:
                assert again is not None
                now = again
            else:
                assert again is None
        assert policy.failed_starts == 3

    def test_a_start_that_serves_again_clears_the_failed_starts(self) -> None:
        policy = RestartPolicy(max_failed_starts=2)
        policy.ready()
        assert policy.stopped(started=0.0, served=False, now=1.0) is not None
        policy.ready()
        assert policy.stopped(started=2.0, served=False, now=3.0) is not None
        assert policy.stopped(started=4.0, served=False, now=5.0) is None


def test_bind_listen_holds_the_port_and_refuses_a_taken_one() -> None:
    held = bind_listen("127.0.0.1:0")
    try:
        port = held.getsockname()[1]
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            pass  # queued in the backlog: nobody needs to accept for a connection to be made
        with pytest.raises(SetupError, match=f"cannot serve HTTP on 127.0.0.1:{port}: Address already in use"):
            bind_listen(f"127.0.0.1:{port}")
    finally:
        held.close()


def test_bind_listen_refuses_an_address_without_a_port() -> None:
    with pytest.raises(SetupError, match="--listen-http needs HOST:PORT"):
        bind_listen("127.0.0.1")


class TestBodyBudget:
    def test_a_body_still_arriving_fits_or_is_refused_and_a_received_one_always_fits(self) -> None:
        trims: list[int] = []
        budget = BodyBudget(100, trim=lambda: trims.append(1))
        assert budget.take(60)
        assert not budget.take(50)  # refused, and nothing held for it
        assert budget.held == 60
        assert budget.take(50, received=True)  # already in memory: refusing it would free nothing
        assert budget.held == 110
        budget.give_back(110)
        assert budget.held == 0 and trims == []  # small bodies: no trim

    def test_the_heap_is_handed_back_once_the_budget_empties_after_a_megabyte(self) -> None:
        trims: list[int] = []
        budget = BodyBudget(4 << 20, trim=lambda: trims.append(1))
        assert budget.take(3 << 20) and budget.take(1 << 20)
        budget.give_back(3 << 20)
        assert trims == []  # still holding a body
        budget.give_back(1 << 20)
        assert trims == [1]
        assert budget.take(10)
        budget.give_back(10)
        assert trims == [1]  # the peak since the last trim was small

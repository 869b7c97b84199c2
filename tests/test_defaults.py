"""One definition per default (`avalon_worker.defaults`): the README states those values, and the
command line, the front door, the pump, the listener and the stores start from them."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

from avalon_worker import defaults
from avalon_worker._cli import parser as command_line
from avalon_worker.front.door import FrontConfig
from avalon_worker.front.http_guard import HttpLimits
from avalon_worker.front.listener import ListenerConfig
from avalon_worker.front.pump_core import PumpConfig

README = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
HOURS = {24 * 3600.0: "a day", 3600.0: "an hour"}


def _flat(text: str) -> str:
    return " ".join(text.split())


def serve_table() -> dict[str, str]:
    """The README's "Serving" table: each row's text by the option in its first cell."""
    section = README.split("\n### Serving\n", 1)[1].lstrip("\n")
    rows = {}
    for line in section.splitlines():
        if not line.startswith("|"):
            break
        if match := re.match(r"\| `(--[a-z0-9-]+)", line):
            rows[match.group(1)] = line
    return rows


def _mib(size: int) -> str:
    assert size % (1 << 20) == 0
    return f"{size >> 20} MiB"


# What each row of the table must say, rendered from the defaults: a changed default that the
# README does not follow fails here.
SERVE_ROWS = {
    "--bind": f"(default `{defaults.BIND}`)",
    "--rsa-bits": f"{defaults.RSA_BITS} (default)",
    "--max-request-bytes": f"(default {_mib(defaults.MAX_REQUEST_BYTES)}",
    "--attestation": "`auto` (default)",
    "--timeout-s": f"(default {defaults.TIMEOUT_S:g})",
    "--spare-workers": f"(default {defaults.SPARE_WORKERS})",
    "--queue-limit": f"(default {defaults.QUEUE_LIMIT},",
    "--result-ttl": f"(default: {HOURS[defaults.RESULT_TTL_S]})",
    "--pending-ttl": f"(default {defaults.PENDING_TTL_S:g}: {HOURS[defaults.PENDING_TTL_S]})",
    "--http-max-connections": f"(default {defaults.HTTP_MAX_CONNECTIONS},",
    "--http-header-timeout-s": f"(default {defaults.HTTP_HEADER_TIMEOUT_S:g})",
    "--http-idle-timeout-s": f"(default {defaults.HTTP_IDLE_TIMEOUT_S:g})",
    "--http-body-budget-bytes": f"(default: {defaults.HTTP_BODY_BUDGET_REQUESTS} × `--max-request-bytes`)",
    "--store": f"(default `${defaults.STORE_ENV}`",
}

# The times of the front door, as the README's prose states them.
PROSE = [
    f"heartbeated in the last {defaults.STALE_AFTER_S:g} s (every {defaults.HEARTBEAT_S:g} s by default)",
    f"when their leases lapse ({defaults.LEASE_S:g} s)",
    f"within `--pending-ttl` ({HOURS[defaults.PENDING_TTL_S]})",
    f"(at most {defaults.SUBMIT_WAIT_S:g} s, or the request's `responseTimeoutMSecs`)",
    f"more than {defaults.MAX_PENDING:,} pending orders get BUSY (8)",
    f"headers must arrive within {defaults.HTTP_HEADER_TIMEOUT_S:g} s of a request's first byte, idle connections "
    f"close after {defaults.HTTP_IDLE_TIMEOUT_S:g} s, at most {defaults.HTTP_MAX_CONNECTIONS:,} connections",
]


@pytest.mark.parametrize("option,says", SERVE_ROWS.items(), ids=list(SERVE_ROWS))
def test_the_readme_table_states_the_default(option: str, says: str) -> None:
    assert says in serve_table()[option]


@pytest.mark.parametrize("says", PROSE)
def test_the_readme_states_the_front_doors_times(says: str) -> None:
    assert says in _flat(README)


def test_the_readme_names_every_attestation_mode() -> None:
    cell = re.match(r"\| `--attestation ([^`]*)`", serve_table()["--attestation"])
    assert cell is not None and cell.group(1).split("\\|") == list(defaults.ATTESTATION_MODES)


def _parsed(command: str, *argv: str) -> argparse.Namespace:
    parser = command_line.build()[0]
    return parser.parse_args([command, *argv])


def test_the_commands_start_from_the_defaults() -> None:
    serve = _parsed("serve")
    listener = _parsed("listener", "--store", "postgresql://h/db", "--listen-http", "127.0.0.1:0")
    pump = _parsed("pump", "--store", "postgresql://h/db", "--endpoint", "tcp://127.0.0.1:1")
    assert (serve.lease_s, serve.heartbeat_s, serve.stale_after_s) == (defaults.LEASE_S, defaults.HEARTBEAT_S,
                                                                      defaults.STALE_AFTER_S)
    assert (pump.lease_s, pump.heartbeat_s, pump.max_in_flight) == (defaults.LEASE_S, defaults.HEARTBEAT_S,
                                                                   defaults.PUMP_MAX_IN_FLIGHT)
    assert listener.stale_after_s == defaults.STALE_AFTER_S and listener.max_pending == defaults.MAX_PENDING
    for args in (serve, listener, pump):
        assert args.max_request_bytes == defaults.MAX_REQUEST_BYTES
        assert args.pending_ttl == defaults.PENDING_TTL_S
    assert serve.result_ttl == pump.result_ttl == defaults.RESULT_TTL_S
    for args in (serve, listener):
        assert (args.http_max_connections, args.http_header_timeout_s, args.http_idle_timeout_s) == (
            defaults.HTTP_MAX_CONNECTIONS, defaults.HTTP_HEADER_TIMEOUT_S, defaults.HTTP_IDLE_TIMEOUT_S)


def test_the_front_door_the_pump_and_the_listener_start_from_the_defaults() -> None:
    front = FrontConfig(endpoint="tcp://127.0.0.1:1", listen="", store="", max_request_bytes=1)
    pump = PumpConfig()
    listener = ListenerConfig()
    assert front.lease_s == pump.lease_s == defaults.LEASE_S
    assert front.heartbeat_s == pump.heartbeat_s == defaults.HEARTBEAT_S
    assert front.stale_after_s == listener.stale_after_s == defaults.STALE_AFTER_S
    assert front.result_ttl_s == pump.result_ttl_s == listener.result_ttl_s == defaults.RESULT_TTL_S
    assert front.pending_ttl_s == pump.pending_ttl_s == defaults.PENDING_TTL_S
    assert listener.max_wait_s == defaults.SUBMIT_WAIT_S and listener.max_body_bytes == defaults.MAX_REQUEST_BYTES
    assert front.limits == HttpLimits(defaults.HTTP_MAX_CONNECTIONS, defaults.HTTP_HEADER_TIMEOUT_S,
                                      defaults.HTTP_IDLE_TIMEOUT_S)

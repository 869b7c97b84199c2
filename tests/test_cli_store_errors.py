"""What the store's commands say when the store is wrong or away: exit 1 for a store that cannot
be reached (after retrying), 2 at once for one that no retry can fix, one line each.

A real PostgreSQL server (tests/postgres_server.py) and real `avalon-worker` subprocesses.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator

import pytest

from conftest import start_postgres
from postgres_server import PostgresServer, free_port

pytestmark = pytest.mark.slow


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {key: value for key, value in os.environ.items() if key != "AVALON_WORKER_STORE"}
    return subprocess.run([sys.executable, "-m", "avalon_worker", *args], capture_output=True, text=True, timeout=120,
                          env=env)


@pytest.fixture(scope="module")
def server() -> Iterator[PostgresServer]:
    running = start_postgres()
    yield running
    running.remove()


def test_store_migrate_without_a_store_names_the_variable() -> None:
    done = cli("store", "migrate")
    assert done.returncode == 2
    assert "--store" in done.stderr and "AVALON_WORKER_STORE" in done.stderr


@pytest.mark.parametrize("command", [["store", "migrate"], ["pump", "--endpoint", "tcp://127.0.0.1:7777"],
                                     ["listener", "--listen-http", "127.0.0.1:0"]])
def test_a_database_that_does_not_exist_is_a_setup_error_at_once(server: PostgresServer, command: list[str]) -> None:
    url = server.url("no_such_database")
    done = cli(*command, "--store", url)
    assert done.returncode == 2, done.stderr
    assert 'database "no_such_database" does not exist' in done.stderr
    assert "retrying" not in done.stderr, "no retry can create a database"
    assert "Traceback" not in done.stderr
    assert len([line for line in done.stderr.splitlines() if "avalon-worker:" in line]) == 1, done.stderr


def test_an_unreachable_database_is_exit_1_after_retrying() -> None:
    url = f"postgresql://nobody@127.0.0.1:{free_port()}/none"
    done = cli("store", "migrate", "--store", url)
    assert done.returncode == 1, done.stderr
    assert "is not reachable yet" in done.stderr and "retrying" in done.stderr  # said at once
    assert "cannot connect to the PostgreSQL store" in done.stderr.splitlines()[-1]


def test_serve_with_an_unreachable_store_exits_1_and_one_that_refuses_exits_2(server: PostgresServer,
                                                                             tmp_path: object) -> None:
    common = ["serve", "--bind", "tcp://127.0.0.1:*", "--attestation", "none", "--workers", "1", "--rsa-bits", "2048",
              "--log-level", "ERROR"]
    refused = cli(*common, "--state-dir", f"{tmp_path}/a", "--store", server.url("no_such_database"))
    assert refused.returncode == 2, refused.stderr
    assert 'database "no_such_database" does not exist' in refused.stderr.splitlines()[-1]
    away = cli(*common, "--state-dir", f"{tmp_path}/b", "--store", f"postgresql://nobody@127.0.0.1:{free_port()}/none")
    assert away.returncode == 1, away.stderr
    assert "cannot connect to the PostgreSQL store" in away.stderr.splitlines()[-1]

"""The PostgreSQL the tests start: unprivileged, loopback only, restartable on its own port."""

from __future__ import annotations

import os

import psycopg
import pytest

from postgres_server import PostgresServer

pytestmark = pytest.mark.slow


def test_server_listens_on_loopback_only_and_runs_unprivileged(postgres_server: PostgresServer) -> None:
    with psycopg.connect(postgres_server.url()) as connection:
        assert connection.execute("SHOW listen_addresses").fetchone() == ("127.0.0.1",)
        assert connection.execute("SHOW unix_socket_directories").fetchone() == ("",)
        data_directory = connection.execute("SHOW data_directory").fetchone()[0]
    assert os.stat(data_directory).st_uid != 0


def test_each_test_gets_an_empty_schema_of_its_own(postgres_server: PostgresServer, postgres_url: str) -> None:
    with psycopg.connect(postgres_url) as connection:
        connection.execute("CREATE TABLE mine (value int)")
        schema = connection.execute("SELECT schemaname FROM pg_tables WHERE tablename = 'mine'").fetchone()[0]
        tables = connection.execute("SELECT count(*) FROM pg_tables WHERE schemaname = %s", (schema,)).fetchone()[0]
    assert schema.startswith("test_")
    assert tables == 1


def test_restart_keeps_committed_rows_and_the_port(postgres_server: PostgresServer, postgres_url: str) -> None:
    with psycopg.connect(postgres_url) as connection:
        connection.execute("CREATE TABLE kept (value int)")
        connection.execute("INSERT INTO kept VALUES (42)")
    postgres_server.stop("immediate")
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(postgres_url, connect_timeout=2)
    postgres_server.start()
    with psycopg.connect(postgres_url) as connection:
        assert connection.execute("SELECT value FROM kept").fetchall() == [(42,)]

"""What `serve` and `listener` log at their edges: nothing before a usage error but the error, no
alarm at a clean stop, a line when they stop and when a lost database is back.

Real `avalon-worker` subprocesses; a real PostgreSQL server for the listener.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from avalon_worker._cli.console import READY_PREFIX
from avalon_worker._cli.demo import read_ready

from conftest import start_postgres

pytestmark = pytest.mark.slow


def serve(state: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "avalon_worker", "serve", "--state-dir", str(state), "--rsa-bits", "2048", *extra]


def wait_for(path: Path, fragment: str, limit_s: float = 60) -> None:
    deadline = time.monotonic() + limit_s
    while fragment not in path.read_text():
        assert time.monotonic() < deadline, f"{fragment!r} never appeared:\n{path.read_text()}"
        time.sleep(0.1)


def test_a_usage_error_is_the_only_line_even_where_attestation_would_warn(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        # No TEE here: `--attestation auto` finds none, which it would say as a WARNING.
        done = subprocess.run(serve(tmp_path / "s", "--bind", f"tcp://127.0.0.1:{port}"),
                              capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    [line] = done.stderr.splitlines()
    assert line.startswith("avalon-worker: cannot serve on ")
    assert not (tmp_path / "s").exists(), "no identity made"


def test_a_clean_stop_of_serve_with_listen_http_raises_no_alarm_and_says_stopped(tmp_path: Path) -> None:
    log = tmp_path / "serve.log"
    with log.open("w") as stderr:
        process = subprocess.Popen(serve(tmp_path / "s", "--bind", "tcp://127.0.0.1:*", "--attestation", "none",
                                         "--workers", "1", "--listen-http", "127.0.0.1:0"),
                                   stdout=subprocess.PIPE, stderr=stderr, text=True)
        read_ready(process, READY_PREFIX)
        process.terminate()
        assert process.wait(timeout=60) == 0
    text = log.read_text()
    assert "lost the connection" not in text and "connecting again" not in text, text
    assert "the listener and pump stopped" in text, text


def test_a_listener_says_when_the_database_is_back_and_when_it_stops(tmp_path: Path) -> None:
    server = start_postgres()
    log = tmp_path / "listener.log"
    try:
        url = server.create_database("listener_logs")
        with log.open("w") as stderr:
            process = subprocess.Popen([sys.executable, "-m", "avalon_worker", "listener", "--store", url,
                                        "--listen-http", "127.0.0.1:0"], stdout=subprocess.PIPE, stderr=stderr, text=True)
            try:
                assert process.stdout is not None
                assert process.stdout.readline().startswith("listener on http://")
                server.stop("fast")
                wait_for(log, "lost their connection")
                server.start()
                wait_for(log, "store notifications: connected again")
            finally:
                process.terminate()
                assert process.wait(timeout=60) == 0
        assert log.read_text().splitlines()[-1].endswith("listener stopped"), log.read_text()
    finally:
        server.remove()

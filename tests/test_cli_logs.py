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


# a workload that raises: its author's ways to see why --------------------------------------------


def run_boom(tmp_path: Path, *extra: str) -> tuple[subprocess.CompletedProcess[str], str]:
    """Serve (at DEBUG), send one order to the raising workload, stop; the reply and the log."""
    from conftest import MISBEHAVING_REGISTRY, run_cli

    log = tmp_path / "serve.log"
    with log.open("w") as stderr:
        process = subprocess.Popen(serve(tmp_path / "s", "--bind", "tcp://127.0.0.1:*", "--attestation", "none",
                                         "--workers", "1", "--workloads", MISBEHAVING_REGISTRY, "--log-level", "DEBUG",
                                         *extra), stdout=subprocess.PIPE, stderr=stderr, text=True)
        assert process.stdout is not None
        endpoint = process.stdout.readline().removeprefix(READY_PREFIX).strip()
        try:
            done = run_cli("submit", "--endpoint", endpoint, "--workload", "boom", "the-secret-input")
        finally:
            process.terminate()
            process.wait(timeout=60)
    return done, log.read_text()


def test_a_raising_workload_shows_only_its_exception_type_by_default(tmp_path: Path) -> None:
    done, log = run_boom(tmp_path)
    assert done.returncode == 1 and "error 1: workload 'boom' raised ValueError" in done.stderr
    assert "the-secret-input" not in done.stderr + log and "Traceback" not in log


def test_debug_workloads_logs_the_message_and_traceback_and_warns_at_start(tmp_path: Path) -> None:
    done, log = run_boom(tmp_path, "--debug-workloads")
    assert done.returncode == 1 and "the-secret-input" not in done.stderr, "the reply stays as it was"
    assert "--debug-workloads: a workload that raises is logged with its message and traceback" in log
    assert "workload 'boom' raised; its message and traceback may hold the order's data" in log
    assert "Traceback (most recent call last)" in log and "ValueError: cannot parse 'the-secret-input'" in log


def test_run_workload_runs_one_without_a_worker(tmp_path: Path) -> None:
    from conftest import MISBEHAVING_REGISTRY, run_cli

    assert run_cli("run-workload", "python-hello", "World").stdout == "Hello World\n"
    data = tmp_path / "in.txt"
    data.write_text("b")
    echoed = run_cli("run-workload", "--workloads", MISBEHAVING_REGISTRY, "echo-result", "a", "--input-file", str(data))
    assert echoed.stdout == "ab\n"
    failed = run_cli("run-workload", "--workloads", MISBEHAVING_REGISTRY, "boom", "x")
    assert failed.returncode == 1
    assert "ValueError: cannot parse 'x'" in failed.stderr and "misbehaving.py" in failed.stderr
    assert failed.stderr.splitlines()[-1] == "avalon-worker: workload 'boom' raised ValueError"
    unknown = run_cli("run-workload", "no-such")
    assert unknown.returncode == 2 and "no workload 'no-such' in the built-in registry" in unknown.stderr

"""The per-order log line written by `OrderLog`: the same text logging would write, in batches."""

from __future__ import annotations

import io
import logging

from avalon_worker.orderlog import BATCH_BYTES, FORMAT, OrderLog


class CountingStream(io.StringIO):
    def __init__(self) -> None:
        super().__init__()
        self.writes: list[str] = []

    def write(self, text: str) -> int:
        self.writes.append(text)
        return super().write(text)


def logging_line(created: float, *args: object) -> str:
    record = logging.LogRecord("avalon_worker.processor", logging.INFO, __file__, 1,
                               "work order %s workload=%r %s%s %.1f ms", args, None)
    record.created, record.msecs = created, int((created - int(created)) * 1000)
    return logging.Formatter(FORMAT).format(record) + "\n"


def test_a_line_reads_exactly_as_logging_would_write_it() -> None:
    stream = CountingStream()
    for created in (1_790_000_000.0, 1_790_000_000.9996, 1_790_000_001.042):
        log = OrderLog(stream, clock=lambda created=created: created)
        log.line("ab12", "python-hello", "error 4 (request hash)", 3.14159)
        log.flush()
        assert stream.writes[-1] == logging_line(created, "ab12", "python-hello", "error 4", " (request hash)", 3.14159)


def test_lines_wait_for_a_flush_and_each_write_stays_within_one_pipe_buffer() -> None:
    stream = CountingStream()
    log = OrderLog(stream, clock=lambda: 1_790_000_000.5)
    log.line("1", "w", "ok", 1.0)
    assert stream.writes == []
    for n in range(200):
        log.line(f"{n:064x}", "python-hello", "ok", 0.5)
    log.flush()
    assert len(stream.writes) > 1 and all(len(text) <= BATCH_BYTES for text in stream.writes)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 201 and lines[-1].endswith(f"work order {199:064x} workload='python-hello' ok 0.5 ms")
    log.flush()
    assert len(lines) == len(stream.getvalue().splitlines())  # nothing written twice


def test_a_served_order_is_logged_once_by_its_worker_process(tmp_path) -> None:
    import subprocess
    import sys

    from avalon_worker._cli.console import READY_PREFIX
    from avalon_worker.client import WorkerClient

    log_path = tmp_path / "worker.log"
    with open(log_path, "w") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "avalon_worker", "serve", "--bind", "tcp://127.0.0.1:*", "--state-dir", str(tmp_path / "s"),
             "--rsa-bits", "2048", "--attestation", "none", "--workers", "2"],
            stdout=subprocess.PIPE, stderr=log_file, text=True)
        try:
            assert process.stdout is not None
            endpoint = process.stdout.readline().removeprefix(READY_PREFIX).strip()
            with WorkerClient(endpoint, timeout_s=30) as client:
                for name in (b"one", b"two", b"three"):
                    assert client.submit("python-hello", [name]) == [b"Hello " + name]
        finally:
            process.terminate()
            assert process.wait(timeout=30) == 0
    lines = [line for line in log_path.read_text().splitlines() if " work order " in line]
    assert len(lines) == 3, lines
    assert all(" INFO avalon_worker.processor: work order " in line and "workload='python-hello' ok " in line for line in lines)

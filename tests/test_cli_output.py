"""What `run-orders` and `demo` print: rows as orders complete, fitted to a terminal, whole when
piped or as JSON, and a last line that says what "verified" covers.

Terminal cases run the real command under a pseudo-terminal of a given size.
"""

from __future__ import annotations

import fcntl
import io
import json
import os
import pty
import struct
import subprocess
import sys
import termios
from collections.abc import Iterator
from pathlib import Path

import pytest

from avalon_worker._cli.order_table import Outcome, Table, fit, printable

from conftest import MISBEHAVING_REGISTRY, RunningWorker, launch_worker, run_cli

pytestmark = pytest.mark.slow

FIB_10000_DIGITS = 2090
UNATTESTED = "signatures and encryption verified; this worker runs without SGX attestation (nothing proves which code ran)"


class Terminal:
    """`python -m avalon_worker ARGS` with its output on a pseudo-terminal `columns` wide."""

    def __init__(self, columns: int, *args: str, env: dict[str, str] | None = None) -> None:
        master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, columns, 0, 0))
        environment = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")} | (env or {})
        self.process = subprocess.Popen([sys.executable, "-m", "avalon_worker", *args], stdin=slave, stdout=slave,
                                        stderr=slave, close_fds=True, env=environment)
        os.close(slave)
        self.master = master
        self.text = ""

    def read_until(self, fragment: str) -> str:
        """Everything shown so far, once `fragment` has been (or the program has ended)."""
        while fragment not in self.text:
            try:
                data = os.read(self.master, 65536)
            except OSError:  # EIO: the program has ended and closed the terminal
                break
            if not data:
                break
            self.text += data.decode("utf-8", errors="replace").replace("\r\n", "\n")
        return self.text

    def finish(self, timeout: float = 120) -> tuple[int, str]:
        text = self.read_until("\0never\0")
        code = self.process.wait(timeout=timeout)
        os.close(self.master)
        return code, text


@pytest.fixture(scope="module")
def orders(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("orders") / "orders.json"
    path.write_text(json.dumps({"workOrders": [
        {"workloadId": "python-hello", "params": "Sita"},
        {"workloadId": "python-fib", "params": "10000"},
        {"workloadId": "python-hello", "params": "a name\nwith a newline in it and long enough to be cut on a narrow terminal"},
        {"workloadId": "no-such-workload", "params": "x"},
    ]}))
    return path


@pytest.fixture(scope="module")
def sleepy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningWorker]:
    # two processes: each test leaves one running its slow order (see slow_second_order)
    running = launch_worker(tmp_path_factory.mktemp("sleepy"), ["--workloads", MISBEHAVING_REGISTRY, "--workers", "2"])
    yield running
    running.stop()


# 5. progress: rows as orders complete ---------------------------------------------------------------


def slow_second_order(tmp_path: Path) -> Path:
    """A quick order, then one of 50 s. The client's --timeout-s 10 has the worker answer it at
    9 s, but its process runs it on (within the worker's own limit) until the worker stops."""
    path = tmp_path / "slow.json"
    path.write_text(json.dumps({"workOrders": [{"workloadId": "python-hello", "params": "first"},
                                               {"workloadId": "sleep", "params": "50"}]}))
    return path


def test_on_a_terminal_each_row_shows_as_its_order_completes(sleepy: RunningWorker, tmp_path: Path) -> None:
    terminal = Terminal(100, "run-orders", "--endpoint", sleepy.endpoint, "--timeout-s", "10", str(slow_second_order(tmp_path)))
    try:
        shown = terminal.read_until("Hello first")
        assert "verified  Hello first" in shown
        assert terminal.process.poll() is None, "the first row is shown while the second order still runs"
    finally:
        terminal.process.kill()
        terminal.finish()


def test_piped_rows_are_plain_and_come_as_orders_complete(sleepy: RunningWorker, tmp_path: Path) -> None:
    process = subprocess.Popen([sys.executable, "-m", "avalon_worker", "run-orders", "--endpoint", sleepy.endpoint,
                                "--timeout-s", "10", str(slow_second_order(tmp_path))], stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    try:
        header, first = process.stdout.readline(), process.stdout.readline()
        assert header.split() == ["id", "workload", "input", "ms", "status", "result"]
        assert first.split()[1::3] == ["python-hello", "verified"] and first.rstrip().endswith("Hello first")
        assert len(first.split()[0]) == 64, "piped, the work-order id is whole"
        assert "\x1b" not in header + first, "no terminal control sequences in piped output"
        assert process.poll() is None
    finally:
        process.kill()
        process.wait()


# 6. one long result does not break the table --------------------------------------------------------


@pytest.mark.parametrize("columns", [60, 100, 200])
def test_on_a_terminal_every_line_of_the_table_fits_its_width(worker: RunningWorker, orders: Path, columns: int) -> None:
    code, text = Terminal(columns, "run-orders", "--endpoint", worker.endpoint, str(orders)).finish()
    assert code == 1  # the unknown workload failed
    lines = text.splitlines()
    table = lines[:5]
    assert all(len(line) < columns for line in table), table
    # The id's first 8 digits (a prefix `result` takes), where the width leaves room for it.
    with_ids = columns >= 80
    assert table[0].split() == ["id"] * with_ids + ["workload", "input", "ms", "status", "result"]
    ids = [line[:8] for line in table[1:]] if with_ids else []
    assert all(int(i, 16) >= 0 for i in ids) and len(set(ids)) == 4 * with_ids
    rows = [line[10:] if with_ids else line for line in table]
    fib = next(row for row in rows if row.startswith("python-fib"))
    assert fib.split("  verified  ")[1].startswith("Fibonacci") and fib.endswith("…")
    assert rows[3].startswith("python-hello      a na"), "the newline in the input did not split its row"
    assert rows[4].startswith("no-such-workload") and " FAILED " in rows[4]
    # A reason the row cut is printed whole under the table, then the summary.
    reason = next(line for line in lines[5:] if line.startswith("FAILED "))
    assert reason.endswith(" no-such-workload: error 2: workload 'no-such-workload' is not registered; this worker "
                           "runs echo-result, heart-disease-eval, inside-out-eval, python-fib, python-hello, "
                           "simple-wallet"), reason
    assert lines[lines.index(reason) + 1].startswith("3 of 4 work orders verified")


def test_columns_in_the_environment_sets_the_width_as_everywhere(worker: RunningWorker, orders: Path) -> None:
    code, text = Terminal(200, "run-orders", "--endpoint", worker.endpoint, str(orders), env={"COLUMNS": "70"}).finish()
    assert max(len(line) for line in text.splitlines()[:5]) < 70


def test_piped_values_are_whole(worker: RunningWorker, orders: Path) -> None:
    done = run_cli("run-orders", "--endpoint", worker.endpoint, str(orders))
    fib = next(line for line in done.stdout.splitlines() if line[66:].startswith("python-fib"))
    assert len(fib.rsplit(" = ", 1)[1]) == FIB_10000_DIGITS and "…" not in done.stdout
    assert "Hello a name\\nwith a newline in it and long enough to be cut on a narrow terminal" in done.stdout


def test_json_gives_one_object_per_order_with_every_value_whole(worker: RunningWorker, orders: Path) -> None:
    done = run_cli("run-orders", "--json", "--endpoint", worker.endpoint, str(orders))
    assert done.returncode == 1
    records = [json.loads(line) for line in done.stdout.splitlines()]
    assert [r["status"] for r in records] == ["verified", "verified", "verified", "failed"]
    assert len(records[1]["result"].rsplit(" = ", 1)[1]) == FIB_10000_DIGITS
    assert records[2]["input"].startswith("a name\nwith")
    assert "unknown workload" in records[3]["result"].lower() or "no-such-workload" in records[3]["result"]
    assert "3 of 4 work orders verified" in done.stderr


def test_an_order_file_without_orders_is_refused(tmp_path: Path) -> None:
    empty = tmp_path / "empty.json"
    empty.write_text('{"workOrders": []}')
    done = run_cli("run-orders", "--endpoint", "tcp://127.0.0.1:9", str(empty))
    assert done.returncode == 2 and f"{empty} has no work orders" in done.stderr


class TestTable:
    def test_fit_cuts_with_an_ellipsis_only_when_needed(self) -> None:
        assert fit("abcdef", 6, "…") == "abcdef"
        assert fit("abcdefg", 6, "…") == "abcde…"
        assert fit("abcdefg", 6, "...") == "abc..."

    def test_printable_escapes_control_characters(self) -> None:
        assert printable("a\nb\tc\x1b[2J") == "a\\nb\\tc\\x1b[2J"

    def test_an_ascii_terminal_gets_three_dots(self) -> None:
        out = io.TextIOWrapper(io.BytesIO(), encoding="ascii")
        table = Table(out, [("w", "i")], 40)
        table.row(Outcome("w", "i", True, "x" * 100, 1.0))
        out.seek(0)
        assert out.read().rstrip().endswith("...")

    def test_piped_table_keeps_every_character(self) -> None:
        out = io.StringIO()
        table = Table(out, [("w", "i" * 50)], None)
        table.start()
        table.row(Outcome("w", "i" * 50, False, "r" * 500, 1.0))
        assert out.getvalue().splitlines()[1].endswith("FAILED    " + "r" * 500)


# 8. "verified" says what it covers ------------------------------------------------------------------


def test_the_demo_says_the_worker_is_not_attested() -> None:
    done = run_cli("demo", timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-2].startswith("9 of 9 work orders verified")
    assert done.stdout.splitlines()[-1] == UNATTESTED


def test_a_plain_serve_logs_the_attestation_notice_once(tmp_path: Path) -> None:
    log = tmp_path / "serve.log"
    with log.open("w") as stderr:
        process = subprocess.Popen([sys.executable, "-m", "avalon_worker", "serve", "--bind", "tcp://127.0.0.1:*",
                                    "--state-dir", str(tmp_path / "s"), "--rsa-bits", "2048"],
                                   stdout=subprocess.PIPE, stderr=stderr, text=True)
        assert process.stdout is not None
        assert process.stdout.readline().startswith("listening on ")
        process.terminate()
        assert process.wait(timeout=30) == 0
    notices = [line for line in log.read_text().splitlines() if "attestation: none" in line]
    assert len(notices) == 1, notices

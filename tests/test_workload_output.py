"""What a workload writes to its standard output and error: never in the worker's log or on its
standard output (where `serve` says where it listens), never able to block the workload, and at
DEBUG logged after its order, bounded, on one line that names the order."""

from __future__ import annotations

from pathlib import Path

import pytest

from avalon_worker._cli.demo import start_worker_process
from avalon_worker.client import WorkerClient
from avalon_worker.requester import build_work_order, open_result

from conftest import MISBEHAVING_REGISTRY

FLOOD = 300_000  # more than a pipe holds: a workload writing it must not block

pytestmark = pytest.mark.slow


def serve_and_run(tmp_path: Path, level: str, orders: int = 2) -> tuple[list[str], str, str]:
    """Run `orders` noisy orders on a worker at `level`; return their ids, its standard output
    after the ready line, and its standard error."""
    log = tmp_path / "serve.log"
    with open(log, "w") as stderr:
        process, endpoint = start_worker_process(
            str(tmp_path / "state"), ["--rsa-bits", "2048", "--attestation", "none", "--workers", "1",
                                      "--workloads", MISBEHAVING_REGISTRY, "--log-level", level],
            stderr=stderr.fileno())
    ids = []
    try:
        with WorkerClient(endpoint, timeout_s=60) as client:
            for _ in range(orders):
                pending = build_work_order(client.worker(), "noisy", [str(FLOOD).encode()])
                reply = client.call(pending.frame())
                assert open_result(pending, reply, client.worker()) == [f"noisy {FLOOD}".encode()]
                ids.append(pending.work_order_id)
    finally:
        process.terminate()
        out, _ = process.communicate(timeout=60)
    return ids, out, log.read_text()


FORGED = ("forged-by-the-workload", "forged on stderr too", "from-a-child-process", "straight-to-descriptor-2")


def test_at_info_workload_output_reaches_neither_the_log_nor_standard_output(tmp_path: Path) -> None:
    ids, out, log = serve_and_run(tmp_path, "INFO")
    assert out == ""
    for text in FORGED:
        assert text not in log
    assert "x" * 100 not in log
    for work_order_id in ids:
        assert f"work order {work_order_id} workload='noisy' ok" in log  # the worker's own line is still there


def test_at_debug_each_orders_output_is_one_bounded_line_naming_the_order(tmp_path: Path) -> None:
    ids, out, log = serve_and_run(tmp_path, "DEBUG")
    assert out == ""
    lines = log.splitlines()
    for text in FORGED:
        assert not any(line.startswith(text) for line in lines)
    for work_order_id in ids:
        [line] = [line for line in lines if f"work order {work_order_id}: the workload wrote" in line]
        assert " DEBUG avalon_worker." in line
        assert all(text in line for text in FORGED)
        assert f"wrote {FLOOD + 200}" not in line and len(line) < 6000  # the count says how much; the line is bounded
        wrote = int(line.split("the workload wrote ")[1].split(" bytes")[0])
        assert FLOOD < wrote < FLOOD + 400


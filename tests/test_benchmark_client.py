"""The benchmark's lean ZMTP 3.0 load generator against the real worker: its numbers mean something
only if the worker sees it as an ordinary DEALER client and answers every order it sends."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from avalon_worker.requester import Session, WorkerInfo, build_work_order, open_result

from conftest import RunningWorker

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import zmtp  # noqa: E402

SIGNUP = b'{"jsonrpc":"2.0","id":1,"method":"ProcessWorkerSignup","params":null}'


def test_a_batch_of_pipelined_orders_is_answered_and_verifies(worker: RunningWorker) -> None:
    connection = zmtp.DealerConnection(worker.endpoint, timeout_s=30)
    try:
        connection.send(zmtp.message([b"signup", b"", SIGNUP]))
        [[tag, empty, reply]] = connection.receive()
        assert (tag, empty) == (b"signup", b"")
        info = WorkerInfo.from_signup(json.loads(reply))

        session = Session.new(info)
        pending = {}
        for n in range(20):  # long frames, several messages per write and per read
            name = f"order-{n}".encode()
            pending[name] = build_work_order(info, "echo-result", [name * 40], session=session)
        connection.send(b"".join(zmtp.message([name, b"", order.frame()]) for name, order in pending.items()))

        answered = {}
        while len(answered) < len(pending):
            for tag, empty, reply in connection.receive():
                assert empty == b""
                answered[tag] = open_result(pending[tag], json.loads(reply), info)
        assert answered == {name: [name * 40] for name in pending}
    finally:
        connection.close()


def test_message_encoding_uses_short_and_long_frames() -> None:
    assert zmtp.message([b"a", b""]) == b"\x01\x01a\x00\x00"
    long = zmtp.message([b"x" * 256])
    assert long[:9] == b"\x02" + (256).to_bytes(8, "big") and long[9:] == b"x" * 256


def test_the_benchmark_reports_each_step_as_it_finishes(capsys) -> None:
    import throughput

    progress = throughput.Progress(steps=2)
    load = throughput.Load(1, 1, 1, 0.2, "zmtp", False)
    hello = throughput.scenarios(quick=True)[:1]
    results = throughput.run_worker(1, hello, load, progress)
    progress.step("done")
    lines = capsys.readouterr().err.splitlines()
    assert lines[0].startswith("[1/2 ") and lines[0].endswith(f"1 process(es), RSA-2048, {hello[0].name}: "
                                                               f"{results[hello[0].name]['rate']:.0f} orders/s")
    assert lines[1].startswith("[2/2 ") and lines[1].endswith("done")


@pytest.mark.slow  # two processes, each making an RSA key
def test_handle_alone_is_timed_under_the_code_measured(tmp_path: Path) -> None:
    import throughput

    seconds = throughput.handle_floor(throughput.THIS_CODE, orders=20)
    assert seconds is not None and 0 < seconds < 1
    broken = tmp_path / "src" / "avalon_worker"  # a code whose Processor cannot be imported
    broken.mkdir(parents=True)
    (broken / "__init__.py").write_text("")
    assert throughput.handle_floor(throughput.Code("broken", str(tmp_path / "src")), orders=20) is None

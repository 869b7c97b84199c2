"""Workloads: the built-ins, the registry's checks, and the original worker's workloads unchanged."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from avalon_worker._cli.console import READY_PREFIX
from avalon_worker.client import WorkerClient
from avalon_worker.errors import WorkloadError
from avalon_worker.requester import WorkOrderFailed
from avalon_worker.workload.builtin.fibonacci import MAX_POSITION, fibonacci
from avalon_worker.workload.registry import RegistryError, WorkloadRegistry


class Item:
    def __init__(self, index: int, data: bytes) -> None:
        self.index, self.data = index, data


def run(name: str, *inputs: bytes) -> list[bytes]:
    return WorkloadRegistry.builtin().run(name, [Item(i, d) for i, d in enumerate(inputs)])


def test_builtin_registry_has_ours_and_avalons_example_workloads() -> None:
    assert WorkloadRegistry.builtin().names() == [
        "echo-result", "heart-disease-eval", "inside-out-eval", "python-fib", "python-hello", "simple-wallet",
    ]


def test_hello_greets_the_first_item() -> None:
    assert run("python-hello", b"Krsna", b"ignored") == [b"Hello Krsna"]


@pytest.mark.parametrize("text,expected", [(b"0", 0), (b"1", 1), (b"15", 610), (b" 20\n", 6765), (b"+9", 34)])
def test_fib_computes_the_number(text: bytes, expected: int) -> None:
    n = int(text)
    assert run("python-fib", text) == [f"Fibonacci number at position {n} = {expected}".encode()]


def test_fib_accepts_its_documented_limit() -> None:
    assert run("python-fib", str(MAX_POSITION).encode())[0].endswith(str(fibonacci(MAX_POSITION)).encode())


@pytest.mark.parametrize("text", [b"-1", b"abc", b"1e3", b"", str(MAX_POSITION + 1).encode(), b"9" * 100, b"\xff"])
def test_fib_refuses_bad_positions_without_echoing_them(text: bytes) -> None:
    with pytest.raises(WorkloadError) as raised:
        run("python-fib", text)
    assert "python-fib" in str(raised.value)
    shown = text.decode(errors="ignore").strip()
    if shown:
        assert shown not in str(raised.value)


def test_echo_concatenates_in_order() -> None:
    assert run("echo-result", b"a", b"", b"bc") == [b"abc"]


@pytest.mark.parametrize(
    "entries,fragment",
    [
        ({"w": "not an object"}, "entry 'w' must be"),
        ({"w": {"module": "json"}}, "entry 'w' must be"),
        ({"w": {"module": "json", "class": "NoSuchClass"}}, "has no class 'NoSuchClass'"),
        ({"w": {"module": "json", "class": "JSONDecodeError"}}, "neither run(inputs) nor execute"),
        ({"w": {"module": "no.such.module", "class": "X"}}, "'no.such.module' cannot be imported"),
        ({}, "non-empty JSON object"),
    ],
)
def test_registry_errors_name_the_bad_entry(entries: dict, fragment: str) -> None:
    with pytest.raises(RegistryError) as raised:
        WorkloadRegistry.from_mapping(entries, "workloads.json")
    assert fragment in str(raised.value)


def test_registry_file_that_is_not_json_is_named(tmp_path: Path) -> None:
    path = tmp_path / "workloads.json"
    path.write_text("{nope")
    with pytest.raises(RegistryError, match="not valid JSON"):
        WorkloadRegistry.from_file(path)


def test_the_original_spelling_is_the_legacy_api_and_runs_in_the_registry() -> None:
    from avalon_worker.workload import LegacyWorkload
    from avalon_worker.workload.workload import WorkLoad

    class Upper(WorkLoad):
        def execute(self, in_data_array):  # type: ignore[no-untyped-def]
            return True, in_data_array[0]["data"].upper()

    assert WorkLoad is LegacyWorkload
    assert WorkloadRegistry({"upper": Upper()}).run("upper", [Item(0, b"om")]) == [b"OM"]


SEED_HELLO = '''
import sys
import logging
from avalon_worker.workload.workload import WorkLoad

logger = logging.getLogger(__name__)
logger.setLevel(logging.DEBUG)
logger.addHandler(logging.StreamHandler(sys.stdout))


class HelloWorkLoad(WorkLoad):
    def execute(self, in_data_array):
        logger.info("Execute Hello workload")
        data_plain_bytes = in_data_array[0]["data"]
        try:
            data_str = data_plain_bytes.decode("UTF-8")
            out_msg = "Hello " + data_str
            out_msg_bytes = out_msg.encode("utf-8")
            result = True
        except Exception as e:
            out_msg = "Error processing Hello workload : " + str(e)
            out_msg_bytes = out_msg.encode("utf-8")
            result = False
        return result, out_msg_bytes
'''

SEED_SHOUT = '''
from avalon_worker.workload.workload import WorkLoad


class ShoutWorkLoad(WorkLoad):
    def execute(self, in_data_array):
        text = in_data_array[0]["data"].decode("utf-8")
        if not text:
            return False, b"Error: empty input " + in_data_array[0]["data"]
        return True, text.upper().encode("utf-8")
'''


def test_original_style_workloads_run_unchanged_under_wo_processor(tmp_path: Path) -> None:
    package = tmp_path / "sample_workloads"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "hello.py").write_text(textwrap.dedent(SEED_HELLO))
    (package / "shout.py").write_text(textwrap.dedent(SEED_SHOUT))
    registry = tmp_path / "workloads.json"
    registry.write_text(json.dumps({
        "python-hello": {"module": "sample_workloads.hello", "class": "HelloWorkLoad"},
        "shout": {"module": "sample_workloads.shout", "class": "ShoutWorkLoad"},
    }))
    wo_processor = Path(sys.executable).with_name("wo-processor")
    command = [str(wo_processor), "--bind", "tcp://127.0.0.1:*", "--workload", str(registry),
               "--state-dir", str(tmp_path / "state"), "--rsa-bits", "2048", "--attestation", "none"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, cwd=tmp_path.parent)
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line.startswith(READY_PREFIX), line
        with WorkerClient(line[len(READY_PREFIX):].strip(), timeout_s=20) as client:
            assert client.submit("python-hello", [b"Ganesha"]) == [b"Hello Ganesha"]
            assert client.submit("shout", [b"om"]) == [b"OM"]
            with pytest.raises(WorkOrderFailed) as failed:
                client.submit("shout", [b""])
            assert failed.value.code == 1 and "reported failure" in failed.value.message
    finally:
        process.terminate()
        assert process.wait(timeout=30) == 0

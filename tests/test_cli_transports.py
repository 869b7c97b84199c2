"""Every requester command over both transports: `--endpoint` (ZMQ) or `--listener` (HTTP), with
the same rules, and no traceback anywhere (a closed pipe included).

Real `avalon-worker` subprocesses against one real `serve --listen-http` worker on 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import socket
import stat
import struct
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from avalon_worker._cli.console import READY_PREFIX
from avalon_worker._cli.demo import read_ready
from avalon_worker.client import WorkerUnavailable
from avalon_worker.front.listener_client import ListenerClient

from conftest import MISBEHAVING_REGISTRY

pytestmark = pytest.mark.slow

SAMPLE = str(Path(__file__).with_name("test_work_orders.json"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Both:
    """One worker, reachable over ZMQ (`endpoint`) and HTTP (`url`)."""

    process: subprocess.Popen[str]
    endpoint: str
    url: str
    home: Path  # XDG_STATE_HOME of the requester commands: where `submit` keeps keys

    def cli(self, *args: str, stdin: str | None = None, timeout: float = 90) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "XDG_STATE_HOME": str(self.home)}
        return subprocess.run([sys.executable, "-m", "avalon_worker", *args], capture_output=True, text=True,
                              timeout=timeout, input=stdin, env=env)

    def transport(self, name: str) -> list[str]:
        return ["--endpoint", self.endpoint] if name == "zmq" else ["--listener", self.url]


@pytest.fixture(scope="module")
def both(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Both]:
    state = tmp_path_factory.mktemp("both")
    process = subprocess.Popen(
        [sys.executable, "-m", "avalon_worker", "serve", "--bind", "tcp://127.0.0.1:*", "--state-dir", str(state / "s"),
         "--rsa-bits", "2048", "--attestation", "none", "--workers", "1", "--workloads", MISBEHAVING_REGISTRY,
         "--listen-http", "127.0.0.1:0", "--log-level", "WARNING"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, start_new_session=True,
    )
    endpoint, url = read_ready(process, READY_PREFIX)
    home = state / "home"
    home.mkdir()
    yield Both(process, endpoint, url, home)
    process.terminate()
    process.wait(60)


TRANSPORTS = ["zmq", "http"]


# 1. no tracebacks --------------------------------------------------------------------------------


def test_the_zmq_port_given_to_listener_is_one_line_naming_listen_http(both: Both) -> None:
    port = both.endpoint.rpartition(":")[2]
    done = both.cli("run-orders", "--listener", f"http://127.0.0.1:{port}/", "--timeout-s", "5", SAMPLE)
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    [line] = done.stderr.splitlines()
    assert "--listen-http" in line and "ZMQ" in line


def test_a_connection_reset_before_any_answer_names_the_zmq_endpoint_as_a_likely_cause() -> None:
    """What a ZMQ endpoint does to an HTTP request whose rest it has not read: it closes, and the
    close is a reset (here made so at once: SO_LINGER 0), before the client reads any answer."""
    with socket.create_server(("127.0.0.1", 0)) as server:

        def reset_the_first_connection() -> None:
            connection, _ = server.accept()
            connection.recv(16)
            connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            connection.close()

        peer = threading.Thread(target=reset_the_first_connection)
        peer.start()
        url = f"http://127.0.0.1:{server.getsockname()[1]}/"
        with pytest.raises(WorkerUnavailable) as refused:
            ListenerClient(url, "a" * 64, timeout_s=5).call("WorkerLookUp", {})
        peer.join(10)
    assert "reset" in str(refused.value) and "--listen-http" in str(refused.value) and "ZMQ" in str(refused.value)


@pytest.mark.parametrize("command", [
    ["run-orders", "--endpoint", "{endpoint}", SAMPLE],
    ["run-orders", "--endpoint", "{endpoint}", "--json", SAMPLE],
    ["run-orders", "--listener", "{url}", SAMPLE],
    ["signup", "--endpoint", "{endpoint}"],
    ["submit", "--endpoint", "{endpoint}", "--workload", "python-hello", "x" * 100000],
    ["verify", "--print-policy-template"],
    ["config", "--print"],
    ["--help"],
])
def test_a_closed_pipe_is_silent(both: Both, command: list[str]) -> None:
    argv = [part.format(endpoint=both.endpoint, url=both.url) for part in command]
    line = shlex.join([sys.executable, "-m", "avalon_worker", *argv])
    # `head -c1` reads one byte and goes: every later write meets a closed pipe.
    done = subprocess.run(f"{line} | head -c1 >/dev/null; echo ${{PIPESTATUS[0]}}", shell=True, executable="/bin/bash",
                          capture_output=True, text=True, timeout=90)
    for noise in ("Traceback", "BrokenPipe", "Broken pipe", "Exception ignored"):
        assert noise not in done.stderr, done.stderr
    assert done.stdout.strip() in ("0", "141"), done.stdout  # 141: as `cat` (128 + SIGPIPE)


# 3. one client, two transports --------------------------------------------------------------------


CLIENT_COMMANDS = [["signup"], ["submit", "--workload", "python-hello", "x"], ["run-orders", SAMPLE],
                   ["result", "00ff"]]


@pytest.mark.parametrize("command", CLIENT_COMMANDS)
@pytest.mark.parametrize("url,fragment", [
    ("tcp://127.0.0.1:7777", "is a ZMQ endpoint"),
    ("ftp://127.0.0.1:7777/", "write http://HOST:PORT/"),
    ("127.0.0.1:1947", "did you mean http://127.0.0.1:1947/?"),
])
def test_a_listener_url_of_the_wrong_kind_is_a_usage_error(both: Both, command: list[str], url: str,
                                                           fragment: str) -> None:
    done = both.cli(command[0], "--listener", url, *command[1:])
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert f"argument --listener: {url!r}" in done.stderr and fragment in done.stderr


@pytest.mark.parametrize("command", CLIENT_COMMANDS)
def test_endpoint_and_listener_together_is_a_usage_error(both: Both, command: list[str]) -> None:
    done = both.cli(command[0], "--endpoint", both.endpoint, "--listener", both.url, *command[1:])
    assert done.returncode == 2 and "not allowed with argument" in done.stderr


@pytest.mark.parametrize("command", CLIENT_COMMANDS[:3])
def test_nothing_listening_on_the_listener_is_retried_for_timeout_s(both: Both, command: list[str]) -> None:
    url = f"http://127.0.0.1:{free_port()}/"
    done = both.cli(command[0], "--listener", url, "--timeout-s", "2", *command[1:])
    assert done.returncode == 1
    lines = done.stderr.splitlines()
    assert lines[0] == f"avalon-worker: cannot connect to {url} yet (nothing listening?); retrying for up to 2 s"
    assert lines[-1] == (f"avalon-worker: no listener at {url}: no connection within 2 s "
                         "(is it running, and is the address right?)")
    assert len(lines) == 2


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_signup_over_both_transports_names_the_same_worker(both: Both, transport: str) -> None:
    done = both.cli("signup", *both.transport(transport))
    assert done.returncode == 0, done.stderr
    signup = json.loads(done.stdout)
    zmq_signup = json.loads(both.cli("signup", "--endpoint", both.endpoint).stdout)
    assert signup["verifying_key"] == zmq_signup["verifying_key"]
    assert signup["encryption_key"] == zmq_signup["encryption_key"]
    assert "encryption key signature: verified" in done.stderr


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_submit_over_both_transports(both: Both, transport: str) -> None:
    done = both.cli("submit", *both.transport(transport), "--workload", "python-hello", "World")
    assert (done.returncode, done.stdout) == (0, "Hello World\n"), done.stderr


def test_a_listener_worker_id_it_does_not_list_is_one_line(both: Both) -> None:
    done = both.cli("submit", "--listener", both.url, "--worker-id", "ab" * 32, "--workload", "python-hello", "x")
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert len(done.stderr.splitlines()) == 1, done.stderr


def test_worker_id_needs_the_listener(both: Both) -> None:
    done = both.cli("submit", "--endpoint", both.endpoint, "--worker-id", "ab", "--workload", "python-hello", "x")
    assert done.returncode == 2 and "--worker-id" in done.stderr and "--listener" in done.stderr


def test_key_file_modes(both: Both) -> None:
    """Kept keys: a file only its owner reads, in a directory only its owner enters."""
    done = both.cli("submit", "--listener", both.url, "--timeout-s", "2", "--workload", "sleep", "4")
    assert done.returncode == 1, done.stderr
    saved = list((both.home / "avalon-worker-requester").iterdir())
    assert saved and all(stat.S_IMODE(path.stat().st_mode) == 0o600 for path in saved)
    assert stat.S_IMODE((both.home / "avalon-worker-requester").stat().st_mode) == 0o700


# 4. results later ----------------------------------------------------------------------------------


def test_run_orders_shows_each_work_order_id(both: Both, tmp_path: Path) -> None:
    for transport in TRANSPORTS:
        done = both.cli("run-orders", *both.transport(transport), "--json", SAMPLE)
        assert done.returncode == 0, done.stderr
        ids = [json.loads(line)["workOrderId"] for line in done.stdout.splitlines()]
        assert len(ids) == 9 and len(set(ids)) == 9 and all(len(i) == 64 and int(i, 16) >= 0 for i in ids)
        table = both.cli("run-orders", *both.transport(transport), SAMPLE).stdout.splitlines()
        assert table[0].split()[0] == "id" and all(len(row.split()[0]) == 64 for row in table[1:10])


def test_a_pending_order_is_read_later_with_result(both: Both) -> None:
    done = both.cli("submit", "--listener", both.url, "--timeout-s", "1", "--workload", "sleep", "3")
    assert done.returncode == 1
    message, hint = done.stderr.splitlines()
    assert message.startswith("avalon-worker: error 5: still pending after ")
    waited = float(message.rsplit("after ", 1)[1].removesuffix(" s"))
    assert 1 <= waited < 3, "the time said is the time waited, the first call included"
    command = hint.removeprefix("  hint: read it later: ")
    assert command.startswith(f"avalon-worker result --listener {both.url} ")
    work_order_id = command.rsplit(" ", 1)[1]
    kept = both.home / "avalon-worker-requester" / f"{work_order_id}.json"
    assert kept.exists()
    assert "sessionKey" in json.loads(kept.read_text()) and "inData" not in kept.read_text()
    later = both.cli("result", "--listener", both.url, "--timeout-s", "30", work_order_id[:12])
    assert (later.returncode, later.stdout) == (0, "slept 3\n"), later.stderr
    assert not kept.exists(), "a result read: its keys are forgotten"
    again = both.cli("result", "--listener", both.url, work_order_id)
    assert again.returncode == 2 and f"no keys kept for work order {work_order_id}" in again.stderr


def test_result_without_listener_uses_the_one_the_order_went_to(both: Both) -> None:
    done = both.cli("submit", "--listener", both.url, "--timeout-s", "1", "--workload", "sleep", "2")
    work_order_id = done.stderr.rsplit(" ", 1)[1].strip()
    later = both.cli("result", work_order_id)
    assert (later.returncode, later.stdout) == (0, "slept 2\n"), later.stderr


def test_result_over_zmq_is_a_usage_error(both: Both) -> None:
    done = both.cli("result", "--endpoint", both.endpoint, "00ff")
    assert done.returncode == 2 and "--listener" in done.stderr and len(done.stderr.splitlines()) == 1


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_submit_json_names_the_order(both: Both, transport: str) -> None:
    done = both.cli("submit", *both.transport(transport), "--json", "--workload", "echo-result", "a", "b")
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    assert answer["outputs"] == [{"text": "ab"}] and len(answer["workOrderId"]) == 64
    signup = json.loads(both.cli("signup", "--endpoint", both.endpoint).stdout)
    assert answer["workerId"] == json.loads(both.cli("signup", "--listener", both.url).stdout)["worker_id"]
    assert signup["verifying_key"]


# 2. big inputs from files ------------------------------------------------------------------------------


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_big_input_from_a_file_and_one_from_stdin(both: Both, transport: str, tmp_path: Path) -> None:
    big = tmp_path / "big.txt"
    big.write_bytes(b"x" * (2 * 1024 * 1024))  # beyond the shell's argument limit
    done = both.cli("submit", *both.transport(transport), "--json", "--workload", "echo-result", "head-",
                    "--input-file", str(big), "--input-file", "-", stdin="-tail")
    assert done.returncode == 0, done.stderr[-2000:]
    [output] = json.loads(done.stdout)["outputs"]
    assert output["text"] == "head-" + "x" * (2 * 1024 * 1024) + "-tail"


def test_binary_input_and_output_stay_bytes(both: Both, tmp_path: Path) -> None:
    blob = tmp_path / "blob"
    blob.write_bytes(bytes(range(256)))
    done = both.cli("submit", "--endpoint", both.endpoint, "--json", "--workload", "echo-result", "--input-file", str(blob))
    import base64

    assert json.loads(done.stdout)["outputs"] == [{"base64": base64.b64encode(bytes(range(256))).decode()}]


@pytest.mark.parametrize("argv,fragment", [
    ([], "give the work order's inputs"),
    (["--input-file", "/nonexistent/file"], "--input-file: cannot read /nonexistent/file"),
    (["--input-file", "-", "--input-file", "-"], "--input-file - (standard input) can be given once"),
])
def test_input_mistakes_are_usage_errors(both: Both, argv: list[str], fragment: str) -> None:
    done = both.cli("submit", "--endpoint", both.endpoint, "--workload", "echo-result", *argv)
    assert done.returncode == 2 and fragment in done.stderr and len(done.stderr.splitlines()) == 1


def test_a_list_of_params_is_one_input_each(both: Both, tmp_path: Path) -> None:
    orders = tmp_path / "orders.json"
    orders.write_text(json.dumps({"workOrders": [{"workloadId": "echo-result", "params": ["a", "b"]},
                                                 {"workloadId": "echo-result", "params": {"k": 1}}]}))
    done = both.cli("run-orders", "--endpoint", both.endpoint, "--json", str(orders))
    records = [json.loads(line) for line in done.stdout.splitlines()]
    assert [r["result"] for r in records] == ["ab", '{"k": 1}']
    assert records[0]["input"] == '["a", "b"]'
    orders.write_text(json.dumps({"workOrders": [{"workloadId": "echo-result", "params": ["a", 1]}]}))
    bad = both.cli("run-orders", "--endpoint", both.endpoint, str(orders))
    assert bad.returncode == 2 and "one input item per string" in bad.stderr


# 6. summaries ----------------------------------------------------------------------------------------


def test_a_summary_with_nothing_verified_does_not_say_verified(both: Both, tmp_path: Path) -> None:
    orders = tmp_path / "orders.json"
    orders.write_text(json.dumps({"workOrders": [{"workloadId": "no-such-workload", "params": "x"}]}))
    done = both.cli("run-orders", "--endpoint", both.endpoint, str(orders))
    assert done.returncode == 1
    assert done.stdout.splitlines()[-1].startswith("0 of 1 work orders verified in ")
    assert "signatures and encryption verified" not in done.stdout


def test_slow_orders_get_an_honest_pace(both: Both, tmp_path: Path) -> None:
    orders = tmp_path / "orders.json"
    orders.write_text(json.dumps({"workOrders": [{"workloadId": "sleep", "params": "1.5"}]}))
    done = both.cli("run-orders", "--endpoint", both.endpoint, str(orders))
    summary = done.stdout.splitlines()[-2]
    assert summary.startswith("1 of 1 work orders verified in ") and "(0 work orders/s)" not in summary
    assert summary.endswith(" s per work order)"), summary


def test_a_pending_order_in_run_orders_is_shown_as_pending_with_what_to_do(both: Both, tmp_path: Path) -> None:
    orders = tmp_path / "orders.json"
    orders.write_text(json.dumps({"workOrders": [{"workloadId": "sleep", "params": "3"}]}))
    done = both.cli("run-orders", "--listener", both.url, "--timeout-s", "1", "--json", str(orders))
    assert done.returncode == 1
    [record] = [json.loads(line) for line in done.stdout.splitlines()]
    assert record["status"] == "pending"
    assert f"1 still pending: read each later with avalon-worker result --listener {both.url} ID" in done.stderr
    later = both.cli("result", record["workOrderId"])
    assert later.stdout == "slept 3\n", later.stderr


# 9. the README's curl lines, as written ------------------------------------------------------------


def test_the_readmes_curl_examples_work(both: Both) -> None:
    readme = (Path(__file__).parents[1] / "README.md").read_text(encoding="utf-8")
    lines = [line for line in readme.splitlines() if line.startswith("curl -s http://127.0.0.1:1947/")]
    assert [json.loads(line.split(" -d ")[1].strip("'"))["method"] for line in lines] == \
        ["WorkerLookUp", "WorkerRetrieve", "WorkOrderGetResult"]
    done = both.cli("submit", "--listener", both.url, "--json", "--workload", "python-hello", "curl")
    order = json.loads(done.stdout)
    answers = []
    for line in lines:
        line = (line.replace("http://127.0.0.1:1947/", both.url).replace("WORKER_ID", order["workerId"])
                .replace("WORK_ORDER_ID", order["workOrderId"]))
        ran = subprocess.run(["bash", "-c", line], capture_output=True, text=True, timeout=30)
        assert ran.returncode == 0, ran.stderr
        answers.append(json.loads(ran.stdout))
    assert answers[0]["result"]["ids"] == [order["workerId"]]
    assert answers[1]["result"]["details"]["workerTypeData"]["encryptionKey"]
    assert answers[2]["result"]["workOrderId"] == order["workOrderId"] and answers[2]["result"]["outData"]


# every command's error paths: exit 0, 1 or 2, and one line saying why --------------------------------

NOTHING_HERE = "{nothing}"  # a free port: nothing listens

# (argv, exit status, a fragment of the last line of stderr, or of stdout for exit 0)
ERROR_PATHS = [
    (["serve", "--workers", "-1"], 2, "argument --workers: must be >= 0, not -1"),
    (["serve", "--bind", "udp://127.0.0.1:7777", "--state-dir", "{tmp}/s"], 2, "cannot serve on"),
    (["serve", "--wokers", "2"], 2, "did you mean --workers?"),
    (["config", "--config", "{tmp}/missing.toml"], 2, "cannot read"),
    (["config", "--workers", "3"], 0, "workers = 3"),
    (["completion", "fish"], 2, "invalid choice: 'fish'"),
    (["completion", "bash"], 0, "complete -o filenames -F _avalon_worker avalon-worker"),
    (["run-workload", "no-such", "x"], 2, "no workload 'no-such' in the built-in registry"),
    (["run-workload", "--workloads", MISBEHAVING_REGISTRY, "boom", "x"], 1, "workload 'boom' raised ValueError"),
    (["run-workload", "python-hello", "x"], 0, "Hello x"),
    (["verify", "--endpoint", "{endpoint}", "--policy", "{tmp}/missing.json"], 2, "missing.json"),
    (["verify", "--endpoint", "tcp://127.0.0.1:" + NOTHING_HERE, "--timeout-s", "1", "--policy", "{policy}"], 1,
     "no worker at tcp://127.0.0.1:"),
    (["store", "migrate"], 2, "no work-order store: give --store LOCATION, or set AVALON_WORKER_STORE"),
    (["store", "migrate", "--store", "{tmp}"], 0, "schema version"),
    (["store", "migrate", "--store", "/proc/no/such/dir/x.sqlite3"], 2, "cannot open the work-order store"),
    (["listener", "--store", "{tmp}/x.sqlite3", "--listen-http", "127.0.0.1:0"], 2,
     "a listener of its own needs a store that worker hosts share"),
    (["pump", "--endpoint", "{endpoint}"], 2, "no work-order store"),
    (["result", "abcdef"], 2, "no keys kept for work order abcdef"),
    (["result", "not-hex"], 2, "'not-hex' is not a work-order id"),
    (["result", "--endpoint", "{endpoint}", "abcdef"], 2, "a result is read from a listener"),
]
for transport in TRANSPORTS:
    where = ["--endpoint", "{endpoint}"] if transport == "zmq" else ["--listener", "{url}"]
    dead = (["--endpoint", "tcp://127.0.0.1:" + NOTHING_HERE] if transport == "zmq"
            else ["--listener", "http://127.0.0.1:" + NOTHING_HERE + "/"])
    wrong = ["--endpoint", "http://127.0.0.1:1/"] if transport == "zmq" else ["--listener", "tcp://127.0.0.1:1"]
    nobody = "no worker at" if transport == "zmq" else "no listener at"
    ERROR_PATHS += [
        (["signup", *where], 0, '"verifying_key"'),
        (["signup", *wrong], 2, "argument --"),
        (["signup", *dead, "--timeout-s", "1"], 1, nobody),
        (["submit", *where, "--workload", "python-hello", "x"], 0, "Hello x"),
        (["submit", *where, "--workload", "no-such", "x"], 1, "error 2: workload 'no-such' is not registered"),
        (["submit", *where, "--workload", "python-hello"], 2, "give the work order's inputs"),
        (["submit", *wrong, "--workload", "python-hello", "x"], 2, "argument --"),
        (["submit", *dead, "--timeout-s", "1", "--workload", "python-hello", "x"], 1, nobody),
        (["run-orders", *where, "{sample}"], 0, "9 of 9 work orders verified"),
        (["run-orders", *where, "{tmp}/missing.json"], 2, "cannot read"),
        (["run-orders", *where, "{failing}"], 1, "0 of 1 work orders verified"),
        (["run-orders", *wrong, "{sample}"], 2, "argument --"),
        (["run-orders", *dead, "--timeout-s", "1", "{sample}"], 1, nobody),
        (["result", *wrong, "abcdef"], 2, "argument --"),
    ]


@pytest.mark.parametrize("argv,status,fragment", ERROR_PATHS, ids=[" ".join(case[0])[:60] for case in ERROR_PATHS])
def test_every_command_exits_0_1_or_2_with_one_line(both: Both, tmp_path: Path, argv: list[str], status: int,
                                                    fragment: str) -> None:
    failing = tmp_path / "failing.json"
    failing.write_text(json.dumps({"workOrders": [{"workloadId": "no-such", "params": "x"}]}))
    policy = tmp_path / "policy.json"
    template = both.cli("verify", "--print-policy-template").stdout
    policy.write_text(re.sub(r"REPLACE-[A-Za-z0-9-]+", "0" * 64, template))
    values = {"endpoint": both.endpoint, "url": both.url, "tmp": str(tmp_path), "sample": SAMPLE,
              "failing": str(failing), "policy": str(policy), "nothing": str(free_port())}
    done = both.cli(*[part.format(**values) for part in argv])
    assert done.returncode == status, (done.stdout, done.stderr)
    assert "Traceback" not in done.stderr or argv[0] == "run-workload", done.stderr  # its traceback is the point
    if status == 0:
        assert fragment in done.stdout, done.stdout
        return
    said = [line for line in done.stderr.splitlines() if line.startswith("avalon-worker")]
    if argv[0] == "run-orders" and status == 1 and "{failing}" in argv:  # the table says which failed, and why
        assert fragment in done.stdout and "FAILED" in done.stdout
        said.append("")
    else:
        assert fragment in said[-1], done.stderr
    # Besides the one line, only notices: "cannot connect ... yet; retrying", said at once while
    # it waits, and run-orders' "worker ID through URL" (stdout is the table).
    for line in said[:-1]:
        assert "yet (nothing listening?); retrying for up to" in line or " through http://" in line, done.stderr

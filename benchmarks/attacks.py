#!/usr/bin/env python3
"""A legitimate client's latency and the worker's memory while hostile clients attack.

ZMQ (the default): starts `avalon-worker serve --workers 2` (RSA-2048), then for each attack of
the endpoint's threat table runs it from threads of this process while a legitimate client sends
hello work orders one at a time, and prints that client's p50 / max latency and the supervisor's
largest resident set size, next to a run with no attack. The descriptor-limit attack lowers the
supervisor's RLIMIT_NOFILE to 1,024 first, as on a default system.

HTTP (`--http`): starts `serve --listen-http` the same way and measures, against its front-door
process (the listener, the pump and the SQLite store):
- a legitimate requester's latency (our `ListenerClient`, hello orders one at a time, each a
  new connection as Avalon's SDK makes them) unloaded, then while 500 slowloris connections send
  a header line every second and open a new connection whenever one is closed, and how many the
  server closed;
- the front door's resident set size before, during and after 16 connections each upload a
  31 MiB body in 1 MiB pieces (a new upload whenever one is answered);
- how long a submit with a 3,000-digit workOrderId takes to be refused, and the next order to
  complete, on this SQLite front door and on a stateless listener over PostgreSQL (when the
  server binaries are installed);
- how long after a `kill -9` of the front door the HTTP API answers again.

Run by hand: `python benchmarks/attacks.py [--http] [--seconds S]`. Numbers are noisy on a
shared machine. To measure another version of the code, put its `src` first on PYTHONPATH.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import secrets
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from avalon_worker._cli.console import READY_PREFIX
from avalon_worker._cli.demo import read_ready, start_worker_process
from avalon_worker._internal import zmtp
from avalon_worker.client import WorkerClient
from avalon_worker.front.listener_client import ListenerClient

HELLO_READY = zmtp.greeting() + zmtp.ready(b"DEALER")


def connect(endpoint: str) -> socket.socket:
    host, port = endpoint.removeprefix("tcp://").rsplit(":", 1)
    sock = socket.create_connection((host, int(port)), timeout=5)
    sock.sendall(HELLO_READY)
    return sock


def flood(endpoint: str, data: bytes, stop: threading.Event) -> None:
    """Send `data` again and again on one connection, never reading, until told to stop."""
    while not stop.is_set():
        try:
            with connect(endpoint) as sock:
                while not stop.is_set():
                    sock.sendall(data)
        except OSError:
            time.sleep(0.05)  # dropped: come back, as an attacker would


def partial(endpoint: str, stop: threading.Event) -> None:
    """Most of a 100 MiB frame, then nothing."""
    chunk = b"x" * (1 << 20)
    while not stop.is_set():
        try:
            with connect(endpoint) as sock:
                sock.sendall(b"\x02" + struct.pack(">Q", 100 << 20))
                for _ in range(90):
                    sock.sendall(chunk)
                stop.wait()
        except OSError:
            time.sleep(0.05)


def idle(endpoint: str, stop: threading.Event, count: int = 1100) -> None:
    """`count` connections that finish their handshake and say nothing more."""
    held = []
    for _ in range(count):
        try:
            held.append(connect(endpoint))
        except OSError:
            break
    stop.wait()
    for sock in held:
        sock.close()


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as handle:
        return next(int(line.split()[1]) / 1024 for line in handle if line.startswith("VmRSS:"))


def measure(endpoint: str, pid: int, seconds: float, attack: Callable[[threading.Event], None] | None, threads: int) -> str:
    stop = threading.Event()
    workers = [threading.Thread(target=attack, args=(stop,), daemon=True) for _ in range(threads if attack else 0)]
    for worker in workers:
        worker.start()
    time.sleep(min(2.0, seconds / 3))  # let the attack build up
    latencies, failures, peak = [], 0, rss_mib(pid)
    with WorkerClient(endpoint, timeout_s=10) as client:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            start = time.perf_counter()
            try:
                ok = client.submit("python-hello", [b"legit"]) == [b"Hello legit"]
            except Exception:
                ok = False
            latencies.append((time.perf_counter() - start) * 1000)
            failures += not ok
            peak = max(peak, rss_mib(pid))
    stop.set()
    for worker in workers:
        worker.join(timeout=10)
    return (f"{len(latencies)} orders, {failures} failed, p50 {statistics.median(latencies):.1f} ms, "
            f"max {max(latencies):.0f} ms, supervisor RSS up to {peak:.0f} MiB")


# HTTP ---------------------------------------------------------------------------------------------


def start_http_worker(state: str) -> tuple[subprocess.Popen[str], str, int]:
    """`serve --listen-http` (2 worker processes, RSA-2048); the process, its URL, the front door's pid."""
    command = [sys.executable, "-m", "avalon_worker", "serve", "--bind", "tcp://127.0.0.1:*", "--state-dir", state,
               "--rsa-bits", "2048", "--workers", "2", "--attestation", "none", "--log-level", "ERROR",
               "--listen-http", "127.0.0.1:0", "--insecure-reuse-session-iv"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, start_new_session=True)
    _, url = read_ready(process, READY_PREFIX)
    return process, url, front_door(process.pid)


def front_door(serve_pid: int, other_than: int = 0, wait_s: float = 60.0) -> int:
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        for pid in _children(serve_pid):
            try:
                if b"avalon_worker._cli.front_door" in Path(f"/proc/{pid}/cmdline").read_bytes() and pid != other_than:
                    return pid
            except OSError:
                pass
        time.sleep(0.02)
    return 0


def _children(pid: int) -> list[int]:
    found = []
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/children") as handle:
            found += [int(item) for item in handle.read().split()]
    return found


def post(url: str, body: bytes, timeout_s: float = 30.0) -> dict[str, Any]:
    request = urllib.request.Request(url, body, {"Content-Type": "application/json"})
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(request, timeout=timeout_s) as response:
        answer: dict[str, Any] = json.loads(response.read())
    return answer


def legit_orders(url: str, worker_id: str, seconds: float, pid: int) -> tuple[list[float], int, float]:
    """Hello orders one at a time for `seconds`: latencies (ms), failures, the largest RSS of `pid`."""
    latencies, failures, peak = [], 0, rss_mib(pid)
    with ListenerClient(url, worker_id, timeout_s=30) as client:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            started = time.perf_counter()
            try:
                ok = client.submit("python-hello", [b"legit"]) == [b"Hello legit"]
            except Exception:
                ok = False
            latencies.append((time.perf_counter() - started) * 1000)
            failures += not ok
            peak = max(peak, rss_mib(pid))
    return latencies, failures, peak


class Slowloris:
    """`count` connections that send a request's first line, then a header line every second,
    never finishing; a closed one is replaced at once. Counts the closes it sees."""

    def __init__(self, port: int, count: int) -> None:
        self.port, self.count = port, count
        self.closed = 0
        self.most_open = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _open(self) -> socket.socket | None:
        try:
            sock = socket.create_connection(("127.0.0.1", self.port), timeout=5)
            sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\n")
            sock.setblocking(False)
            return sock
        except OSError:
            return None

    def _run(self) -> None:
        held = [sock for _ in range(self.count) if (sock := self._open()) is not None]
        while not self.stop.is_set():
            self.most_open = max(self.most_open, len(held))
            kept = []
            for sock in held:
                try:
                    sock.send(b"X-Slow: 1\r\n")
                    if sock.recv(4096) == b"":
                        raise ConnectionResetError
                except BlockingIOError:
                    kept.append(sock)
                    continue
                except OSError:
                    pass
                sock.close()
                self.closed += 1
                if (again := self._open()) is not None:
                    kept.append(again)
            held = kept + [sock for _ in range(self.count - len(kept)) if (sock := self._open()) is not None]
            self.stop.wait(1.0)
        for sock in held:
            sock.close()


def slowloris_run(url: str, worker_id: str, pid: int, seconds: float) -> list[str]:
    port = int(url.rstrip("/").rsplit(":", 1)[1])
    quiet, _, _ = legit_orders(url, worker_id, seconds, pid)
    attack = Slowloris(port, 500)
    time.sleep(2.0)
    loaded, failures, _ = legit_orders(url, worker_id, seconds, pid)
    attack.stop.set()
    attack.thread.join(30)
    ratio = statistics.median(loaded) / statistics.median(quiet)
    return [
        f"legitimate hello orders, unloaded: {len(quiet)} orders, p50 {statistics.median(quiet):.1f} ms, max {max(quiet):.0f} ms",
        f"the same under 500 slowloris connections: {len(loaded)} orders, {failures} failed, p50 "
        f"{statistics.median(loaded):.1f} ms ({ratio:.2f}x unloaded), max {max(loaded):.0f} ms; the attacker held up "
        f"to {attack.most_open} connections at once and saw {attack.closed} closed by the server",
    ]


def slow_upload(port: int, size: int, piece: int, pause_s: float, stop: threading.Event, counts: dict[str, int]) -> None:
    """Upload `size`-byte bodies `piece` bytes every `pause_s`, one after another, until told to stop."""
    padding = size - 80
    body_start = b'{"jsonrpc":"2.0","id":1,"method":"WorkerLookUp","params":{"padding":"'
    while not stop.is_set():
        body_end = b'"}}'
        total = len(body_start) + padding + len(body_end)
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
                sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % total + body_start)
                sock.setblocking(False)
                sent = 0
                answered = b""
                while sent < padding and not stop.is_set():
                    chunk = min(piece, padding - sent)
                    sock.setblocking(True)
                    sock.sendall(b"a" * chunk)
                    sock.setblocking(False)
                    sent += chunk
                    try:
                        answered = sock.recv(65536)
                    except BlockingIOError:
                        answered = b""
                    if answered:  # refused before the end
                        break
                    stop.wait(pause_s)
                if not answered and not stop.is_set():
                    sock.setblocking(True)
                    sock.sendall(body_end)
                    answered = sock.recv(65536)
                counts["answered whole" if sent >= padding else "refused early"] += 1
        except OSError:
            counts["refused early"] += 1
        stop.wait(0.2)


def upload_run(url: str, pid: int, seconds: float) -> list[str]:
    port = int(url.rstrip("/").rsplit(":", 1)[1])
    before = rss_mib(pid)
    stop = threading.Event()
    counts = {"answered whole": 0, "refused early": 0}
    threads = [threading.Thread(target=slow_upload, args=(port, 31 << 20, 1 << 20, 0.25, stop, counts), daemon=True)
               for _ in range(16)]
    for thread in threads:
        thread.start()
    peak, deadline = before, time.monotonic() + seconds
    while time.monotonic() < deadline:
        peak = max(peak, rss_mib(pid))
        time.sleep(0.05)
    stop.set()
    for thread in threads:
        thread.join(60)
    time.sleep(1.0)
    after_1 = rss_mib(pid)
    time.sleep(4.0)
    after_5 = rss_mib(pid)
    return [f"16 connections uploading 31 MiB bodies in 1 MiB pieces for {seconds:.0f} s: front door RSS {before:.0f} MiB "
            f"before, up to {peak:.0f} MiB, {after_1:.0f} MiB 1 s after, {after_5:.0f} MiB 5 s after; uploads answered "
            f"whole {counts['answered whole']}, refused before the end {counts['refused early']}"]


def long_id_run(url: str, worker_id: str, label: str) -> list[str]:
    """A 3,000-digit workOrderId, then an ordinary order: how long each takes."""
    with ListenerClient(url, worker_id, timeout_s=60) as client:
        client.submit("python-hello", [b"warm"])
        body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "WorkOrderSubmit", "params": {
            "workOrderId": secrets.token_hex(1500), "workerId": worker_id, "requesterId": "ab" * 32,
            "requesterNonce": "cd" * 16, "responseTimeoutMSecs": 5000}}).encode()
        started = time.perf_counter()
        try:
            answer = post(url, body, 60)
            said = f"error {answer.get('error', {}).get('code')}"
        except OSError as exc:
            said = f"no answer ({type(exc).__name__})"
        refused_ms = (time.perf_counter() - started) * 1000
        started = time.perf_counter()
        ok = client.submit("python-hello", [b"next"]) == [b"Hello next"]
        next_ms = (time.perf_counter() - started) * 1000
    return [f"{label}: a 3,000-digit workOrderId answered {said} in {refused_ms:.1f} ms; the next order "
            f"{'verified' if ok else 'FAILED'} in {next_ms:.1f} ms"]


def kill_run(process: subprocess.Popen[str], url: str, pid: int, rounds: int = 3) -> list[str]:
    lines = []
    for _ in range(rounds):
        os.kill(pid, signal.SIGKILL)
        killed = time.perf_counter()
        try:
            answer = post(url, b'{"jsonrpc":"2.0","id":1,"method":"WorkerLookUp","params":{}}', timeout_s=60)
            back = f"answered WorkerLookUp ({len(answer['result']['ids'])} worker) {time.perf_counter() - killed:.2f} s after"
        except (OSError, KeyError) as exc:
            back = f"gave no answer within 60 s ({type(exc).__name__}); serve {'runs' if process.poll() is None else 'exited'}"
        lines.append(f"kill -9 of the front door: the HTTP API {back}")
        pid = front_door(process.pid, other_than=pid, wait_s=5)
        if not pid:
            break
        time.sleep(1.0)
    return lines


def postgres_long_id() -> list[str]:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    from avalon_worker.front.door import PUMP_READY_PREFIX
    from avalon_worker.front.door import READY_PREFIX as LISTENER_READY_PREFIX

    from postgres_server import PostgresServer, PostgresUnavailable

    try:
        server = PostgresServer()
        server.start()
    except PostgresUnavailable as exc:
        return [f"PostgreSQL: skipped ({exc})"]
    processes: list[subprocess.Popen[str]] = []
    try:
        url = server.url()

        def start(command: list[str], prefix: str) -> str:
            process = subprocess.Popen([sys.executable, "-m", "avalon_worker", *command], stdout=subprocess.PIPE,
                                       text=True, start_new_session=True)
            processes.append(process)
            assert process.stdout is not None
            while not (line := process.stdout.readline()).startswith(prefix):
                if not line:
                    raise SystemExit(f"{command[0]} stopped before it was ready")
            return line[len(prefix):].strip()

        with tempfile.TemporaryDirectory() as state:
            worker_id = start(["serve", "--bind", "tcp://127.0.0.1:*", "--state-dir", state, "--rsa-bits", "2048",
                               "--workers", "1", "--attestation", "none", "--log-level", "ERROR", "--store", url],
                              PUMP_READY_PREFIX)
            listener = start(["listener", "--store", url, "--listen-http", "127.0.0.1:0", "--log-level", "ERROR"],
                             LISTENER_READY_PREFIX) + "/"
            return long_id_run(listener, worker_id, "listener on PostgreSQL")
    finally:
        for process in processes:
            process.terminate()
            process.wait(60)
        server.remove()


def http_main(seconds: float) -> int:
    with tempfile.TemporaryDirectory() as state:
        process, url, pid = start_http_worker(state)
        try:
            [worker_id] = ListenerClient(url, "", 30).lookup()
            for line in [*slowloris_run(url, worker_id, pid, seconds), *upload_run(url, pid, max(seconds, 20.0)),
                         *long_id_run(url, worker_id, "SQLite front door"), *kill_run(process, url, pid)]:
                print(line, flush=True)
        finally:
            process.terminate()
            process.wait(timeout=60)
    for line in postgres_long_id():
        print(line, flush=True)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="seconds of legitimate orders per attack")
    parser.add_argument("--http", action="store_true", help="attack the HTTP front door instead of the ZMQ endpoint")
    args = parser.parse_args()
    resource.setrlimit(resource.RLIMIT_NOFILE, (8192, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
    if args.http:
        return http_main(args.seconds)
    with tempfile.TemporaryDirectory() as state:
        process, endpoint = start_worker_process(state, ["--rsa-bits", "2048", "--workers", "2", "--attestation", "none",
                                                         "--log-level", "WARNING"])
        try:
            attacks: list[tuple[str, Callable[[threading.Event], None] | None, int]] = [
                ("no attack", None, 0),
                ("2 connections send PINGs and never read", lambda s: flood(endpoint, zmtp.command(b"PING", b"\0\0") * 10_000, s), 2),
                ("8 connections each send most of a 100 MiB frame", lambda s: partial(endpoint, s), 8),
                ("4 connections flood 3-byte unknown commands", lambda s: flood(endpoint, zmtp.command(b"X") * 50_000, s), 4),
                ("1,100 idle connections, supervisor limited to 1,024 descriptors", lambda s: idle(endpoint, s), 1),
            ]
            for name, attack, threads in attacks:
                if threads == 1:
                    resource.prlimit(process.pid, resource.RLIMIT_NOFILE, (1024, 1024))
                print(f"{name}: {measure(endpoint, process.pid, args.seconds, attack, threads)}", flush=True)
        finally:
            process.terminate()
            process.wait(timeout=60)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

#!/usr/bin/env python3
"""A legitimate client's latency and the supervisor's memory while hostile clients attack.

Starts `avalon-worker serve --workers 2` (RSA-2048), then for each attack of the endpoint's
threat table runs it from threads of this process while a legitimate client sends hello work
orders one at a time, and prints that client's p50 / max latency and the supervisor's largest
resident set size, next to a run with no attack. The descriptor-limit attack lowers the
supervisor's RLIMIT_NOFILE to 1,024 first, as on a default system.

Run by hand: `python benchmarks/attacks.py [--seconds S]`. Numbers are noisy on a shared machine.
"""

from __future__ import annotations

import argparse
import resource
import socket
import statistics
import struct
import tempfile
import threading
import time
from collections.abc import Callable

from avalon_worker._internal import zmtp
from avalon_worker.cli import start_worker_process
from avalon_worker.client import WorkerClient

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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="seconds of legitimate orders per attack")
    args = parser.parse_args()
    resource.setrlimit(resource.RLIMIT_NOFILE, (8192, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
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

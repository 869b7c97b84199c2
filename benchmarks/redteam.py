#!/usr/bin/env python3
"""Faults under load on the HTTP path: is every accepted order delivered, and how many ran twice?

Requester threads submit orders as Avalon's SDK does (without waiting: "pending"), round robin
over the listeners and workers, while the run kills or restarts one process after another. Then
every order that was accepted (answered "pending") is polled until done, its result verified and
decrypted (our own requester code), and the `tally` workload's record (benchmarks/workloads: one
line per run of an order) says how many orders ran more than once.

- `sqlite`: one `serve --listen-http` host (2 worker processes, store in its state directory);
  faults: kill -9 of a worker process, of the front door (serve starts it again), of the whole
  host (then started again on the same state directory and port).
- `postgres` (when PostgreSQL's server binaries are installed): two worker hosts (`serve
  --store`) and two stateless listeners on one PostgreSQL; faults: kill -9 of a worker process,
  of a host's pump (its front door), of a whole host (started again), of a listener (started
  again), and a PostgreSQL crash (`pg_ctl stop -m immediate`, started again after a second).

Run by hand: `python benchmarks/redteam.py [--only sqlite|postgres] [--pause-s S]`; it prints one
line per fault and the counts. To measure another version of the code, put its `src` first on
PYTHONPATH.
"""

from __future__ import annotations

import argparse
import collections
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from avalon_worker import jsonio
from avalon_worker.front.door import PUMP_READY_PREFIX
from avalon_worker.front.door import READY_PREFIX as FRONT_READY_PREFIX
from avalon_worker.front.door import READY_PREFIX as LISTENER_READY_PREFIX
from avalon_worker.front.listener_client import ListenerClient
from avalon_worker.requester import PendingWorkOrder, WorkerInfo, build_work_order, open_result

HERE = Path(__file__).resolve().parent
REGISTRY = str(HERE / "workloads" / "workloads.json")
WAIT_S = 300.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Service:
    """A process group we started, and how to start it again."""

    command: list[str]
    prefix: str
    env: dict[str, str]
    process: subprocess.Popen[str] | None = None
    said: str = ""

    def start(self) -> Service:
        self.process = subprocess.Popen(self.command, stdout=subprocess.PIPE, text=True, start_new_session=True,
                                        env=self.env)
        assert self.process.stdout is not None
        while not (line := self.process.stdout.readline()).startswith(self.prefix):
            if not line:
                raise SystemExit(f"{self.command[3]} stopped before it was ready (exit {self.process.wait()})")
        self.said = line[len(self.prefix):].strip()
        threading.Thread(target=self.process.stdout.read, daemon=True).start()
        return self

    def kill_all(self) -> None:
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(60)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.kill_all()

    def children(self) -> list[int]:
        assert self.process is not None
        found = []
        for task in os.listdir(f"/proc/{self.process.pid}/task"):
            found += [int(pid) for pid in Path(f"/proc/{self.process.pid}/task/{task}/children").read_text().split()]
        return found

    def child(self, front_door: bool) -> int:
        for pid in self.children():
            try:
                if (b"avalon_worker._cli.front_door" in Path(f"/proc/{pid}/cmdline").read_bytes()) == front_door:
                    return pid
            except OSError:
                pass
        return 0


def avalon(*args: str) -> list[str]:
    return [sys.executable, "-m", "avalon_worker", *args]


def serve_command(state: Path, *extra: str) -> list[str]:
    return avalon("serve", "--bind", "tcp://127.0.0.1:*", "--state-dir", str(state), "--rsa-bits", "2048",
                  "--attestation", "none", "--workers", "2", "--log-level", "ERROR", "--workloads", REGISTRY,
                  "--lease-s", "3", "--heartbeat-s", "1", *extra)


@dataclass
class Load:
    """Requesters submitting orders round robin until stopped; what was accepted."""

    listeners: list[str]
    workers: list[WorkerInfo]
    accepted: list[tuple[str, WorkerInfo, PendingWorkOrder, bytes]] = field(default_factory=list)
    refused: collections.Counter[str] = field(default_factory=collections.Counter)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self, threads: int = 4) -> list[threading.Thread]:
        started = [threading.Thread(target=self._submit, args=(n,), daemon=True) for n in range(threads)]
        for thread in started:
            thread.start()
        return started

    def _submit(self, number: int) -> None:
        sent = 0
        while not self.stop.is_set():
            url = self.listeners[(sent + number) % len(self.listeners)]
            worker = self.workers[(sent // len(self.listeners) + number) % len(self.workers)]
            tag = f"r{number}-{sent}".encode()
            sent += 1
            pending = build_work_order(worker, "tally", [tag])
            try:
                answer = ListenerClient(url, worker.worker_id, 10).post(jsonio.dumps(pending.request))
            except Exception as exc:  # the listener is down: not accepted
                self.refused[type(exc).__name__] += 1
                time.sleep(0.05)
                continue
            code = (answer.get("error") or {}).get("code")
            if code == 5 or "result" in answer:
                self.accepted.append((url, worker, pending, tag))
            else:
                self.refused[f"error {code}"] += 1
            time.sleep(0.01)


def settle(load: Load, listener_of: Callable[[str], str], tally: Path) -> str:
    """Poll every accepted order until done; the counts, in one line."""
    delivered, failed, lost = 0, collections.Counter[str](), 0
    deadline = time.monotonic() + WAIT_S
    for url, worker, pending, tag in load.accepted:
        client = ListenerClient(listener_of(url), worker.worker_id, 30)
        answer: dict[str, Any] = {}
        while time.monotonic() < deadline:
            try:
                answer = client.call("WorkOrderGetResult", {"workOrderId": pending.work_order_id})
            except Exception:
                time.sleep(0.5)
                continue
            if (answer.get("error") or {}).get("code") != 5:
                break
            time.sleep(0.2)
        try:
            if open_result(pending, answer, worker) == [b"tallied " + tag]:
                delivered += 1
                continue
        except Exception as exc:
            failed[str(exc)[:80]] += 1
            continue
        lost += 1
    runs = collections.Counter(tally.read_text().split()) if tally.exists() else collections.Counter()
    accepted_tags = {tag.decode() for *_, tag in load.accepted}
    twice = sum(1 for tag, count in runs.items() if count > 1 and tag in accepted_tags)
    unaccepted_ran = sum(1 for tag in runs if tag not in accepted_tags)
    return (f"accepted {len(load.accepted)}, delivered and verified {delivered}, failed {sum(failed.values())} "
            f"{dict(failed) if failed else ''}, lost {lost}; ran twice {twice} (runs {sum(runs.values())}); "
            f"refused at submit {sum(load.refused.values())} {dict(load.refused)}; ran though not accepted {unaccepted_ran}")


def under_load(load: Load, pause_s: float, name: str, faults: list[tuple[str, Callable[[], Any]]]) -> None:
    """Run `load` with each fault `pause_s` after the one before, and `pause_s` more at the end."""
    threads = load.run()
    try:
        for what, fault in faults:
            time.sleep(pause_s)
            fault()
            print(f"{name}: {what}; {len(load.accepted)} accepted so far", flush=True)
        time.sleep(pause_s)
    finally:
        load.stop.set()
        for thread in threads:
            thread.join(60)


def worker_info(url: str, worker_id: str) -> WorkerInfo:
    return ListenerClient(url, worker_id, 30).worker()


def sqlite_run(root: Path, pause_s: float) -> None:
    tally = root / "tally"
    env = {**os.environ, "AVALON_TALLY_FILE": str(tally)}
    port = free_port()
    host = Service(serve_command(root / "state", "--listen-http", f"127.0.0.1:{port}"), FRONT_READY_PREFIX, env).start()
    url = f"http://127.0.0.1:{port}/"
    [worker_id] = ListenerClient(url, "", 30).lookup()
    load = Load([url], [worker_info(url, worker_id)])
    under_load(load, pause_s, "sqlite", [
        ("killed a worker process", lambda: os.kill(host.child(front_door=False), signal.SIGKILL)),
        ("killed the front door", lambda: os.kill(host.child(front_door=True), signal.SIGKILL)),
        ("killed the whole host, started it again", lambda: (host.kill_all(), time.sleep(1), host.start())),
    ])
    try:
        print(f"sqlite: {settle(load, lambda u: u, tally)}", flush=True)
    finally:
        host.stop()


def postgres_run(root: Path, pause_s: float) -> None:
    sys.path.insert(0, str(HERE.parent / "tests"))
    from postgres_server import PostgresServer, PostgresUnavailable

    try:
        server = PostgresServer(fsync=True)
        server.start()
    except PostgresUnavailable as exc:
        print(f"postgres: skipped ({exc})")
        return
    tally = root / "tally"
    env = {**os.environ, "AVALON_TALLY_FILE": str(tally)}
    store = server.url()
    hosts = [Service(serve_command(root / name, "--store", store), PUMP_READY_PREFIX, env).start() for name in ("alpha", "beta")]
    ports = [free_port(), free_port()]
    listeners = [Service(avalon("listener", "--store", store, "--listen-http", f"127.0.0.1:{port}", "--log-level", "ERROR",
                                "--stale-after-s", "10"), LISTENER_READY_PREFIX, env).start() for port in ports]
    urls = [f"http://127.0.0.1:{port}/" for port in ports]
    load = Load(urls, [worker_info(urls[0], host.said) for host in hosts])
    under_load(load, pause_s, "postgres", [
        ("killed a worker process of alpha", lambda: os.kill(hosts[0].child(front_door=False), signal.SIGKILL)),
        ("killed alpha's pump (its front door)", lambda: os.kill(hosts[0].child(front_door=True), signal.SIGKILL)),
        ("killed the whole host beta, started it again", lambda: (hosts[1].kill_all(), hosts[1].start())),
        ("killed listener 1, started it again", lambda: (listeners[0].kill_all(), time.sleep(1), listeners[0].start())),
        ("crashed PostgreSQL, started it again", lambda: (server.stop("immediate"), time.sleep(1), server.start())),
    ])
    try:
        print(f"postgres: {settle(load, lambda u: urls[1], tally)}", flush=True)
    finally:
        for service in hosts + listeners:
            service.stop()
        server.remove()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=("sqlite", "postgres"), help="one deployment (default: both)")
    parser.add_argument("--pause-s", type=float, default=4.0, help="seconds of load between two faults")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="avalon-redteam-") as root:
        if args.only in (None, "sqlite"):
            sqlite_run(Path(root) / "sqlite", args.pause_s)
        if args.only in (None, "postgres"):
            postgres_run(Path(root) / "postgres", args.pause_s)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

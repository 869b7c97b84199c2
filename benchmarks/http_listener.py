#!/usr/bin/env python3
"""Work orders per second through the HTTP listener on its SQLite store and on a shared
PostgreSQL, next to direct ZMQ, in the same run; and what the store costs per order.

One `avalon-worker serve --listen-http` (RSA-2048 unless `--rsa-bits` says otherwise, `--workers N`) is driven three ways, in turn,
for `--rounds` rounds (the figures are the median round's):
- direct: `throughput.py`'s load generator over ZMQ (fresh session key per order, python-hello);
- HTTP: a load generator process (plain keep-alive HTTP/1.1 connections) that submits each
  order with `WorkOrderSubmit` (it waits for the result within the call) and then fetches it
  with `WorkOrderGetResult`, as Avalon's SDK does; every order has its own workOrderId and
  session key, so each is a new row in the store and a fresh RSA unwrap for the worker;
- HTTP through PostgreSQL: the same load against an `avalon-worker listener` in front of a
  second worker of the same size started with `serve --store postgresql://…` (it pulls its
  orders), on a PostgreSQL server started here from Debian's binaries (fsync on), as two hosts
  of a multi-host deployment would run, only on one machine (skipped, saying why, without
  PostgreSQL); CPU per order of the pump, the listener and PostgreSQL's processes is counted.
  Each deployment's PostgreSQL path first runs one untimed round, after which its database is
  vacuumed and analyzed, as autovacuum does once a busy table is a minute old: the rounds
  measure a table in its steady state, not the plans PostgreSQL made while the table was empty
  (for its first minute, a complete's plan scanned the whole table: 345 against 182 µs of
  statement time per order, one run). Where the server has `pg_stat_statements` (Debian's
  package does), the statements each deployment's database ran in the timed rounds are counted:
  statements per order and statement time per order, steadier than CPU on a shared machine;
- the HTTP floor: the listener's own HTTP server answering every request with a fixed body
  (`_http_floor.py`, no JSON, store or worker) under the same load, in every round: what the two
  HTTP requests of an order cost before any of the listener's work; beside it, each role's CPU
  per order and the part of it spent in the kernel (system CPU);
- the store alone: the per-order sequence (submit and commit, lease, complete, read) on a
  SQLite file like the listener's, one order at a time, timed per operation.

Run by hand: `python benchmarks/http_listener.py` (`--write FILE` saves the Markdown too).
`--baseline REF` also starts both HTTP paths from a worktree of a git ref and runs them in
every round, alternating with this tree's: before and after, under the same load.
The machine is shared and small: compare the ratios measured in one run.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import select
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import throughput

from avalon_worker import jsonio
from avalon_worker._cli.console import READY_PREFIX
from avalon_worker._cli.demo import read_ready
from avalon_worker.client import WorkerClient
from avalon_worker.requester import WorkerInfo, build_work_order, open_result
from avalon_worker.store import Completion, NewOrder
from avalon_worker.store.sqlite import SQLiteStore

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from postgres_server import PostgresServer, PostgresUnavailable  # noqa: E402 (the tests' throwaway server)


def start_worker(state_dir: str, workers: int, bits: int = 2048, env: dict[str, str] | None = None) -> tuple[subprocess.Popen[str], str, str]:
    command = [sys.executable, "-m", "avalon_worker", "serve", "--bind", "tcp://127.0.0.1:*", "--state-dir", state_dir,
               "--rsa-bits", str(bits), "--workers", str(workers), "--attestation", "none", "--log-level", "ERROR",
               "--listen-http", "127.0.0.1:0"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, start_new_session=True, env=env)
    endpoint, url = read_ready(process, READY_PREFIX)
    return process, endpoint, url


def start_postgres_path(state_dir: str, workers: int, store_url: str, bits: int = 2048,
                        env: dict[str, str] | None = None) -> tuple[list[subprocess.Popen[str]], str, dict[str, list[int]]]:
    """A worker host pulling from `store_url` and a stateless listener: the processes, the
    listener's URL and the processes by role."""
    from avalon_worker.front.door import PUMP_READY_PREFIX
    from avalon_worker.front.door import READY_PREFIX as LISTENER_READY_PREFIX

    def start(command: list[str], prefix: str) -> tuple[subprocess.Popen[str], str]:
        process = subprocess.Popen([sys.executable, "-m", "avalon_worker", *command], stdout=subprocess.PIPE, text=True,
                                   start_new_session=True, env=env)
        assert process.stdout is not None
        while not (line := process.stdout.readline()).startswith(prefix):
            if not line:
                raise SystemExit(f"{command[0]} stopped before it was ready (exit {process.wait()})")
        return process, line[len(prefix):].strip()

    host, _ = start(["serve", "--bind", "tcp://127.0.0.1:*", "--state-dir", state_dir, "--rsa-bits", str(bits),
                     "--workers", str(workers), "--attestation", "none", "--log-level", "ERROR", "--store", store_url],
                    PUMP_READY_PREFIX)
    listener, url = start(["listener", "--store", store_url, "--listen-http", "127.0.0.1:0", "--log-level", "ERROR"],
                          LISTENER_READY_PREFIX)
    children = throughput._children(host.pid)
    pump = [pid for pid in children if b"avalon_worker._cli.front_door" in Path(f"/proc/{pid}/cmdline").read_bytes()]
    roles = {"supervisor": [host.pid], "workers": [pid for pid in children if pid not in pump], "pump": pump,
             "listener": [listener.pid]}
    return [host, listener], url + "/", roles


def postgres_processes(server: PostgresServer) -> list[int]:
    postmaster = int((server.data / "postmaster.pid").read_text().split()[0])
    return [postmaster, *throughput._children(postmaster)]


# the HTTP load generator -------------------------------------------------------------------------


class _Connection:
    """One keep-alive HTTP/1.1 connection that sends a prepared request and reads one response
    (Content-Length framing only: what the listener sends). Plain sockets, no HTTP library, so
    that the load generator takes little of the cores it shares with the worker."""

    def __init__(self, host: str, port: int) -> None:
        self.sock = socket.create_connection((host, port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.setblocking(False)
        self.buffer = b""

    def send(self, request: bytes) -> None:
        self.sock.setblocking(True)
        self.sock.sendall(request)
        self.sock.setblocking(False)

    def response(self) -> bytes | None:
        """Read what has arrived; the body of a complete response, or None for not yet."""
        chunk = self.sock.recv(1 << 16)
        if not chunk:
            raise ConnectionError("the listener closed the connection")
        self.buffer += chunk
        head_end = self.buffer.find(b"\r\n\r\n")
        if head_end < 0:
            return None
        head = self.buffer[:head_end].lower()
        at = head.index(b"content-length:") + len(b"content-length:")
        length = int(head[at:head.index(b"\r\n", at) if b"\r\n" in head[at:] else len(head)])
        if len(self.buffer) < head_end + 4 + length:
            return None
        body = self.buffer[head_end + 4: head_end + 4 + length]
        self.buffer = self.buffer[head_end + 4 + length:]
        return body


def _post(host: str, body: bytes) -> bytes:
    return (b"POST / HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
            % (host.encode(), len(body))) + body


def _http_client(url: str, signup: dict, count: int, concurrency: int, seconds: float,
                 ready: multiprocessing.Queue, start: multiprocessing.Event, results: multiprocessing.Queue,
                 verify: bool = True) -> None:
    """`concurrency` connections, each with one order at a time: WorkOrderSubmit, then
    WorkOrderGetResult (again while it answers 5, pending); the last result opened and checked
    unless not `verify` (the HTTP floor answers every order with the same body)."""
    host, port = url.removeprefix("http://").rstrip("/").rsplit(":", 1)
    info = WorkerInfo.from_signup(signup)
    # responseTimeoutMSecs as Avalon's SDK sends it: the submit waits for the result (up to 5 s);
    # with 0 the listener answers "pending" at once and the loop below polls without a pause.
    orders = [build_work_order(info, "python-hello", [b"World"], response_timeout_ms=6000) for _ in range(count)]
    submits = [_post(host, jsonio.dumps(order.request)) for order in orders]
    gets = [_post(host, b'{"jsonrpc":"2.0","id":%d,"method":"WorkOrderGetResult","params":{"workOrderId":"%s"}}'
                  % (order.request["id"], order.work_order_id.encode())) for order in orders]
    connections = [_Connection(host, int(port)) for _ in range(concurrency)]
    by_fd = {c.sock.fileno(): c for c in connections}
    state: dict[int, tuple[int, str, float]] = {}  # fd → (order, "submit"|"get", started)
    epoll = select.epoll()
    for fd in by_fd:
        epoll.register(fd, select.EPOLLIN)
    latencies: list[float] = []
    last: tuple[int, bytes] | None = None
    ready.put(True)
    start.wait()
    began = time.perf_counter()
    cpu_began = time.process_time()
    deadline = began + seconds
    sent = 0
    for fd, connection in by_fd.items():
        state[fd] = (sent, "submit", began)
        connection.send(submits[sent])
        sent += 1
    while state:
        for fd, _ in epoll.poll(0.01):
            connection = by_fd[fd]
            body = connection.response()
            if body is None:
                continue
            n, step, started = state.pop(fd)
            now = time.perf_counter()
            if step == "submit" or b'"code":5,' in body[:200]:  # submitted, or still pending: ask for the result
                state[fd] = (n, "get", started)
                connection.send(gets[n])
                continue
            latencies.append(now - started)
            last = (n, body)
            if sent < count and now < deadline:
                state[fd] = (sent, "submit", now)
                connection.send(submits[sent])
                sent += 1
    elapsed = time.perf_counter() - began
    cpu = time.process_time() - cpu_began
    assert last is not None
    ok = not verify or open_result(orders[last[0]], json.loads(last[1]), info) == [b"Hello World"]
    for connection in connections:
        connection.sock.close()
    results.put((len(latencies), elapsed, latencies, ok, cpu))


def _cpu_by_pid(pids: list[int]) -> dict[int, tuple[float, float]]:
    """CPU seconds, user + system and system alone, of each of `pids` still running."""
    found = {}
    for pid in pids:
        try:
            user, system = throughput.cpu_times(pid)
        except (FileNotFoundError, ProcessLookupError):
            continue
        found[pid] = (user + system, system)
    return found


def drive_http(url: str, signup: dict, seconds: float, concurrency: int, pids: dict[str, list[int]],
               verify: bool = True) -> dict[str, float]:
    """One timed run of the HTTP load against `url`: orders/s, latencies, and each role's CPU
    per order (`<role>_us`) and the part of it spent in the kernel (`<role>_sys_us`)."""
    ctx = multiprocessing.get_context("spawn")
    ready, start, results = ctx.Queue(), ctx.Event(), ctx.Queue()
    count = int(seconds * 4000) + 100
    process = ctx.Process(target=_http_client,
                          args=(url, signup, count, concurrency, seconds, ready, start, results, verify))
    process.start()
    ready.get(timeout=600)
    before = {role: _cpu_by_pid(group) for role, group in pids.items()}
    start.set()
    done, elapsed, latencies, ok, client_cpu = results.get(timeout=600)
    cpu, system = {}, {}
    for role, group in pids.items():  # a process gone meanwhile (a database backend) counts for neither
        after = _cpu_by_pid(group)
        cpu[role] = sum(spent[0] - before[role][pid][0] for pid, spent in after.items() if pid in before[role])
        system[role] = sum(spent[1] - before[role][pid][1] for pid, spent in after.items() if pid in before[role])
    process.join()
    if not ok:
        raise SystemExit("HTTP: the last result did not verify")
    latencies.sort()
    figures = {"rate": done / elapsed, "p50": latencies[len(latencies) // 2] * 1000,
               "p99": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000, "orders": done,
               "clients_us": client_cpu / done * 1e6}
    figures |= {f"{role}_us": seconds / done * 1e6 for role, seconds in cpu.items()}
    figures |= {f"{role}_sys_us": seconds / done * 1e6 for role, seconds in system.items()}
    return figures


# the store alone ---------------------------------------------------------------------------------


def store_costs(orders: int = 1000, batch: int = 1) -> dict[str, float]:
    """Milliseconds per order of each store operation an order goes through, `batch` orders per
    call (the listener and the pump batch under load), with a request and a result of the size
    a small order has: the median over the calls, divided by `batch`."""
    request = b"x" * 2200
    outcome = b"y" * 900
    timings: dict[str, list[float]] = {"submit (commit, fsync)": [], "lease": [], "complete (commit, fsync)": [],
                                       "read result": []}
    with tempfile.TemporaryDirectory() as directory:
        store = SQLiteStore(directory)
        worker = "ab" * 32
        for first in range(0, orders, batch):
            ids = [f"{n:064x}" for n in range(first, first + batch)]
            now = time.time()
            t0 = time.perf_counter()
            store.submit([NewOrder(wo_id, worker, request) for wo_id in ids], now)
            t1 = time.perf_counter()
            store.lease(worker, "pump", batch, 10.0, now)
            t2 = time.perf_counter()
            store.complete([Completion(wo_id, outcome, False) for wo_id in ids], now)
            t3 = time.perf_counter()
            for wo_id in ids:
                store.status(wo_id)
            t4 = time.perf_counter()
            for name, seconds in zip(timings, (t1 - t0, t2 - t1, t3 - t2, t4 - t3), strict=True):
                timings[name].append(seconds / batch)
        store.close()
    medians = {name: statistics.median(values) * 1000 for name, values in timings.items()}
    totals = sorted(sum(values) for values in zip(*timings.values(), strict=True))
    medians["all four"] = totals[len(totals) // 2] * 1000
    return medians


def pg_signup_of(url: str, worker_id: str) -> dict[str, str]:
    """The worker's keys as `WorkerRetrieve` gives them, in the signup's field names."""
    body = jsonio.dumps({"jsonrpc": "2.0", "id": 1, "method": "WorkerRetrieve", "params": {"workerId": worker_id}})
    with urllib.request.urlopen(urllib.request.Request(url, body)) as answer:  # noqa: S310 - our own listener
        data = json.loads(answer.read())["result"]["details"]["workerTypeData"]
    return {"verifying_key": data["verificationKey"], "encryption_key": data["encryptionKey"],
            "encryption_key_signature": data["encryptionKeySignature"]}


def pg_lines(runs: list[dict[str, float]], direct: dict[str, float], concurrency: int) -> list[str]:
    if not runs:
        return ["", "HTTP through PostgreSQL: not measured (no PostgreSQL here)"]
    pg = median(runs)
    return [
        "",
        "| path | orders/s | p50 ms | p99 ms | CPU µs/order: supervisor + workers + pump + listener + PostgreSQL + load generator |",
        "|---|---:|---:|---:|---:|",
        f"| HTTP submit + get-result, `listener` on PostgreSQL, worker host with `--store` ({concurrency} connections) "
        f"| {pg['rate']:.0f} | {pg['p50']:.2f} | {pg['p99']:.2f} | {pg['supervisor_us']:.0f} + {pg['workers_us']:.0f} "
        f"+ {pg['pump_us']:.0f} + {pg['listener_us']:.0f} + {pg['postgres_us']:.0f} + {pg['clients_us']:.0f} |",
        "",
        f"HTTP through PostgreSQL / direct: {pg['rate'] / direct['rate']:.2f} (goal ≥ 0.45)",
    ]


# deployments: this tree, and a baseline git ref beside it ----------------------------------------


class Deployment:
    """The worker behind its front door (SQLite) and, with a PostgreSQL server, a worker host
    pulling from it behind a stateless listener; all started from the code that `env`'s
    PYTHONPATH names (None: this tree)."""

    def __init__(self, name: str, state: str, args: argparse.Namespace, server: PostgresServer | None,
                 env: dict[str, str] | None = None) -> None:
        self.name = name
        self.server = server
        self.processes: list[subprocess.Popen[str]] = []
        process, self.endpoint, self.url = start_worker(state, args.workers, args.rsa_bits, env)
        self.processes.append(process)
        children = throughput._children(process.pid)
        front = [pid for pid in children if b"avalon_worker._cli.front_door" in Path(f"/proc/{pid}/cmdline").read_bytes()]
        workers = [pid for pid in children if pid not in front]
        self.pids = [process.pid, *workers]  # what throughput.drive accounts: supervisor, then workers
        self.roles = {"supervisor": [process.pid], "workers": workers, "front": front}
        with WorkerClient(self.endpoint) as client:
            self.signup = dict(client.worker().signup)
        self.pg_url = ""
        self.database = ""
        if server is not None:
            self.database = f"bench_{name}" if name != "now" else "postgres"
            database = server.create_database(self.database) if name != "now" else server.url()
            pg_processes, self.pg_url, self.pg_roles = start_postgres_path(f"{state}/pg", args.workers, database,
                                                                           args.rsa_bits, env)
            self.processes += pg_processes
            with urllib.request.urlopen(urllib.request.Request(  # noqa: S310 - our own listener on loopback
                    self.pg_url, b'{"jsonrpc":"2.0","id":1,"method":"WorkerLookUp","params":{}}')) as answer:
                [pg_worker] = json.loads(answer.read())["result"]["ids"]
            self.pg_signup = pg_signup_of(self.pg_url, pg_worker)
        self.http_runs: list[dict[str, float]] = []
        self.pg_runs: list[dict[str, float]] = []
        if server is not None:  # the untimed round, then what autovacuum does in the first minute
            self.pg_roles["postgres"] = postgres_processes(server)
            drive_http(self.pg_url, self.pg_signup, 2.0, args.concurrency, self.pg_roles)
            server.execute(["VACUUM ANALYZE"], self.database)

    def round(self, args: argparse.Namespace) -> None:
        self.http_runs.append(drive_http(self.url, self.signup, args.seconds, args.concurrency, self.roles))
        if self.server is not None:
            self.pg_roles["postgres"] = postgres_processes(self.server)  # its backends come and go
            self.pg_runs.append(drive_http(self.pg_url, self.pg_signup, args.seconds, args.concurrency, self.pg_roles))

    def stop(self) -> None:
        for stopping in self.processes:
            os.killpg(stopping.pid, signal.SIGTERM)
            stopping.wait(60)


class HttpFloor:
    """`_http_floor.py`: the listener's HTTP server answering every request with one real
    result's answer, in a process of its own, driven as the front door is."""

    def __init__(self, state: str, front: Deployment) -> None:
        self.state = state
        self.front = front
        self.process: subprocess.Popen[str] | None = None
        self.url = ""
        self.runs: list[dict[str, float]] = []

    def _start(self, submit_wait_ms: float) -> None:
        """Serve one real result's answer, a submit's after `submit_wait_ms`."""
        order = build_work_order(WorkerInfo.from_signup(self.front.signup), "python-hello", [b"World"],
                                 response_timeout_ms=6000)
        with urllib.request.urlopen(urllib.request.Request(self.front.url, jsonio.dumps(order.request))) as answer:  # noqa: S310
            body = answer.read()
        Path(f"{self.state}/answer.json").write_bytes(body)
        self.process = subprocess.Popen([sys.executable, str(Path(__file__).resolve().parent / "_http_floor.py"),
                                         f"{self.state}/answer.json", f"{submit_wait_ms:.3f}"],
                                        stdout=subprocess.PIPE, text=True, start_new_session=True)
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line.startswith("READY "):
            raise SystemExit(f"the HTTP floor's server did not start (exit {self.process.wait()})")
        self.url = line.removeprefix("READY ").strip() + "/"

    def round(self, args: argparse.Namespace) -> None:
        """A timed run; the first starts the server, its submits answered after the front door's
        median latency in its first round (so at about the front door's rate)."""
        if self.process is None:
            self._start(self.front.http_runs[0]["p50"])
        assert self.process is not None
        self.runs.append(drive_http(self.url, self.front.signup, args.seconds, args.concurrency,
                                    {"floor": [self.process.pid]}, verify=False))

    def stop(self) -> None:
        if self.process is not None:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(60)


def floor_lines(floor: HttpFloor, now: Deployment) -> list[str]:
    """The HTTP floor beside the front door's own CPU per order, and each role's part in the kernel."""
    bare, http = median(floor.runs), median(now.http_runs)
    lines = [
        "",
        "The HTTP floor: the listener's HTTP server answering every request with a fixed body (no JSON, store "
        f"or worker; a submit after the front door's median latency), the same load: {bare['rate']:.0f} orders/s, "
        f"{bare['floor_us']:.0f} µs of CPU per order (two requests), {bare['floor_sys_us']:.0f} of it in the kernel.",
        "",
        "| role | CPU µs/order | of which in the kernel | above the HTTP floor |",
        "|---|---:|---:|---:|",
        f"| HTTP, SQLite: front door | {http['front_us']:.0f} | {http['front_sys_us']:.0f} "
        f"| {http['front_us'] - bare['floor_us']:.0f} |",
    ]
    if now.pg_runs:
        pg = median(now.pg_runs)
        for role in ("pump", "listener", "postgres"):  # only the listener serves HTTP
            above = f"{pg[f'{role}_us'] - bare['floor_us']:.0f}" if role == "listener" else "–"
            lines.append(f"| HTTP through PostgreSQL: {role} | {pg[f'{role}_us']:.0f} | {pg[f'{role}_sys_us']:.0f} | {above} |")
    return lines


def baseline_tree(ref: str, directory: str) -> str:
    """A worktree of `ref` in `directory` (git worktree, detached); its `src` for PYTHONPATH."""
    root = Path(__file__).resolve().parent.parent
    subprocess.run(["git", "-C", str(root), "worktree", "add", "--detach", "--quiet", directory, ref], check=True)
    return str(Path(directory) / "src")


def median(runs: list[dict[str, float]]) -> dict[str, float]:
    return sorted(runs, key=lambda r: r["rate"])[len(runs) // 2]


def _paired(runs: list[dict[str, float]], old_runs: list[dict[str, float]], key: str) -> float:
    """The median of each round's own ratio now / before (the two codes ran side by side in it)."""
    return statistics.median(run[key] / old[key] for run, old in zip(runs, old_runs, strict=True))


def baseline_lines(now: Deployment, base: Deployment, ref: str, direct: dict[str, float]) -> list[str]:
    """The front door's figures now and at `ref`, measured in the same rounds, and their ratios
    (the median of the rounds' own ratios: steadier on a shared machine than a ratio of medians)."""
    http, old = median(now.http_runs), median(base.http_runs)
    lines = [
        "", f"Before (`{ref}`) and now, alternating in the same rounds (medians; the ratios are the "
        "median of each round's own):", "",
        "| path | orders/s before → now | p50 ms before → now | p99 ms before → now | CPU µs/order before → now "
        "| CPU now / before | orders/s now / before |",
        "|---|---:|---:|---:|---:|---:|---:|",
        f"| HTTP, SQLite: front door | {old['rate']:.0f} → {http['rate']:.0f} | {old['p50']:.1f} → {http['p50']:.1f} "
        f"| {old['p99']:.1f} → {http['p99']:.1f} | {old['front_us']:.0f} → {http['front_us']:.0f} "
        f"| {_paired(now.http_runs, base.http_runs, 'front_us'):.2f} | {_paired(now.http_runs, base.http_runs, 'rate'):.2f} |",
    ]
    if now.pg_runs and base.pg_runs:
        pg, pg_old = median(now.pg_runs), median(base.pg_runs)
        for role in ("pump", "listener", "postgres"):
            lines.append(
                f"| HTTP through PostgreSQL: {role} | {pg_old['rate']:.0f} → {pg['rate']:.0f} "
                f"| {pg_old['p50']:.1f} → {pg['p50']:.1f} | {pg_old['p99']:.1f} → {pg['p99']:.1f} "
                f"| {pg_old[f'{role}_us']:.0f} → {pg[f'{role}_us']:.0f} "
                f"| {_paired(now.pg_runs, base.pg_runs, f'{role}_us'):.2f} | {_paired(now.pg_runs, base.pg_runs, 'rate'):.2f} |")
    lines += ["", f"HTTP / direct: before {old['rate'] / direct['rate']:.2f}, now {http['rate'] / direct['rate']:.2f}"]
    return lines


# main --------------------------------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=4.0, help="timed seconds per path and round")
    parser.add_argument("--workers", type=int, default=len(os.sched_getaffinity(0)), help="worker processes")
    parser.add_argument("--concurrency", type=int, default=32, help="HTTP connections, each with one order at a time")
    parser.add_argument("--rounds", type=int, default=3, help="rounds; each figure is the median round's")
    parser.add_argument("--rsa-bits", type=int, default=2048, choices=(2048, 3072),
                        help="the workers' key (default 2048; the worker's own default is 3072)")
    parser.add_argument("--baseline", metavar="REF", help="also run the HTTP paths of this git ref (a worktree of it, "
                        "in a temporary directory), alternating with this tree's in every round")
    parser.add_argument("--write", metavar="FILE", help="also write the results as Markdown to FILE")
    return parser.parse_args()


def start_postgres() -> PostgresServer | None:
    """The PostgreSQL server of the run, counting statements with pg_stat_statements where its
    library is installed."""
    try:
        server = PostgresServer(fsync=True)
        if server.has_library("pg_stat_statements"):
            server.settings = ("shared_preload_libraries=pg_stat_statements",)
        server.start()
        if server.settings:
            server.execute(["CREATE EXTENSION pg_stat_statements"])
    except PostgresUnavailable as exc:
        print(f"HTTP through PostgreSQL skipped: {exc}", file=sys.stderr)
        return None
    return server


Counted = dict[str, list[tuple[str, int, float]]]


def statements_per_database(server: PostgresServer, reset: bool = False) -> Counted:
    """{database: [(statement, calls, statement time in ms)]} since the last reset, as
    pg_stat_statements counts them (BEGIN and COMMIT included); with `reset`, start counting again."""
    if not server.settings:
        return {}
    import psycopg

    with psycopg.connect(server.url(), autocommit=True) as connection:
        if reset:
            connection.execute("SELECT pg_stat_statements_reset()")
            return {}
        rows = connection.execute(
            "SELECT d.datname, s.query, s.calls, s.total_exec_time FROM pg_stat_statements s "
            "JOIN pg_database d ON d.oid = s.dbid ORDER BY s.total_exec_time DESC"
        ).fetchall()
    counted: Counted = {}
    for name, query, calls, ms in rows:
        counted.setdefault(name, []).append((" ".join(query.split()), int(calls), float(ms)))
    return counted


def statement_lines(deployments: list[Deployment], counted: Counted, top: int = 6) -> list[str]:
    """Statements and statement time per order of each deployment's PostgreSQL path over the timed
    rounds, and the statements that took most of it."""
    lines = []
    for deployment in deployments:
        orders = sum(run["orders"] for run in deployment.pg_runs)
        statements = counted.get(deployment.database)
        if not statements or not orders:
            continue
        calls, ms = sum(row[1] for row in statements), sum(row[2] for row in statements)
        lines += ["", f"{deployment.name}: {calls / orders:.2f} statements per order, {ms * 1000 / orders:.0f} µs of "
                  f"statement time per order ({orders} orders); the {top} that took most:", "",
                  "| statement | per order | µs per order |", "|---|---:|---:|"]
        lines += [f"| `{query[:90]}{'…' if len(query) > 90 else ''}` | {n / orders:.3f} | {t * 1000 / orders:.0f} |"
                  for query, n, t in statements[:top]]
    if not lines:
        return []
    return ["", "PostgreSQL's statements (pg_stat_statements, the timed rounds; BEGIN and COMMIT count):", *lines]


def main() -> int:
    args = parse_args()
    hello = throughput.scenarios(quick=True)[0]
    assert hello.fresh_keys
    load = throughput.Load(clients=1, connections=4, depth=4, seconds=args.seconds, pin_cpus=False)
    direct_runs = []
    server = start_postgres()
    deployments: list[Deployment] = []
    floor: HttpFloor | None = None
    with tempfile.TemporaryDirectory() as state:
        try:
            now = Deployment("now", f"{state}/now", args, server)
            deployments.append(now)
            floor = HttpFloor(state, now)
            if args.baseline:
                env = {**os.environ, "PYTHONPATH": baseline_tree(args.baseline, f"{state}/baseline-tree")}
                deployments.append(Deployment("baseline", f"{state}/baseline", args, server, env))
            if server is not None:
                statements_per_database(server, reset=True)
            for index in range(args.rounds):
                direct_runs.append(throughput.drive(now.endpoint, hello, load, now.pids))
                # which code runs first alternates, so that neither always follows the direct run
                for deployment in deployments if index % 2 == 0 else deployments[::-1]:
                    deployment.round(args)
                floor.round(args)
            counted = statements_per_database(server) if server is not None else {}
        finally:
            if floor is not None:
                floor.stop()
            for deployment in deployments:
                deployment.stop()
            if server is not None:
                server.remove()
            if args.baseline:
                subprocess.run(["git", "-C", str(Path(__file__).resolve().parent.parent), "worktree", "remove", "--force",
                                f"{state}/baseline-tree"], check=False)
    direct, http = median(direct_runs), median(now.http_runs)
    single, batched = store_costs(batch=1), store_costs(orders=3200, batch=32)

    lines = [
        f"machine: {platform.machine()}, {len(os.sched_getaffinity(0))} usable cores (shared), "
        f"{platform.python_implementation()} {platform.python_version()}; date {time.strftime('%Y-%m-%d')}",
        f"worker: `serve --workers {args.workers} --rsa-bits {args.rsa_bits} --log-level ERROR --listen-http`; python-hello, "
        f"fresh session key per order; median of {args.rounds} rounds of {args.seconds:g} s",
        "",
        "| path | orders/s | p50 ms | p99 ms | CPU µs/order: supervisor + workers + front door + load generator |",
        "|---|---:|---:|---:|---:|",
        f"| direct ZMQ ({load.connections} DEALER connections × {load.depth} in flight) | {direct['rate']:.0f} "
        f"| {direct['p50']:.2f} | {direct['p99']:.2f} | {direct['supervisor_us']:.0f} + {direct['workers_us']:.0f} "
        f"+ 0 + {direct['clients_us']:.0f} |",
        f"| HTTP submit + get-result, SQLite store ({args.concurrency} connections) | {http['rate']:.0f} "
        f"| {http['p50']:.2f} | {http['p99']:.2f} | {http['supervisor_us']:.0f} + {http['workers_us']:.0f} "
        f"+ {http['front_us']:.0f} + {http['clients_us']:.0f} |",
        "",
        f"HTTP / direct: {http['rate'] / direct['rate']:.2f} (goal ≥ 0.6)",
        *pg_lines(now.pg_runs, direct, args.concurrency),
        *(floor_lines(floor, now) if floor is not None else []),
        *(baseline_lines(now, deployments[1], args.baseline, direct) if args.baseline else []),
        *statement_lines(deployments, counted),
        "",
        "SQLite store alone, ms per order (median): one order per call, and 32 per call as under load:",
        "",
        "| operation | 1 per call | 32 per call |",
        "|---|---:|---:|",
        *(f"| {name} | {single[name]:.3f} | {batched[name]:.3f} |" for name in single),
    ]
    text = "\n".join(lines)
    print(text)
    if args.write:
        Path(args.write).write_text(text + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())

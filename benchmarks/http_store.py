#!/usr/bin/env python3
"""Fresh-key hello work orders per second through the HTTP listener, on PostgreSQL and on
SQLite, beside the direct ZMQ path to the same kind of worker, in one run.

Three deployments on this machine, one after the other, each with a worker of `--workers`
processes (RSA-2048):
- direct: requesters speak ZMQ to `avalon-worker serve`;
- SQLite: `serve --listen-http` (listener, pump and the store file in one front-door process);
- PostgreSQL: `serve --store postgresql://…` (the pump) and one `avalon-worker listener`, on a
  PostgreSQL server started here (Debian's binaries, fsync on, as a real deployment has it).
One client process keeps `--concurrency` orders in flight (asyncio): over ZMQ a request and its
reply; over HTTP a WorkOrderSubmit that waits for its result (`responseTimeoutMSecs`) and then
a WorkOrderGetResult, as Avalon's SDK does. Requests are built (fresh session key each) before
the clock starts. CPU seconds per order of every process (worker, front door or pump, listener,
PostgreSQL, client) say where the time goes. Each figure is the median of `--repeat` rounds.

    python benchmarks/http_store.py [--seconds 5] [--repeat 3] [--write FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import zmq
import zmq.asyncio

from throughput import _children, _cpu_seconds

from avalon_worker.cli import READY_PREFIX
from avalon_worker.http_front import PUMP_READY_PREFIX
from avalon_worker.http_front import READY_PREFIX as FRONT_READY_PREFIX
from avalon_worker.listener_service import READY_PREFIX as LISTENER_READY_PREFIX
from avalon_worker.requester import PendingWorkOrder, WorkerInfo, build_work_order, open_result

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from postgres_server import PostgresServer  # noqa: E402  (the tests' throwaway PostgreSQL)

SIGNUP = {"jsonrpc": "2.0", "id": 1, "method": "ProcessWorkerSignup", "params": None}


def start(command: list[str], prefixes: tuple[str, ...]) -> tuple[subprocess.Popen[str], dict[str, str]]:
    """Start `avalon-worker …`; read stdout until a line with each prefix has been seen."""
    process = subprocess.Popen([sys.executable, "-m", "avalon_worker", *command], stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    seen: dict[str, str] = {}
    while len(seen) < len(prefixes):
        line = process.stdout.readline()
        if not line:
            raise SystemExit(f"{command[0]} stopped before it was ready (exit {process.wait()})")
        for prefix in prefixes:
            if line.startswith(prefix):
                seen[prefix] = line[len(prefix):].strip()
    return process, seen


def tree(pid: int) -> list[int]:
    """A process and all its descendants."""
    found = [pid]
    for child in _children(pid):
        found += tree(child)
    return found


def cpu(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        try:
            total += _cpu_seconds(pid)
        except OSError:
            pass
    return total


def build_orders(info: WorkerInfo, count: int, wait_ms: int | None) -> list[PendingWorkOrder]:
    orders = [build_work_order(info, "python-hello", [b"World"], request_id=n) for n in range(count)]
    if wait_ms is not None:
        for order in orders:
            order.request["params"]["responseTimeoutMSecs"] = wait_ms
    return orders


async def drive_zmq(endpoint: str, orders: list[PendingWorkOrder], concurrency: int, seconds: float) -> list[float]:
    context = zmq.asyncio.Context()
    sock = context.socket(zmq.DEALER)
    sock.connect(endpoint)
    latencies: list[float] = []
    waiting: dict[bytes, float] = {}
    supply = iter(enumerate(orders))
    deadline = time.perf_counter() + seconds

    async def send() -> bool:
        item = next(supply, None)
        if item is None or time.perf_counter() > deadline:
            return False
        tag = item[0].to_bytes(4, "big")
        waiting[tag] = time.perf_counter()
        await sock.send_multipart([tag, b"", item[1].frame(item[0] + 1)])
        return True

    for _ in range(concurrency):
        await send()
    while waiting:
        tag, _, reply = await sock.recv_multipart()
        latencies.append(time.perf_counter() - waiting.pop(tag))
        last = reply
        await send()
    check = json.loads(last)
    assert "result" in check, check
    sock.close(linger=0)
    context.term()
    return latencies


async def drive_http(url: str, orders: list[PendingWorkOrder], info: WorkerInfo, concurrency: int, seconds: float) -> list[float]:
    latencies: list[float] = []
    supply = iter(orders)
    deadline = time.perf_counter() + seconds
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def post(body: dict[str, Any]) -> dict[str, Any]:
            async with session.post(url, json=body) as response:
                answer: dict[str, Any] = await response.json(content_type="application/json")
                return answer

        async def one_after_another() -> None:
            while time.perf_counter() < deadline and (order := next(supply, None)) is not None:
                began = time.perf_counter()
                first = await post(order.request)
                while True:
                    answer = await post({"jsonrpc": "2.0", "id": 2, "method": "WorkOrderGetResult",
                                         "params": {"workOrderId": order.work_order_id}})
                    if answer.get("error", {}).get("code") != 5:
                        break
                    await asyncio.sleep(0.01)
                assert "result" in answer, (first, answer)
                latencies.append(time.perf_counter() - began)
                last[0] = (order, answer)

        last: list[Any] = [None]
        await asyncio.gather(*(one_after_another() for _ in range(concurrency)))
    assert open_result(last[0][0], last[0][1], info) == [b"Hello World"]  # the last result verifies and decrypts
    return latencies


def measure(name: str, run: Callable[[], list[float]], parts: dict[str, list[int]]) -> dict[str, Any]:
    before = {part: cpu(pids) for part, pids in parts.items()}
    client_before = time.process_time()
    began = time.perf_counter()
    latencies = run()
    elapsed = time.perf_counter() - began
    orders = len(latencies)
    row: dict[str, Any] = {"name": name, "rate": orders / elapsed, "orders": orders}
    latencies.sort()
    row["p50"] = latencies[orders // 2] * 1000
    row["p99"] = latencies[min(orders - 1, int(orders * 0.99))] * 1000
    row["cpu_us"] = {part: (cpu(pids) - before[part]) / orders * 1e6 for part, pids in parts.items()}
    row["cpu_us"]["client"] = (time.process_time() - client_before) / orders * 1e6
    return row


def signup_info(endpoint: str) -> WorkerInfo:
    context = zmq.Context()
    sock = context.socket(zmq.REQ)
    sock.setsockopt(zmq.RCVTIMEO, 30000)
    sock.connect(endpoint)
    sock.send_json(SIGNUP)
    info = WorkerInfo.from_signup(sock.recv_json())
    sock.close(linger=0)
    context.term()
    return info


def prepare_http(endpoint: str, supply: int, worker_pid: int) -> tuple[WorkerInfo, list[PendingWorkOrder], tuple[list[int], list[int]]]:
    """The worker's keys, orders that wait for their results, and the worker's processes split
    into the pool and the front-door process."""
    info = signup_info(endpoint)
    orders = build_orders(info, supply, 5000)
    time.sleep(0.5)
    processes = tree(worker_pid)
    front = [pid for pid in processes if b"http_front" in Path(f"/proc/{pid}/cmdline").read_bytes()]
    return info, orders, ([pid for pid in processes if pid not in front], front)


def one_round(args: argparse.Namespace, server: PostgresServer, round_number: int) -> list[dict[str, Any]]:
    rows = []
    supply = int(args.seconds * 3000) + 100
    worker_flags = ["--rsa-bits", "2048", "--attestation", "none", "--workers", str(args.workers), "--log-level", "WARNING"]
    with tempfile.TemporaryDirectory(prefix="avalon-bench-") as root:
        # direct ZMQ
        worker, seen = start(["serve", "--bind", "tcp://127.0.0.1:*", "--state-dir", f"{root}/direct", *worker_flags],
                             (READY_PREFIX,))
        try:
            endpoint = seen[READY_PREFIX]
            orders = build_orders(signup_info(endpoint), supply, None)
            time.sleep(0.5)
            rows.append(measure("direct ZMQ", lambda: asyncio.run(drive_zmq(endpoint, orders, args.concurrency, args.seconds)),
                                {"worker": tree(worker.pid)}))
        finally:
            worker.terminate()
            worker.wait(60)
        # SQLite: one front-door process with listener, pump and store file
        worker, seen = start(["serve", "--bind", "tcp://127.0.0.1:*", "--state-dir", f"{root}/sqlite",
                              "--listen-http", "127.0.0.1:0", *worker_flags], (READY_PREFIX, FRONT_READY_PREFIX))
        try:
            endpoint, url = seen[READY_PREFIX], seen[FRONT_READY_PREFIX] + "/"
            info, orders, (pool, front) = prepare_http(endpoint, supply, worker.pid)
            rows.append(measure("HTTP, SQLite", lambda: asyncio.run(drive_http(url, orders, info, args.concurrency, args.seconds)),
                                {"worker": pool, "front door": front}))
        finally:
            worker.terminate()
            worker.wait(60)
        # PostgreSQL: a worker host pulling from the database, a listener apart
        store = server.create_database(f"bench_{round_number}")
        worker, seen = start(["serve", "--bind", "tcp://127.0.0.1:*", "--state-dir", f"{root}/pg", "--store", store,
                              *worker_flags], (READY_PREFIX, PUMP_READY_PREFIX))
        listener, heard = start(["listener", "--store", store, "--listen-http", "127.0.0.1:0", "--log-level", "WARNING"],
                                (LISTENER_READY_PREFIX,))
        try:
            endpoint, url = seen[READY_PREFIX], heard[LISTENER_READY_PREFIX] + "/"
            info, orders, (pool, pump) = prepare_http(endpoint, supply, worker.pid)
            postmaster = int(Path(server.data / "postmaster.pid").read_text().split()[0])
            rows.append(measure("HTTP, PostgreSQL", lambda: asyncio.run(drive_http(url, orders, info, args.concurrency, args.seconds)),
                                {"worker": pool, "pump": pump,
                                 "listener": tree(listener.pid), "postgres": tree(postmaster)}))
        finally:
            listener.terminate()
            worker.terminate()
            listener.wait(60)
            worker.wait(60)
    return rows


def median_rows(rounds: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    merged = []
    for index, first in enumerate(rounds[0]):
        runs = [round_rows[index] for round_rows in rounds]
        row = dict(first)
        for key in ("rate", "p50", "p99"):
            row[key] = statistics.median(run[key] for run in runs)
        row["cpu_us"] = {part: statistics.median(run["cpu_us"][part] for run in runs) for part in first["cpu_us"]}
        merged.append(row)
    return merged


def report(rows: list[dict[str, Any]], args: argparse.Namespace) -> str:
    direct = rows[0]["rate"]
    lines = [
        f"fresh-key hello, worker with {args.workers} process(es), {args.concurrency} orders in flight, "
        f"{args.seconds:g} s per run, median of {args.repeat} rounds; machine: {os.cpu_count()} cores, "
        f"load average {os.getloadavg()[0]:.1f}",
        "",
        "| path | orders/s | × direct | p50 ms | p99 ms | CPU µs per order |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for row in rows:
        parts = ", ".join(f"{part} {value:.0f}" for part, value in row["cpu_us"].items())
        lines.append(f"| {row['name']} | {row['rate']:.0f} | {row['rate'] / direct:.2f} | {row['p50']:.1f} | "
                     f"{row['p99']:.1f} | {parts} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--workers", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--write", metavar="FILE")
    args = parser.parse_args()
    server = PostgresServer(fsync=True)
    try:
        server.start()
        rounds = [one_round(args, server, number) for number in range(args.repeat)]
    finally:
        server.remove()
    text = report(median_rows(rounds), args)
    print(text)
    if args.write:
        Path(args.write).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Work orders per second of a real worker, next to the cryptographic floor, in one run.

Starts `avalon-worker serve` (RSA-2048, 1 process, then one per core; then RSA-3072), drives it
over ZMQ from a separate client process that sends pre-built requests in a closed loop, and prints:
- throughput and p50/p99 latency per scenario (hello 5 B, echo 64 KiB and 1 MiB, fib(20)), with a
  fresh session key per order and with one reused session key;
- the cryptographic floor: the unavoidable per-order work done in a tight loop without a server;
- `Processor.handle` alone (`_handle_floor.py`): the worker process's own work for a reused-key hello
  in a tight loop, set against that process's CPU per order in `serve`: what serving an order adds;
- the ratios: worker / floor (1 process), N processes / 1 process, and 1 MiB MB/s / raw MB/s.

Run by hand: `python benchmarks/throughput.py` (`--write FILE` also saves the results as Markdown,
as pasted into docs/performance.md). `--baseline GITREF` also runs the code of GITREF (its `src/`
exported from git into a temporary directory and put first on the worker's PYTHONPATH, in the same
environment), the two codes' rounds alternating, and prints both and this code ÷ the baseline,
scenario by scenario.
Numbers are noisy on a shared machine: compare ratios measured in the same run. Each server
figure is the median of `--repeat` rounds (1-process and N-process runs interleaved); each floor
is the fastest of several timed loops, measured in every round right before the runs it is
compared with, and each ratio to a floor is the median of the rounds' own ratios (a machine's
speed can move by a quarter within minutes). The load generator is one process with several ZMTP
connections (see `zmtp.py`), so that it takes little of the cores it shares with the worker.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import io
import json
import multiprocessing
import os
import platform
import select
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from importlib import metadata
from typing import Any

import zmq
import zmtp

from avalon_worker import crypto
from avalon_worker._cli.demo import start_worker_process
from avalon_worker.requester import PendingWorkOrder, Session, WorkerInfo, build_work_order, open_result

HERE = os.path.dirname(os.path.abspath(__file__))
SIGNUP = b'{"jsonrpc":"2.0","id":1,"method":"ProcessWorkerSignup","params":null}'


@dataclass(frozen=True)
class Scenario:
    name: str
    workload: str
    payload: bytes
    fresh_keys: bool


def scenarios(quick: bool) -> list[Scenario]:
    found = [
        Scenario("hello 5 B, fresh keys", "python-hello", b"World", True),
        Scenario("hello 5 B, reused key", "python-hello", b"World", False),
        Scenario("fib(20), fresh keys", "python-fib", b"20", True),
        Scenario("echo 64 KiB, fresh keys", "echo-result", os.urandom(64 * 1024), True),
        Scenario("echo 1 MiB, fresh keys", "echo-result", os.urandom(1024 * 1024), True),
    ]
    return found[:2] if quick else found


# client processes ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Load:
    """The load generator: `clients` processes, each with `connections` DEALER connections of
    `kind` keeping `depth` orders in flight."""

    clients: int
    connections: int
    depth: int
    seconds: float
    kind: str = "zmtp"
    pin_cpus: bool = True


def _template(info: WorkerInfo, scenario: Scenario) -> tuple[bytes, bytes, PendingWorkOrder, Session]:
    """A request frame split around its encryptedSessionKey, which is not covered by the request
    hash: each send can carry a different RSA wrapping of the same key (a fresh RSA unwrap for the
    worker) without the client redoing the payload's work while it is being timed."""
    session = Session.new(info)
    pending = build_work_order(info, scenario.workload, [scenario.payload], session=session)
    marker = session.encrypted_key.hex().encode()
    frame = pending.frame()
    prefix, _, suffix = frame.partition(marker)
    return prefix, suffix, pending, session


class _LibzmqDealer:
    """The same interface as `_ZmtpDealer`, through pyzmq (libzmq and its I/O thread)."""

    def __init__(self, context: zmq.Context, endpoint: str) -> None:
        self.sock = context.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.RCVTIMEO, 120_000)
        self.sock.connect(endpoint)
        self.pollable = self.sock

    def send(self, messages: list[list[bytes]]) -> None:
        for parts in messages:
            self.sock.send_multipart(parts, copy=len(parts[-1]) < 65536)

    def receive(self) -> list[list[bytes]]:
        messages = [self.sock.recv_multipart()]
        return messages + self.receive_available()

    def receive_available(self) -> list[list[bytes]]:
        messages = []
        while self.sock.poll(0):
            messages.append(self.sock.recv_multipart())
        return messages

    def close(self) -> None:
        self.sock.close()


class _ZmtpDealer:
    def __init__(self, context: zmq.Context, endpoint: str) -> None:
        self.connection = zmtp.DealerConnection(endpoint)
        self.pollable = self.connection.sock.fileno()  # zmq.Poller reports raw sockets by descriptor

    def send(self, messages: list[list[bytes]]) -> None:
        self.connection.send(b"".join(zmtp.message(parts) for parts in messages))

    def receive(self) -> list[list[bytes]]:
        return self.connection.receive()

    def receive_available(self) -> list[list[bytes]]:
        return self.connection.receive_available()

    def close(self) -> None:
        self.connection.close()


CLIENTS = {"zmtp": _ZmtpDealer, "libzmq": _LibzmqDealer}


def _poller(kind: str, pollables: Iterable[Any]) -> Callable[[], list[tuple[Any, int]]]:
    """A wait for replies on `pollables`: epoll for plain sockets (cheaper per wake-up than
    zmq_poll), zmq's poller for libzmq sockets; both wait at most two minutes."""
    if kind == "zmtp":
        epoll = select.epoll()
        for fd in pollables:
            epoll.register(fd, select.EPOLLIN)
        return lambda: epoll.poll(120)
    poller = zmq.Poller()
    for pollable in pollables:
        poller.register(pollable, zmq.POLLIN)
    return lambda: poller.poll(120_000)


def _client(endpoint: str, load: Load, scenario: Scenario, max_orders: int,
            ready: multiprocessing.Queue, start: multiprocessing.Event, results: multiprocessing.Queue) -> None:
    """Keep `load.depth` work orders in flight on each of `load.connections` DEALER connections
    (REQ-compatible framing, each request tagged so its latency can be measured) until the time or
    the pre-built orders run out."""
    context = zmq.Context()
    dealers = [CLIENTS[load.kind](context, endpoint) for _ in range(load.connections)]
    dealers[0].send([[b"", SIGNUP]])
    info = WorkerInfo.from_signup(json.loads(dealers[0].receive()[0][-1]))
    prefix, suffix, pending, session = _template(info, scenario)
    if scenario.fresh_keys:
        wrappings = [crypto.rsa_oaep_encrypt(info.encryption_key, session.key).hex().encode() for _ in range(max_orders)]
    else:
        wrappings = [session.encrypted_key.hex().encode()]
    by_pollable = {dealer.pollable: dealer for dealer in dealers}
    poll = _poller(load.kind, by_pollable)
    latencies: list[float] = []
    sent_at: dict[bytes, float] = {}
    last = b""
    ready.put(True)
    start.wait()
    began = time.perf_counter()
    cpu_began = time.process_time()
    deadline = began + load.seconds
    sent = 0

    def next_message(now: float) -> list[bytes]:
        nonlocal sent
        tag = sent.to_bytes(4, "big") + b"t"  # never empty: an empty frame ends the envelope
        sent_at[tag] = now
        sent += 1
        return [tag, b"", prefix + wrappings[(sent - 1) % len(wrappings)] + suffix]

    for dealer in dealers:
        dealer.send([next_message(began) for _ in range(min(load.depth, max_orders - sent))])
    while sent_at:
        for pollable, _ in poll():
            dealer = by_pollable[pollable]
            replies = dealer.receive_available()
            if not replies:
                continue
            now = time.perf_counter()
            for tag, _, _reply in replies:
                latencies.append(now - sent_at.pop(tag))
            last = replies[-1][-1]
            more = [next_message(now) for _ in replies if sent < max_orders and now < deadline]
            if more:
                dealer.send(more)
    elapsed = time.perf_counter() - began
    cpu = time.process_time() - cpu_began
    ok = open_result(pending, json.loads(last), info)[0] is not None  # the last reply verifies and decrypts
    results.put((len(latencies), elapsed, latencies, ok, cpu))
    for dealer in dealers:
        dealer.close()
    context.term()


def cpu_times(pid: int) -> tuple[float, float]:
    """User and system CPU seconds of a process so far, from /proc."""
    with open(f"/proc/{pid}/stat") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far."""
    return sum(cpu_times(pid))


def _children(pid: int) -> list[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as handle:
        return [int(p) for p in handle.read().split()]


def drive(endpoint: str, scenario: Scenario, load: Load, pids: list[int]) -> dict[str, float]:
    """Run one scenario; `pids` are the supervisor then its worker processes (for CPU per order)."""
    ctx = multiprocessing.get_context("fork")
    ready, start, results = ctx.Queue(), ctx.Event(), ctx.Queue()
    if len(scenario.payload) > 10_000:
        per_client = 400 if len(scenario.payload) > 100_000 else 2000
    else:  # more than any run here reaches in `seconds`, so time ends the run, not the supply
        per_client = int(load.seconds * (6000 if scenario.fresh_keys else 25000) / load.clients) + 1
    procs = [ctx.Process(target=_client, args=(endpoint, load, scenario, per_client, ready, start, results))
             for _ in range(load.clients)]
    for proc in procs:
        proc.start()
    for _ in procs:
        ready.get(timeout=300)  # every client has pre-built its requests: nothing else runs while timed
    cpu_before = {pid: _cpu_seconds(pid) for pid in pids}
    start.set()
    gathered = [results.get(timeout=300) for _ in procs]
    cpu = {pid: _cpu_seconds(pid) - before for pid, before in cpu_before.items()}
    for proc in procs:
        proc.join()
    if not all(ok for *_, ok, _ in gathered):
        raise SystemExit(f"{scenario.name}: a reply did not verify")
    orders = sum(count for count, *_ in gathered)
    elapsed = max(elapsed for _, elapsed, *_ in gathered)
    latencies = sorted(lat for _, _, lats, _, _ in gathered for lat in lats)
    return {
        "rate": orders / elapsed,
        "p50": latencies[len(latencies) // 2] * 1000,
        "p99": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000,
        "orders": orders,
        "supervisor_us": cpu[pids[0]] / orders * 1e6,
        "workers_us": sum(cpu[pid] for pid in pids[1:]) / orders * 1e6,
        "clients_us": sum(item[4] for item in gathered) / orders * 1e6,
    }


# the floor ---------------------------------------------------------------------------------------


FLOOR_ROUNDS = 5  # each floor is the fastest of this many timed loops: the work's cost when nothing
# else on the machine gets in the way, a stricter floor than an average would be


def floor_small(bits: int = 2048, iterations: int = 500) -> Callable[[], float]:
    """A timer of the unavoidable work for a small order (RSA-OAEP unwrap, libsecp256k1): each
    call returns seconds per order, the fastest of FLOOR_ROUNDS loops."""
    rsa_key = crypto.generate_rsa_key(bits)
    signer = crypto.SigningKey.generate()
    session_key, iv = os.urandom(32), os.urandom(12)
    wrapped = [crypto.rsa_oaep_encrypt(rsa_key.public_key(), session_key) for _ in range(200)]
    enc_hash = crypto.aes_gcm_encrypt(session_key, iv, os.urandom(32))
    enc_in = crypto.aes_gcm_encrypt(session_key, iv, b"World")
    ids = b"x" * 300

    def one_round() -> float:
        t0 = time.perf_counter()
        for i in range(iterations):
            key = crypto.rsa_oaep_decrypt(rsa_key, wrapped[i % 200])
            crypto.aes_gcm_decrypt(key, iv, enc_hash)
            plaintext = crypto.aes_gcm_decrypt(key, iv, enc_in)
            crypto.sha256(crypto.sha256(ids) + crypto.sha256(ids) + crypto.sha256(plaintext))  # request hash + dataHash
            out = crypto.aes_gcm_encrypt(key, iv, b"Hello World")
            digest = crypto.sha256(crypto.sha256(ids) + crypto.sha256(out))  # response hash
            crypto.sha256(b"Hello World")  # output dataHash
            signer.sign_digest(digest)
        return (time.perf_counter() - t0) / iterations

    return lambda: min(one_round() for _ in range(FLOOR_ROUNDS))


def floor_bytes(size: int = 1024 * 1024, iterations: int = 10) -> Callable[[], float]:
    """A timer of the byte work for a `size`-byte echo (base64, AES-GCM, SHA-256 both ways):
    each call returns seconds per order, the fastest of FLOOR_ROUNDS loops."""
    key, iv = os.urandom(32), os.urandom(12)
    text = base64.b64encode(crypto.aes_gcm_encrypt(key, iv, os.urandom(size)))

    def one_round() -> float:
        t0 = time.perf_counter()
        for _ in range(iterations):
            plaintext = crypto.aes_gcm_decrypt(key, iv, base64.b64decode(text))
            crypto.sha256(text)  # request hash over the item as sent
            crypto.sha256(plaintext)  # dataHash check
            out = base64.b64encode(crypto.aes_gcm_encrypt(key, iv, plaintext))
            crypto.sha256(out)  # response hash
            crypto.sha256(plaintext)  # output dataHash
        return (time.perf_counter() - t0) / iterations

    return lambda: min(one_round() for _ in range(FLOOR_ROUNDS))


def handle_floor(code: Code, orders: int = 2000) -> float | None:
    """Seconds per reused-key hello through `code`'s `Processor.handle` in a tight loop, no server
    (`_handle_floor.py`, in a process of its own running `code`), the fastest of FLOOR_ROUNDS loops;
    None if that code cannot run it."""
    with code.active():
        done = subprocess.run([sys.executable, os.path.join(HERE, "_handle_floor.py"), str(orders), str(FLOOR_ROUNDS)],
                              capture_output=True, text=True)
    return float(done.stdout) if done.returncode == 0 else None


# main -------------------------------------------------------------------------------------------


class Progress:
    """One line on stderr per finished step, so that a run of minutes is never silent (the
    results table goes to stdout at the end)."""

    def __init__(self, steps: int) -> None:
        self.steps = steps
        self.done = 0
        self.started = time.monotonic()

    def step(self, text: str) -> None:
        self.done += 1
        print(f"[{self.done}/{self.steps} {time.monotonic() - self.started:5.0f} s] {text}", file=sys.stderr, flush=True)


def run_worker(workers: int, chosen: list[Scenario], load: Load, progress: Progress, bits: int = 2048,
               log_level: str = "ERROR", code: Code | None = None) -> dict[str, dict[str, float]]:
    """One worker, each of `chosen` driven in turn. At a level that logs every order (INFO),
    the log goes to /dev/null: a write per batch of lines, as to a pipe a collector reads.
    `code` is the source the worker runs (this checkout's if None)."""
    options = ["--rsa-bits", str(bits), "--workers", str(workers), "--attestation", "none", "--log-level", log_level]
    code = code or THIS_CODE
    with tempfile.TemporaryDirectory() as state:
        with code.active():
            process, endpoint = start_worker_process(state, options + (["--pin-cpus"] if load.pin_cpus else []),
                                                     stderr=subprocess.DEVNULL if log_level != "ERROR" else None)
        try:
            pids = [process.pid, *_children(process.pid)]
            results = {}
            for scenario in chosen:
                results[scenario.name] = result = drive(endpoint, scenario, load, pids)
                progress.step(f"{code.name}: {workers} process(es), RSA-{bits}, {scenario.name}: {result['rate']:.0f} orders/s")
            return results
        finally:
            process.terminate()
            process.wait(timeout=60)


@dataclass(frozen=True)
class Code:
    """The source a worker runs: this checkout's (`src` None), or a git ref's `src/` exported into a
    temporary directory, put first on the worker's PYTHONPATH (the same virtual environment)."""

    name: str
    src: str | None = None

    @classmethod
    def export(cls, ref: str, into: str) -> Code:
        root = subprocess.run(["git", "rev-parse", "--show-toplevel"], capture_output=True, text=True, check=True,
                              cwd=os.path.dirname(os.path.abspath(__file__))).stdout.strip()
        commit = subprocess.run(["git", "rev-parse", "--short", f"{ref}^{{commit}}"], capture_output=True, text=True,
                                check=True, cwd=root).stdout.strip()
        archive = subprocess.run(["git", "archive", "--format=tar", commit, "src"], capture_output=True, check=True, cwd=root)
        with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
            tar.extractall(into, filter="data")
        return cls(f"{ref} ({commit})", os.path.join(into, "src"))

    @contextlib.contextmanager
    def active(self) -> Iterator[None]:
        """Processes started inside run this code."""
        saved = os.environ.get("PYTHONPATH")
        if self.src is not None:
            os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (self.src, saved) if p)
        try:
            yield
        finally:
            if saved is None:
                os.environ.pop("PYTHONPATH", None)
            else:
                os.environ["PYTHONPATH"] = saved


THIS_CODE = Code("this code")
Round = tuple[dict[str, dict[str, float]], ...]  # 1 process, N, RSA-3072 1 and N, 1 process at INFO


def median_runs(runs: list[dict[str, dict[str, float]]]) -> dict[str, dict[str, float]]:
    """Per scenario, the run with the median throughput (its latencies and CPU figures with it)."""
    return {name: sorted((run[name] for run in runs), key=lambda r: r["rate"])[len(runs) // 2] for name in runs[0]}


def one_round(args: argparse.Namespace, index: int, code: Code, timers: tuple[Callable[[], float], ...], load: Load,
              progress: Progress) -> tuple[Round, tuple[float, ...]]:
    """The floors, then every run of one round for `code`."""
    chosen, hellos = scenarios(args.quick), scenarios(quick=True)
    floors = tuple(timer() for timer in timers)
    progress.step(f"cryptographic floor, small order, RSA-2048: {1 / floors[0]:.0f} orders/s")
    progress.step(f"cryptographic floor, small order, RSA-3072: {1 / floors[1]:.0f} orders/s")
    progress.step(f"raw byte work, 1 MiB: {1024 * 1024 / 1e6 / floors[2]:.0f} MB/s")
    handle = handle_floor(code)
    progress.step(f"{code.name}: Processor.handle alone, reused-key hello: "
                  + (f"{handle * 1e6:.0f} µs/order" if handle else "cannot run it"))
    # the INFO run right next to the ERROR run it is compared with, before it and after it in turn
    logged = run_worker(1, hellos, load, progress, log_level="INFO", code=code) if index % 2 == 0 else None
    one = run_worker(1, chosen, load, progress, code=code)
    if logged is None:
        logged = run_worker(1, hellos, load, progress, log_level="INFO", code=code)
    return (one, run_worker(args.workers, chosen, load, progress, code=code),
            run_worker(1, hellos, load, progress, bits=3072, code=code),
            run_worker(args.workers, hellos, load, progress, bits=3072, code=code), logged), (*floors, handle or 0.0)


@dataclass
class Summary:
    """One code's rounds: the median runs and the ratios the goals use."""

    rounds: list[Round]
    floors: list[tuple[float, ...]]

    def runs(self) -> tuple[dict[str, dict[str, float]], ...]:
        return tuple(median_runs([r[i] for r in self.rounds]) for i in range(5))

    def floor(self, which: int) -> float:
        return statistics.median(f[which] for f in self.floors)

    def to_floor(self, run: int, scenario: str, which: int) -> float:
        """Each round's orders/s × its own floor (seconds per order), the median of the rounds."""
        return statistics.median(r[run][scenario]["rate"] * f[which] for r, f in zip(self.rounds, self.floors))

    def serving(self) -> str:
        """The worker process's CPU per reused-key hello (1 process) against `Processor.handle`
        alone in the same round: what serving adds, µs (median of the rounds), and the two."""
        pairs = [(r[0]["hello 5 B, reused key"]["workers_us"], f[3] * 1e6) for r, f in zip(self.rounds, self.floors) if f[3]]
        if not pairs:
            return "Processor.handle alone: this code cannot run it"
        worker, handle = (statistics.median(side) for side in zip(*pairs))
        added = statistics.median(w - h for w, h in pairs)
        return f"{worker:.0f} µs in serve, {handle:.0f} µs alone: serving adds {added:.0f} µs"


def report(args: argparse.Namespace, summary: Summary) -> list[str]:
    """The table and the ratios of one code's rounds."""
    chosen, hellos = scenarios(args.quick), scenarios(quick=True)
    one, many, one_3072, many_3072, one_logged = summary.runs()
    floor, floor_3072, raw_1mib = (summary.floor(i) for i in range(3))
    to_floor = summary.to_floor
    lines = [
        f"| scenario | 1 process: orders/s | p50 ms | p99 ms | CPU µs/order (supervisor + worker + clients) "
        f"| {args.workers} processes: orders/s | p50 ms | p99 ms | CPU µs/order | N/1 |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    rows = [(s.name, one[s.name], many[s.name]) for s in chosen]
    rows += [(f"{s.name}, RSA-3072", one_3072[s.name], many_3072[s.name]) for s in hellos]
    for name, a, b in rows:
        lines.append(
            f"| {name} | {a['rate']:.0f} | {a['p50']:.2f} | {a['p99']:.2f} | {a['supervisor_us']:.0f} + {a['workers_us']:.0f} + {a['clients_us']:.0f} "
            f"| {b['rate']:.0f} | {b['p50']:.2f} | {b['p99']:.2f} | {b['supervisor_us']:.0f} + {b['workers_us']:.0f} + {b['clients_us']:.0f} "
            f"| {b['rate'] / a['rate']:.2f} |"
        )
    hello_fresh = one["hello 5 B, fresh keys"]["rate"]
    hello_reused = one["hello 5 B, reused key"]["rate"]
    fresh_3072 = one_3072["hello 5 B, fresh keys"]["rate"]
    reused_3072 = one_3072["hello 5 B, reused key"]["rate"]
    lines += [
        "",
        f"cryptographic floor, small order (RSA-2048 unwrap, 3 AES-GCM, SHA-256s, 1 libsecp256k1 signature): "
        f"{floor * 1e6:.0f} µs = {1 / floor:.0f} orders/s on one core (median of the rounds' floors)",
        f"same with RSA-3072 (the worker's default key): {floor_3072 * 1e6:.0f} µs = {1 / floor_3072:.0f} orders/s",
        f"worker / floor (1 process, hello, fresh keys; each round against its own floor): "
        f"RSA-2048 {to_floor(0, 'hello 5 B, fresh keys', 0):.2f}, RSA-3072 {to_floor(2, 'hello 5 B, fresh keys', 1):.2f}",
        f"default logging (INFO), 1 process, hello, fresh keys / floor: {to_floor(4, 'hello 5 B, fresh keys', 0):.2f}",
        f"worker process CPU per reused-key hello (1 process) against Processor.handle in a tight loop, "
        f"no server (each round's own, fastest of {FLOOR_ROUNDS} loops; medians): {summary.serving()}",
        f"reused key / fresh keys (1 process, hello): RSA-2048 {hello_reused / hello_fresh:.2f}, "
        f"RSA-3072 {reused_3072 / fresh_3072:.2f}",
        f"{args.workers} processes / 1 process (hello, fresh keys): "
        f"RSA-2048 {many['hello 5 B, fresh keys']['rate'] / hello_fresh:.2f}, "
        f"RSA-3072 {many_3072['hello 5 B, fresh keys']['rate'] / fresh_3072:.2f}",
    ]
    lines.append(
        "default logging (INFO: a line per order) / --log-level ERROR (1 process, hello): orders/s "
        + ", ".join(f"{s.name.removeprefix('hello 5 B, ')} {one_logged[s.name]['rate'] / one[s.name]['rate']:.3f}" for s in hellos)
        + "; worker process CPU per order (steadier) "
        + ", ".join(f"{s.name.removeprefix('hello 5 B, ')} {one_logged[s.name]['workers_us'] / one[s.name]['workers_us']:.3f}"
                    for s in hellos)
    )
    if not args.quick:
        mib = 1024 * 1024 / 1e6
        worker_mbs = one["echo 1 MiB, fresh keys"]["rate"] * mib
        raw_mbs = mib / raw_1mib
        lines += [
            f"1 MiB echo: worker {worker_mbs:.0f} MB/s (1 process) vs raw AES-GCM + SHA-256 + base64 "
            f"{raw_mbs:.0f} MB/s: {to_floor(0, 'echo 1 MiB, fresh keys', 2):.2f} (each round against its own)",
        ]
    return lines


def compare(args: argparse.Namespace, this: Summary, base: Summary, base_name: str) -> list[str]:
    """This code against the baseline, scenario by scenario: orders/s (median of the rounds'
    own ratios, the two codes' runs of a round next to each other) and CPU per order."""
    chosen, hellos = scenarios(args.quick), scenarios(quick=True)
    lines = [
        f"| scenario (this code ÷ {base_name}) | 1 process: orders/s | supervisor µs/order | worker µs/order "
        f"| {args.workers} processes: orders/s | supervisor µs/order | worker µs/order |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    this_runs, base_runs = this.runs(), base.runs()
    rows = [(s.name, 0, 1) for s in chosen] + [(f"{s.name}, RSA-3072", 2, 3) for s in hellos]
    rows += [(f"{s.name}, --log-level INFO", 4, None) for s in hellos]
    for label, single, multi in rows:
        name = label.removesuffix(", RSA-3072").removesuffix(", --log-level INFO")
        cells = []
        for run in (single, multi):
            if run is None:
                cells.append("– | – | –")
                continue
            rate = statistics.median(t[run][name]["rate"] / b[run][name]["rate"] for t, b in zip(this.rounds, base.rounds))
            now, before = this_runs[run][name], base_runs[run][name]
            cells.append(f"{rate:.2f} | {now['supervisor_us']:.0f} ÷ {before['supervisor_us']:.0f} "
                         f"| {now['workers_us']:.0f} ÷ {before['workers_us']:.0f}")
        lines.append(f"| {label} | {' | '.join(cells)} |")
    lines += [
        "",
        "worker / floor, 1 process, hello, fresh keys (this code, baseline): "
        f"RSA-2048 {this.to_floor(0, 'hello 5 B, fresh keys', 0):.2f}, {base.to_floor(0, 'hello 5 B, fresh keys', 0):.2f}; "
        f"RSA-3072 {this.to_floor(2, 'hello 5 B, fresh keys', 1):.2f}, {base.to_floor(2, 'hello 5 B, fresh keys', 1):.2f}; "
        f"at INFO {this.to_floor(4, 'hello 5 B, fresh keys', 0):.2f}, {base.to_floor(4, 'hello 5 B, fresh keys', 0):.2f}",
        f"worker process per reused-key hello against Processor.handle alone: this code {this.serving()}; "
        f"baseline {base.serving()}",
    ]
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="timed seconds per scenario")
    parser.add_argument("--clients", type=int, default=1, help="client processes")
    parser.add_argument("--connections", type=int, default=4, help="DEALER connections per client process")
    parser.add_argument("--depth", type=int, default=4, help="work orders each connection keeps in flight")
    parser.add_argument("--client", choices=sorted(CLIENTS), default="zmtp",
                        help="load generator: a lean ZMTP 3.0 DEALER (default) or pyzmq's DEALER")
    parser.add_argument("--no-pin", action="store_true", help="serve without --pin-cpus")
    parser.add_argument("--workers", type=int, default=len(os.sched_getaffinity(0)), help="N for the pool run")
    parser.add_argument("--repeat", type=int, default=3, help="rounds of every run; each figure is the median round's")
    parser.add_argument("--quick", action="store_true", help="only the two hello scenarios")
    parser.add_argument("--baseline", metavar="GITREF",
                        help="also run the code of GITREF (its src/ exported from git into a temporary directory, "
                             "the same environment), alternating with this code round by round, and compare")
    parser.add_argument("--write", metavar="FILE", help="also write the results as Markdown to FILE")
    args = parser.parse_args()

    chosen, hellos = scenarios(args.quick), scenarios(quick=True)
    with tempfile.TemporaryDirectory() as exported:
        codes = [THIS_CODE] + ([Code.export(args.baseline, exported)] if args.baseline else [])
        progress = Progress(len(codes) * args.repeat * (4 + 2 * (len(chosen) + len(hellos)) + len(hellos)))
        timers = floor_small(2048), floor_small(3072, 200), floor_bytes()
        load = Load(args.clients, args.connections, args.depth, args.seconds, args.client, not args.no_pin)
        summaries = [Summary([], []) for _ in codes]
        for index in range(args.repeat):  # the 1-process and N-process runs interleaved, so drift hits both
            order = range(len(codes)) if index % 2 == 0 else reversed(range(len(codes)))  # the codes alternate too
            for which in order:
                runs, floors = one_round(args, index, codes[which], timers, load, progress)
                summaries[which].rounds.append(runs)
                summaries[which].floors.append(floors)

    lines = [
        f"machine: {platform.machine()}, {len(os.sched_getaffinity(0))} usable cores, {platform.python_implementation()} "
        f"{platform.python_version()}; date {time.strftime('%Y-%m-%d')}",
        "versions: " + ", ".join(f"{p} {metadata.version(p)}" for p in ("cryptography", "coincurve", "pyzmq")),
        f"load: {args.clients} client process(es) × {args.connections} {args.client} DEALER connections × {args.depth} "
        f"work orders in flight, {args.seconds:g} s per scenario, median of {args.repeat} rounds",
        f"worker: `serve --log-level ERROR --workers 1` and `--workers {args.workers}`{'' if args.no_pin else ', --pin-cpus'}",
        "",
    ]
    lines += report(args, summaries[0])
    if args.baseline:
        lines += ["", f"baseline: {codes[1].name}, its rounds alternating with this code's", ""]
        lines += report(args, summaries[1])
        lines += [""] + compare(args, summaries[0], summaries[1], "baseline")
    text = "\n".join(lines)
    print(text)
    if args.write:
        with open(args.write, "w", encoding="utf-8") as handle:
            handle.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

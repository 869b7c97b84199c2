#!/usr/bin/env python3
"""What the per-order log line costs a worker process: the processor in a tight loop over
pre-built hello orders (one reused session key: the cheapest order, where the line weighs
most; and fresh keys), with the line through `OrderLog` (the default), through Python's
logging module (as before), and off (`--log-level WARNING`). Rounds are interleaved, each
figure is the median round's CPU time per order (steadier than wall time on a shared machine); the log goes to /dev/null, as a pipe read by a collector would
cost about the same per write.

Run by hand: `python benchmarks/orderlog.py [--orders N] [--rounds R]`.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import time

from avalon_worker import orderlog
from avalon_worker.identity import Identity
from avalon_worker.processor import Processor
from avalon_worker.requester import Session, WorkerInfo, build_work_order
from avalon_worker.signup import signup_function
from avalon_worker.workload.registry import WorkloadRegistry


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orders", type=int, default=2000, help="orders per round")
    parser.add_argument("--rounds", type=int, default=7, help="rounds of each mode")
    args = parser.parse_args()

    sink = open(os.devnull, "w")
    logging._srcfile = None  # as the CLI configures logging
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    logging.basicConfig(level=logging.INFO, format=orderlog.FORMAT, stream=sink)
    identity = Identity.generate(2048)
    registry = WorkloadRegistry.builtin()
    processors = {
        "OrderLog": Processor(identity, registry, signup_function(identity), order_log=orderlog.OrderLog(sink)),
        "logging": Processor(identity, registry, signup_function(identity)),
        "off": Processor(identity, registry, signup_function(identity)),
    }
    info = WorkerInfo.from_signup(json.loads(processors["off"].handle(b'{"jsonrpc":"2.0","id":1,"method":"ProcessWorkerSignup"}')))
    processor_logger = logging.getLogger("avalon_worker.processor")
    fast = orderlog.OrderLog(sink)
    wid = "ab" * 32
    lines = {
        "OrderLog": lambda: fast.line(wid, "python-hello", "ok", 0.25),
        "logging": lambda: processor_logger.info("work order %s workload=%r %s%s %.1f ms", wid, "python-hello", "ok", "", 0.25),
    }
    for mode, write in lines.items():
        rounds = []
        for _ in range(args.rounds):
            start = time.process_time()
            for _ in range(args.orders):
                write()
            fast.flush()
            rounds.append((time.process_time() - start) / args.orders * 1e6)
        print(f"one line through {mode}: {statistics.median(rounds):.2f} µs")
    for keys in ("reused key", "fresh keys"):
        session = Session.new(info)
        count = args.orders if keys == "reused key" else args.orders // 5
        frames = [build_work_order(info, "python-hello", [b"World"], session=session if keys == "reused key" else None).frame()
                  for _ in range(count)]
        times: dict[str, list[float]] = {mode: [] for mode in processors}
        modes = list(processors.items())
        for round_number in range(args.rounds):
            # Each mode goes first as often as the others: the first loop of a round pays for
            # what the previous one left in the caches.
            for mode, processor in modes[round_number % len(modes):] + modes[: round_number % len(modes)]:
                processor_logger.setLevel(logging.WARNING if mode == "off" else logging.INFO)
                start = time.process_time()
                for frame in frames:
                    processor.process(frame)
                if processor.order_log is not None:
                    processor.order_log.flush()
                times[mode].append((time.process_time() - start) / count * 1e6)
        off = statistics.median(times["off"])
        print(f"hello, {keys}: log off {off:.1f} µs/order", end="")
        for mode in ("OrderLog", "logging"):
            cost = statistics.median(times[mode])
            print(f"; {mode} {cost:.1f} µs (+{cost - off:.1f} µs, throughput ×{off / cost:.3f})", end="")
        print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

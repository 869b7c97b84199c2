#!/usr/bin/env python3
"""What receipts cost an order that never gets one: in the worker process, the signed update
the pump asks for with every order (`"receiptUpdate": true`), measured as the processor in a
tight loop over pre-built hello orders with and without the flag (one reused session key: the
cheapest order, where the update weighs most; and a fresh session key each, as Avalon's SDK
sends them); in the listener, the request hash kept with
every submit (`hashing.submitted_request_hash`), for a small order and a 1 MiB one. Rounds
are interleaved; each figure is the median round's CPU time per order.

Run by hand: `python benchmarks/receipts.py [--orders N] [--rounds R]`.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import time
from collections.abc import Callable

from avalon_worker.hashing import submitted_request_hash
from avalon_worker.identity import Identity
from avalon_worker.processor import Processor
from avalon_worker.requester import Session, WorkerInfo, build_work_order
from avalon_worker.signup import signup_function
from avalon_worker.workload.registry import WorkloadRegistry


def _cpu_us(count: int, run: Callable[[], object]) -> float:
    """CPU time per item of one call of `run` over `count` items, in µs."""
    start = time.process_time()
    run()
    return (time.process_time() - start) / count * 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orders", type=int, default=2000, help="orders per round")
    parser.add_argument("--rounds", type=int, default=7, help="rounds of each mode")
    args = parser.parse_args()
    logging.disable(logging.INFO)  # the per-order line is the same in both modes

    identity = Identity.generate(2048)
    processor = Processor(identity, WorkloadRegistry.builtin(), signup_function(identity))
    info = WorkerInfo.from_signup(json.loads(processor.handle(b'{"jsonrpc":"2.0","id":1,"method":"ProcessWorkerSignup"}')))
    session = Session.new(info)
    uncached = Processor(identity, WorkloadRegistry.builtin(), signup_function(identity), session_cache_size=0)
    for keys in ("reused key", "fresh keys"):
        count = args.orders if keys == "reused key" else args.orders // 5
        worker = uncached if keys == "fresh keys" else processor  # every round unwraps every key again
        plain = [build_work_order(info, "python-hello", [b"World"], session=session if keys == "reused key" else None).frame()
                 for _ in range(count)]
        flagged = [frame[:-1] + b',"receiptUpdate":true}' for frame in plain]
        assert b'"receiptUpdate"' in worker.handle(flagged[0]) and b'"receiptUpdate"' not in worker.handle(plain[0])
        times: dict[str, list[float]] = {"without": [], "with": []}
        for round_number in range(args.rounds):
            modes = [("without", plain), ("with", flagged)]
            for mode, frames in modes[round_number % 2:] + modes[: round_number % 2]:
                times[mode].append(_cpu_us(len(frames), lambda frames=frames, worker=worker: [worker.process(f) for f in frames]))
        without, with_update = statistics.median(times["without"]), statistics.median(times["with"])
        print(f"worker, hello order, {keys}: {without:.1f} µs without the update, {with_update:.1f} µs with it "
              f"(+{with_update - without:.1f} µs, throughput ×{without / with_update:.3f})")

    for size, label in ((5, "small"), (1 << 20, "1 MiB")):
        params = build_work_order(info, "python-hello", [b"x" * size], session=session).request["params"]
        count = args.orders if size < 1024 else max(args.orders // 200, 5)
        cost = statistics.median(_cpu_us(count, lambda params=params, count=count: [submitted_request_hash(params)
                                                                                    for _ in range(count)])
                                 for _ in range(args.rounds))
        print(f"listener, request hash of a {label} order: {cost:.1f} µs")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

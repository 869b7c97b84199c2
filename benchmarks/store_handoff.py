#!/usr/bin/env python3
"""What handing one store call from the event loop to a thread and back costs: `StoreCalls`'
own threads against asyncio's `run_in_executor` on a `ThreadPoolExecutor` (what it replaced),
with a call that does nothing, so that the hand-off is all there is.

Prints the process's CPU µs and wall µs per call, one call at a time and four under way, both
kinds alternating for `--rounds` rounds. Run by hand: `python benchmarks/store_handoff.py`.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor

from avalon_worker.front.store_calls import StoreCalls


def nothing() -> int:
    return 1


async def _timed(call: Callable[[], Awaitable[int]], calls: int, under_way: int) -> tuple[float, float]:
    async def one_after_another(count: int) -> None:
        for _ in range(count):
            await call()

    await asyncio.gather(*(one_after_another(calls // 10 // under_way) for _ in range(under_way)))  # warm up
    cpu, wall = time.process_time(), time.perf_counter()
    await asyncio.gather(*(one_after_another(calls // under_way) for _ in range(under_way)))
    return (time.process_time() - cpu) / calls * 1e6, (time.perf_counter() - wall) / calls * 1e6


def executor_round(calls: int, under_way: int) -> tuple[float, float]:
    executor = ThreadPoolExecutor(max_workers=2)

    async def call() -> int:
        return await asyncio.get_running_loop().run_in_executor(executor, nothing)

    try:
        return asyncio.run(_timed(call, calls, under_way))
    finally:
        executor.shutdown()


def store_calls_round(calls: int, under_way: int) -> tuple[float, float]:
    store_calls = StoreCalls(threads=2)

    async def call() -> int:
        return await store_calls(nothing)

    try:
        return asyncio.run(_timed(call, calls, under_way))
    finally:
        store_calls.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    print("| calls under way | round | run_in_executor: CPU µs/call (wall) | StoreCalls: CPU µs/call (wall) | CPU ratio |")
    print("|---:|---:|---:|---:|---:|")
    for under_way in (1, 4):
        for index in range(args.rounds):
            old = executor_round(args.calls, under_way)
            new = store_calls_round(args.calls, under_way)
            print(f"| {under_way} | {index + 1} | {old[0]:.1f} ({old[1]:.1f}) | {new[0]:.1f} ({new[1]:.1f}) "
                  f"| {new[0] / old[0]:.2f} |")


if __name__ == "__main__":
    main()

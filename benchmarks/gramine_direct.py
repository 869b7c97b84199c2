#!/usr/bin/env python3
"""What the Gramine library OS costs: the same worker natively and under `gramine-direct`, one run.

Run through `bash scripts/gramine-direct-test.sh --bench`, which builds or finds Gramine, renders
the manifest and passes `--manifest`, `--state-dir`, `--workloads` and `--python` (the
virtualenv the manifest mounts, so both runs use the same interpreter and packages). It starts the worker with
one worker process natively and under gramine-direct, rounds interleaved, drives each with the
load generator of `throughput.py` (hello with fresh keys; 1 MiB echo), and prints orders/s,
p50/p99 and CPU per order for both, and their ratio. The machine is shared and noisy: compare the
ratio, measured in one run.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from throughput import Load, Scenario, _children, drive, median_runs

from avalon_worker._cli.demo import start_worker_process

SCENARIOS = [
    Scenario("hello 5 B, fresh keys", "python-hello", b"World", True),
    Scenario("echo 1 MiB, fresh keys", "echo-result", os.urandom(1024 * 1024), True),
]
OPTIONS = ["--rsa-bits", "2048", "--workers", "1", "--attestation", "none", "--log-level", "ERROR"]


def run(process: subprocess.Popen[str], endpoint: str, load: Load) -> dict[str, dict[str, float]]:
    try:
        time.sleep(1)  # the worker process is forked after the endpoint is ready; under Gramine that takes a while
        pids = [process.pid, *_children(process.pid)]
        return {s.name: drive(endpoint, s, load, pids) for s in SCENARIOS}
    finally:
        process.terminate()
        process.wait(timeout=120)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--manifest", required=True, help="the rendered manifest, without .manifest")
    parser.add_argument("--state-dir", required=True, help="a directory on the manifest's encrypted mount")
    parser.add_argument("--workloads", required=True, help="the measured workloads.json")
    parser.add_argument("--python", required=True,
                        help="the interpreter (with avalon-worker) that the manifest runs, to run natively too")
    parser.add_argument("--seconds", type=float, default=3.0, help="timed seconds per scenario")
    parser.add_argument("--repeat", type=int, default=3, help="rounds; each figure is the median round's")
    args = parser.parse_args()

    options = ["--workloads", args.workloads, *OPTIONS]
    load = Load(clients=1, connections=4, depth=4, seconds=args.seconds, pin_cpus=False)
    native_runs, gramine_runs = [], []
    for round_number in range(args.repeat):
        with tempfile.TemporaryDirectory() as state:
            native_runs.append(run(*start_worker_process(state, options, 300, launcher=[args.python]), load))
        state = str(Path(args.state_dir) / f"bench-{os.getpid()}-{round_number}")
        gramine_runs.append(run(*start_worker_process(state, options, 300, ["gramine-direct", args.manifest]), load))
        print(f"round {round_number + 1} of {args.repeat} done", file=sys.stderr, flush=True)
    native, gramine = median_runs(native_runs), median_runs(gramine_runs)

    lines = [
        f"machine: {platform.machine()}, {len(os.sched_getaffinity(0))} usable cores; date {time.strftime('%Y-%m-%d')}; "
        f"the same interpreter ({args.python}) and packages natively and under gramine-direct",
        f"worker: `serve --workers 1 --rsa-bits 2048 --log-level ERROR`, natively and under gramine-direct; "
        f"load: 4 connections × 4 orders in flight, {args.seconds:g} s per scenario, median of {args.repeat} rounds",
        "",
        "| scenario | native: orders/s | p50 ms | p99 ms | CPU µs/order (supervisor + worker) "
        "| gramine-direct: orders/s | p50 ms | p99 ms | CPU µs/order | gramine-direct / native |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for scenario in SCENARIOS:
        a, b = native[scenario.name], gramine[scenario.name]
        lines.append(
            f"| {scenario.name} | {a['rate']:.0f} | {a['p50']:.2f} | {a['p99']:.2f} | {a['supervisor_us']:.0f} + {a['workers_us']:.0f} "
            f"| {b['rate']:.0f} | {b['p50']:.2f} | {b['p99']:.2f} | {b['supervisor_us']:.0f} + {b['workers_us']:.0f} "
            f"| {b['rate'] / a['rate']:.2f} |"
        )
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())

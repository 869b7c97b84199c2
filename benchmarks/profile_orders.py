#!/usr/bin/env python3
"""Where each microsecond of an order goes: a per-function profile of a real worker.

Starts `avalon-worker serve --workers 1` (RSA-2048, --log-level ERROR, --pin-cpus) with a cProfile in
the supervisor and in its worker process (`_profile/sitecustomize.py`, timing CPU time), drives it
with `throughput.py`'s load generator for each scenario (reused-key hello, fresh-key hello), the
worker process profiled in one run and the supervisor in the next, each beside an unprofiled other
(profiled together, each one's slowness changes what the other does: the supervisor lets replies
gather once orders take 0.2 ms, which a profiled worker process's do), and prints for each process
the functions that took the most CPU, per order: own time (tottime), time including callees
(cumtime) and calls per order. The profiler's own cost inflates every figure (Python calls most);
read shares, not absolute µs. Run by hand:
`python benchmarks/profile_orders.py [--seconds 5] [--top 25] [--scenario reused|fresh] [--save DIR]`.
"""

from __future__ import annotations

import argparse
import glob
import os
import pstats
import signal
import sys
import tempfile
import time

import throughput

HERE = os.path.dirname(os.path.abspath(__file__))


def _rows(path: str, orders: int, top: int) -> list[str]:
    stats = pstats.Stats(path)
    table = stats.stats  # type: ignore[attr-defined]  # {(file, line, name): (cc, nc, tt, ct, callers)}
    total = sum(tt for _, _, tt, _, _ in table.values())
    lines = [f"  total {total / orders * 1e6:.1f} µs/order of profiled CPU over {orders} orders",
             f"  {'own µs':>7} {'cum µs':>7} {'calls':>6}  function"]
    ranked = sorted(table.items(), key=lambda entry: entry[1][2], reverse=True)[:top]
    for (filename, line, name), (_, calls, own, cumulative, _) in ranked:
        where = name if filename == "~" else f"{os.path.relpath(filename, HERE + '/..')}:{line}({name})"
        where = where.replace("../", "").split("site-packages/")[-1]
        lines.append(f"  {own / orders * 1e6:7.2f} {cumulative / orders * 1e6:7.2f} {calls / orders:6.2f}  {where}")
    return lines


def _profiled(endpoint: str, scenario: throughput.Scenario, load: throughput.Load, pids: list[int],
              profiled: list[int], out: str) -> dict[str, float]:
    """Drive `scenario` with the profilers of `profiled` on, and wait for their files."""
    before = len(glob.glob(f"{out}/*.prof"))
    for pid in profiled:
        os.kill(pid, signal.SIGUSR1)
    result = throughput.drive(endpoint, scenario, load, pids)
    for pid in profiled:
        os.kill(pid, signal.SIGUSR2)
    deadline = time.monotonic() + 30
    while len(glob.glob(f"{out}/*.prof")) < before + len(profiled) and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(0.5)  # the last file is whole
    return result


def profile(scenario: throughput.Scenario, seconds: float, top: int, save: str | None) -> list[str]:
    """The worker processes profiled in one run, the supervisor in the next, each while the other
    runs unprofiled."""
    load = throughput.Load(clients=1, connections=4, depth=4, seconds=seconds)
    options = ["--rsa-bits", "2048", "--workers", "1", "--attestation", "none", "--log-level", "ERROR", "--pin-cpus"]
    with tempfile.TemporaryDirectory() as state, tempfile.TemporaryDirectory() as out:
        os.environ["PYTHONPATH"] = os.pathsep.join([os.path.join(HERE, "_profile"), os.environ.get("PYTHONPATH", "")])
        os.environ["AVALON_PROFILE_DIR"] = out
        try:
            process, endpoint = throughput.start_worker_process(state, options)
        finally:
            del os.environ["AVALON_PROFILE_DIR"]
        try:
            pids = [process.pid, *throughput._children(process.pid)]
            throughput.drive(endpoint, scenario, throughput.Load(1, 4, 4, 1.0), pids)  # warm-up, not profiled
            results = {"worker": _profiled(endpoint, scenario, load, pids, pids[1:], out),
                       "supervisor": _profiled(endpoint, scenario, load, pids, pids[:1], out)}
        finally:
            process.terminate()
            process.wait(timeout=60)
        lines = [f"## {scenario.name}"]
        for role, result in results.items():
            orders = int(result["orders"])
            lines.append(f"{role} process, profiled alone: {orders} orders, {result['rate']:.0f} orders/s")
            for path in sorted(glob.glob(f"{out}/{role}-*.prof")):
                if pstats.Stats(path).total_calls < orders:  # type: ignore[attr-defined]  # a spare, which ran no order
                    continue
                lines += _rows(path, orders, top)
                if save:
                    os.makedirs(save, exist_ok=True)
                    os.replace(path, os.path.join(save, f"{scenario.name.split(',')[1].strip().split()[0]}-{role}.prof"))
        return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="profiled seconds per scenario")
    parser.add_argument("--top", type=int, default=25, help="functions shown per process")
    parser.add_argument("--scenario", choices=("reused", "fresh", "both"), default="both")
    parser.add_argument("--save", metavar="DIR", help="keep the .prof files in DIR (for snakeviz, pstats)")
    args = parser.parse_args()
    hellos = {"fresh": throughput.scenarios(quick=True)[0], "reused": throughput.scenarios(quick=True)[1]}
    chosen = ["reused", "fresh"] if args.scenario == "both" else [args.scenario]
    for name in chosen:
        print("\n".join(profile(hellos[name], args.seconds, args.top, args.save)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

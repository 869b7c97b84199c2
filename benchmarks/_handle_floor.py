#!/usr/bin/env python3
"""A reused-key hello through `Processor.handle` in a tight loop, no server: the worker process's
own per-order work (both JSON layers, parsing, the request hash, AES-GCM, the workload, the
response hash, the libsecp256k1 signature) without sockets, framing or waiting.

`throughput.py` runs it in every round, under the same code as the worker it compares it with (a
process of its own, so that `--baseline` measures the baseline's `Processor`), and sets it against
the worker process's CPU per reused-key hello in `serve`: the difference is what serving an order
adds (the supervisor's framing, the reads and writes, the wake-ups), the ratio says how far the
machine's speed, not the code, moved a round. Prints the fastest of `rounds` loops of `orders`
orders, in seconds per order. `reused_key_hello` is the processor and frame that `wakeup.py` and
`instructions.py` drive too.
"""

from __future__ import annotations

import json
import logging
import sys
import tempfile
import time

from avalon_worker.identity import load_or_create
from avalon_worker.processor import Processor
from avalon_worker.requester import Session, WorkerInfo, build_work_order
from avalon_worker.signup import signup_function
from avalon_worker.workload.registry import WorkloadRegistry

SIGNUP = b'{"jsonrpc":"2.0","id":1,"method":"ProcessWorkerSignup"}'


def reused_key_hello(state: str) -> tuple[Processor, bytes]:
    """A processor for the RSA-2048 identity in `state` (made there if it holds none), and a
    python-hello request frame for it under one session key (the same frame every time)."""
    identity, _ = load_or_create(state, rsa_bits=2048)
    processor = Processor(identity, WorkloadRegistry.builtin(), signup_function(identity))
    info = WorkerInfo.from_signup(json.loads(processor.handle(SIGNUP)))
    return processor, build_work_order(info, "python-hello", [b"World"], session=Session.new(info)).frame()


def main() -> int:
    orders, rounds = int(sys.argv[1]), int(sys.argv[2])
    logging.disable(logging.INFO)  # as `serve --log-level ERROR`, which it is compared with
    with tempfile.TemporaryDirectory() as state:
        processor, frame = reused_key_hello(state)
    processor.handle(frame)  # the session key's unwrap, once, as the worker's cache does it

    def one_round() -> float:
        began = time.perf_counter()
        for _ in range(orders):  # the same frame, as throughput.py sends it: no replay guard here
            processor.handle(frame)
        return (time.perf_counter() - began) / orders

    print(min(one_round() for _ in range(rounds)))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Fuzz a running worker: mutated work orders over real sockets, every one must be answered.

Starts `avalon-worker serve` (worker processes, loopback, a fresh identity), builds valid work
orders with the package's requester as seeds, and sends `--count` mutations of them: structure
(fields dropped, added, swapped between items), types (any JSON value in any place), nesting
(values and ids buried up to 1,100 levels deep), ids (every JSON type, huge integers, control
characters), encodings (hex with whitespace, case and prefixes; base64 variants; invalid UTF-8,
UTF-16, BOMs, NULs, lone surrogates; truncated and bit-flipped frames; params as an object or a
doubly encoded string). Up to `--window` orders are in flight at once on one DEALER socket.

It counts what it sent, the replies, the replies that were not one JSON-RPC reply, the
"internal error" replies (an exception the worker did not expect) and the worker processes that
had to be replaced; then it checks that a valid order still verifies. Exit status 0 only if no
reply was lost, none was malformed or internal, no process was restarted and the worker still
serves. The seed (`--seed`) makes a run repeatable.
"""

from __future__ import annotations

import argparse
import base64
import copy
import json
import os
import random
import shutil
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import zmq

from avalon_worker._cli.demo import start_worker_process
from avalon_worker.crypto import SigningKey
from avalon_worker.requester import InputSpec, ItemModeName, WorkerInfo, build_work_order, open_result

WORKLOADS = ("python-hello", "python-fib", "echo-result")
IDS = ["workOrderId", "workerId", "workloadId", "requesterId", "requesterNonce"]
FIELDS = [*IDS, "encryptedSessionKey", "sessionKeyIv", "encryptedRequestHash", "inData", "outData",
          "payloadFormat", "dataEncryptionAlgorithm", "requesterSignature", "verifyingKey",
          "responseTimeoutMSecs", "workerEncryptionKey", "resultUri", "notifyUri"]
ITEM_FIELDS = ["index", "dataHash", "data", "encryptedDataEncryptionKey", "iv"]
JUNK_TEXT = ["", "\n", "\r\n", " ", "\t", "\x00", "\u2028", "\ud800", "é", "0x", "0X", "null", "-", "=", "%%",
             "\ufeff", "A" * 5000, "{}", "[]", '"', "\\"]


class Fuzzer:
    """Mutations of valid orders, reproducible from one seed."""

    def __init__(self, rng: random.Random, seeds: list[dict[str, Any]]) -> None:
        self.rng = rng
        self.seeds = seeds

    def json_value(self, depth: int = 0) -> Any:
        rng = self.rng
        kind = rng.randrange(10 if depth < 3 else 7)
        if kind == 0:
            return None
        if kind == 1:
            return rng.choice([True, False])
        if kind == 2:
            return rng.choice([0, -1, 1, 2**31, 2**63, 2**64, 2**70, -(2**80), 10**30])
        if kind == 3:
            return rng.choice([0.5, -1e300, 1e-300, 3.0])
        if kind in (4, 5):
            return rng.choice(JUNK_TEXT)
        if kind == 6:
            return "".join(rng.choice("0123456789abcdefABCDEF xX\n") for _ in range(rng.randrange(0, 80)))
        if kind == 7:
            return [self.json_value(depth + 1) for _ in range(rng.randrange(0, 4))]
        if kind == 8:
            return {rng.choice(FIELDS + ITEM_FIELDS + ["id"]): self.json_value(depth + 1) for _ in range(rng.randrange(0, 4))}
        return self.nested(rng.randrange(1, 1100))

    def nested(self, depth: int) -> Any:
        value: Any = self.rng.choice([1, "x", None, [], {}])
        for _ in range(depth):
            value = [value] if self.rng.random() < 0.7 else {"a": value}
        return value

    def an_id(self) -> Any:
        return self.rng.choice([
            1, "1", None, True, False, [], {}, [1], {"id": 1}, 2**64, 2**70 + 1, -(2**90), 1.5, 1e300,
            "\n", "x" * 3000, self.nested(self.rng.randrange(1, 1100)),
        ])

    def mutate_hex(self, text: str) -> str:
        rng = self.rng
        if not text:
            return rng.choice(["0x", "00", "zz"])
        at = rng.randrange(len(text) + 1)
        return rng.choice([
            text[:at] + rng.choice(JUNK_TEXT[:8]) + text[at:],
            "0x" + text, "0X" + text.upper(), text.upper(), text[:-1], text + "0", text[: len(text) // 2],
            text.replace("a", "g"),
        ])

    def mutate_b64(self, text: str) -> str:
        rng = self.rng
        return rng.choice([
            text.rstrip("="), text + "=", text.replace("+", "-").replace("/", "_"), text[:-3], " " + text,
            text + "\n", base64.b64encode(text.encode()).decode(), "",
        ])

    def mutate_params(self, params: dict[str, Any]) -> None:
        rng = self.rng
        for _ in range(rng.randrange(1, 4)):
            choice = rng.randrange(9)
            field = rng.choice(FIELDS)
            if choice == 0:
                params.pop(field, None)
            elif choice == 1:
                params[field] = self.json_value()
            elif choice == 2 and isinstance(params.get(field), str):
                params[field] = self.mutate_hex(params[field])
            elif choice == 3 and isinstance(params.get("inData"), list) and params["inData"]:
                self.mutate_item(rng.choice(params["inData"]))
            elif choice == 4 and isinstance(params.get("inData"), list):
                self.reshape_items(params["inData"])
            elif choice == 5:
                params[rng.choice(FIELDS)] = self.nested(rng.randrange(1, 1100))
            elif choice == 6:
                params["outData"] = [{"index": i, "encryptedDataEncryptionKey": rng.choice(["null", "-", "", "00" * 40])}
                                     for i in range(rng.randrange(0, 4))]
            elif choice == 7:
                params[rng.choice(["extra", "id", "__proto__", "params"])] = self.json_value()
            else:
                # Not below a second: an order past its own limit has its process replaced by
                # design, which this run counts as a failure.
                params["responseTimeoutMSecs"] = rng.choice([0, 1000, 60_000, -1, 2**40, 2**70, "5", 1.5, True, None])

    def reshape_items(self, items: list[Any]) -> None:
        how = self.rng.randrange(3)
        if how == 0:
            items.reverse()
        elif how == 1 and items:
            items.append(copy.deepcopy(items[0]))  # a duplicate index
        else:
            items.clear()

    def mutate_item(self, item: Any) -> None:
        if not isinstance(item, dict):
            return
        field = self.rng.choice(ITEM_FIELDS)
        if field == "data" and isinstance(item.get("data"), str) and self.rng.random() < 0.6:
            item["data"] = self.mutate_b64(item["data"])
        elif isinstance(item.get(field), str) and self.rng.random() < 0.5:
            item[field] = self.mutate_hex(item[field])
        elif self.rng.random() < 0.3:
            item.pop(field, None)
        else:
            item[field] = self.json_value()

    def frame(self) -> bytes:
        rng = self.rng
        inner = json.loads(json.dumps(rng.choice(self.seeds)))
        layer = rng.randrange(12)
        outer: dict[str, Any] = {"jsonrpc": "2.0", "id": rng.randrange(1000), "method": "ProcessWorkOrder"}
        if layer <= 4:
            self.mutate_params(inner["params"])
        elif layer == 5:
            inner["id"] = self.an_id()
        elif layer == 6:
            outer["id"] = self.an_id()
            inner.pop("id", None)
        elif layer == 7:
            inner[rng.choice(["params", "method", "jsonrpc"])] = self.json_value()
        elif layer == 8:
            outer[rng.choice(["method", "params", "jsonrpc"])] = self.json_value()
        elif layer == 9:
            outer["method"] = rng.choice(["ProcessWorkerSignup", "processworkorder", "", "WorkOrderSubmit"])
            outer["params"] = rng.choice([None, {}, {"nonce": "zz"}, {"nonce": "00" * 65}, {"nonce": "0" * 3}, []])
            return self.encode(outer)
        text = json.dumps(inner) if rng.random() < 0.9 else json.dumps(json.dumps(inner))
        outer.setdefault("params", text if rng.random() < 0.9 else inner)
        return self.encode(outer)

    def encode(self, outer: dict[str, Any]) -> bytes:
        rng = self.rng
        raw = json.dumps(outer, ensure_ascii=rng.random() < 0.5).encode("utf-8", "surrogatepass")
        mutation = rng.randrange(14)
        if mutation == 0:
            return raw[: rng.randrange(len(raw) + 1)]
        if mutation == 1:
            data = bytearray(raw)
            for _ in range(rng.randrange(1, 5)):
                data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
            return bytes(data)
        if mutation == 2:
            return json.dumps(outer).encode("utf-16")
        if mutation == 3:
            return b"\xef\xbb\xbf" + raw
        if mutation == 4:
            at = rng.randrange(len(raw) + 1)
            return raw[:at] + rng.choice([b"\xff", b"\xc3", b"\x00", b"\xed\xa0\x80", b"\\ud800"]) + raw[at:]
        if mutation == 5:
            return raw + rng.choice([b" ", b"\n", b"{}", b"]", b"x"])
        return raw


def child_pids(pid: int) -> set[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return {int(p) for p in path.read_text().split()} if path.exists() else set()


def is_reply(raw: bytes) -> bool:
    """One JSON-RPC reply (result or error), or a signup document."""
    try:
        reply = json.loads(raw)
    except ValueError:
        return False
    if not isinstance(reply, dict):
        return False
    if "verifying_key" in reply:
        return True
    if reply.get("jsonrpc") != "2.0" or "id" not in reply:
        return False
    error = reply.get("error")
    return ("result" in reply) != (error is not None) and (error is None or isinstance(error.get("code"), int))


def seeds_for(info: WorkerInfo, rng: random.Random) -> list[dict[str, Any]]:
    key = SigningKey.generate()
    seeds = []
    for n in range(24):
        workload = WORKLOADS[n % len(WORKLOADS)]
        text = str(rng.randrange(30)) if workload == "python-fib" else f"fuzz {n}"
        modes: list[ItemModeName] = ["session-key", "plaintext", "data-key"]
        inputs = [InputSpec(text.encode(), modes[n % 3])] + ([InputSpec(b"+", "plaintext")] if n % 4 == 0 else [])
        pending = build_work_order(
            info, workload, inputs, requester_key=key if n % 2 else None,
            output_modes=[modes[(n // 5) % 3]] if n % 5 == 0 else None,
            include_data_hash=n % 3 != 0, request_id=n,
        )
        seeds.append(pending.request)
    return seeds


def run(count: int, seed: int, window: int, workers: int, reply_timeout_s: float) -> dict[str, Any]:
    rng = random.Random(seed)
    state = tempfile.mkdtemp(prefix="avalon-worker-fuzz-")
    process, endpoint = start_worker_process(
        state, ["--rsa-bits", "2048", "--attestation", "none", "--workers", str(workers), "--log-level", "ERROR"]
    )
    context: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
    sock = context.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(endpoint)
    counts: Counter[str] = Counter()
    started = time.monotonic()
    try:
        call: Callable[[bytes], bytes] = lambda frame: _call(context, endpoint, frame)  # noqa: E731
        info = WorkerInfo.from_signup(json.loads(call(b'{"jsonrpc":"2.0","id":1,"method":"ProcessWorkerSignup"}')))
        fuzzer = Fuzzer(rng, seeds_for(info, rng))
        for request in fuzzer.seeds:  # every seed is valid before it is mutated
            pending_frame = json.dumps({"jsonrpc": "2.0", "id": 0, "method": "ProcessWorkOrder", "params": json.dumps(request)})
            reply = json.loads(call(pending_frame.encode()))
            if "result" not in reply:
                raise SystemExit(f"fuzz: a seed order failed before mutation: {reply}")
        initial = child_pids(process.pid)
        seen = set(initial)
        sent = received = 0
        while received < count:
            while sent < count and sent - received < window:
                sock.send_multipart([b"", fuzzer.frame()])
                sent += 1
            if not sock.poll(int(reply_timeout_s * 1000)):
                break  # a reply is lost
            while sock.poll(0):
                parts = sock.recv_multipart()
                received += 1
                body = parts[-1]
                counts["replies"] += 1
                if not is_reply(body):
                    counts["malformed"] += 1
                else:
                    counts[_kind(body)] += 1
            if received % 1000 < window:
                seen |= child_pids(process.pid)
        seen |= child_pids(process.pid)
        pending = build_work_order(info, "python-hello", [b"after the storm"])
        still_serving = open_result(pending, json.loads(call(pending.frame())), info) == [b"Hello after the storm"]
        alive = process.poll() is None
    finally:
        sock.close(linger=0)
        process.terminate()
        process.wait(timeout=60)
        shutil.rmtree(state, ignore_errors=True)  # the throw-away identity's private keys
    return {
        "inputs": count, "sent": sent, "replies": received, "lost": sent - received,
        "malformed replies": counts["malformed"], "internal errors": counts["internal error"],
        "process restarts": len(seen - initial),
        "worker alive": alive, "still serving": still_serving, "seconds": round(time.monotonic() - started, 1),
        "outcomes": {k: v for k, v in sorted(counts.items()) if k not in ("replies", "malformed", "internal error")},
    }


def _kind(body: bytes) -> str:
    reply = json.loads(body)
    if "verifying_key" in reply:
        return "signup"
    if "result" in reply:
        return "result"
    if reply["error"]["message"] == "internal error in the worker":
        return "internal error"  # an exception the worker did not expect: a bug
    return f"error {reply['error']['code']}"


def _call(context: zmq.Context[zmq.Socket[bytes]], endpoint: str, frame: bytes) -> bytes:
    sock = context.socket(zmq.REQ)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.RCVTIMEO, 30_000)
    sock.connect(endpoint)
    try:
        sock.send(frame)
        return sock.recv()
    finally:
        sock.close(linger=0)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=10_000, help="mutated orders to send (default %(default)s)")
    parser.add_argument("--seed", type=int, default=int(os.environ.get("FUZZ_SEED", "1")), help="random seed (default 1)")
    parser.add_argument("--window", type=int, default=32, help="orders in flight at once (default %(default)s)")
    parser.add_argument("--workers", type=int, default=2, help="worker processes (default %(default)s)")
    parser.add_argument("--reply-timeout-s", type=float, default=30.0, help="a reply later than this is lost")
    args = parser.parse_args()
    sys.setrecursionlimit(20_000)  # the fuzzer itself writes values nested 1,100 deep
    report = run(args.count, args.seed, args.window, args.workers, args.reply_timeout_s)
    print(json.dumps(report, indent=1))
    ok = (report["lost"] == 0 and report["malformed replies"] == 0 and report["internal errors"] == 0
          and report["process restarts"] == 0
          and report["worker alive"] and report["still serving"])
    print("fuzz: " + ("passed" if ok else "FAILED"), file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

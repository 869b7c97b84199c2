"""`avalon-worker submit`: run one work order and print its verified result.

Inputs come from the command line (each INPUT one item, UTF-8 text) and then from files
(`--input-file FILE`, each one item, its bytes as they are; `-` is standard input), so an
input as large as the worker takes (16 MiB by default) never meets the shell's argument limit.
"""

from __future__ import annotations

import argparse
import base64
import json

from ..crypto import SigningKey
from . import clients
from .inputs import read_inputs


def _as_json(output: bytes) -> dict[str, str]:
    try:
        return {"text": output.decode("utf-8")}
    except UnicodeDecodeError:
        return {"base64": base64.b64encode(output).decode("ascii")}


def run(args: argparse.Namespace) -> int:
    """Send the inputs to `--workload` (signed with a fresh key if `--sign`); print each output."""
    clients.check(args)
    inputs = read_inputs(args)
    key = SigningKey.generate() if args.sign else None
    with clients.open_client(args) as client:
        pending = client.prepare(args.workload, inputs, requester_key=key, include_data_hash=not args.no_data_hash)
        outputs = clients.complete(client, pending)
    if args.json:
        print(json.dumps({"workOrderId": pending.work_order_id, "workerId": client.worker().worker_id,
                          "outputs": [_as_json(output) for output in outputs]}, ensure_ascii=False))
        return 0
    for output in outputs:
        print(output.decode("utf-8", errors="replace"))
    return 0

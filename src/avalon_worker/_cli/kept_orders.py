"""The keys of work orders sent through a listener, kept until their result is read.

A result can outlive the command that asked for it (an order still pending at `--timeout-s`);
`avalon-worker result` opens it later with what is kept here: the session key, its IV and the
output keys, the worker's keys and the request's ids (not its inputs). One file per order, named
by its work-order id, readable by its owner only (mode 0600) in a directory only its owner may
enter (0700): `$XDG_STATE_HOME/avalon-worker-requester` (default `~/.local/state/...`). A file
is removed once its order's result has been read, or its error.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..requester import PendingWorkOrder, WorkerInfo
from .console import UsageError

_ID = re.compile(r"[0-9a-fA-F]{1,128}")


def keys_dir() -> Path:
    """Where the keys are kept."""
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return Path(base) / "avalon-worker-requester"


@dataclass(frozen=True)
class KeptOrder:
    """An order sent earlier: what opens its result, and where it was sent."""

    pending: PendingWorkOrder
    worker: WorkerInfo
    listener: str
    worker_id: str


def keep(pending: PendingWorkOrder, worker: WorkerInfo, listener: str, worker_id: str) -> Path:
    """Write the keys of `pending` (mode 0600, in a 0700 directory); return the file."""
    folder = keys_dir()
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(folder, 0o700)  # made with a umask, or made earlier by someone less careful
    params = {key: value for key, value in pending.request["params"].items() if key != "inData"}
    document = {
        "listener": listener,
        "workerId": worker_id,
        "signup": {key: worker.signup[key] for key in ("verifying_key", "encryption_key", "encryption_key_signature")},
        "params": params,
        "sessionKey": pending.session_key.hex(),
        "sessionKeyIv": pending.session_key_iv.hex(),
        "outputKeys": {str(index): key.hex() for index, key in pending.output_keys.items()},
    }
    path = folder / f"{pending.work_order_id}.json"
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as file:
        json.dump(document, file)
    return path


def forget(work_order_id: str) -> None:
    """Remove the keys of a finished order."""
    (keys_dir() / f"{work_order_id}.json").unlink(missing_ok=True)


def find(work_order_id: str) -> KeptOrder:
    """The kept order whose id is `work_order_id`, or starts with it; `UsageError` if none or several."""
    if not _ID.fullmatch(work_order_id):
        raise UsageError(f"{work_order_id!r} is not a work-order id (hex digits)")
    folder = keys_dir()
    matches = sorted(folder.glob(f"{work_order_id.lower()}*.json")) if folder.is_dir() else []
    if not matches:
        raise UsageError(f"no keys kept for work order {work_order_id} in {folder}",
                         hint="results can be opened only by the user who submitted the order, from the keys "
                         "`submit` and `run-orders` keep for an order sent through --listener")
    if len(matches) > 1:
        raise UsageError(f"{work_order_id} is the start of {len(matches)} work-order ids: give more digits")
    return _load(matches[0])


def _load(path: Path) -> KeptOrder:
    try:
        document: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        params = document["params"]
        pending = PendingWorkOrder(
            {"jsonrpc": "2.0", "method": "WorkOrderSubmit", "id": 1, "params": params},
            bytes.fromhex(document["sessionKey"]), bytes.fromhex(document["sessionKeyIv"]),
            {int(index): bytes.fromhex(key) for index, key in document["outputKeys"].items()},
        )
        worker = WorkerInfo.from_signup(document["signup"])
        return KeptOrder(pending, worker, str(document["listener"]), str(document["workerId"]))
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise UsageError(f"the kept keys {path} cannot be read: {exc}") from None

"""A requester over HTTP: Avalon's listener API (EEA TC v1.1 §5, §6) instead of a worker's ZMQ.

`ListenerClient` does what `client.WorkerClient` does, through a listener that may front many
workers: it finds the worker (`WorkerRetrieve`) and checks its encryption-key signature, submits
(`WorkOrderSubmit`), polls `WorkOrderGetResult` while the order is pending (5), and opens the
result with `requester.open_result` (each item's own IV: no legacy mode needed). Only the
standard library's HTTP client; proxies from the environment are not used.
"""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from typing import Any

from .. import defaults, jsonio
from ..client import DEFAULT_TIMEOUT_S, WorkerUnavailable
from ..crypto import SigningKey
from ..requester import InputSpec, ItemModeName, WorkerInfo, WorkOrderFailed, build_work_order, open_result

PENDING = 5
DEFAULT_POLL_S = 0.2


class ListenerClient:
    """One worker (`worker_id`) behind the listener at `url`; `timeout_s` bounds each HTTP call
    and the wait for a pending result."""

    def __init__(self, url: str, worker_id: str, timeout_s: float = DEFAULT_TIMEOUT_S, poll_s: float = DEFAULT_POLL_S) -> None:
        self.url = url
        self.worker_id = worker_id
        self.timeout_s = timeout_s
        self.poll_s = poll_s
        self._next_id = 1
        self._worker: WorkerInfo | None = None
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def __enter__(self) -> ListenerClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Nothing to release: every call is a request of its own."""

    def call(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        """One JSON-RPC call; the decoded answer (a result or an error object)."""
        self._next_id += 1
        return self.post(jsonio.dumps({"jsonrpc": "2.0", "id": self._next_id, "method": method, "params": params}))

    def post(self, body: bytes) -> dict[str, Any]:
        request = urllib.request.Request(self.url, body, {"Content-Type": "application/json"})
        try:
            with self._opener.open(request, timeout=self.timeout_s) as response:
                content = response.read()
        except (urllib.error.URLError, OSError) as exc:
            raise WorkerUnavailable(f"no answer from the listener {self.url}: {exc}") from None
        try:
            answer = jsonio.loads(content)
        except ValueError:
            raise WorkerUnavailable(f"the listener {self.url} answered with something that is not JSON") from None
        if not isinstance(answer, dict):
            raise WorkerUnavailable(f"the listener {self.url} answered with something that is not a JSON-RPC object")
        return answer

    def lookup(self) -> list[str]:
        """The ids of the live workers the listener serves (`WorkerLookUp`)."""
        return worker_ids(self.call("WorkerLookUp", {}), self.url)

    def worker(self) -> WorkerInfo:
        """The worker's keys from `WorkerRetrieve`, fetched once, signature checked."""
        if self._worker is None:
            answer = self.call("WorkerRetrieve", {"workerId": self.worker_id})
            try:
                data = answer["result"]["details"]["workerTypeData"]
                signup = {
                    "verifying_key": data["verificationKey"],
                    "encryption_key": data["encryptionKey"],
                    "encryption_key_signature": data["encryptionKeySignature"],
                }
            except (KeyError, TypeError):
                error = answer.get("error") or {}
                raise WorkerUnavailable(
                    f"the listener {self.url} has no worker {self.worker_id[:16]}…: {error.get('message', answer)}"
                ) from None
            self._worker = WorkerInfo.from_signup(signup)
        return self._worker

    def submit(
        self,
        workload_id: str,
        inputs: Sequence[bytes | InputSpec],
        *,
        requester_key: SigningKey | None = None,
        output_modes: Sequence[ItemModeName] | None = None,
        include_data_hash: bool = True,
    ) -> list[bytes]:
        """Run a work order and return its verified, decrypted outputs (as `WorkerClient.submit`)."""
        worker = self.worker()
        self._next_id += 1
        # The listener may answer with the result itself if it is ready within
        # responseTimeoutMSecs, saving a poll.
        pending = build_work_order(
            worker, workload_id, inputs, requester_key=requester_key, output_modes=output_modes,
            include_data_hash=include_data_hash, request_id=self._next_id,
            response_timeout_ms=int(min(self.timeout_s, defaults.SUBMIT_WAIT_S) * 1000),
        )
        reply = self.post(jsonio.dumps(pending.request))
        deadline = time.monotonic() + self.timeout_s
        while _code(reply) == PENDING:
            if time.monotonic() > deadline:
                raise WorkOrderFailed(PENDING, f"still pending after {self.timeout_s:g} s")
            time.sleep(self.poll_s)
            reply = self.call("WorkOrderGetResult", {"workOrderId": pending.work_order_id})
        return open_result(pending, reply, worker)


def _code(reply: dict[str, Any]) -> int | None:
    error = reply.get("error")
    return error.get("code") if isinstance(error, dict) else None


def worker_ids(answer: dict[str, Any], url: str) -> list[str]:
    try:
        ids = answer["result"]["ids"]
    except (KeyError, TypeError):
        raise WorkerUnavailable(f"the listener {url} did not answer WorkerLookUp: {answer.get('error')}") from None
    return [str(item) for item in ids]

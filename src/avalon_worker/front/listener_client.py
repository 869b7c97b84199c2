"""A requester over HTTP: Avalon's listener API (EEA TC v1.1 §5, §6) instead of a worker's ZMQ.

`ListenerClient` does what `client.WorkerClient` does, through a listener that may front many
workers: it finds the worker (`WorkerRetrieve`) and checks its encryption-key signature, submits
(`WorkOrderSubmit`), polls `WorkOrderGetResult` while the order is pending (5), and opens the
result with `requester.open_result` (each item's own IV: no legacy mode needed). Like the ZMQ
client, it says at once when nothing listens yet and keeps trying for its timeout, and it tells
a peer that does not speak HTTP (a worker's ZMQ port) from one that is down. Only the standard
library's HTTP client; proxies from the environment are not used.
"""

from __future__ import annotations

import http.client
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

from .. import defaults, jsonio
from ..client import DEFAULT_TIMEOUT_S, OrderClient, WorkerUnavailable, order_time_limit_s
from ..requester import (
    PendingWorkOrder,
    WorkerInfo,
    WorkOrderFailed,
    open_result,
)

PENDING = 5
DEFAULT_POLL_S = 0.2
RETRY_S = 0.2  # between connection attempts while nothing listens


class StillPending(WorkOrderFailed):
    """The order was taken and is not done within the client's time limit; its result can be
    fetched later (`ListenerClient.result`)."""

    def __init__(self, work_order_id: str, waited_s: float) -> None:
        super().__init__(PENDING, f"still pending after {waited_s:.0f} s")
        self.work_order_id = work_order_id


class ListenerClient(OrderClient):
    """One worker (`worker_id`) behind the listener at `url`; `timeout_s` bounds each HTTP call
    and the wait for a pending result. `on_wait` is told, once, when nothing listens yet and
    the client keeps trying (up to `timeout_s`). `worker`: its keys, if known already (an order's
    result is opened with the keys it was sent to)."""

    def __init__(self, url: str, worker_id: str, timeout_s: float = DEFAULT_TIMEOUT_S, poll_s: float = DEFAULT_POLL_S,
                 on_wait: Callable[[str], None] | None = None, worker: WorkerInfo | None = None) -> None:
        self.url = url
        self.worker_id = worker_id
        self.timeout_s = timeout_s
        self.poll_s = poll_s
        self._on_wait = on_wait
        self._next_id = 1
        self._worker = worker
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def __enter__(self) -> ListenerClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Nothing to release: every call is a request of its own."""

    def call(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        """One JSON-RPC call; the decoded answer (a result or an error object)."""
        return self.post(jsonio.dumps({"jsonrpc": "2.0", "id": self._request_id(), "method": method, "params": params}))

    def post(self, body: bytes) -> dict[str, Any]:
        """POST `body`; while the connection is refused, try again until the timeout."""
        deadline = time.monotonic() + self.timeout_s
        while True:
            try:
                content = self._post_once(body)
                break
            except ConnectionRefusedError:
                if time.monotonic() + RETRY_S >= deadline:
                    raise WorkerUnavailable(f"no listener at {self.url}: no connection within {self.timeout_s:g} s "
                                            "(is it running, and is the address right?)") from None
                if self._on_wait is not None:
                    self._on_wait(f"cannot connect to {self.url} yet (nothing listening?); "
                                  f"retrying for up to {self.timeout_s:g} s")
                    self._on_wait = None  # say it once
                time.sleep(RETRY_S)
        try:
            answer = jsonio.loads(content)
        except ValueError:
            raise WorkerUnavailable(f"the listener {self.url} answered with something that is not JSON") from None
        if not isinstance(answer, dict):
            raise WorkerUnavailable(f"the listener {self.url} answered with something that is not a JSON-RPC object")
        return answer

    def _post_once(self, body: bytes) -> bytes:
        request = urllib.request.Request(self.url, body, {"Content-Type": "application/json"})
        try:
            with self._opener.open(request, timeout=self.timeout_s) as response:
                return bytes(response.read())
        except urllib.error.HTTPError as exc:
            content = exc.read()
            if content.lstrip().startswith(b"{"):  # a JSON-RPC error with an HTTP status: read as any answer
                return bytes(content)
            raise WorkerUnavailable(f"the listener {self.url} answered HTTP {exc.code} {exc.reason}") from None
        except urllib.error.URLError as exc:
            if isinstance(exc.reason, ConnectionRefusedError):
                raise exc.reason from None
            if isinstance(exc.reason, http.client.HTTPException):
                raise _not_http(self.url) from None
            if isinstance(exc.reason, ConnectionResetError):
                raise _reset(self.url) from None
            raise WorkerUnavailable(f"no answer from the listener {self.url}: {exc.reason}") from None
        except http.client.HTTPException:
            raise _not_http(self.url) from None
        except ConnectionRefusedError:
            raise
        except ConnectionResetError:
            raise _reset(self.url) from None
        except OSError as exc:
            raise WorkerUnavailable(f"no answer from the listener {self.url}: {exc}") from None

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
                message = error.get("message", answer) if isinstance(error, dict) else error
                raise WorkerUnavailable(f"the listener {self.url} has no worker {self.worker_id[:16]}: {message}") from None
            self._worker = WorkerInfo.from_signup(signup)
        return self._worker

    def _response_time_s(self) -> float:
        """The listener may answer with the result itself if it is ready within
        responseTimeoutMSecs, saving a poll; it answers before this client's call times out."""
        return min(order_time_limit_s(self.timeout_s), defaults.SUBMIT_WAIT_S)

    def complete(self, pending: PendingWorkOrder) -> list[bytes]:
        """Send `pending` and return its verified, decrypted outputs, waiting up to the timeout
        (`StillPending` after it)."""
        started = time.monotonic()
        reply = self.post(jsonio.dumps(pending.request))
        return self._wait(pending, reply, started)

    def result(self, pending: PendingWorkOrder) -> list[bytes]:
        """The result of an order sent earlier (`WorkOrderGetResult`), waiting up to the timeout."""
        started = time.monotonic()
        return self._wait(pending, self.call("WorkOrderGetResult", {"workOrderId": pending.work_order_id}), started)

    def _wait(self, pending: PendingWorkOrder, reply: dict[str, Any], started: float) -> list[bytes]:
        while _code(reply) == PENDING:
            if time.monotonic() - started > self.timeout_s:
                raise StillPending(pending.work_order_id, time.monotonic() - started)
            time.sleep(self.poll_s)
            reply = self.call("WorkOrderGetResult", {"workOrderId": pending.work_order_id})
        return open_result(pending, reply, self.worker())


_LISTENER_NOT_ENDPOINT = ("--listener takes the HTTP listener, the address of `serve --listen-http` (a ZMQ endpoint "
                          "goes to --endpoint)")


def _not_http(url: str) -> WorkerUnavailable:
    return WorkerUnavailable(f"{url} does not answer HTTP: is it a worker's ZMQ endpoint? {_LISTENER_NOT_ENDPOINT}")


def _reset(url: str) -> WorkerUnavailable:
    """What a connection reset before any answer says: a listener that died, or a peer that
    refused the request as not its protocol (a worker's ZMQ endpoint closes on the request's
    first bytes, and the rest of them, unread, make its close a reset)."""
    return WorkerUnavailable(f"no answer from the listener {url}: the connection was reset; if it is a worker's ZMQ "
                             f"endpoint, {_LISTENER_NOT_ENDPOINT}")


def _code(reply: dict[str, Any]) -> int | None:
    error = reply.get("error")
    return error.get("code") if isinstance(error, dict) else None


def worker_ids(answer: dict[str, Any], url: str) -> list[str]:
    try:
        ids = answer["result"]["ids"]
    except (KeyError, TypeError):
        raise WorkerUnavailable(f"the listener {url} did not answer WorkerLookUp: {answer.get('error')}") from None
    return [str(item) for item in ids]

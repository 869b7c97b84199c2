"""The HTTP listener on a real socket, with a real SQLite store and no worker behind it: the API's
answers, its limits, and bad HTTP. (Orders run end to end in `test_listener_end_to_end.py`.)"""

from __future__ import annotations

import asyncio
import json
import socket
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import sdk_requester as sdk

from avalon_worker._internal.scheduler import scan_timeout_ms
from avalon_worker.front.door import bind_listen
from avalon_worker.front.http_guard import HttpLimits
from avalon_worker.front.listener import Listener, ListenerConfig
from avalon_worker.front.store_calls import StoreCalls
from avalon_worker.identity import Identity
from avalon_worker.signup import signup_document
from avalon_worker.store import Completion, Handoff, LeasedOrder, OrderState, canonical_id
from avalon_worker.store.sqlite import SQLiteStore

from conftest import hold_store_thread
from raw_peer import closed_within

BODY_TIMEOUT_S = 0.5
MAX_BODY = 64 * 1024


@dataclass
class _TestPump:
    """The test stands in for the pump: it takes no orders from the listener (they stay in the
    store, where the test leases them) and records that it was woken."""

    woken: threading.Event

    def handoff(self) -> Handoff:
        return Handoff("", "test", 10.0, 0)

    def take(self, orders: Sequence[LeasedOrder]) -> None:
        raise AssertionError("a hand-off of limit 0 gave orders")

    def wake(self) -> None:
        self.woken.set()


class RunningListener:
    """A `Listener` served on 127.0.0.1 from a thread of its own, as the front door serves it:
    its store called on its event loop, or with `store_thread`, on a thread of its own (which a
    test can hold, so that submits gather behind it)."""

    def __init__(self, store: SQLiteStore, config: ListenerConfig, limits: HttpLimits | None = None,
                 *, store_thread: bool = False) -> None:
        self.store = store
        self.calls = StoreCalls(threads=1 if store_thread else 0)
        self.submitted = threading.Event()
        self.listener = Listener(store, self.calls, config, pump=_TestPump(self.submitted))
        self.loop = asyncio.new_event_loop()
        sock = bind_listen("127.0.0.1:0")
        self.port = sock.getsockname()[1]
        started = threading.Event()
        self.thread = threading.Thread(target=self._serve, args=(sock, limits or HttpLimits(), started), daemon=True)
        self.thread.start()
        assert started.wait(30)
        self.url = f"http://127.0.0.1:{self.port}/"

    def _serve(self, sock: socket.socket, limits: HttpLimits, started: threading.Event) -> None:
        asyncio.set_event_loop(self.loop)
        close = self.loop.run_until_complete(self.listener.serve_on(sock, limits))
        started.set()
        self.loop.run_forever()
        self.loop.run_until_complete(close())

    def done(self, completion: Completion) -> None:
        """What the pump does when it has stored an outcome."""
        assert self.store.complete([completion], time.time()) == [True]
        self.loop.call_soon_threadsafe(self.listener.order_done, [completion])

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(30)
        self.calls.close()


@pytest.fixture(scope="module")
def registered(identity: Identity) -> dict[str, Any]:
    return signup_document(identity)


def _running(tmp_path: Path, identity: Identity, registered: dict[str, Any], store_thread: bool) -> Iterator[RunningListener]:
    store = SQLiteStore(tmp_path, max_pending=5)
    store.register_worker(identity.worker_id, registered, time.time())
    server = RunningListener(store, ListenerConfig(max_body_bytes=MAX_BODY, body_timeout_s=BODY_TIMEOUT_S, max_wait_s=5.0),
                             store_thread=store_thread)
    yield server
    server.stop()
    store.close()


@pytest.fixture()
def running(tmp_path: Path, identity: Identity, registered: dict[str, Any]) -> Iterator[RunningListener]:
    yield from _running(tmp_path, identity, registered, store_thread=False)


@pytest.fixture()
def running_on_thread(tmp_path: Path, identity: Identity, registered: dict[str, Any]) -> Iterator[RunningListener]:
    """The listener with its store called on a thread of its own, which a test can hold."""
    yield from _running(tmp_path, identity, registered, store_thread=True)


def raw_http(port: int, data: bytes, *, read_timeout_s: float = 10.0, pause_s: float = 0.0, more: bytes = b"") -> bytes:
    """Send raw bytes (then, after `pause_s`, `more`); return everything the server sends back
    until it closes the connection or stays silent for `read_timeout_s`."""
    with socket.create_connection(("127.0.0.1", port), timeout=read_timeout_s) as sock:
        sock.sendall(data)
        if pause_s:
            time.sleep(pause_s)
            try:
                sock.sendall(more)
            except OSError:
                pass
        received = b""
        try:
            while chunk := sock.recv(65536):
                received += chunk
        except (TimeoutError, ConnectionResetError):
            pass
        return received


def json_body(response: bytes) -> dict[str, Any]:
    head, _, body = response.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ")
    assert b"\r\nContent-Type: application/json\r\n" in head
    answer = json.loads(body)
    assert isinstance(answer, dict)
    return answer


def assert_still_serving(running: RunningListener) -> None:
    assert sdk.lookup(running.url) == [canonical_id(running.store.workers()[0].worker_id)]


def order_for(identity: Identity, **changes: Any) -> sdk.SdkOrder:
    worker = sdk.Worker(identity.worker_id.upper(), identity.verifying_key_pem, identity.encryption_key_pem,
                        identity.encryption_key_signature, 1, {})
    order = sdk.build(worker, "python-hello", ["World"])
    order.params.update(changes)
    return order


class TestWorkers:
    def test_lookup_lists_the_registered_worker(self, running: RunningListener, identity: Identity) -> None:
        assert sdk.lookup(running.url) == [identity.worker_id]
        assert sdk.lookup(running.url, workerType=1) == [identity.worker_id]

    def test_lookup_filters_that_match_nothing(self, running: RunningListener) -> None:
        assert sdk.lookup(running.url, workerType=2) == []
        assert sdk.lookup(running.url, organizationId="aabbcc1234ddeeff") == []
        assert sdk.lookup(running.url, applicationTypeId="11aa22bb33cc44dd") == []

    def test_lookup_with_a_bad_worker_type_is_error_2(self, running: RunningListener) -> None:
        assert sdk.call(running.url, "WorkerLookUp", {"workerType": "TEE-SGX"}, 1)["error"]["code"] == 2

    def test_retrieve_in_the_shape_the_sdk_reads(self, running: RunningListener, identity: Identity) -> None:
        worker = sdk.retrieve(running.url, identity.worker_id.upper())  # checks the key signature too
        assert worker.status == 1
        assert worker.encryption_key == identity.encryption_key_pem
        details = worker.details
        assert (details["hashingAlgorithm"], details["signingAlgorithm"], details["dataEncryptionAlgorithm"]) == (
            "SHA-256", "SECP256K1", "AES-GCM-256")
        assert details["keyEncryptionAlgorithm"] == "RSA-OAEP-2048"
        assert details["workOrderPayloadFormats"] == "JSON-RPC"
        data = details["workerTypeData"]
        assert data["encryptionKeySignature"] == identity.encryption_key_signature
        assert data["proofData"] == "" and data["proofDataType"] == ""

    def test_retrieve_of_an_unknown_worker_is_error_2(self, running: RunningListener) -> None:
        answer = sdk.call(running.url, "WorkerRetrieve", {"workerId": "ab" * 32}, 7)
        assert answer["id"] == 7 and answer["error"]["code"] == 2

    def test_retrieve_without_a_worker_id_is_error_2(self, running: RunningListener) -> None:
        assert sdk.call(running.url, "WorkerRetrieve", {}, 7)["error"]["code"] == 2

    def test_a_worker_without_heartbeat_is_off_line_and_not_listed(self, running: RunningListener, identity: Identity) -> None:
        running.store.heartbeat(identity.worker_id, time.time() - 3600)
        assert sdk.lookup(running.url) == []
        assert sdk.retrieve(running.url, identity.worker_id).status == 2

    def test_proof_data_only_for_a_requester_that_asks(self, running: RunningListener, identity: Identity,
                                                       registered: dict[str, Any]) -> None:
        running.store.register_worker(identity.worker_id, registered | {"quote": "AAEC", "attestation_type": "dcap"}, time.time())
        plain = sdk.call(running.url, "WorkerRetrieve", {"workerId": identity.worker_id}, 1)
        assert plain["result"]["details"]["workerTypeData"]["proofData"] == ""
        asked = sdk.call(running.url, "WorkerRetrieve", {"workerId": identity.worker_id, "includeProofData": True}, 1)
        data = asked["result"]["details"]["workerTypeData"]
        assert json.loads(data["proofData"]) == {"quote": "AAEC", "attestationType": "dcap"}
        assert data["proofDataType"] == "dcap"


class TestSubmit:
    def test_an_order_that_does_not_finish_in_time_is_pending_once_committed(self, running: RunningListener, identity: Identity) -> None:
        order = order_for(identity, responseTimeoutMSecs=200)
        answer = sdk.submit(running.url, order)
        assert answer["id"] == order.reply_id
        assert answer["error"]["code"] == 5
        assert answer["error"]["data"] == {"workOrderId": order.work_order_id}
        status = running.store.status(order.work_order_id)
        assert status is not None and status.state is OrderState.PENDING
        assert running.submitted.is_set()  # the pump was woken

    @pytest.mark.parametrize("timeout_ms", [200, 6000, 60_000])
    def test_the_requesters_wait_is_not_kept_as_the_orders_time_limit(
            self, running: RunningListener, identity: Identity, timeout_ms: int) -> None:
        """responseTimeoutMSecs bounds how long the submit call waits; the order is kept without
        it, so that the worker runs it under the operator's limit and the requester polls."""
        order = order_for(identity, responseTimeoutMSecs=timeout_ms)
        order.params["padding"] = "Ω and \\ kept exactly"
        answers: list[dict[str, Any]] = []
        thread = threading.Thread(target=lambda: answers.append(sdk.submit(running.url, order)))
        thread.start()
        while running.store.status(order.work_order_id) is None:
            time.sleep(0.01)
        [leased] = running.store.lease(identity.worker_id, "test", 1, 60, time.time())
        running.done(Completion(leased.work_order_id, b'{"outData":[]}', False))
        thread.join(30)
        assert answers and answers[0]["result"] == {"outData": []}
        assert scan_timeout_ms(leased.request) is None
        kept = json.loads(leased.request)
        assert kept["params"].pop("responseTimeoutMSecs") == 0
        assert kept == {"jsonrpc": "2.0", "method": "WorkOrderSubmit", "id": order.reply_id,
                        "params": {k: v for k, v in order.params.items() if k != "responseTimeoutMSecs"}}

    def test_an_order_without_a_timeout_is_kept_as_it_came(self, running: RunningListener, identity: Identity) -> None:
        order = order_for(identity)
        del order.params["responseTimeoutMSecs"]
        body = json.dumps({"jsonrpc": "2.0", "method": "WorkOrderSubmit", "id": 5, "params": order.params}, indent=1)
        assert sdk.post(running.url, body.encode())["error"]["code"] == 5
        [leased] = running.store.lease(identity.worker_id, "test", 1, 60, time.time())
        assert leased.request == body.encode()

    def test_an_order_without_a_timeout_is_answered_pending_at_once(self, running: RunningListener, identity: Identity) -> None:
        order = order_for(identity)
        del order.params["responseTimeoutMSecs"]
        assert sdk.submit(running.url, order)["error"]["code"] == 5

    def test_an_order_that_finishes_within_the_call_gets_its_result(self, running: RunningListener, identity: Identity) -> None:
        order = order_for(identity, responseTimeoutMSecs=20000)
        answers: list[dict[str, Any]] = []
        thread = threading.Thread(target=lambda: answers.append(sdk.submit(running.url, order)))
        thread.start()
        while running.store.status(order.work_order_id) is None:
            time.sleep(0.01)
        running.done(Completion(order.work_order_id, b'{"workOrderId":"X","outData":[]}', False))
        thread.join(30)
        assert answers == [{"jsonrpc": "2.0", "id": order.reply_id, "result": {"workOrderId": "X", "outData": []}}]

    def test_a_duplicate_work_order_id_is_error_2_whatever_its_case(self, running: RunningListener, identity: Identity) -> None:
        first = order_for(identity, responseTimeoutMSecs=0)
        assert sdk.submit(running.url, first)["error"]["code"] == 5
        again = order_for(identity, responseTimeoutMSecs=0, workOrderId="0x" + first.work_order_id.upper())
        answer = sdk.submit(running.url, again)
        assert answer["error"]["code"] == 2 and "already submitted" in answer["error"]["message"]

    def test_an_unknown_worker_is_error_2(self, running: RunningListener, identity: Identity) -> None:
        answer = sdk.submit(running.url, order_for(identity, workerId="cd" * 32))
        assert answer["error"]["code"] == 2 and "WorkerLookUp" in answer["error"]["message"]

    @pytest.mark.parametrize("bad", [None, "", "not hex", 42])
    def test_a_bad_work_order_id_is_error_2(self, running: RunningListener, identity: Identity, bad: Any) -> None:
        assert sdk.submit(running.url, order_for(identity, workOrderId=bad))["error"]["code"] == 2

    @pytest.mark.parametrize("field", ["workOrderId", "workerId", "requesterId", "requesterNonce"])
    @pytest.mark.parametrize("long_id", ["ab" * 4050, "A" * 3000, "0x" + "ab" * 129])
    def test_an_id_longer_than_the_limit_is_error_2_and_nothing_is_stored(
            self, running: RunningListener, identity: Identity, field: str, long_id: str) -> None:
        order = order_for(identity, responseTimeoutMSecs=0, **{field: long_id})
        answer = sdk.submit(running.url, order)
        assert answer["error"]["code"] == 2
        assert field in answer["error"]["message"] and "256 hex digits" in answer["error"]["message"]
        assert long_id[:300] not in json.dumps(answer)
        assert running.store.status(canonical_id(order.work_order_id)) is None
        with sqlite3.connect(running.store.path) as db:
            assert db.execute("SELECT count(*) FROM orders").fetchone() == (0,)

    def test_ids_of_exactly_the_limit_are_kept(self, running: RunningListener, identity: Identity) -> None:
        order = order_for(identity, responseTimeoutMSecs=0, workOrderId="0x" + "Ab" * 128, requesterId="cd" * 128,
                          requesterNonce="EF" * 128)
        assert sdk.submit(running.url, order)["error"]["code"] == 5
        status = running.store.status(canonical_id(order.work_order_id))
        assert status is not None and status.state is OrderState.PENDING

    def test_a_get_result_for_an_id_longer_than_the_limit_is_error_2(self, running: RunningListener) -> None:
        answer = sdk.call(running.url, "WorkOrderGetResult", {"workOrderId": "ab" * 4050}, 1)
        assert answer["error"]["code"] == 2 and "256 hex digits" in answer["error"]["message"]

    def test_an_order_too_large_for_the_worker_is_error_2(self, running: RunningListener, identity: Identity) -> None:
        order = order_for(identity, padding='"' * (MAX_BODY // 2 - 2000))  # fits the body limit, not once escaped
        answer = sdk.submit(running.url, order)
        assert answer["error"]["code"] == 2 and "larger than" in answer["error"]["message"]

    def test_a_full_queue_is_busy_8(self, running: RunningListener, identity: Identity) -> None:
        codes = [sdk.submit(running.url, order_for(identity, responseTimeoutMSecs=0))["error"]["code"] for _ in range(6)]
        assert codes == [5, 5, 5, 5, 5, 8]

    def test_concurrent_submits_are_all_committed(self, running: RunningListener, identity: Identity) -> None:
        orders = [order_for(identity, responseTimeoutMSecs=0) for _ in range(5)]
        with ThreadPoolExecutor(5) as pool:
            answers = list(pool.map(lambda o: sdk.submit(running.url, o), orders))
        assert [a["error"]["code"] for a in answers] == [5] * 5
        assert all(running.store.status(o.work_order_id) is not None for o in orders)


    def test_submits_that_arrive_during_a_commit_are_committed_together(
            self, running: RunningListener, identity: Identity) -> None:
        """The store is called on the event loop, which waits while a commit runs (here held on
        the store's lock); the four submits that arrive meanwhile are read together after it and
        committed in one batch, not one commit each."""
        batches: list[int] = []
        submit = running.store.submit

        def counted(orders: Sequence[Any], *args: Any) -> Any:
            batches.append(len(orders))
            return submit(orders, *args)

        running.store.submit = counted  # type: ignore[method-assign, assignment]  # the real store, its batch sizes counted
        orders = [order_for(identity, responseTimeoutMSecs=0) for _ in range(5)]
        with ThreadPoolExecutor(5) as pool, running.store._lock:
            first = pool.submit(sdk.submit, running.url, orders[0])
            time.sleep(0.2)  # the first commit now waits for the lock, and the loop with it
            rest = [pool.submit(sdk.submit, running.url, o) for o in orders[1:]]
            time.sleep(0.2)
        answers = [first.result(), *(answer.result() for answer in rest)]
        assert [a["error"]["code"] for a in answers] == [5] * 5
        assert batches[0] == 1 and sum(batches) == 5 and len(batches) <= 2, batches


class TestStoreFailures:
    def test_an_order_the_store_refuses_fails_alone_and_its_batch_is_kept(
            self, running_on_thread: RunningListener, identity: Identity) -> None:
        """The store's one writer is held while five submits arrive, so that they are committed
        as one batch; SQLite then refuses the one order larger than its length limit (here
        lowered, as a stand-in for any data a store cannot keep): that order alone is refused,
        the other four are kept."""
        running = running_on_thread
        running.store._db.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, 20_000)
        held = threading.Event()
        assert running.calls.threads == 1
        hold_store_thread(running.calls, running.loop, held, 30)
        orders = [order_for(identity, responseTimeoutMSecs=0) for _ in range(5)]
        orders[2].params["padding"] = "x" * 30_000
        with ThreadPoolExecutor(5) as pool:
            answers = [pool.submit(sdk.submit, running.url, o) for o in orders]
            time.sleep(0.5)  # all five wait for the one commit behind the held writer
            held.set()
            codes = [answer.result()["error"]["code"] for answer in answers]
        assert codes == [5, 5, 2, 5, 5]
        message = answers[2].result()["error"]["message"]
        assert "store refused" in message and "sqlite" not in message.lower()
        assert [running.store.status(canonical_id(o.work_order_id)) is None for o in orders] == [False, False, True, False, False]
        assert_still_serving(running)

    def test_a_full_store_is_busy_8_and_serves_again_when_there_is_room(self, running: RunningListener, identity: Identity) -> None:
        db = running.store._db
        db.execute(f"PRAGMA max_page_count = {db.execute('PRAGMA page_count').fetchone()[0]}")
        answer = sdk.submit(running.url, order_for(identity, responseTimeoutMSecs=0, padding="x" * 20_000))
        assert answer["error"]["code"] == 8 and "not available" in answer["error"]["message"]
        db.execute("PRAGMA max_page_count = 1000000")
        assert sdk.submit(running.url, order_for(identity, responseTimeoutMSecs=0))["error"]["code"] == 5


class TestGetResult:
    def test_an_unknown_order_is_error_2_never_5(self, running: RunningListener) -> None:
        answer = sdk.call(running.url, "WorkOrderGetResult", {"workOrderId": "EF" * 32}, 9)
        assert answer["id"] == 9 and answer["error"]["code"] == 2
        assert answer["error"]["data"] == {"workOrderId": "EF" * 32}

    def test_pending_then_the_stored_result_unchanged(self, running: RunningListener, identity: Identity) -> None:
        order = order_for(identity, responseTimeoutMSecs=0)
        sdk.submit(running.url, order)
        pending = sdk.call(running.url, "WorkOrderGetResult", {"workOrderId": order.work_order_id}, 3)
        assert pending["error"]["code"] == 5 and pending["error"]["data"] == {"workOrderId": order.work_order_id}
        result = b'{"workOrderId":"%s","outData":[{"index":0,"iv":"","encryptedDataEncryptionKey":"null"}]}' % (
            order.work_order_id.encode())
        running.done(Completion(canonical_id(order.work_order_id), result, False))
        for reply_id in (4, "five"):  # stays retrievable, under each call's own id
            answer = sdk.call(running.url, "WorkOrderGetResult", {"workOrderId": order.work_order_id.lower()}, reply_id)
            assert answer == {"jsonrpc": "2.0", "id": reply_id, "result": json.loads(result)}

    def test_an_order_that_failed_returns_its_error(self, running: RunningListener, identity: Identity) -> None:
        order = order_for(identity, responseTimeoutMSecs=0)
        sdk.submit(running.url, order)
        error = {"code": 4, "message": "integrity", "data": {"workOrderId": order.work_order_id}}
        running.done(Completion(canonical_id(order.work_order_id), json.dumps(error).encode(), True))
        assert sdk.call(running.url, "WorkOrderGetResult", {"workOrderId": order.work_order_id}, 1)["error"] == error

    def test_a_remembered_outcome_is_not_served_past_the_retention_time(
            self, tmp_path: Path, identity: Identity, registered: dict[str, Any]) -> None:
        store = SQLiteStore(tmp_path / "short")
        store.register_worker(identity.worker_id, registered, time.time())
        server = RunningListener(store, ListenerConfig(result_ttl_s=0.0))
        try:
            order = order_for(identity, responseTimeoutMSecs=0)
            sdk.submit(server.url, order)
            server.done(Completion(canonical_id(order.work_order_id), b'{"outData":[]}', False))
            assert store.purge(0.0, time.time() + 1, 10) == 1
            answer = sdk.call(server.url, "WorkOrderGetResult", {"workOrderId": order.work_order_id}, 1)
            assert answer["error"]["code"] == 2
        finally:
            server.stop()
            store.close()

    def test_without_a_work_order_id_is_error_2(self, running: RunningListener) -> None:
        assert sdk.call(running.url, "WorkOrderGetResult", {}, 1)["error"]["code"] == 2


class TestWhatAvalonsListenerRefuses:
    """Registry writes and setting a worker's key: refused with error 2, as Avalon's listener
    refuses them (its SDK reads the code), since the API has no authentication. The params are
    those of Avalon's tests/worker/ and tests/work_orders/ request files."""

    @pytest.mark.parametrize(("method", "params", "why"), [
        ("WorkerRegister", {"workerId": "123", "workerType": 321, "organizationId": "0Xd", "details": {}}, "no registry writes"),
        ("WorkerUpdate", {"workerId": "123", "details": {"hashingAlgorithm": "KECCAK-256"}}, "no registry writes"),
        ("WorkerSetStatus", {"workerId": "123", "status": 1}, "no registry writes"),
        ("EncryptionKeySet", {"workerId": "123", "encryptionKey": "", "signature": ""}, "no authentication to set one"),
        ("EncryptionKeyGet", {"workerId": "123", "lastUsedKeyNonce": ""}, "details.workerTypeData.encryptionKey"),
    ])
    def test_refused_with_error_2_saying_why(self, running: RunningListener, identity: Identity, method: str,
                                             params: dict, why: str) -> None:
        answer = sdk.call(running.url, method, params, 4)
        assert answer["id"] == 4 and answer["error"]["code"] == 2
        assert answer["error"]["message"].startswith(f"{method} is refused: ") and why in answer["error"]["message"]
        assert sdk.lookup(running.url) == [identity.worker_id]  # nothing changed

    @pytest.mark.parametrize("worker_type", [0, 4, 123, -1, "1", True])
    def test_a_worker_type_outside_avalons_enum_is_error_2(self, running: RunningListener, worker_type: Any) -> None:
        answer = sdk.call(running.url, "WorkerLookUp", {"workerType": worker_type, "organizationId": "0XD"}, 3)
        assert answer["error"]["code"] == 2 and "1 (TEE-SGX), 2 (MPC) or 3 (ZK)" in answer["error"]["message"]


class TestBadHttp:
    def test_get_is_a_json_rpc_error(self, running: RunningListener) -> None:
        answer = json_body(raw_http(running.port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
        assert answer["error"]["code"] == 2 and "POST" in answer["error"]["message"]
        assert_still_serving(running)

    @pytest.mark.parametrize("body, expected", [
        (b"{not json", "not valid JSON"),
        (b"\xff\xfe", "not UTF-8 text"),
        (b'{"jsonrpc":"2.0","id":[1],"method":"WorkerLookUp"}', "id must be a string, a number or null"),
        (b"[1, 2]", "JSON-RPC 2.0 object"),
        (b'{"jsonrpc":"2.0","id":1,"method":"WorkOrderCancel","params":{}}', "unknown method"),
        (b'{"jsonrpc":"2.0","id":1,"method":"WorkerLookUp","params":[1]}', "params must be a JSON object"),
        (b"", "not valid JSON"),
    ])
    def test_bad_bodies_get_error_2(self, running: RunningListener, body: bytes, expected: str) -> None:
        request = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body)
        answer = json_body(raw_http(running.port, request))
        assert answer["error"]["code"] == 2 and expected in answer["error"]["message"]
        assert_still_serving(running)

    @pytest.mark.slow
    def test_a_declared_huge_body_is_refused_unread_and_the_connection_closed(self, running: RunningListener) -> None:
        request = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % (1 << 30)
        answer = json_body(raw_http(running.port, request + b"x" * 1000))
        assert answer["error"]["code"] == 2 and "larger than" in answer["error"]["message"]
        assert_still_serving(running)

    def test_a_chunked_body_past_the_limit_is_refused(self, running: RunningListener) -> None:
        chunk = b"x" * 8192
        chunks = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(MAX_BODY // len(chunk) + 2))
        request = b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" + chunks + b"0\r\n\r\n"
        response = raw_http(running.port, request)
        assert response == b"" or json_body(response)["error"]["code"] == 2
        assert_still_serving(running)

    @pytest.mark.slow
    def test_a_slow_body_times_out_and_the_connection_is_closed(self, running: RunningListener) -> None:
        request = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"jsonrpc\""
        started = time.monotonic()
        response = raw_http(running.port, request, pause_s=BODY_TIMEOUT_S * 3, more=b"x" * 90)
        assert time.monotonic() - started < 10  # closed, not left hanging until the read timeout
        answer = json_body(response)
        assert answer["error"]["code"] == 2 and "did not arrive" in answer["error"]["message"]
        assert_still_serving(running)

    def test_garbage_that_is_not_http_gets_no_traceback(self, running: RunningListener) -> None:
        response = raw_http(running.port, b"\x16\x03\x01\x02\x00hello\r\n\r\n")
        assert b"Traceback" not in response
        assert_still_serving(running)


class TestConnectionLimits:
    """The HTTP server's bounds: a time limit for headers and for idleness, a cap on
    connections, and one budget for the bodies held at once (module `http_guard`)."""

    LIMITS = HttpLimits(max_connections=4, header_timeout_s=0.5, idle_timeout_s=1.0)
    BUDGET = 100_000

    @pytest.fixture()
    def guarded(self, tmp_path: Path, identity: Identity, registered: dict[str, Any]) -> Iterator[RunningListener]:
        store = SQLiteStore(tmp_path)
        store.register_worker(identity.worker_id, registered, time.time())
        config = ListenerConfig(max_body_bytes=MAX_BODY, body_timeout_s=5.0, body_budget_bytes=self.BUDGET)
        server = RunningListener(store, config, self.LIMITS)
        yield server
        server.stop()
        store.close()

    def test_headers_that_trickle_in_are_cut_off_at_the_header_timeout(self, guarded: RunningListener) -> None:
        with socket.create_connection(("127.0.0.1", guarded.port), timeout=5) as sock:
            sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\n")
            started = time.monotonic()
            try:
                while time.monotonic() - started < 5:  # a header line every 0.1 s: never complete
                    sock.sendall(b"X-Slow: yes\r\n")
                    time.sleep(0.1)
            except OSError:
                pass  # closed by the server
            assert time.monotonic() - started < 5, "the trickling headers were never cut off"
            assert closed_within(sock, 5)
        assert_still_serving(guarded)

    @pytest.mark.slow  # waits out the idle timeout
    def test_a_connection_that_says_nothing_is_closed_after_the_idle_timeout(self, guarded: RunningListener) -> None:
        with socket.create_connection(("127.0.0.1", guarded.port), timeout=5) as sock:
            assert closed_within(sock, 5)
        assert_still_serving(guarded)

    @pytest.mark.slow  # waits out the idle timeout
    def test_a_kept_alive_connection_is_closed_once_idle_after_its_answer(self, guarded: RunningListener) -> None:
        body = b'{"jsonrpc":"2.0","id":1,"method":"WorkerLookUp","params":{}}'
        with socket.create_connection(("127.0.0.1", guarded.port), timeout=5) as sock:
            sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
            assert sock.recv(65536).startswith(b"HTTP/1.1 200 ")
            assert closed_within(sock, 5)

    def test_at_the_cap_the_longest_idle_connection_makes_room(self, guarded: RunningListener) -> None:
        idle = [socket.create_connection(("127.0.0.1", guarded.port), timeout=5) for _ in range(4)]
        try:
            time.sleep(0.2)  # all four accepted
            assert_still_serving(guarded)  # a fifth connection, served
            assert closed_within(idle[0], 0.5)
            assert not closed_within(idle[3], 0.1)
        finally:
            for sock in idle:
                sock.close()

    def test_at_the_cap_with_every_connection_busy_a_new_one_is_answered_503(self, guarded: RunningListener) -> None:
        busy = [socket.create_connection(("127.0.0.1", guarded.port), timeout=5) for _ in range(4)]
        try:
            for sock in busy:  # a request whose body is on its way
                sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{")
            time.sleep(0.3)
            response = raw_http(guarded.port, b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}")
            head, _, body = response.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 503 ")
            assert json.loads(body)["error"]["code"] == 8
        finally:
            for sock in busy:
                sock.close()
        assert_still_serving(guarded)

    @pytest.mark.slow
    def test_a_body_still_arriving_beyond_the_budget_is_refused_at_once(self, guarded: RunningListener) -> None:
        head = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 60000\r\n\r\n"
        with socket.create_connection(("127.0.0.1", guarded.port), timeout=5) as first:
            first.sendall(head + b"{" + b" " * 1000)  # holds 60,000 of the 100,000 bytes
            time.sleep(0.3)
            second = json_body(raw_http(guarded.port, head + b"{", read_timeout_s=3))  # would not fit: refused unread
            assert second["error"]["code"] == 8 and "try again" in second["error"]["message"]
            assert_still_serving(guarded)  # a body that came whole is never refused
            first.sendall(b" " * 58_999)
            assert json_body(first.recv(65536))["error"]["code"] == 2  # served, as not JSON
        third = json_body(raw_http(guarded.port, head + b"{" + b" " * 59_999))  # room again
        assert third["error"]["code"] == 2 and "not valid JSON" in third["error"]["message"]

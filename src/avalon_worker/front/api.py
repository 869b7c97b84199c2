"""The listener API (EEA TC v1.1 §5 worker registry, §6 work orders) as Avalon's SDK uses it,
without I/O: request bodies in, reply bytes and store operations out.

Methods: `WorkerLookUp`, `WorkerRetrieve`, `WorkOrderSubmit`, `WorkOrderGetResult`, and the
receipt methods (`receipts.py`). Facts the
SDK relies on (`sdk/avalon_sdk/connector/direct/jrpc/` in Avalon):
- every answer is a JSON-RPC 2.0 object; the HTTP shell sends it with status 200 and
  `Content-Type: application/json` exactly (the SDK drops answers with a charset parameter);
- `WorkOrderGetResult` answers 5 while an order is pending and the SDK polls every 2 s for as
  long as it gets 5, with no timeout: an id the store does not know gets 2, never 5;
- the result object is the worker's, unchanged: ids exactly as the requester sent them;
- `WorkerRetrieve.status` 1 is ACTIVE in the SDK's enum; a non-empty `proofData` is handed to
  Avalon's own IAS/DCAP report verifiers, which a Gramine quote does not fit, so it stays empty
  unless the requester asks for it with `"includeProofData": true` (then it is JSON text with
  the base64 quote; check it with `avalon-worker verify`).
"""

from __future__ import annotations

from collections.abc import Container, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from .. import jsonio, jsonrpc
from ..errors import ErrorCode, InvalidParameterError, WorkOrderError
from ..hashing import submitted_request_hash
from ..models import check_id, check_nonce
from ..store import NewOrder, OrderState, OrderStatus, SubmitOutcome, WorkerRecord, canonical_id

METHODS = ("WorkerLookUp", "WorkerRetrieve", "WorkOrderSubmit", "WorkOrderGetResult", "WorkOrderReceiptCreate",
           "WorkOrderReceiptUpdate", "WorkOrderReceiptRetrieve", "WorkOrderReceiptUpdateRetrieve",
           "WorkOrderReceiptLookUp", "WorkOrderReceiptLookUpNext")  # the receipts': `receipts.py`
# Methods of the spec that change a worker's registration or keys. The API has no
# authentication, so anyone could call them: they are refused with error 2, as Avalon's
# listener refuses them (its tc_methods.json schema leaves them out; its EncryptionKeySet
# always answered 2). A worker registers itself and makes its own keys.
_NO_REGISTRY_WRITES = ("this API has no authentication, so it takes no registry writes (Avalon's listener refuses "
                       "them too); a worker registers itself when it starts")
REFUSED = {
    "WorkerRegister": _NO_REGISTRY_WRITES,
    "WorkerUpdate": _NO_REGISTRY_WRITES,
    "WorkerSetStatus": _NO_REGISTRY_WRITES,
    "EncryptionKeySet": "a worker makes its own encryption key and publishes it signed, in WorkerRetrieve's "
                        "details.workerTypeData; this API has no authentication to set one (Avalon's listener refuses it too)",
    "EncryptionKeyGet": "the worker has one encryption key, in WorkerRetrieve's details.workerTypeData.encryptionKey "
                        "(Avalon's listener does not serve this method either)",
}
WORKER_TYPE_TEE_SGX = 1  # EEA TC v1.1 §5.1: 1 TEE-SGX, 2 MPC, 3 ZK
STATUS_ACTIVE, STATUS_OFF_LINE = 1, 2  # §5.2
WRAP_OVERHEAD_BYTES = 128  # the ProcessWorkOrder frame around a request, beyond its escaped text


class CallError(WorkOrderError):
    """A request the listener answers with a JSON-RPC error at once, with its code and the id
    to answer it under."""

    def __init__(self, code: ErrorCode, message: str, reply_id: Any = None, work_order_id: str | None = None) -> None:
        super().__init__(message, work_order_id=work_order_id)
        self.code = code
        self.reply_id = reply_id

    def reply(self) -> bytes:
        return jsonrpc.error_reply(self.reply_id, self.code, self.message, self.work_order_id)


@dataclass(frozen=True)
class Call:
    """A decoded JSON-RPC request: method, id (echoed as sent), params object; the whole
    decoded object and the body as received."""

    method: str
    reply_id: Any
    params: dict[str, Any]
    body: bytes
    message: dict[str, Any]


def parse_call(body: bytes) -> Call:
    """Decode a request body; raise `CallError` (code 2) for anything that is not one of our
    methods with an object for params."""
    try:
        message, reply_id = jsonrpc.decode_request(
            body, "the request body", "the request must be a JSON-RPC 2.0 object (batches are not supported)"
        )
    except InvalidParameterError as exc:
        raise CallError(ErrorCode.INVALID_PARAMETER, exc.message) from None
    method = message.get("method")
    if isinstance(method, str) and method in REFUSED:
        raise CallError(ErrorCode.INVALID_PARAMETER, f"{method} is refused: {REFUSED[method]}", reply_id)
    if method not in METHODS:
        shown = method[:40] if isinstance(method, str) else method.__class__.__name__
        raise CallError(ErrorCode.INVALID_PARAMETER, f"unknown method {shown!r}; this listener serves {', '.join(METHODS)}", reply_id)
    params = message.get("params")
    if params is None:
        params = {}
    if not isinstance(params, dict):
        raise CallError(ErrorCode.INVALID_PARAMETER, f"{method} params must be a JSON object", reply_id)
    return Call(method, reply_id, params, body, message)


def id_param(call: Call, name: str, work_order_id: str | None = None) -> str:
    """A required hex id parameter (the worker's one id rule, `models.check_id`), in canonical form."""
    try:
        return canonical_id(check_id(call.params.get(name), name, work_order_id=work_order_id))
    except InvalidParameterError as exc:
        raise CallError(ErrorCode.INVALID_PARAMETER, f"{call.method}: {exc.message}", call.reply_id, work_order_id) from None


def _result(call: Call, result: Any) -> bytes:
    return jsonrpc.result_reply(call.reply_id, result)


# workers -----------------------------------------------------------------------------------------


def is_live(record: WorkerRecord, now: float, stale_after_s: float) -> bool:
    return now - record.heartbeat <= stale_after_s


def worker_lookup(call: Call, records: Sequence[WorkerRecord], now: float, stale_after_s: float) -> bytes:
    """`WorkerLookUp {workerType?, organizationId?, applicationTypeId?}`: the live workers that
    match every filter given (EEA TC v1.1 §5.3.1); one page, so `lookupTag` is empty."""
    wanted_type = call.params.get("workerType")
    if wanted_type is not None and (isinstance(wanted_type, bool) or wanted_type not in (1, 2, 3)):
        # Avalon's WorkerLookUp schema allows these three values only.
        raise CallError(ErrorCode.INVALID_PARAMETER, "workerType must be 1 (TEE-SGX), 2 (MPC) or 3 (ZK)", call.reply_id)
    ids = []
    for record in records:
        if not is_live(record, now, stale_after_s):
            continue
        if wanted_type is not None and wanted_type != WORKER_TYPE_TEE_SGX:
            continue
        registry = _registry_fields(record)
        if not all(
            call.params.get(name) is None or _matches(call.params[name], registry[name])
            for name in ("organizationId", "applicationTypeId")
        ):
            continue
        ids.append(record.worker_id)
    return _result(call, {"totalCount": len(ids), "lookupTag": "", "ids": ids})


def _matches(wanted: Any, have: Any) -> bool:
    if isinstance(have, list):
        return any(_matches(wanted, item) for item in have)
    return isinstance(wanted, str) and isinstance(have, str) and canonical_id(wanted) == canonical_id(have)


def _registry_fields(record: WorkerRecord) -> dict[str, Any]:
    return {
        "organizationId": record.signup.get("organization_id", ""),
        "applicationTypeId": record.signup.get("application_type_ids", []),
    }


def retrieve_id(call: Call) -> str:
    """The canonical workerId of a WorkerRetrieve call (code 2 if it breaks the id rule)."""
    return id_param(call, "workerId")


def worker_retrieve(call: Call, record: WorkerRecord | None, now: float, stale_after_s: float) -> bytes:
    """`WorkerRetrieve {workerId}` → the worker in the shape Avalon's enclave manager registered
    (`create_json_worker`): type, organization, application types, status, details."""
    if record is None or record.worker_id != retrieve_id(call):
        raise CallError(ErrorCode.INVALID_PARAMETER, "no worker with this workerId is registered here; "
                        "find the ids with WorkerLookUp", call.reply_id)
    signup = record.signup
    proof_data = ""
    proof_type = ""
    if call.params.get("includeProofData") is True and signup.get("quote"):
        proof_type = str(signup.get("attestation_type", ""))
        proof_data = jsonio.dumps({"quote": signup["quote"], "attestationType": proof_type}).decode()
    mrenclave = signup.get("mrenclave") or ""
    details = {
        "hashingAlgorithm": signup.get("hashing_algorithm", "SHA-256"),
        "signingAlgorithm": signup.get("signing_algorithm", "SECP256K1"),
        "keyEncryptionAlgorithm": signup.get("encryption_algorithm", "RSA-OAEP-3072"),
        "dataEncryptionAlgorithm": signup.get("data_encryption_algorithm", "AES-GCM-256"),
        "workOrderPayloadFormats": "JSON-RPC",
        "workerTypeData": {
            "verificationKey": signup["verifying_key"],
            "encryptionKey": signup["encryption_key"],
            "encryptionKeySignature": signup["encryption_key_signature"],
            "encryptionKeyNonce": "",
            "proofDataType": proof_type,
            "proofData": proof_data,
            "extendedMeasurements": [mrenclave] if mrenclave else [],
        },
    }
    registry = _registry_fields(record)
    return _result(call, {
        "workerType": WORKER_TYPE_TEE_SGX,
        "organizationId": registry["organizationId"],
        "applicationTypeId": registry["applicationTypeId"],
        "status": STATUS_ACTIVE if is_live(record, now, stale_after_s) else STATUS_OFF_LINE,
        "details": details,
    })


# work orders -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Submission:
    """A WorkOrderSubmit call ready for the store, with what its replies need."""

    call: Call
    order: NewOrder
    work_order_id: str  # as the requester sent it
    wait_s: float  # how long the call may wait for the result before answering "pending"


def wrapped_size(body: bytes) -> int:
    """An upper bound on the ProcessWorkOrder frame that carries `body` (valid JSON, so with no
    control character but the whitespace ones) as a JSON string: each quote, backslash, line feed,
    carriage return and tab is escaped in two bytes."""
    return 2 * len(body) - len(body.translate(None, b'"\\\n\r\t')) + WRAP_OVERHEAD_BYTES


def fits_wrapped(body: bytes, max_request_bytes: int) -> bool:
    """Whether the ProcessWorkOrder frame carrying `body` stays within `max_request_bytes`.
    Escaping at most doubles a body, so only one within a factor of two of the limit is
    counted byte by byte (`wrapped_size`)."""
    return 2 * len(body) + WRAP_OVERHEAD_BYTES <= max_request_bytes or wrapped_size(body) <= max_request_bytes


class SubmitIds(NamedTuple):
    """The canonical ids of a WorkOrderSubmit call (lower case, no 0x)."""

    work_order_id: str
    worker_id: str
    requester_id: str


def submit_ids(call: Call) -> SubmitIds:
    """The canonical ids of a WorkOrderSubmit call, once its four ids (workOrderId, workerId,
    requesterId and requesterNonce) pass the worker's id rule: nothing with an id the worker
    would refuse is kept or looked up."""
    work_order_id = id_param(call, "workOrderId")
    shown_id = call.params["workOrderId"]
    worker_id = id_param(call, "workerId", shown_id)
    requester_id = id_param(call, "requesterId", shown_id)
    try:
        check_nonce(call.params.get("requesterNonce"))
    except InvalidParameterError as exc:
        raise CallError(ErrorCode.INVALID_PARAMETER, f"{call.method}: {exc.message}", call.reply_id, shown_id) from None
    return SubmitIds(work_order_id, worker_id, requester_id)


def submission(call: Call, ids: SubmitIds, known_workers: Container[str], max_request_bytes: int,
               max_wait_s: float) -> Submission:
    """Check a WorkOrderSubmit call whose `ids` passed (`submit_ids`) just enough to keep it: its
    worker and its size. The worker checks everything else when it runs the order, and its error
    becomes the order's result."""
    work_order_id, worker_id, requester_id = ids
    shown_id: str = call.params["workOrderId"]
    if worker_id not in known_workers:
        raise CallError(ErrorCode.INVALID_PARAMETER, "workerId names no worker registered here; "
                        "find the ids with WorkerLookUp", call.reply_id, shown_id)
    if not fits_wrapped(call.body, max_request_bytes):
        raise CallError(ErrorCode.INVALID_PARAMETER, f"the work order is larger than this worker accepts "
                        f"({max_request_bytes} bytes); send less input", call.reply_id, shown_id)
    request_hash = submitted_request_hash(call.params)  # for the order's receipt, if one is made
    timeout_ms = call.params.get("responseTimeoutMSecs")
    if isinstance(timeout_ms, int) and not isinstance(timeout_ms, bool) and timeout_ms > 0:
        order = NewOrder(work_order_id, worker_id, _without_time_limit(call), requester_id, request_hash)
        return Submission(call, order, shown_id, min(timeout_ms / 1000, max_wait_s))
    return Submission(call, NewOrder(work_order_id, worker_id, call.body, requester_id, request_hash), shown_id, 0.0)


def _without_time_limit(call: Call) -> bytes:
    """The request to keep for an order whose requester set a responseTimeoutMSecs: the same
    request with it set to 0. Through the listener, that number bounds how long the submit call
    waits (EEA TC v1.1 §6.1.1: its synchronous mode); the requester then polls, and the order
    runs under the operator's limit (`serve --timeout-s`). Kept as sent, it would become the
    order's own limit in the worker, which stops orders at it (Avalon's SDK always sends 6000).
    The hashed fields are strings and the index integers, which a new encoding leaves exactly as
    they were."""
    return jsonio.dumps({**call.message, "params": {**call.params, "responseTimeoutMSecs": 0}})


def submit_refusal(item: Submission, outcome: SubmitOutcome) -> bytes | None:
    """The reply for an order the store did not accept, or None if it did."""
    if outcome is SubmitOutcome.DUPLICATE:
        message = "a work order with this workOrderId was already submitted; use a new workOrderId"
        return CallError(ErrorCode.INVALID_PARAMETER, message, item.call.reply_id, item.work_order_id).reply()
    if outcome is SubmitOutcome.QUEUE_FULL:
        message = "the worker is busy (its queue of pending work orders is full); try again later"
        return CallError(ErrorCode.BUSY, message, item.call.reply_id, item.work_order_id).reply()
    return None


def pending_reply(reply_id: Any, work_order_id: str) -> bytes:
    return jsonrpc.error_reply(reply_id, ErrorCode.PENDING, "the work order is pending; "
                               "ask for its result with WorkOrderGetResult", work_order_id)


def get_result_id(call: Call) -> tuple[str, str]:
    """The canonical and the as-sent workOrderId of a WorkOrderGetResult call."""
    raw = call.params.get("workOrderId")
    return id_param(call, "workOrderId"), raw if isinstance(raw, str) else ""


def outcome_reply(reply_id: Any, work_order_id: str, status: OrderStatus | None) -> bytes:
    """The answer to WorkOrderGetResult (or a submit that finished within the call)."""
    if status is None:
        return CallError(ErrorCode.INVALID_PARAMETER, "no work order with this workOrderId is kept here: it was "
                         "never submitted, or its result has passed its retention time", reply_id, work_order_id).reply()
    if status.state is OrderState.PENDING:
        return pending_reply(reply_id, work_order_id)
    key = b'"error":' if status.is_error else b'"result":'  # the stored object as it is: no decode, no re-encode
    return b'{"jsonrpc":"2.0","id":' + jsonio.dumps(reply_id) + b"," + key + status.outcome + b"}"

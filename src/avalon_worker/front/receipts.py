"""The listener's work-order receipt methods (EEA TC v1.1 §7.2, direct model), without I/O:
calls in, store operations and reply bytes out.

`WorkOrderReceiptCreate`, `…Update`, `…Retrieve`, `…UpdateRetrieve`, `…LookUp`,
`…LookUpNext`, with the semantics of Avalon's listener (`tcs_workorder_receipt_handler.py`) and
what it should have done where it breaks (the signatures `receipt.py` describes):
- Create and Update answer with a JSON-RPC `error` whose code is 0 on success, as Avalon's
  listener does. A receipt is created for an order the store keeps, once, with the order's
  request hash, workerId and requesterId, and a requester signature that verifies under the
  receipt's own receiptVerificationKey (else 4). The key is whoever creates the receipt first:
  the API has no authentication, so a receipt proves what its creator signed, not who they are.
- The worker adds its own signed update when the order is answered (`receipt.worker_update`,
  through the pump and the store), so the receipt says how the order ended, in the worker's
  words. Over this API only the receipt's requester updates it (updaterId its requesterId,
  signed with the receipt's key): pending, failed, rejected or an application's type (> 255);
  completed and processed carry the worker's response hash and come from the worker alone (3).
  No update after a completed one; after processed, no pending, failed or rejected (Avalon's
  rules); at most `MAX_UPDATES` over this API.
- UpdateRetrieve counts updates from 1 (0xFFFFFFFF: the last, as is 2**32, which Avalon's
  listener and generic client use instead), among the updaterId's if one is given; every
  update it answers names the key that checks it (receiptVerificationKey), as Avalon's
  `verify_update_receipt_signature` needs; LookUp pages by `PAGE_SIZE` in creation order, lookupTag "" on the last page; its
  receiptStatus (255: any) may be an integer, or hex text as Avalon's schema has it, or come as
  Avalon's SDK sends it, named requestCreateStatus.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable
from typing import Any

from .. import jsonio, receipt
from ..crypto import VerifyingKey
from ..errors import ErrorCode, InvalidParameterError
from ..models import check_id
from ..store import NewReceipt, Receipt, ReceiptOutcome, ReceiptPage, ReceiptQuery, ReceiptUpdate
from .api import Call, CallError, id_param

CREATE, UPDATE, RETRIEVE = "WorkOrderReceiptCreate", "WorkOrderReceiptUpdate", "WorkOrderReceiptRetrieve"
UPDATE_RETRIEVE, LOOKUP, LOOKUP_NEXT = "WorkOrderReceiptUpdateRetrieve", "WorkOrderReceiptLookUp", "WorkOrderReceiptLookUpNext"
METHODS = (CREATE, UPDATE, RETRIEVE, UPDATE_RETRIEVE, LOOKUP, LOOKUP_NEXT)
PAGE_SIZE = 20  # ids in one lookup answer
MAX_UPDATES = 16  # updates a receipt takes over this API (the worker adds its own)
MAX_KEY_CHARS = 1024  # a PEM public key
MAX_SIGNATURE_CHARS = 256  # base64 of a DER signature (at most 72 bytes for secp256k1)
MAX_UPDATE_DATA_CHARS = 4096
MAX_TYPE = 2**31 - 1
_CREATE_PARAMS = ("workOrderId", "workerServiceId", "workerId", "requesterId", "receiptCreateStatus",
                  "workOrderRequestHash", "requesterGeneratedNonce", "requesterSignature", "signatureRules",
                  "receiptVerificationKey")
_UPDATE_PARAMS = ("workOrderId", "updaterId", "updateType", "updateData", "updateSignature", "signatureRules",
                  "receiptVerificationKey")
_LOOKUP_PARAMS = ("workerServiceId", "workerId", "requesterId", "receiptStatus", "requestCreateStatus")


def _refuse(call: Call, message: str, code: ErrorCode = ErrorCode.INVALID_PARAMETER) -> CallError:
    shown = call.params.get("workOrderId")
    return CallError(code, f"{call.method}: {message}", call.reply_id, shown if isinstance(shown, str) else None)


def _only(call: Call, names: Iterable[str]) -> None:
    allowed = set(names)
    for name in call.params:
        if name not in allowed:
            raise _refuse(call, f"unknown parameter {name[:40]!r}; the parameters are {', '.join(sorted(allowed))}")


def _text(call: Call, name: str, limit: int) -> str:
    value = call.params.get(name)
    if not isinstance(value, str) or not value:
        raise _refuse(call, f"{name} is required (text)")
    if len(value) > limit:
        raise _refuse(call, f"{name} is longer than {limit} characters")
    return value


def _integer(call: Call, name: str) -> int:
    value = call.params.get(name)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_TYPE:
        raise _refuse(call, f"{name} is required (an integer from 0 to {MAX_TYPE})")
    return value


def _signature_rules(call: Call) -> None:
    rules = call.params.get("signatureRules")
    if rules is not None and rules != receipt.SIGNATURE_RULES:
        raise _refuse(call, f"signatureRules must be {receipt.SIGNATURE_RULES!r} (or left out)")


def _key(call: Call) -> str:
    pem = _text(call, "receiptVerificationKey", MAX_KEY_CHARS)
    try:
        VerifyingKey(pem)
    except ValueError:
        raise _refuse(call, "receiptVerificationKey must be a PEM secp256k1 public key") from None
    return pem


def _base64(call: Call, name: str, limit: int) -> bytes:
    try:
        return base64.b64decode(_text(call, name, limit), validate=True)
    except binascii.Error:
        raise _refuse(call, f"{name} must be base64") from None


def _reply(call: Call, result: Any) -> bytes:
    return jsonio.dumps({"jsonrpc": "2.0", "id": call.reply_id, "result": result})


def _done(call: Call, message: str) -> bytes:
    """Avalon's answer to a create or update that succeeded: an `error` with code 0."""
    return CallError(ErrorCode.SUCCESS, message, call.reply_id).reply()


# create --------------------------------------------------------------------------------------------


def new_receipt(call: Call) -> NewReceipt:
    """A WorkOrderReceiptCreate checked as far as it can be without the store: its shape, its
    ids and its signature (4 if it does not verify)."""
    _only(call, _CREATE_PARAMS)
    work_order_id = id_param(call, "workOrderId")
    ids = [id_param(call, name) for name in ("workerServiceId", "workerId", "requesterId")]
    status = call.params.get("receiptCreateStatus")
    if isinstance(status, bool) or status not in receipt.STATUSES:
        raise _refuse(call, "receiptCreateStatus must be 0 (pending), 1 (completed), 2 (processed), 3 (failed) "
                      "or 4 (rejected)")
    request_hash = _base64(call, "workOrderRequestHash", 64)
    if len(request_hash) != 32:
        raise _refuse(call, "workOrderRequestHash must be the order's request hash: 32 bytes, in base64")
    try:
        check_id(call.params.get("requesterGeneratedNonce"), "requesterGeneratedNonce")
    except InvalidParameterError as exc:
        raise _refuse(call, exc.message) from None
    signature = _text(call, "requesterSignature", MAX_SIGNATURE_CHARS)
    _signature_rules(call)
    pem = _key(call)
    if not receipt.signature_verifies(pem, signature, receipt.create_digest(call.params)):
        raise _refuse(call, "requesterSignature does not verify: sign SHA-256 of workOrderId + workerServiceId + "
                      "workerId + requesterId + receiptCreateStatus + workOrderRequestHash + requesterGeneratedNonce, "
                      "as sent, with the key given as receiptVerificationKey", ErrorCode.INVALID_SIGNATURE)
    params = {name: call.params[name] for name in _CREATE_PARAMS if name in call.params}
    return NewReceipt(work_order_id, ids[0], ids[1], ids[2], status, request_hash, call.params["workOrderId"],
                      jsonio.dumps(params))


def created_reply(call: Call, outcome: ReceiptOutcome) -> bytes:
    if outcome is ReceiptOutcome.CREATED:
        return _done(call, "Receipt created successfully")
    if outcome is ReceiptOutcome.UNKNOWN_ORDER:
        raise _refuse(call, "no work order with this workOrderId is kept here: submit the order first (a "
                      "receipt goes with its order, and expires with its result)")
    if outcome is ReceiptOutcome.DUPLICATE:
        raise _refuse(call, "this work order has a receipt already; retrieve it with WorkOrderReceiptRetrieve")
    raise _refuse(call, "workOrderRequestHash, workerId or requesterId is not the order's: the request hash is "
                  "that of the WorkOrderSubmit as sent (EEA TC §6.6.1), in base64")


# update --------------------------------------------------------------------------------------------


def receipt_id(call: Call) -> str:
    """The canonical workOrderId of a call about one receipt."""
    return id_param(call, "workOrderId")


def _no_receipt(call: Call) -> CallError:
    return _refuse(call, "no receipt for this workOrderId is kept here; create it with WorkOrderReceiptCreate")


def new_update(call: Call, kept: Receipt | None) -> tuple[ReceiptUpdate, int]:
    """A WorkOrderReceiptUpdate from the receipt's requester, checked against the receipt; the
    update and the number of updates the receipt had."""
    _only(call, _UPDATE_PARAMS)
    if kept is None:
        raise _no_receipt(call)
    created = jsonio.loads(kept.params)
    updater = id_param(call, "updaterId")
    if updater != kept.requester_id:
        raise _refuse(call, "over this API only the receipt's requester updates it (updaterId its requesterId); "
                      "the worker's updates come from the worker", ErrorCode.ACCESS_DENIED)
    update_type = _integer(call, "updateType")
    if update_type in (receipt.COMPLETED, receipt.PROCESSED):
        raise _refuse(call, "completed and processed updates carry the worker's response hash: the worker makes "
                      "them itself", ErrorCode.ACCESS_DENIED)
    if update_type not in receipt.STATUSES and update_type < receipt.APPLICATION_TYPES:
        raise _refuse(call, "updateType must be 0 (pending), 3 (failed), 4 (rejected) or an application's, "
                      "above 255 (5 to 255 are reserved)")
    data = call.params.get("updateData")
    if not isinstance(data, str) or len(data) > MAX_UPDATE_DATA_CHARS:
        raise _refuse(call, f"updateData is required (text, at most {MAX_UPDATE_DATA_CHARS} characters)")
    signature = _text(call, "updateSignature", MAX_SIGNATURE_CHARS)
    _signature_rules(call)
    key = call.params.get("receiptVerificationKey")
    if key is not None and key != created["receiptVerificationKey"]:
        raise _refuse(call, "a receipt is updated with the key it was created with (its receiptVerificationKey)")
    _check_transition(call, kept, update_type)
    digest = receipt.update_digest(call.params["workOrderId"], update_type, data)
    if not receipt.signature_verifies(created["receiptVerificationKey"], signature, digest):
        raise _refuse(call, "updateSignature does not verify: sign SHA-256 of workOrderId + updateType + updateData "
                      "with the key the receipt was created with", ErrorCode.INVALID_SIGNATURE)
    # With the key that checks it, where Avalon's verify_update_receipt_signature looks for it.
    params = {**{name: call.params[name] for name in _UPDATE_PARAMS if name in call.params},
              "receiptVerificationKey": created["receiptVerificationKey"]}
    return ReceiptUpdate(updater, update_type, jsonio.dumps(params)), len(kept.updates)


def _check_transition(call: Call, kept: Receipt, update_type: int) -> None:
    statuses = [u.update_type for u in kept.updates if u.update_type < receipt.APPLICATION_TYPES]
    last = statuses[-1] if statuses else None
    if last == receipt.COMPLETED:
        raise _refuse(call, "the receipt is completed: it takes no more updates")
    if last == receipt.PROCESSED and update_type in (receipt.PENDING, receipt.FAILED, receipt.REJECTED):
        raise _refuse(call, f"the receipt is processed: it cannot become {update_type} again")
    if len(kept.updates) >= MAX_UPDATES:
        raise _refuse(call, f"the receipt has {MAX_UPDATES} updates, as many as it takes over this API")


def updated_reply(call: Call, added: bool) -> bytes:
    if not added:
        raise _refuse(call, "the receipt changed while this update was checked (another update came first); "
                      "retrieve it and send the update again if it still applies")
    return _done(call, "Receipt updated successfully")


# retrieve ------------------------------------------------------------------------------------------


def retrieve_reply(call: Call, kept: Receipt | None) -> bytes:
    """WorkOrderReceiptRetrieve: the create params, and the receipt's current status."""
    _only(call, ("workOrderId",))
    if kept is None:
        raise _no_receipt(call)
    return _reply(call, {**jsonio.loads(kept.params), "receiptCurrentStatus": kept.status})


def update_retrieve_reply(call: Call, kept: Receipt | None) -> bytes:
    """WorkOrderReceiptUpdateRetrieve: one update, and how many there are (of its updater's, if
    one is named)."""
    _only(call, ("workOrderId", "updaterId", "updateIndex"))
    updater = None if call.params.get("updaterId") is None else id_param(call, "updaterId")
    index = call.params.get("updateIndex")
    if isinstance(index, bool) or not isinstance(index, int):
        raise _refuse(call, f"updateIndex is required (an integer from 1; {receipt.LAST_UPDATE:#x} for the last)")
    if kept is None:
        raise _no_receipt(call)
    updates = [u for u in kept.updates if updater is None or u.updater_id == updater]
    if not updates:
        raise _refuse(call, "the receipt has no updates" + (" from this updaterId" if updater else ""))
    if index in (receipt.LAST_UPDATE, receipt.AVALONS_LAST_UPDATE):
        index = len(updates)
    if not 1 <= index <= len(updates):
        raise _refuse(call, f"updateIndex must be from 1 to {len(updates)} (or {receipt.LAST_UPDATE:#x} for the last)")
    return _reply(call, {**jsonio.loads(updates[index - 1].params), "updateCount": len(updates)})


# lookup --------------------------------------------------------------------------------------------


def _status_filter(call: Call) -> int | None:
    names = [name for name in ("receiptStatus", "requestCreateStatus") if call.params.get(name) is not None]
    if not names:
        return None
    value = call.params[names[0]]
    if isinstance(value, str) and 0 < len(value) <= 10:  # Avalon's schema: hex text
        try:
            value = int(value, 16)
        except ValueError:
            pass
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_TYPE:
        raise _refuse(call, f"{names[0]} must be a status (0 to 4, 255 for any) or an application's type")
    return None if value == receipt.ANY_STATUS else value


def lookup_query(call: Call) -> tuple[ReceiptQuery, int]:
    """The filters of a WorkOrderReceiptLookUp or …LookUpNext, and the position to start after."""
    _only(call, (*_LOOKUP_PARAMS, "lastLookUpTag") if call.method == LOOKUP_NEXT else _LOOKUP_PARAMS)
    ids = [None if call.params.get(name) is None else id_param(call, name)
           for name in ("workerServiceId", "workerId", "requesterId")]
    after = 0
    if call.method == LOOKUP_NEXT:
        tag = call.params.get("lastLookUpTag")
        if not isinstance(tag, str) or not tag.isdecimal() or len(tag) > 19:
            raise _refuse(call, "lastLookUpTag is required: the lookupTag of the page before")
        after = int(tag)
    return ReceiptQuery(ids[0], ids[1], ids[2], _status_filter(call)), after


def lookup_reply(call: Call, page: ReceiptPage) -> bytes:
    tag = "" if page.last is None else str(page.last)
    return _reply(call, {"totalCount": page.total, "lookupTag": tag, "ids": list(page.ids)})


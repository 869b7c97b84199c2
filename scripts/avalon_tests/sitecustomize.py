"""Loaded by Python at start-up in the environment `scripts/avalon-tests.sh` runs Avalon's
programs in (this folder is on PYTHONPATH). It changes none of Avalon's code:

- Avalon's generic client imports two SWIG extensions of Avalon's C++ attestation verifiers
  (`verify_report.ias_verify_report`, `verify_dcap_quote.dcap_verify_report`) that only a full
  C++ build of Avalon provides. It calls them only for a non-empty `proofData`, which this
  worker does not send; stand-ins let the client import, and raise if anything in them is used.
- With AVALON_TESTS_RECORD set to a file, every JSON-RPC exchange of Avalon's HTTP client
  (`HttpJrpcClient._postmsg`) and every result Avalon's client decrypts
  (`WorkerEncrypt.decrypt_work_order_data_json`) is appended to it as a JSON line, for the
  report; the calls themselves are unchanged.
- With AVALON_TESTS_MEND_RECEIPT set (one case of the report, named as such, runs so), what
  makes `generic_client -r` crash before it sends anything is mended:
  `WorkOrderReceiptRequest.create_receipt` puts bytes in the request, which JSON cannot carry:
  the signature `sign_message` returns (work_order_receipt.py:114-115) and the key's PEM from
  `get_public_sign_key` (:90); the mended call sends the signature in base64 and the PEM as
  text, as Avalon's own listener reads them (`verify_create_receipt_signature`). The rest of
  Avalon's receipt flow (create, retrieve, the last update, its signature check) runs as
  written.
"""

from __future__ import annotations

import base64
import functools
import importlib.abc
import importlib.machinery
import json
import os
import sys
import types
from typing import Any

ABSENT_EXTENSIONS = {"verify_report.ias_verify_report", "verify_dcap_quote.dcap_verify_report"}
RECORD = os.environ.get("AVALON_TESTS_RECORD")
MEND_RECEIPT = bool(os.environ.get("AVALON_TESTS_MEND_RECEIPT"))


class _Absent(types.ModuleType):
    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        raise RuntimeError(f"{self.__name__}.{name}: Avalon's C++ attestation verifier is not built here "
                           "(it is needed only for a worker that sends proofData)")


def _record(entry: dict[str, Any]) -> None:
    if RECORD:
        with open(RECORD, "a", encoding="utf-8") as file:
            file.write(json.dumps(entry, default=repr) + "\n")


def _text(data: Any) -> str:
    if isinstance(data, (bytes, bytearray)):
        try:
            return bytes(data).decode("utf-8")
        except UnicodeDecodeError:
            return "base64:" + base64.b64encode(bytes(data)).decode()
    return str(data)


def _patch(module: types.ModuleType) -> None:
    if module.__name__ == "http_client.http_jrpc_client":
        post = module.HttpJrpcClient._postmsg

        @functools.wraps(post)
        def recorded_post(self: Any, request: Any, *args: Any, **kwargs: Any) -> Any:
            response = post(self, request, *args, **kwargs)
            _record({"request": request, "response": response})
            return response

        module.HttpJrpcClient._postmsg = recorded_post
    elif module.__name__ == "avalon_crypto_utils.worker_encryption":
        decrypt = module.WorkerEncrypt.decrypt_work_order_data_json

        @functools.wraps(decrypt)
        def recorded_decrypt(self: Any, data_objects: Any, *args: Any, **kwargs: Any) -> Any:
            result = decrypt(self, data_objects, *args, **kwargs)
            _record({"decrypted": [_text(item.get("data")) for item in data_objects]})
            return result

        module.WorkerEncrypt.decrypt_work_order_data_json = recorded_decrypt
    elif module.__name__ == "avalon_sdk.work_order_receipt.work_order_receipt":
        create = module.WorkOrderReceiptRequest.create_receipt

        @functools.wraps(create)
        def mended_create(self: Any, *args: Any, **kwargs: Any) -> Any:
            request = create(self, *args, **kwargs)
            if isinstance(request.get("requesterSignature"), (bytes, bytearray)):
                request["requesterSignature"] = base64.b64encode(bytes(request["requesterSignature"])).decode("ascii")
            if isinstance(request.get("receiptVerificationKey"), (bytes, bytearray)):
                request["receiptVerificationKey"] = bytes(request["receiptVerificationKey"]).decode("ascii")
            return request

        module.WorkOrderReceiptRequest.create_receipt = mended_create


class _Finder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    RECORDED = {"http_client.http_jrpc_client", "avalon_crypto_utils.worker_encryption"}
    MENDED = {"avalon_sdk.work_order_receipt.work_order_receipt"}

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> importlib.machinery.ModuleSpec | None:
        if fullname in ABSENT_EXTENSIONS:
            return importlib.machinery.ModuleSpec(fullname, self)
        if (fullname in self.RECORDED and RECORD) or (fullname in self.MENDED and MEND_RECEIPT):
            spec = importlib.machinery.PathFinder.find_spec(fullname, path)
            if spec is not None and spec.loader is not None:
                original = spec.loader

                class Patching(importlib.abc.Loader):
                    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType | None:
                        return original.create_module(spec)

                    def exec_module(self, module: types.ModuleType) -> None:
                        original.exec_module(module)
                        _patch(module)

                spec.loader = Patching()
            return spec
        return None

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType:
        return _Absent(spec.name)

    def exec_module(self, module: types.ModuleType) -> None:
        pass


sys.meta_path.insert(0, _Finder())

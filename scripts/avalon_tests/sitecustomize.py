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


class _Finder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    PATCHED = {"http_client.http_jrpc_client", "avalon_crypto_utils.worker_encryption"}

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> importlib.machinery.ModuleSpec | None:
        if fullname in ABSENT_EXTENSIONS:
            return importlib.machinery.ModuleSpec(fullname, self)
        if fullname in self.PATCHED and RECORD:
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

"""The workload registry: `workloads.json` maps a workload id to a module and class.

It is loaded and checked once, at start: every entry is imported and instantiated then, so a
bad entry stops the worker with a message naming it instead of failing a work order later.
"""

from __future__ import annotations

import importlib
import json
import logging
import re
import sys
from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any, Protocol

from ..errors import SetupError, WorkloadError
from .base import LegacyWorkload, Workload, WorkloadFailure

logger = logging.getLogger("avalon_worker.workload")

_FOLDER_NAME = re.compile(r"[A-Za-z0-9._-]{1,100}")


class RegistryError(SetupError):
    """The registry file or one of its entries is unusable."""


class InputData(Protocol):
    """What the registry needs of each decrypted input item."""

    @property
    def index(self) -> int: ...

    @property
    def data(self) -> bytes: ...


def _data_dir(workload_id: str, where: str, data_root: Path | None) -> Path | None:
    if data_root is None:
        return None
    if not _FOLDER_NAME.fullmatch(workload_id) or set(workload_id) == {"."}:
        raise RegistryError(f"{where}: a workload that keeps files needs an id usable as a folder name "
                            "(letters, digits, '.', '_', '-')")
    return data_root / workload_id


def _load_entry(workload_id: str, entry: Any, source: str, data_root: Path | None) -> Workload | LegacyWorkload:
    where = f"{source}: entry {workload_id!r}"
    if not isinstance(entry, Mapping) or not isinstance(entry.get("module"), str) or not isinstance(
        entry.get("class"), str
    ):
        raise RegistryError(f'{where} must be {{"module": "<python module>", "class": "<class name>"}}')
    module_name, class_name = entry["module"], entry["class"]
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # an import runs arbitrary code; any failure makes the entry bad
        refused = _refused_source(module_name) if isinstance(exc, ImportError) else None
        if refused is not None:
            raise RegistryError(
                f"{where}: module {module_name!r} cannot be imported: {refused} is there but may not be read "
                "(under Gramine: the file differs from the one measured into the manifest; render it again)"
            ) from exc
        raise RegistryError(f"{where}: module {module_name!r} cannot be imported ({type(exc).__name__}: {exc})") from exc
    cls = getattr(module, class_name, None)
    if not isinstance(cls, type):
        raise RegistryError(f"{where}: module {module_name!r} has no class {class_name!r}")
    if not (callable(getattr(cls, "run", None)) or callable(getattr(cls, "execute", None))):
        raise RegistryError(f"{where}: class {class_name!r} has neither run(inputs) nor execute(in_data_array)")
    keeps_files = getattr(cls, "uses_data_dir", False) is True
    data_dir = _data_dir(workload_id, where, data_root) if keeps_files else None
    try:
        instance: Workload | LegacyWorkload = cls(data_dir=data_dir) if keeps_files else cls()
        return instance
    except Exception as exc:
        raise RegistryError(f"{where}: class {class_name!r} could not be created ({type(exc).__name__}: {exc})") from exc


def _refused_source(module_name: str) -> str | None:
    """The source file of a module that exists on the import path but may not be read, if any.

    Gramine refuses every access to a trusted file whose contents changed after the manifest was
    rendered (and to the listing of its folder), so Python only reports the module as missing.
    """
    top = module_name.split(".", 1)[0]
    for folder in sys.path:
        for candidate in (Path(folder or ".") / f"{top}.py", Path(folder or ".") / top / "__init__.py"):
            try:
                with open(candidate, "rb"):
                    pass
            except PermissionError:
                return str(candidate)
            except OSError:
                continue
    return None


class WorkloadRegistry:
    """Workload instances by id, created once."""

    def __init__(self, workloads: Mapping[str, Workload | LegacyWorkload]) -> None:
        self._workloads = dict(workloads)
        # Log a raising workload's exception and traceback (`serve --debug-workloads`): for its
        # author, never by default, as the message may quote the order's plaintext.
        self.debug = False

    @classmethod
    def from_mapping(cls, entries: Any, source: str = "workloads", data_root: Path | None = None) -> WorkloadRegistry:
        """Create every entry's workload; those that keep files get a folder under `data_root`."""
        if not isinstance(entries, Mapping) or not entries:
            raise RegistryError(f'{source} must be a non-empty JSON object {{"<id>": {{"module": ..., "class": ...}}}}')
        return cls({str(wid): _load_entry(str(wid), entry, source, data_root) for wid, entry in entries.items()})

    @classmethod
    def from_file(cls, path: str | Path, data_root: Path | None = None) -> WorkloadRegistry:
        """Load a workloads.json; modules next to it are importable, as with the original worker."""
        path = Path(path)
        try:
            entries = json.loads(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise RegistryError(f"cannot read workload registry {path}: {exc.strerror}") from exc
        except ValueError as exc:
            raise RegistryError(f"workload registry {path} is not valid JSON: {exc}") from exc
        folder = str(path.resolve().parent)
        if folder not in sys.path:
            sys.path.insert(0, folder)
        return cls.from_mapping(entries, str(path), data_root)

    @classmethod
    def builtin(cls, data_root: Path | None = None) -> WorkloadRegistry:
        """python-hello, python-fib, echo-result, and Avalon's heart-disease-eval,
        inside-out-eval and simple-wallet."""
        text = resources.files("avalon_worker").joinpath("data/workloads.json").read_text(encoding="utf-8")
        return cls.from_mapping(json.loads(text), "built-in workloads", data_root)

    def __contains__(self, workload_id: object) -> bool:
        return workload_id in self._workloads

    def names(self) -> list[str]:
        return sorted(self._workloads)

    def classes(self) -> dict[str, tuple[str, str]]:
        """Each workload id's (module, class name), where the code that runs it is defined."""
        return {wid: (type(w).__module__, type(w).__qualname__) for wid, w in self._workloads.items()}

    def run(self, workload_id: str, inputs: Sequence[InputData]) -> list[bytes]:
        """Run a workload on inputs in index order; return one bytes per output item.

        Raises `WorkloadError` (code 1) with a message that names the problem but never the inputs.
        """
        workload = self._workloads[workload_id]
        result: bytes | Sequence[bytes]
        try:
            if isinstance(workload, LegacyWorkload) or not callable(getattr(workload, "run", None)):
                result = _run_legacy(workload_id, workload, inputs)
            else:
                result = workload.run([item.data for item in inputs])
        except WorkloadFailure as exc:
            raise WorkloadError(f"workload {workload_id!r} failed: {exc}") from None
        except WorkloadError:
            raise
        except MemoryError:
            raise WorkloadError(f"workload {workload_id!r} ran out of memory") from None
        except Exception as exc:
            if self.debug:
                logger.error("workload %r raised; its message and traceback may hold the order's data",
                             workload_id, exc_info=exc)
            raise WorkloadError(f"workload {workload_id!r} raised {type(exc).__name__}") from None
        if isinstance(result, (bytes, bytearray, memoryview)):
            return [bytes(result)]
        if isinstance(result, Sequence) and not isinstance(result, str) and all(
            isinstance(part, (bytes, bytearray, memoryview)) for part in result
        ):
            return [bytes(part) for part in result]
        raise WorkloadError(f"workload {workload_id!r} returned {type(result).__name__}, not bytes")


def _run_legacy(workload_id: str, workload: Any, inputs: Sequence[InputData]) -> bytes:
    # The original worker passed dicts with plaintext `data`; status False meant failure, and
    # its bytes were an error text that may quote the input, so they are not passed on.
    items = [
        {"index": item.index, "dataHash": "", "data": item.data, "encryptedDataEncryptionKey": "-", "iv": ""}
        for item in inputs
    ]
    outcome = workload.execute(items)
    if not (isinstance(outcome, tuple) and len(outcome) == 2):
        raise WorkloadError(f"workload {workload_id!r} returned something other than (status, bytes)")
    ok, data = outcome
    if not ok:
        raise WorkloadError(f"workload {workload_id!r} reported failure")
    if isinstance(data, str):
        data = data.encode("utf-8")
    if not isinstance(data, (bytes, bytearray)):
        raise WorkloadError(f"workload {workload_id!r} returned a result that is not bytes")
    return bytes(data)

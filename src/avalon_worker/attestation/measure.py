"""Which code runs: the worker measures itself at start and, on Intel TDX, extends RTMR3 with it.

`measure_code` puts into one canonical document (`CodeEvent.data`) the files of the installed
`avalon_worker` package, the workload registry with the modules it names, and the settings that
change what the worker does (`MEASURED_SETTINGS`). Its digest is SHA-384 over the document's
canonical JSON (sorted keys, no spaces, ASCII), so a requester recomputes it from the published
document alone. Paths are relative, files sorted, compiled files (``__pycache__``) left out, and
nothing depends on the time, the host or the interpreter (which belongs to the VM image), so
`serve --print-code-measurement` gives the same digest on any machine with the same release,
workloads and options.

`extend_rtmr3` extends the digest into RTMR3 through the kernel's tdx_guest sysfs interface
(Linux >= 6.16: writing exactly 48 bytes to ``rtmr3:sha384`` makes RTMR3 = SHA384(RTMR3 ‖ digest))
and returns what the signup publishes (`RtmrRecord.signup_fields`). Events of earlier starts in
the same boot are kept in a log next to the worker's identity so that the published list replays
from zero to the register's value; where that cannot hold, or the kernel cannot extend, the
record says so in a note instead of pretending.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import __version__, defaults
from ..workload.registry import WorkloadRegistry

logger = logging.getLogger(__name__)

RTMR_INDEX = 3
RTMR_SIZE = 48
EVENT_NAME = "avalon-worker code"
BOOT_ID_PATH = "/proc/sys/kernel/random/boot_id"
LOG_FILE = "tdx-rtmr3-events.json"

# serve's settings that change what a requester gets (argparse dest names). Left out: where it
# listens, its state directory, log level, process count and scheduling, metrics: per host, and
# nothing a requester's data depends on. The store's address is a secret: only whether there is one.
MEASURED_SETTINGS = (
    "insecure_reuse_session_iv",  # results under a reused AES-GCM nonce: requesters must know
    "max_request_bytes",
    "timeout_s",
    "memory_limit_mb",
    "worker_id",
    "replay_window_s",
    "debug_workloads",  # a raising workload's message, which may quote plaintext, is logged
)


def canonical_json(data: Any) -> bytes:
    """The bytes the digest is taken over (and a requester recomputes)."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode("ascii")


def measured_configuration(options: Mapping[str, Any]) -> dict[str, Any]:
    """The behaviour-changing subset of serve's options (`vars(args)`)."""
    configuration = {name: options.get(name) for name in MEASURED_SETTINGS}
    configuration["in_process"] = options.get("workers") == 0  # no isolation, no time limits
    configuration["http_listener"] = bool(options.get("listen_http"))
    configuration["shared_store"] = bool(options.get("store"))
    return configuration


@dataclass(frozen=True)
class CodeEvent:
    """One measured event: what was measured (`data`) and its SHA-384 (`digest`)."""

    data: dict[str, Any]

    @property
    def digest(self) -> bytes:
        return hashlib.sha384(canonical_json(self.data)).digest()

    def as_json(self) -> dict[str, Any]:
        """The event as the signup lists it."""
        return {"rtmr": RTMR_INDEX, "digest": self.digest.hex(), "event": EVENT_NAME, "data": self.data}

    @classmethod
    def from_json(cls, value: Any) -> CodeEvent:
        """An event as `as_json` wrote it; `ValueError` unless its digest matches its data."""
        if not isinstance(value, dict) or not isinstance(value.get("data"), dict):
            raise ValueError("not an event")
        event = cls(value["data"])
        if value.get("digest") != event.digest.hex() or value.get("rtmr") != RTMR_INDEX:
            raise ValueError("the event's digest does not match its data")
        return event


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def tree_files(folder: Path, base: Path) -> dict[str, str]:
    """SHA-256 of every file under `folder` but compiled ones, by POSIX path relative to `base`."""
    files: dict[str, str] = {}
    for current, dirs, names in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        for name in sorted(names):
            if name.endswith((".pyc", ".pyo")):
                continue
            path = Path(current, name)
            files[path.relative_to(base).as_posix()] = _sha256(path)
    return files


def _module_files(module_name: str) -> dict[str, str]:
    """The files of a workload's code: its own top-level package whole, or its one module."""
    top = sys.modules.get(module_name.split(".", 1)[0])
    top_file = getattr(top, "__file__", None)
    if top_file is None:  # a namespace package or a built-in: nothing on disk to hash
        return {}
    if hasattr(top, "__path__"):  # a package: every file of it may run
        package_dir = Path(top_file).parent
        if top is sys.modules["avalon_worker"]:
            module_file = getattr(sys.modules.get(module_name), "__file__", None)
            return {} if module_file is None else {
                Path(module_file).relative_to(package_dir.parent).as_posix(): _sha256(Path(module_file))
            }
        return tree_files(package_dir, package_dir.parent)
    return {Path(top_file).name: _sha256(Path(top_file))}


def measure_code(
    registry: WorkloadRegistry,
    configuration: Mapping[str, Any],
    *,
    registry_file: str | os.PathLike[str] | None = None,
    package_dir: Path | None = None,
) -> CodeEvent:
    """Measure this worker: its package's files, its workloads, its `configuration`.

    `registry_file` is the workloads.json given with --workloads (None: the built-in one, which
    is among the package's files).
    """
    package_dir = package_dir or Path(sys.modules["avalon_worker"].__file__ or "").parent
    classes = registry.classes()
    workload_files: dict[str, str] = {}
    for module_name, _ in sorted(classes.values()):
        workload_files.update(_module_files(module_name))
    data = {
        "worker": {
            "name": "avalon-worker",
            "version": __version__,
            "files": tree_files(package_dir, package_dir.parent),
        },
        "workloads": {
            "registry": "built-in" if registry_file is None else {"sha256": _sha256(Path(registry_file))},
            "entries": {wid: {"module": module, "class": cls} for wid, (module, cls) in classes.items()},
            "files": workload_files,
        },
        "configuration": dict(configuration),
    }
    return CodeEvent(data)


def replay(events: tuple[CodeEvent, ...] | list[CodeEvent], start: bytes = bytes(RTMR_SIZE)) -> bytes:
    """The register's value after extending `start` with each event's digest in turn."""
    value = start
    for event in events:
        value = hashlib.sha384(value + event.digest).digest()
    return value


@dataclass(frozen=True)
class RtmrRecord:
    """What the signup says about RTMR3: the events extended in this boot, and whether they were."""

    events: tuple[CodeEvent, ...]
    extended: bool
    note: str | None = None

    def signup_fields(self) -> dict[str, Any]:
        fields: dict[str, Any] = {
            "tdx_rtmr_events": [event.as_json() for event in self.events],
            "tdx_rtmr_extended": self.extended,
        }
        if self.note:
            fields["tdx_rtmr_note"] = self.note
        return fields


def read_boot_id(path: str = BOOT_ID_PATH) -> str:
    """This boot's id ("" when the kernel does not say), so a log of an earlier boot is not reused."""
    try:
        return Path(path).read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        return ""


def _load_log(path: Path, boot_id: str) -> list[CodeEvent]:
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
        if not boot_id or saved.get("boot_id") != boot_id:
            return []
        return [CodeEvent.from_json(value) for value in saved["events"]]
    except FileNotFoundError:
        return []
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        logger.warning("ignoring the RTMR3 event log %s: %s", path, exc)
        return []


def _save_log(path: Path, boot_id: str, events: list[CodeEvent]) -> None:
    temporary = path.with_name(path.name + ".tmp")
    try:
        temporary.write_text(json.dumps({"boot_id": boot_id, "events": [e.as_json() for e in events]}), "utf-8")
        os.replace(temporary, path)
    except OSError as exc:
        logger.warning("cannot keep the RTMR3 event log in %s (%s): a restart in this boot cannot be replayed", path, exc.strerror)


def _read_register(path: Path) -> bytes:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        value = os.read(fd, RTMR_SIZE + 1)
    finally:
        os.close(fd)
    if len(value) != RTMR_SIZE:
        raise OSError(0, f"read {len(value)} bytes, not {RTMR_SIZE}")
    return value


def _write_register(path: Path, digest: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        written = os.write(fd, digest)  # one write of exactly 48 bytes at offset 0 is one extension
    finally:
        os.close(fd)
    if written != RTMR_SIZE:
        raise OSError(0, f"wrote {written} of {RTMR_SIZE} bytes")


def _not_extended(note: str) -> RtmrRecord:
    logger.warning("RTMR3 not extended: %s", note)
    return RtmrRecord((), False, note)


def extend_rtmr3(
    event: CodeEvent,
    measurements_dir: str | os.PathLike[str] = defaults.TDX_MEASUREMENTS_DIR,
    *,
    log_dir: str | os.PathLike[str] | None = None,
    boot_id: str = "",
) -> RtmrRecord:
    """Extend RTMR3 with `event` once, and say what a requester can replay.

    `log_dir` (the state directory) keeps the events of earlier starts in the boot `boot_id`.
    """
    register = Path(measurements_dir) / f"rtmr{RTMR_INDEX}:sha384"
    if not Path(measurements_dir).is_dir():
        return _not_extended(
            f"this kernel cannot extend RTMR3 ({measurements_dir} is missing; Linux >= 6.16 with tdx_guest has it), "
            "so the quote does not cover the worker's code"
        )
    try:
        before = _read_register(register)
    except OSError as exc:
        return _not_extended(f"cannot read {register}: {exc.strerror or exc}")
    log = Path(log_dir) / LOG_FILE if log_dir is not None else None
    earlier = _load_log(log, boot_id) if log is not None else []
    note = None
    if replay(earlier) != before:
        earlier = []
        if before != bytes(RTMR_SIZE):
            note = (
                f"RTMR3 was {before.hex()} before this worker extended it, from extensions this worker did not make "
                "(another program, or a worker whose log was lost): replaying these events from zero will not give "
                "the quote's RTMR3"
            )
    try:
        _write_register(register, event.digest)
        after = _read_register(register)
    except OSError as exc:
        return _not_extended(f"extending {register} failed: {exc.strerror or exc}")
    if after != replay([event], before):
        note = "RTMR3 was extended by someone else while this worker extended it: a replay will not match"
    events = [*earlier, event]
    if log is not None:
        _save_log(log, boot_id, events)
    logger.info("RTMR3 extended with this worker's code: digest %s (event %d of this boot)", event.digest.hex(), len(events))
    if note:
        logger.warning("%s", note)
    return RtmrRecord(tuple(events), True, note)


def timed_measure_code(registry: WorkloadRegistry, configuration: Mapping[str, Any], **options: Any) -> CodeEvent:
    """`measure_code`, logging what it measured and how long it took."""
    started = time.perf_counter()
    event = measure_code(registry, configuration, **options)
    files = len(event.data["worker"]["files"]) + len(event.data["workloads"]["files"])
    logger.info("measured this worker's code: %d files in %.1f ms, digest %s", files,
                (time.perf_counter() - started) * 1000, event.digest.hex())
    return event

"""A stand-in for the guest kernel's attestation interfaces, served through FUSE (`fuse_fs`).

Under `root` it serves two trees that behave as Linux's do (drivers/virt/coco/tsm.c, the
tdx_guest measurement attributes; CONFIDENTIAL_VMS.md):

- ``report/``: configfs-tsm. `mkdir report/NAME` makes a report directory holding
  ``provider`` ("tdx_guest\\n" or "sev_guest\\n"), ``generation`` (the count of writes),
  ``inblob`` (write-only, at most 64 bytes, taken on close as configfs takes a binary attribute),
  ``outblob`` (made when read, over the inblob of that moment; EINVAL before any inblob) and,
  for sev_guest, ``auxblob``, ``privlevel`` and ``privlevel_floor``. Without a provider, mkdir
  fails with ENXIO as it does in a kernel whose tdx_guest/sev_guest driver is not loaded.
- ``measurements/``: the tdx_guest sysfs attributes. ``rtmr0:sha384`` … ``rtmr3:sha384`` read
  48 bytes; a write of exactly 48 bytes at offset 0 extends (RTMR = SHA384(RTMR ‖ data)), any
  other write fails with EINVAL. ``mrtd:sha384`` and the other static registers are read-only.

Evidence is made by `evidence(kind, report_data, rtmr3)`: by default real signed evidence from the
test PKIs (`attestation_fixtures.make_tdx_quote`, `snp_fixtures.make_snp_report`) where those
exist, else evidence framed here with the right headers and sizes. Faults for tests:
`privlevel_floor` (a guest above VMPL 0: reports asked for below it fail), `interfere` (the next N reports see another writer's inblob land between ours and the read, as a
concurrent process would cause), `outblob_override` (the provider answers with these bytes) and
`fail_with` (reading outblob fails with this errno).
"""

from __future__ import annotations

import errno
import hashlib
import os
import struct
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from fuse_fs import Dir, File, FuseMount, Handle, fuse_unavailable

TDX = "tdx_guest"
SNP = "sev_guest"
SNP_REPORT_SIZE = 1184
INBLOB_MAX = 64
OUTBLOB_MAX = 32 * 1024
RTMR_SIZE = 48
OTHER_WRITERS_INBLOB = b"\xee" * 64

Evidence = Callable[[str, bytes, bytes], tuple[bytes, bytes]]


def framed_tdx_quote(report_data: bytes, rtmr3: bytes = bytes(48), *, version: int = 4) -> bytes:
    """A TDX quote shape (header, TD 1.0 body, signature data) with unsigned contents."""
    header = struct.pack("<HHI", version, 2, 0x81) + bytes(40)
    body = bytearray(584)
    body[472:520] = rtmr3
    body[520:584] = report_data
    descriptor = struct.pack("<HI", 2, 584) if version == 5 else b""
    signature = bytes(128) + struct.pack("<HI", 6, 0)
    return header + descriptor + bytes(body) + struct.pack("<I", len(signature)) + signature


def framed_snp_report(report_data: bytes, *, version: int = 3) -> bytes:
    """A 1184-byte SEV-SNP report shape (version, signature algorithm, REPORT_DATA), unsigned."""
    report = bytearray(SNP_REPORT_SIZE)
    struct.pack_into("<I", report, 0, version)
    struct.pack_into("<I", report, 0x34, 1)
    report[0x50:0x90] = report_data
    return bytes(report)


def cert_table(entries: list[tuple[bytes, bytes]]) -> bytes:
    """The GHCB certificate table: (GUID, offset, length) entries, a zero entry, then the data."""
    offset = 24 * (len(entries) + 1)
    head, tail = bytearray(), bytearray()
    for guid, data in entries:
        head += guid + struct.pack("<II", offset + len(tail), len(data))
        tail += data
    return bytes(head + bytes(24) + tail)


VCEK_GUID = bytes.fromhex("63da758d e664 4564 adc5 f4b93be8accd".replace(" ", ""))


def default_evidence(kind: str, report_data: bytes, rtmr3: bytes) -> tuple[bytes, bytes]:
    """Signed evidence from the test PKIs when their fixtures exist, else framed evidence."""
    if kind == TDX:
        try:
            from attestation_fixtures import make_tdx_quote  # type: ignore[attr-defined]
        except ImportError:
            return framed_tdx_quote(report_data, rtmr3), b""
        return make_tdx_quote(report_data, rtmr3=rtmr3), b""
    try:
        from snp_fixtures import make_cert_table, make_snp_report, snp_pki  # type: ignore[import-not-found]
    except ImportError:
        return framed_snp_report(report_data), cert_table([(VCEK_GUID, b"not a certificate")])
    return make_snp_report(report_data), make_cert_table(snp_pki().vcek_chain())


def require_fuse(reason: str | None = None) -> None:
    """Skip the calling test when the stand-in cannot be mounted (`reason`, or what
    `fuse_unavailable` finds); fail instead under CI_REQUIRE_FUSE=1."""
    reason = reason or fuse_unavailable()
    if reason is None:
        return
    if os.environ.get("CI_REQUIRE_FUSE") == "1":
        pytest.fail(f"the configfs-tsm stand-in is required here (CI_REQUIRE_FUSE=1) but {reason}")
    pytest.skip(f"the configfs-tsm stand-in needs FUSE: {reason}; CI_REQUIRE_FUSE=1 makes this a failure")


class _Content(Handle):
    """A readable snapshot, made at the first read of an open file as configfs and sysfs do."""

    def __init__(self, make: Callable[[], bytes]) -> None:
        self.make = make
        self.data: bytes | None = None

    def read(self, offset: int, size: int) -> bytes:
        if self.data is None:
            self.data = self.make()
        return self.data[offset : offset + size]


class _BinaryWrite(Handle):
    """A configfs binary attribute: writes gather in a buffer, taken whole when the file closes."""

    def __init__(self, commit: Callable[[bytes], None], limit: int) -> None:
        self.buffer = bytearray()
        self.commit = commit
        self.limit = limit
        self.written = False

    def write(self, offset: int, data: bytes) -> int:
        if offset + len(data) > self.limit:
            raise OSError(errno.EFBIG, "larger than the attribute")
        self.buffer[offset : offset + len(data)] = data
        self.written = True
        return len(data)

    def flush(self) -> None:
        if self.written:
            self.written = False
            self.commit(bytes(self.buffer))


class _TextWrite(Handle):
    def __init__(self, commit: Callable[[bytes], None]) -> None:
        self.commit = commit

    def write(self, offset: int, data: bytes) -> int:
        self.commit(data)
        return len(data)


class _Report:
    """One report directory's state (struct tsm_report_state)."""

    def __init__(self, sim: SimulatedTsm) -> None:
        self.sim = sim
        self.write_generation = 0
        self.read_generation = 0
        self.inblob = b""
        self.outblob: bytes | None = None
        self.auxblob = b""
        self.privlevel = 0

    def directory(self) -> Dir:
        files: dict[str, File] = {
            "generation": File(lambda _: _Content(lambda: f"{self.write_generation}\n".encode()), 0o444),
            "provider": File(lambda _: _Content(lambda: f"{self.sim.provider}\n".encode()), 0o444),
            "inblob": File(lambda _: _BinaryWrite(self._take_inblob, INBLOB_MAX), 0o200),
            "outblob": File(lambda _: _Content(lambda: self._read(aux=False)), 0o444),
        }
        if self.sim.provider == SNP:
            files["auxblob"] = File(lambda _: _Content(lambda: self._read(aux=True)), 0o444)
            files["privlevel"] = File(lambda _: _TextWrite(self._take_privlevel), 0o200)
            files["privlevel_floor"] = File(lambda _: _Content(lambda: f"{self.sim.privlevel_floor}\n".encode()), 0o444)
        return Dir(dict(files))

    def _take_inblob(self, data: bytes) -> None:
        with self.sim.lock:
            self.write_generation += 1
            self.inblob = data

    def _take_privlevel(self, data: bytes) -> None:
        try:
            level = int(data.strip())
        except ValueError:
            raise OSError(errno.EINVAL, "not a number") from None
        if not self.sim.privlevel_floor <= level <= 3:
            raise OSError(errno.EINVAL, "privilege level out of range")
        with self.sim.lock:
            self.write_generation += 1
            self.privlevel = level

    def _read(self, *, aux: bool) -> bytes:
        sim = self.sim
        with sim.lock:
            if not self.inblob:
                raise OSError(errno.EINVAL, "no inblob written")
            if self.outblob is None or self.read_generation != self.write_generation:
                if sim.interfere:
                    sim.interfere -= 1
                    self.write_generation += 1  # another process's write lands first
                    self.inblob = OTHER_WRITERS_INBLOB
                if sim.fail_with is not None:
                    raise OSError(sim.fail_with, os.strerror(sim.fail_with))
                if self.privlevel < sim.privlevel_floor:  # the firmware refuses a VMPL above the guest's
                    raise OSError(errno.EIO, "report requested below the privilege floor")
                sim.privlevels.append(self.privlevel)
                report_data = self.inblob.ljust(INBLOB_MAX, b"\0")
                self.outblob, self.auxblob = sim.evidence(sim.provider or "", report_data, sim.rtmr[3])
                if sim.outblob_override is not None:
                    self.outblob = sim.outblob_override
                sim.reports_made += 1
                self.read_generation = self.write_generation
            return self.auxblob if aux else self.outblob


class _Register(Handle):
    def __init__(self, sim: SimulatedTsm, index: int) -> None:
        self.sim = sim
        self.index = index

    def read(self, offset: int, size: int) -> bytes:
        return self.sim.rtmr[self.index][offset : offset + size]

    def write(self, offset: int, data: bytes) -> int:
        if offset != 0 or len(data) != RTMR_SIZE:
            raise OSError(errno.EINVAL, "an extension is exactly 48 bytes at offset 0")
        with self.sim.lock:
            self.sim.rtmr[self.index] = hashlib.sha384(self.sim.rtmr[self.index] + data).digest()
            self.sim.extensions.append((self.index, data))
        return len(data)


class SimulatedTsm:
    """Serve configfs-tsm (`report_dir`) and tdx_guest's registers (`measurements_dir`) under `root`.

    `provider` is "tdx_guest", "sev_guest", or None for a kernel with configfs-tsm but no
    attestation driver. `measurements=False` leaves out the register tree (a kernel before 6.16).
    """

    def __init__(
        self,
        root: Path,
        provider: str | None = TDX,
        *,
        measurements: bool = True,
        evidence: Evidence = default_evidence,
        mrtd: bytes = hashlib.sha384(b"avalon-worker test TD").digest(),
        privlevel_floor: int = 0,
    ) -> None:
        self.root = Path(root)
        self.provider = provider
        self.evidence = evidence
        self.lock = threading.RLock()
        self.rtmr = [bytes(RTMR_SIZE) for _ in range(4)]
        self.mrtd = mrtd
        self.extensions: list[tuple[int, bytes]] = []
        self.reports: dict[str, _Report] = {}
        self.reports_made = 0
        self.directories_made = 0
        self.interfere = 0
        self.outblob_override: bytes | None = None
        self.fail_with: int | None = None
        self.privlevel_floor = privlevel_floor  # sev_guest: above 0 for a guest under an SVSM
        self.privlevels: list[int] = []  # the privilege level each report was made at
        tree: dict[str, Dir] = {"report": Dir(on_mkdir=self._mkdir, on_rmdir=self._rmdir)}
        if measurements:
            tree["measurements"] = self._measurements()
        self._mount = FuseMount(self.root, Dir(dict(tree)), name="simtsm")

    @property
    def report_dir(self) -> Path:
        return self.root / "report"

    @property
    def measurements_dir(self) -> Path:
        return self.root / "measurements"

    def __enter__(self) -> SimulatedTsm:
        require_fuse()
        self.root.mkdir(parents=True, exist_ok=True)
        try:
            self._mount.start()
        except OSError as exc:  # e.g. root in a container without CAP_SYS_ADMIN
            require_fuse(f"mounting a FUSE file system failed ({exc.strerror or exc})")
        return self

    def __exit__(self, *exc: object) -> None:
        self._mount.stop()
        assert not self._mount.errors, f"the stand-in failed: {self._mount.errors!r}"

    def _mkdir(self, name: str) -> Dir:
        if self.provider is None:
            raise OSError(errno.ENXIO, "no TSM provider registered")
        report = _Report(self)
        with self.lock:
            self.reports[name] = report
            self.directories_made += 1
        return report.directory()

    def _rmdir(self, name: str, _directory: Dir) -> None:
        with self.lock:
            self.reports.pop(name, None)

    def _measurements(self) -> Dir:
        files: dict[str, File] = {
            f"rtmr{i}:sha384": File(lambda _, i=i: _Register(self, i), 0o644) for i in range(4)  # type: ignore[misc]
        }
        files["mrtd:sha384"] = File(lambda _: _Content(lambda: self.mrtd), 0o444)
        for name in ("mrconfigid", "mrowner", "mrownerconfig"):
            files[name] = File(lambda _: _Content(lambda: bytes(48)), 0o444)
        return Dir(dict(files))



"""configfs-tsm: attestation reports from a confidential VM's kernel (Linux >= 6.7).

The kernel's interface (Documentation/ABI/testing/configfs-tsm-report): ``mkdir`` under
``/sys/kernel/config/tsm/report`` makes a report directory; 64 bytes written to its ``inblob``
become the report's REPORTDATA; reading ``outblob`` makes the report over the inblob of that
moment (an Intel TDX quote, or an AMD SEV-SNP report) and ``auxblob`` the host's certificates
(SNP); ``provider`` names the driver (``tdx_guest``, ``sev_guest``); ``generation`` counts the
writes to the directory. Each report here gets a directory of its own, removed afterwards; the
generation read before our writes and after our reads must differ by exactly our writes, or
another process wrote in between and the report may be over its data (`GenerationChanged`).
SEV-SNP guests running above VMPL 0 (under an SVSM) have a ``privlevel_floor`` above zero and
must ask for their report at that level: ``privlevel`` is written first where the floor says so.

The checks on what comes back are pure functions (`check_tdx_quote`, `check_snp_report`,
`check_cert_table`), so they are tested without a kernel.
"""

from __future__ import annotations

import errno
import logging
import os
import secrets
import struct
from dataclasses import dataclass
from pathlib import Path

from .. import defaults
from .binding import REPORT_DATA_SIZE
from .errors import AttestationUnavailable, QuoteGenerationError

logger = logging.getLogger(__name__)

OUTBLOB_MAX = 32 * 1024  # TSM_OUTBLOB_MAX: the kernel never returns more
DRIVERS = {"tdx": "tdx_guest", "snp": "sev_guest"}
KINDS = {driver: kind for kind, driver in DRIVERS.items()}
TEE_NAMES = {"tdx": "Intel TDX", "snp": "AMD SEV-SNP"}
KERNEL_NEEDED = "Linux >= 6.7 with configfs-tsm (CONFIG_TSM_REPORTS) and the tdx_guest or sev_guest driver"

TDX_TEE_TYPE = 0x81
QUOTE_HEADER_SIZE = 48
TD_REPORT_SIZE = 584  # TD report 1.0; later bodies (v5 types 3, 4: 648, 885 bytes) only append
SGX_BODY_TYPE = 1
TD_REPORT_DATA_OFFSET = 520
SNP_REPORT_SIZE = 1184
SNP_REPORT_DATA_OFFSET = 0x50
CERT_ENTRY = struct.Struct("<16sII")  # GUID, offset, length (GHCB spec, certificate table)


@dataclass(frozen=True)
class TsmReport:
    """What one report directory gave: the evidence and, for SNP, the host's certificate table."""

    provider: str
    outblob: bytes
    auxblob: bytes


class GenerationChanged(QuoteGenerationError):
    """Another writer touched our report directory between our write and our reads."""


def check_tdx_quote(quote: bytes, report_data: bytes) -> None:
    """Raise `ValueError` unless `quote` is a TDX quote (v4 or v5) over `report_data`."""
    if len(quote) < QUOTE_HEADER_SIZE + 2:
        raise ValueError(f"{len(quote)} bytes is too short for a TDX quote")
    version, _key_type, tee_type = struct.unpack_from("<HHI", quote)
    if tee_type != TDX_TEE_TYPE:
        raise ValueError(f"TEE type {tee_type:#x} is not TDX ({TDX_TEE_TYPE:#x})")
    if version == 4:
        body_at, body_size = QUOTE_HEADER_SIZE, TD_REPORT_SIZE
    elif version == 5:
        body_type, body_size = struct.unpack_from("<HI", quote, QUOTE_HEADER_SIZE)
        body_at = QUOTE_HEADER_SIZE + 6
        if body_type == SGX_BODY_TYPE or body_size < TD_REPORT_SIZE:
            raise ValueError(f"quote v5 body type {body_type} of {body_size} bytes is not a TD report")
    else:
        raise ValueError(f"quote version {version} is not a TDX quote version (4 or 5)")
    signature_at = body_at + body_size
    if len(quote) < signature_at + 4:
        raise ValueError(f"{len(quote)} bytes is too short for a TDX quote v{version} ({signature_at + 4} at least)")
    (signature_size,) = struct.unpack_from("<I", quote, signature_at)
    if signature_at + 4 + signature_size > len(quote):
        raise ValueError(f"the quote's signature data ({signature_size} bytes) runs past its {len(quote)} bytes")
    found = quote[body_at + TD_REPORT_DATA_OFFSET : body_at + TD_REPORT_DATA_OFFSET + REPORT_DATA_SIZE]
    if found != report_data:
        raise ValueError("the quote's REPORTDATA is not the inblob written")


def check_snp_report(report: bytes, report_data: bytes) -> None:
    """Raise `ValueError` unless `report` is a 1184-byte SEV-SNP report over `report_data`."""
    if len(report) != SNP_REPORT_SIZE:
        raise ValueError(f"{len(report)} bytes is not the size of an SEV-SNP report ({SNP_REPORT_SIZE})")
    (version,) = struct.unpack_from("<I", report)
    if version < 2:
        raise ValueError(f"report version {version} is not an SEV-SNP report version (2 or later)")
    if report[SNP_REPORT_DATA_OFFSET : SNP_REPORT_DATA_OFFSET + REPORT_DATA_SIZE] != report_data:
        raise ValueError("the report's REPORT_DATA is not the inblob written")


def check_cert_table(table: bytes) -> int:
    """The number of certificates in an SNP certificate table; `ValueError` if it is malformed.

    Entries of (GUID, offset, length) end with an all-zero entry; each entry's data lies in the table.
    """
    count = 0
    for at in range(0, len(table) - CERT_ENTRY.size + 1, CERT_ENTRY.size):
        guid, offset, length = CERT_ENTRY.unpack_from(table, at)
        if guid == bytes(16) and offset == 0 and length == 0:
            return count
        if offset + length > len(table) or offset < at + CERT_ENTRY.size:
            raise ValueError(f"certificate entry {count} points outside the table")
        count += 1
    raise ValueError("the certificate table has no terminating entry")


def _strerror(exc: OSError) -> str:
    return exc.strerror or str(exc)


class ConfigfsTsm:
    """The configfs-tsm report interface at `report_dir` (a stand-in's path in tests)."""

    def __init__(self, report_dir: str | os.PathLike[str] = defaults.TSM_REPORT_DIR) -> None:
        self.report_dir = Path(report_dir)

    def missing(self) -> AttestationUnavailable | None:
        """Why there is no report interface at `report_dir` (configfs, tsm), or None."""
        if self.report_dir.is_dir():
            return None
        tsm_dir, config_dir = self.report_dir.parent, self.report_dir.parent.parent
        if tsm_dir.is_dir():
            what = f"{tsm_dir} has no report directory: this kernel's configfs-tsm cannot make reports"
        elif config_dir.is_dir():
            what = f"{tsm_dir} does not exist: this kernel has no configfs-tsm (or its tsm module is not loaded)"
        else:
            what = f"{config_dir} does not exist: configfs is not mounted, or this kernel has none"
        return AttestationUnavailable(
            what,
            hint=f"TDX and SEV-SNP reports need {KERNEL_NEEDED}, and configfs mounted "
            "(mount -t configfs none /sys/kernel/config); or choose --attestation none",
        )

    def provider(self) -> str:
        """The provider's name (``tdx_guest``, ``sev_guest``, …), from a directory made to ask."""
        problem = self.missing()
        if problem is not None:
            raise problem
        path = self._make_directory()
        try:
            return self._read_text(path / "provider")
        finally:
            self._remove(path)

    def report(self, inblob: bytes, *, snp: bool) -> TsmReport:
        """One report over `inblob` in a directory of its own; `GenerationChanged` on a race.

        `snp`: ask at ``privlevel_floor`` when it is above zero, and read the host's
        certificate table (``auxblob``) too.
        """
        path = self._make_directory()
        try:
            before = self._number(path / "generation")
            floor = self._number(path / "privlevel_floor") if snp else 0
            if floor > 0:
                self._write(path / "privlevel", str(floor).encode("ascii"))
            self._write(path / "inblob", inblob)
            writes = 2 if floor > 0 else 1
            outblob = self._read_blob(path, "outblob")
            auxblob = self._read_blob(path, "auxblob") if snp else b""
            provider = self._read_text(path / "provider")
            after = self._number(path / "generation")
        finally:
            self._remove(path)
        if after != before + writes:
            raise GenerationChanged(
                f"another process wrote to the report directory (generation {before} before our "
                f"{writes} write(s), {after} after)"
            )
        return TsmReport(provider, outblob, auxblob)

    def _make_directory(self) -> Path:
        path = self.report_dir / f"avalon-worker-{os.getpid()}-{secrets.token_hex(6)}"
        try:
            path.mkdir()
        except OSError as exc:
            raise self._mkdir_error(exc) from exc
        return path

    def _mkdir_error(self, exc: OSError) -> AttestationUnavailable:
        if exc.errno == errno.ENXIO:
            return AttestationUnavailable(
                f"{self.report_dir}: the kernel has configfs-tsm but no attestation provider registered",
                hint="load the tdx_guest (Intel TDX) or sev_guest (AMD SEV-SNP) driver; outside a confidential VM "
                "there is none: choose --attestation none",
            )
        if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            return AttestationUnavailable(
                f"cannot make a report directory in {self.report_dir}: {_strerror(exc)}",
                hint="run the worker as root, or give its user write access to configfs-tsm "
                "(a container needs /sys/kernel/config mounted read-write)",
            )
        problem = self.missing()
        if problem is not None:
            return problem
        return AttestationUnavailable(f"cannot make a report directory in {self.report_dir}: {_strerror(exc)}")

    def _remove(self, path: Path) -> None:
        try:
            path.rmdir()
        except OSError as exc:  # leaves one directory behind; the report itself is unaffected
            logger.warning("could not remove report directory %s: %s", path, _strerror(exc))

    @staticmethod
    def _read(path: Path, limit: int) -> bytes:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            chunks, size = [], 0
            while size <= limit:
                chunk = os.read(fd, limit + 1 - size)
                if not chunk:
                    break
                chunks.append(chunk)
                size += len(chunk)
            return b"".join(chunks)
        finally:
            os.close(fd)

    def _read_text(self, path: Path) -> str:
        try:
            return self._read(path, 256).decode("ascii").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise QuoteGenerationError(f"cannot read {path}: {exc}") from exc

    def _number(self, path: Path) -> int:
        text = self._read_text(path)
        try:
            return int(text)
        except ValueError:
            raise QuoteGenerationError(f"{path} holds {text[:20]!r}, not a number") from None

    def _write(self, path: Path, data: bytes) -> None:
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
            try:
                written = os.write(fd, data)  # one write: configfs takes a binary attribute whole on close
            finally:
                os.close(fd)
        except OSError as exc:
            raise QuoteGenerationError(f"cannot write {path}: {_strerror(exc)}") from exc
        if written != len(data):
            raise QuoteGenerationError(f"wrote {written} of {len(data)} bytes to {path}")

    def _read_blob(self, path: Path, name: str) -> bytes:
        try:
            blob = self._read(path / name, OUTBLOB_MAX)
        except OSError as exc:
            raise QuoteGenerationError(f"the kernel could not make a report ({name}: {_strerror(exc)})") from exc
        if len(blob) > OUTBLOB_MAX:
            raise QuoteGenerationError(
                f"{name} is larger than the kernel's {OUTBLOB_MAX}-byte limit: this is not a configfs-tsm report"
            )
        return blob

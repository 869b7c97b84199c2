"""Attestation providers for the worker: `none` (plain Python), `gramine` (/dev/attestation),
and `tdx` / `snp` (a confidential VM's configfs-tsm, `tsm`).

Gramine's interface (GRAMINE.md §1.1): writing 64 bytes to ``user_report_data`` sets the
REPORT_DATA; opening ``quote`` makes a fresh quote over it (content is generated at open);
``my_target_info`` starts with the enclave's MRENCLAVE. The state is per process and unlocked,
so the write-then-read pair is serialised here. A failed quote surfaces as ``EACCES`` on open.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol, runtime_checkable

from .. import defaults
from .binding import REPORT_DATA_SIZE
from .errors import AttestationError, AttestationUnavailable, QuoteGenerationError
from .tsm import (
    DRIVERS,
    KINDS,
    TEE_NAMES,
    ConfigfsTsm,
    GenerationChanged,
    TsmReport,
    check_cert_table,
    check_snp_report,
    check_tdx_quote,
)

logger = logging.getLogger(__name__)

TARGET_INFO_SIZE = 512
QUOTE_MAX_SIZE = 8192  # Gramine's QUOTE_MAX_SIZE
# What makes the report, for when the kernel says only that it failed.
REPORT_FAILURE_HINTS = {
    "tdx": "a TD's quote comes from the host's quote generation service (QGS, through the GetQuote "
    "TDVMCALL): check that the host runs it and that this TD may reach it; dmesg shows tdx_guest's message",
    "snp": "the AMD Secure Processor makes the report through the host: dmesg shows sev_guest's message",
}
# The report data of the one report made at start to check the platform (it goes nowhere).
PLATFORM_CHECK = hashlib.sha512(b"avalon-worker: can this platform make evidence?").digest()


@runtime_checkable
class AttestationProvider(Protocol):
    """Something that can quote 64 bytes of report data for this worker."""

    kind: str

    def mrenclave(self) -> str:
        """This enclave's MRENCLAVE as hex ("" when not in an enclave)."""

    def quote(self, report_data: bytes) -> bytes:
        """A fresh raw quote over exactly 64 bytes of report data (b"" when not attesting)."""

    def describe(self) -> str:
        """One line for the worker's log: the kind of attestation and what requesters can check."""


class NoAttestation:
    """No enclave: empty quote and MRENCLAVE. Requesters cannot verify such a worker."""

    kind = "none"

    def mrenclave(self) -> str:
        return ""

    def quote(self, report_data: bytes) -> bytes:
        _check_report_data(report_data)
        return b""

    def describe(self) -> str:
        return "attestation: none (signups carry an empty quote; requesters cannot verify this worker)"


class GramineAttestation:
    """Quotes from Gramine's /dev/attestation (or a tree that behaves like it, for tests).

    `retries` bounds how often a quote is attempted when the platform answers EACCES (Gramine's
    sign that AESM or the quoting enclave failed); `retry_delay` seconds are waited between
    attempts, doubling each time (`sleep` is injectable so tests need not wait).
    """

    kind = "gramine"

    def __init__(
        self,
        root: str | os.PathLike[str] = defaults.ATTESTATION_ROOT,
        *,
        retries: int = 3,
        retry_delay: float = 0.2,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if retries < 1:
            raise ValueError("retries must be at least 1")
        self.root = Path(root)
        self.attestation_type = _check_gramine_root(self.root)
        self._retries = retries
        self._retry_delay = retry_delay
        self._sleep = sleep
        self._lock = threading.Lock()
        self._mrenclave = self._read_mrenclave()

    def _read_mrenclave(self) -> str:
        try:
            with open(self.root / "my_target_info", "rb") as f:
                target_info = f.read(TARGET_INFO_SIZE + 1)
        except OSError as exc:
            raise AttestationUnavailable(
                f"cannot read {self.root / 'my_target_info'}: {exc.strerror or exc}",
                hint="is this process running under gramine-sgx?",
            ) from exc
        if len(target_info) != TARGET_INFO_SIZE:
            raise AttestationUnavailable(
                f"{self.root / 'my_target_info'} has {len(target_info)} bytes, expected {TARGET_INFO_SIZE}"
            )
        # TARGETINFO offset 0: MRENCLAVE (sgx_arch.h).
        return target_info[:32].hex()

    def mrenclave(self) -> str:
        return self._mrenclave

    def describe(self) -> str:
        return f"attestation: gramine ({self.attestation_type}) at {self.root}, MRENCLAVE {self._mrenclave}"

    def quote(self, report_data: bytes) -> bytes:
        _check_report_data(report_data)
        delay = self._retry_delay
        last: OSError | None = None
        with self._lock:
            for attempt in range(1, self._retries + 1):
                try:
                    return self._quote_once(report_data)
                except OSError as exc:
                    if exc.errno != errno.EACCES:
                        raise QuoteGenerationError(
                            f"quote generation failed: {exc.strerror or exc}",
                            hint="check the manifest's sgx.remote_attestation and the host's AESM service",
                        ) from exc
                    last = exc
                    logger.warning("quote attempt %d/%d refused (EACCES)", attempt, self._retries)
                    if attempt < self._retries:
                        self._sleep(delay)
                        delay *= 2
        raise QuoteGenerationError(
            f"quote generation refused {self._retries} times (EACCES)",
            hint="the host's AESM/DCAP quoting service is failing: "
            "check aesmd, its DCAP plugin and PCCS access",
        ) from last

    def _quote_once(self, report_data: bytes) -> bytes:
        # One write(2) of all 64 bytes: Gramine replaces the report data on each write.
        with open(self.root / "user_report_data", "wb", buffering=0) as f:
            written = f.write(report_data)
        if written != REPORT_DATA_SIZE:
            raise QuoteGenerationError(f"wrote {written} of {REPORT_DATA_SIZE} report-data bytes")
        with open(self.root / "quote", "rb") as f:
            quote = f.read(QUOTE_MAX_SIZE + 1)
        if not quote:
            raise QuoteGenerationError("Gramine returned an empty quote")
        if len(quote) > QUOTE_MAX_SIZE:
            raise QuoteGenerationError(f"quote exceeds Gramine's {QUOTE_MAX_SIZE}-byte maximum")
        return quote


class TsmAttestation:
    """Evidence from a confidential VM's kernel through configfs-tsm (`tsm.ConfigfsTsm`).

    `kind` "tdx" gives Intel TDX quotes (tdx_guest), "snp" AMD SEV-SNP reports (sev_guest)
    followed by the host's certificate table when it gives one. Construction checks the platform
    and makes one report, so a machine that cannot attest is refused before anything else
    happens (`AttestationUnavailable`). Reports are made one at a time, each in a fresh report
    directory; one that another writer disturbed is made again, up to `attempts` times.
    """

    def __init__(
        self, kind: str, report_dir: str | os.PathLike[str] = defaults.TSM_REPORT_DIR, *, attempts: int = 3
    ) -> None:
        if kind not in DRIVERS:
            raise ValueError(f"unknown configfs-tsm kind {kind!r}; choose tdx or snp")
        if attempts < 1:
            raise ValueError("attempts must be at least 1")
        self.kind = kind
        self._tsm = ConfigfsTsm(report_dir)
        self._attempts = attempts
        self._lock = threading.Lock()
        self._check_platform()

    @property
    def report_dir(self) -> Path:
        return self._tsm.report_dir

    def _check_platform(self) -> None:
        tee, driver = TEE_NAMES[self.kind], DRIVERS[self.kind]
        try:
            found = self._tsm.provider()
        except QuoteGenerationError as exc:
            raise AttestationUnavailable(f"configfs-tsm at {self.report_dir} is not usable: {exc.message}") from exc
        if found != driver:
            other = KINDS.get(found)
            raise AttestationUnavailable(
                f"configfs-tsm's provider is {found} ({TEE_NAMES[other]}), not {driver}: this is not an {tee} guest"
                if other
                else f"configfs-tsm's provider is {found or 'empty'}, not {driver}: this is not an {tee} guest",
                hint=f"choose --attestation {other} (or auto)" if other else "choose --attestation none",
            )
        try:
            self.quote(PLATFORM_CHECK)
        except QuoteGenerationError as exc:
            raise AttestationUnavailable(
                f"this {tee} guest cannot make evidence: {exc.message}",
                hint=exc.hint or REPORT_FAILURE_HINTS[self.kind],
            ) from exc

    def mrenclave(self) -> str:
        return ""

    def describe(self) -> str:
        return f"attestation: {self.kind} ({TEE_NAMES[self.kind]}) through configfs-tsm at {self.report_dir}"

    def quote(self, report_data: bytes) -> bytes:
        _check_report_data(report_data)
        with self._lock:
            for attempt in range(1, self._attempts + 1):
                try:
                    report = self._tsm.report(report_data, snp=self.kind == "snp")
                except GenerationChanged as exc:
                    logger.warning("report attempt %d/%d discarded: %s", attempt, self._attempts, exc.message)
                    continue
                return self._evidence(report, report_data)
        raise QuoteGenerationError(
            f"every one of {self._attempts} reports was disturbed by another writer to configfs-tsm",
            hint="another process is writing into this worker's report directories: find it "
            "(each directory is named avalon-worker-<pid>-…) and stop it",
        )

    def _evidence(self, report: TsmReport, report_data: bytes) -> bytes:
        tee = TEE_NAMES[self.kind]
        if report.provider != DRIVERS[self.kind]:
            raise QuoteGenerationError(f"configfs-tsm's provider changed to {report.provider or 'nothing'}")
        try:
            if self.kind == "tdx":
                check_tdx_quote(report.outblob, report_data)
                return report.outblob
            check_snp_report(report.outblob, report_data)
        except ValueError as exc:
            raise QuoteGenerationError(
                f"the kernel's {tee} outblob is not usable: {exc}",
                hint=f"the {DRIVERS[self.kind]} driver returned something other than a report; check dmesg",
            ) from None
        if not report.auxblob:
            return report.outblob
        try:
            check_cert_table(report.auxblob)
        except ValueError as exc:
            # The report stands on its own: a requester can fetch the VCEK from AMD's KDS instead.
            logger.warning("the host's SEV-SNP certificate table is malformed (%s); evidence sent without it", exc)
            return report.outblob
        return report.outblob + report.auxblob


def _check_report_data(data: bytes) -> None:
    if not isinstance(data, bytes) or len(data) != REPORT_DATA_SIZE:
        raise ValueError(f"report data must be exactly {REPORT_DATA_SIZE} bytes")


def _read_attestation_type(root: Path) -> str | None:
    try:
        return (root / "attestation_type").read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None


def _check_gramine_root(root: Path) -> str:
    """Return the attestation type, or raise `AttestationUnavailable` saying what is missing."""
    if not root.is_dir():
        raise AttestationUnavailable(
            f"{root} does not exist: not running inside Gramine-SGX",
            hint="start the worker with gramine-sgx (gramine-direct has no attestation), "
            "or choose --attestation none",
        )
    kind = _read_attestation_type(root)
    if kind is None:
        raise AttestationUnavailable(
            f"{root / 'attestation_type'} is missing: this Gramine has no remote attestation "
            "(gramine-direct, or Gramine older than 1.3)",
            hint='run under gramine-sgx with sgx.remote_attestation = "dcap" in the manifest',
        )
    if kind not in ("dcap", "epid"):
        raise AttestationUnavailable(
            f"Gramine reports attestation type {kind!r}: remote attestation is disabled",
            hint='set sgx.remote_attestation = "dcap" in the manifest and re-sign the enclave',
        )
    if not (root / "quote").exists():
        raise AttestationUnavailable(f"{root / 'quote'} is missing although attestation type is {kind!r}")
    if kind == "epid":
        logger.warning("Gramine uses EPID attestation, which Intel has retired; requesters cannot verify it")
    return kind


def _detect_tsm(report_dir: str) -> str | None:
    """"tdx" or "snp" when configfs-tsm at `report_dir` has that provider, else None."""
    tsm = ConfigfsTsm(report_dir)
    if tsm.missing() is not None:
        return None
    try:
        driver = tsm.provider()
    except AttestationError as exc:
        logger.info("configfs-tsm at %s cannot attest: %s", report_dir, exc.message)
        return None
    kind = KINDS.get(driver)
    if kind is None:
        logger.warning("configfs-tsm's provider %s is not supported: attesting with none", driver)
    return kind


def select_provider(
    mode: str, root: str = defaults.ATTESTATION_ROOT, *, tsm_report_dir: str = defaults.TSM_REPORT_DIR
) -> AttestationProvider:
    """The provider for ``--attestation auto|none|gramine|tdx|snp``.

    `gramine`, `tdx` and `snp` raise `AttestationUnavailable` with a clear message when that
    attestation is not there; `auto` picks gramine when `root/attestation_type` says dcap or
    epid, else tdx or snp when configfs-tsm at `tsm_report_dir` has that provider, else none.
    """
    if mode not in defaults.ATTESTATION_MODES:
        raise ValueError(f"unknown attestation mode {mode!r}; choose one of {', '.join(defaults.ATTESTATION_MODES)}")
    provider: AttestationProvider
    if mode == "gramine" or (mode == "auto" and _read_attestation_type(Path(root)) in ("dcap", "epid")):
        provider = GramineAttestation(root)
    else:
        tsm_kind = mode if mode in DRIVERS else _detect_tsm(tsm_report_dir) if mode == "auto" else None
        if tsm_kind is None:
            logger.warning(
                "attestation: none%s: signups carry an empty quote and requesters cannot verify this worker",
                "" if mode == "none" else f" (no SGX attestation at {root}, no TDX or SEV-SNP at {tsm_report_dir})",
            )
            return NoAttestation()
        provider = TsmAttestation(tsm_kind, tsm_report_dir)
    logger.info("%s", provider.describe())
    return provider

"""Verify evidence from SGX, TDX or SEV-SNP, or a worker's whole signup, offline.

`verify_evidence(raw, policy)` tells the kind from the bytes (`detect_tee`): an SGX or TDX DCAP
quote (tee_type 0 or 0x81 in its header) or an SNP attestation report (u32 version 2, 3 or 5,
optionally followed by the host's certificate table). Every step is reported, including those
that could not run, so a requester sees exactly what was and was not established; without a
policy the measurement steps are "not checked" (so the verdict is never VERIFIED) but every
other step runs.

The signup binds three things: the evidence (what runs, on which platform), the verifying key
(REPORT_DATA = SHA256(verifying key PEM) ‖ SHA256(nonce) or ‖ 32 zero bytes) and the encryption
key (signed by the verifying key). For TDX it also publishes the events the worker extended into
RTMR3, which are replayed against the quote.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import struct
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Any, Literal

from cryptography import x509

from ... import crypto
from ..binding import report_data
from ..errors import AttestationError, EventLogError, QuoteParseError
from ._dcap import TcbEvaluation, verify_dcap_quote
from ._eventlog import parse_ccel, parse_worker_events
from ._quote import INTEL_QE_VENDOR_ID, TEE_TYPE_SGX, TEE_TYPE_TDX, DcapQuote, EpidQuote, Quote, TdxQuote, parse_quote
from ._roots import intel_sgx_root_ca
from ._tdx import RtmrLogs, event_log_step, td_attributes_step, td_measurements, td_measurements_step
from .collateral import Collateral
from .policy import (
    AttestationPolicy,
    DefaultTcbRules,
    Policy,
    PolicyViolation,
    TcbRules,
    TdxPolicy,
    as_policy,
    tcb_status_accepted,
    warn_insecure,
)
from .report import (
    SIGNATURE_CHAIN_STEPS,
    STEP_DEBUG,
    STEP_ENCLAVE,
    STEP_ENCRYPTION_KEY,
    STEP_PARSED,
    STEP_POLICY_TEE,
    STEP_QE_IDENTITY,
    STEP_REPORT_DATA,
    STEP_REVOCATION,
    STEP_SIGNUP_ATTESTATION_TYPE,
    STEP_SIGNUP_MRENCLAVE,
    STEP_TCB,
    STEP_TD_ATTRIBUTES,
    STEP_TD_MEASUREMENTS,
    Step,
    StepStatus,
    Tee,
    VerificationReport,
    failed,
    not_checked,
    passed,
)
from .snp import split_snp_evidence, verify_snp_evidence

_WAIVABLE_WITHOUT_COLLATERAL = (STEP_REVOCATION, STEP_QE_IDENTITY, STEP_TCB)
_DEFAULT_RULES = DefaultTcbRules()
SNP_REPORT_SIZE = 1184
_SNP_VERSIONS = (2, 3, 5)
_EPID_HEADER_AND_BODY = 432

SnpCollateral = tuple[Sequence[x509.Certificate], Sequence[x509.CertificateRevocationList]]
"""For SNP: the VCEK or VLEK and its chain, and CRLs, as `attestation.snp.load_snp_collateral` gives."""


def decode_quote_field(value: Any) -> bytes:
    """The signup's base64 `quote` as bytes (raises `QuoteParseError`)."""
    if not isinstance(value, str):
        raise QuoteParseError("the signup has no quote string")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise QuoteParseError("the signup quote is not base64") from exc


def _epid_shaped(raw: bytes) -> bool:
    if len(raw) == _EPID_HEADER_AND_BODY:
        return True
    return len(raw) >= _EPID_HEADER_AND_BODY + 4 and len(raw) == _EPID_HEADER_AND_BODY + 4 + int.from_bytes(
        raw[_EPID_HEADER_AND_BODY : _EPID_HEADER_AND_BODY + 4], "little"
    )


def detect_tee(raw: bytes) -> Literal["sgx", "tdx", "snp"]:
    """Which TEE made `raw`: a DCAP quote says so in its header, an SNP report by its version.

    Raises `QuoteParseError` with a readable message for anything else.
    """
    if not isinstance(raw, (bytes, bytearray, memoryview)):
        raise QuoteParseError(f"evidence is bytes, not {type(raw).__name__}")
    raw = bytes(raw)
    if not raw:
        raise QuoteParseError("the quote is empty: the worker runs without attestation")
    if len(raw) < 8:
        raise QuoteParseError(f"{len(raw)} bytes are too short to be a quote or an SNP report")
    version, second, tee_type = struct.unpack_from("<HHI", raw, 0)
    if version in (1, 2) and _epid_shaped(raw):
        return "sgx"  # EPID: reported as an SGX quote nobody can verify any more
    # An SNP report starts with a u32 version, so bytes 2-3 are zero; a DCAP quote's attestation
    # key type sits there and is never zero.
    if second == 0 and version in _SNP_VERSIONS and len(raw) >= SNP_REPORT_SIZE:
        return "snp"
    if version in (3, 4, 5):
        if tee_type == TEE_TYPE_SGX:
            return "sgx"
        if tee_type == TEE_TYPE_TDX:
            return "tdx"
        raise QuoteParseError(f"DCAP quote for unknown TEE type {tee_type:#x} (0 is SGX, 0x81 TDX)")
    raise QuoteParseError(
        f"neither a DCAP quote (version 3-5) nor an SNP report (version 2, 3 or 5): it starts {raw[:8].hex()}"
    )


def _check_quote_header(quote: Quote) -> str:
    """Header sanity (QVL step 1); returns a description or raises `QuoteParseError`."""
    if isinstance(quote, EpidQuote):
        return f"EPID v{quote.version} quote, {len(quote.raw)} bytes"
    if quote.header.qe_vendor_id != INTEL_QE_VENDOR_ID:
        raise QuoteParseError(f"QE vendor {quote.header.qe_vendor_id.hex()} is not Intel")
    if isinstance(quote, DcapQuote):
        return f"DCAP v{quote.version} ECDSA-P256 SGX quote, {len(quote.raw)} bytes"
    body = {2: "TD 1.0", 3: "TD 1.5", 4: "TD 1.5 with extensions"}[quote.body_type]
    return f"DCAP v{quote.version} ECDSA-P256 TDX quote ({body} report), {len(quote.raw)} bytes"


class _Run:
    """One verification: the inputs every step needs, and the steps as they are judged."""

    def __init__(
        self,
        policy: Policy | None,
        tee: Tee,
        *,
        collateral: Any,
        now: datetime | None,
        expected_report_data: bytes | None,
        report_data_label: str,
        root_ca: x509.Certificate | None,
    ) -> None:
        self.policy = policy
        self.tee = tee
        self.section: Any = getattr(policy, tee) if policy is not None else None
        self.collateral = collateral
        self.now = now or datetime.now(timezone.utc)
        self.expected = expected_report_data
        self.label = report_data_label
        self.root_ca = root_ca
        self.steps: list[Step] = []
        self.tcb: TcbEvaluation | None = None
        if self.section is not None and tee != "snp":  # the SNP module warns for its own section
            for name in self.section.insecure_overrides():
                warn_insecure(f"{tee}.{name}" if tee != "sgx" else name)

    @property
    def rules(self) -> TcbRules:
        return self.section if self.section is not None else _DEFAULT_RULES

    def policy_covers_tee(self) -> None:
        if self.policy is not None and self.section is None:
            trusted = [tee for tee in ("sgx", "tdx", "snp") if getattr(self.policy, tee) is not None]
            self.steps.append(
                failed(STEP_POLICY_TEE, f'the policy has no "{self.tee}" section: it trusts {", ".join(trusted)} only')
            )

    def report_data_step(self, actual: bytes) -> None:
        if self.expected is None:
            return
        if hmac.compare_digest(actual, self.expected):
            self.steps.append(passed(STEP_REPORT_DATA, self.label))
        else:
            self.steps.append(failed(STEP_REPORT_DATA, f"REPORT_DATA is not {self.label}" if self.label else
                                     f"REPORT_DATA is {actual.hex()}, expected {self.expected.hex()}"))

    def unparsed(self, message: str, names: Sequence[str]) -> None:
        self.steps.append(failed(STEP_PARSED, message))
        self.steps.extend(not_checked(name, "no parsable evidence") for name in names)
        if self.expected is not None:
            self.steps.append(not_checked(STEP_REPORT_DATA, "no parsable evidence"))

    def dcap(self, quote: DcapQuote | TdxQuote) -> None:
        collateral = self.collateral if isinstance(self.collateral, Collateral) else None
        root = self.root_ca or intel_sgx_root_ca()
        result = verify_dcap_quote(quote, root_ca=root, collateral=collateral, now=self.now)
        self.steps.extend(result.steps)
        self.tcb = result.tcb
        if self.collateral is not None and collateral is None:
            self.steps.append(failed(STEP_TCB, "the collateral given is not Intel's (TCB info and QE identity JSON)"))
        else:
            self.steps.append(_tcb_step(result.tcb, self.rules))
        if self.rules.insecure_accept_unchecked_tcb and self.collateral is None:
            self.steps = [
                Step(s.name, s.status, s.detail, "insecure_accept_unchecked_tcb")
                if s.status is StepStatus.NOT_CHECKED and s.name in _WAIVABLE_WITHOUT_COLLATERAL
                else s
                for s in self.steps
            ]

    def report(self, quote: Quote | None, measurements: dict[str, str], data: bytes) -> VerificationReport:
        tcb = self.tcb
        return VerificationReport(
            steps=tuple(self.steps),
            quote=quote,
            tcb_status=tcb.status if tcb is not None else None,
            advisory_ids=tcb.advisory_ids if tcb is not None else (),
            insecure_overrides=self.section.insecure_overrides() if self.section is not None else (),
            tee=self.tee,
            measurements=measurements,
            report_data=data,
        )


def _tcb_step(tcb: TcbEvaluation, rules: TcbRules) -> Step:
    if not tcb.checked:
        return not_checked(STEP_TCB, tcb.error or "TCB status not checked")
    if tcb.status is None:
        return failed(STEP_TCB, tcb.error or "TCB status unknown")
    note = (f" ({tcb.tcb_date})" if tcb.tcb_date else "") + (f"; {tcb.note}" if tcb.note else "")
    if tcb.status in rules.accepted_tcb_statuses:
        return passed(STEP_TCB, tcb.status + note)
    if tcb_status_accepted(rules, tcb.status):
        return Step(
            STEP_TCB, StepStatus.FAIL, f"{tcb.status}: the platform lacks security fixes{note}",
            "insecure_accept_out_of_date_tcb",
        )
    return failed(STEP_TCB, f"{tcb.status} is not accepted (policy accepts {sorted(rules.accepted_tcb_statuses)}){note}")


def _sgx_measurements(quote: DcapQuote | EpidQuote) -> dict[str, str]:
    body = quote.body
    return {
        "mrenclave": body.mrenclave.hex(),
        "mrsigner": body.mrsigner.hex(),
        "isv_prod_id": str(body.isv_prod_id),
        "isv_svn": str(body.isv_svn),
        "attributes": body.attributes.hex(),
        "config_id": body.config_id.hex(),
        "report_data": body.report_data.hex(),
    }


def _verify_sgx(run: _Run, raw: bytes) -> VerificationReport:
    try:
        quote = parse_quote(raw)
        if isinstance(quote, TdxQuote):
            raise QuoteParseError("a TDX quote where an SGX quote was expected")
        run.steps.append(passed(STEP_PARSED, _check_quote_header(quote)))
    except QuoteParseError as exc:
        run.unparsed(exc.message, (*SIGNATURE_CHAIN_STEPS, STEP_QE_IDENTITY, STEP_TCB, STEP_ENCLAVE, STEP_DEBUG))
        return run.report(None, {}, b"")
    if isinstance(quote, DcapQuote):
        run.dcap(quote)
    else:
        reason = "EPID quotes can only be verified by Intel's attestation service, which has reached end of life"
        run.steps.extend(failed(name, reason) for name in (*SIGNATURE_CHAIN_STEPS, STEP_QE_IDENTITY, STEP_TCB))
    run.policy_covers_tee()
    body = quote.body
    section: AttestationPolicy | None = run.section
    if section is None:
        run.steps.append(not_checked(STEP_ENCLAVE, "no policy: MRENCLAVE and MRSIGNER were not compared with anything"))
    else:
        try:
            section.enclave.check(body)
            run.steps.append(
                passed(
                    STEP_ENCLAVE,
                    f"MRENCLAVE {body.mrenclave.hex()}, MRSIGNER {body.mrsigner.hex()}, "
                    f"ISVPRODID {body.isv_prod_id}, ISVSVN {body.isv_svn}",
                )
            )
        except PolicyViolation as exc:
            run.steps.append(failed(STEP_ENCLAVE, str(exc)))
    if not body.debug:
        run.steps.append(passed(STEP_DEBUG, f"ATTRIBUTES.FLAGS {body.flags:#x}"))
    else:
        waiver = "insecure_allow_debug" if run.rules.insecure_allow_debug else None
        run.steps.append(
            Step(STEP_DEBUG, StepStatus.FAIL, "DEBUG attribute set: the host can read enclave memory", waiver)
        )
    run.report_data_step(body.report_data)
    return run.report(quote, _sgx_measurements(quote), body.report_data)


def _verify_tdx(run: _Run, raw: bytes, logs: RtmrLogs) -> VerificationReport:
    try:
        quote = parse_quote(raw)
        if not isinstance(quote, TdxQuote):
            raise QuoteParseError("an SGX quote where a TDX quote was expected")
        run.steps.append(passed(STEP_PARSED, _check_quote_header(quote)))
    except QuoteParseError as exc:
        run.unparsed(exc.message, (*SIGNATURE_CHAIN_STEPS, STEP_QE_IDENTITY, STEP_TCB, STEP_TD_MEASUREMENTS,
                                   STEP_TD_ATTRIBUTES))
        return run.report(None, {}, b"")
    run.dcap(quote)
    run.policy_covers_tee()
    section: TdxPolicy | None = run.section
    log_step, replayed = event_log_step(quote.body, logs, section)
    run.steps.append(td_measurements_step(quote.body, section, replayed, logs))
    run.steps.append(td_attributes_step(quote.body, section))
    if log_step is not None:
        run.steps.append(log_step)
    run.report_data_step(quote.body.report_data)
    return run.report(quote, td_measurements(quote.body), quote.body.report_data)


def _verify_snp(
    run: _Run, raw: bytes, trusted_arks: Sequence[x509.Certificate] | None
) -> VerificationReport:
    certificates: list[x509.Certificate] = []
    crls: list[x509.CertificateRevocationList] = []
    if run.collateral is not None:
        if isinstance(run.collateral, Collateral):
            run.unparsed("SNP evidence needs a PEM collateral bundle (VCEK or VLEK, ASK or ASVK, ARK), not DCAP JSON", ())
            return run.report(None, {}, b"")
        certificates, crls = list(run.collateral[0]), list(run.collateral[1])
    try:
        report_bytes, carried = split_snp_evidence(raw)
    except AttestationError as exc:
        run.unparsed(exc.message, ())
        return run.report(None, {}, b"")
    result = verify_snp_evidence(
        report_bytes,
        policy=run.section,
        expected_report_data=run.expected,
        certificates=[*certificates, *carried],
        crls=crls,
        now=run.now,
        trusted_arks=trusted_arks,
    )
    # As for quotes, no expected REPORT_DATA leaves that step out rather than unchecked.
    run.steps.extend(s for s in result.steps if run.expected is not None or s.name != STEP_REPORT_DATA)
    run.policy_covers_tee()
    if result.tcb_status is not None:
        run.tcb = TcbEvaluation(status=result.tcb_status)
    return run.report(None, dict(result.measurements), result.report_data)


def _guess_tee(policy: Policy | None, hint: str | None) -> Tee:
    """The kind to report unparsable evidence as: what the signup says, else the policy's only one."""
    if hint in ("tdx", "snp"):
        return hint  # type: ignore[return-value]
    if policy is not None:
        sections = [tee for tee in ("sgx", "tdx", "snp") if getattr(policy, tee) is not None]
        if len(sections) == 1:
            return sections[0]  # type: ignore[return-value]
    return "sgx"


def _verify(
    raw: bytes,
    policy: Policy | None,
    *,
    collateral: Collateral | SnpCollateral | None,
    now: datetime | None,
    expected_report_data: bytes | None,
    report_data_label: str,
    root_ca: x509.Certificate | None,
    trusted_arks: Sequence[x509.Certificate] | None,
    logs: RtmrLogs,
    tee_hint: str | None = None,
) -> VerificationReport:
    def start(tee: Tee) -> _Run:
        return _Run(
            policy,
            tee,
            collateral=collateral,
            now=now,
            expected_report_data=expected_report_data,
            report_data_label=report_data_label,
            root_ca=root_ca,
        )

    try:
        tee = detect_tee(raw)
    except QuoteParseError as exc:
        run = start(_guess_tee(policy, tee_hint))
        if run.tee == "sgx":
            names: tuple[str, ...] = (*SIGNATURE_CHAIN_STEPS, STEP_QE_IDENTITY, STEP_TCB, STEP_ENCLAVE, STEP_DEBUG)
        elif run.tee == "tdx":
            names = (*SIGNATURE_CHAIN_STEPS, STEP_QE_IDENTITY, STEP_TCB, STEP_TD_MEASUREMENTS, STEP_TD_ATTRIBUTES)
        else:
            names = ()
        run.unparsed(exc.message, names)
        return run.report(None, {}, b"")
    run = start(tee)
    if tee == "sgx":
        return _verify_sgx(run, bytes(raw))
    if tee == "tdx":
        return _verify_tdx(run, bytes(raw), logs)
    return _verify_snp(run, bytes(raw), trusted_arks)


def _logs(event_log: bytes | None, rtmr_events: Any) -> RtmrLogs:
    try:
        ccel = parse_ccel(event_log) if event_log is not None else None
        worker = parse_worker_events(rtmr_events) if rtmr_events is not None else ()
    except EventLogError as exc:
        return RtmrLogs(error=exc.message)
    return RtmrLogs(ccel=ccel, worker_events=worker)


def verify_evidence(
    raw: bytes,
    policy: Policy | AttestationPolicy | None = None,
    *,
    collateral: Collateral | SnpCollateral | None = None,
    now: datetime | None = None,
    expected_report_data: bytes | None = None,
    report_data_label: str = "",
    root_ca: x509.Certificate | None = None,
    trusted_arks: Sequence[x509.Certificate] | None = None,
    event_log: bytes | None = None,
    rtmr_events: Any = None,
) -> VerificationReport:
    """Verify SGX, TDX or SNP evidence (the kind is told from the bytes) against `policy`.

    `collateral`: for SGX and TDX Intel's `Collateral`; for SNP the certificates and CRLs of
    `attestation.snp.load_snp_collateral` (certificates the evidence carries are used too).
    Without it, revocation and TCB status are "not checked" (SGX, TDX). `policy=None` checks
    everything but the measurements, which are then "not checked". `expected_report_data`: the
    64 bytes the evidence must bind (else that step is left out). `root_ca` (Intel) and
    `trusted_arks` (AMD) replace the pinned vendor roots: tests only. `event_log`: a TD's CCEL;
    `rtmr_events`: the `tdx_rtmr_events` a worker published; both are replayed against the
    quote's RTMRs. `now` defaults to the current UTC time.

    Never raises for anything the evidence, collateral or logs contain: a fault is a failed step.
    """
    return _verify(
        raw,
        as_policy(policy),
        collateral=collateral,
        now=now,
        expected_report_data=expected_report_data,
        report_data_label=report_data_label,
        root_ca=root_ca,
        trusted_arks=trusted_arks,
        logs=_logs(event_log, rtmr_events),
    )


def verify_quote_bytes(
    raw_quote: bytes,
    policy: Policy | AttestationPolicy | None,
    *,
    expected_report_data: bytes | None = None,
    report_data_label: str = "",
    collateral: Collateral | None = None,
    root_ca: x509.Certificate | None = None,
    now: datetime | None = None,
) -> VerificationReport:
    """Verify a raw DCAP quote against `policy` (and, if given, the expected 64-byte REPORT_DATA)."""
    return verify_evidence(
        raw_quote,
        policy,
        collateral=collateral,
        now=now,
        expected_report_data=expected_report_data,
        report_data_label=report_data_label,
        root_ca=root_ca,
    )


def _signup_logs(signup: dict[str, Any]) -> RtmrLogs:
    """The RTMR events a TDX signup publishes (contract: tdx_rtmr_events / _extended / _note)."""
    extended = signup.get("tdx_rtmr_extended")
    if extended is False:
        note = signup.get("tdx_rtmr_note")
        return RtmrLogs(worker_not_extended=note if isinstance(note, str) and note else "no reason given")
    if "tdx_rtmr_events" not in signup:
        return RtmrLogs()
    if extended is not True:
        return RtmrLogs(error="the signup publishes RTMR events but not tdx_rtmr_extended: true")
    return _logs(None, signup["tdx_rtmr_events"])


def _signup_kind_step(signup: dict[str, Any], report: VerificationReport) -> Step:
    """For SGX the signup's mrenclave must be the quote's; for TDX and SNP it names its kind."""
    claimed = signup.get("mrenclave")
    quote = report.quote
    if report.tee == "sgx" or report.tee is None:
        if not isinstance(quote, (DcapQuote, EpidQuote)):
            return not_checked(STEP_SIGNUP_MRENCLAVE, "no parsable quote")
        if isinstance(claimed, str) and claimed.lower() == quote.body.mrenclave.hex():
            return passed(STEP_SIGNUP_MRENCLAVE)
        return failed(STEP_SIGNUP_MRENCLAVE, f"signup says {claimed!r}, quote says {quote.body.mrenclave.hex()}")
    kind = signup.get("attestation_type")
    if kind == report.tee and claimed in ("", None):
        return passed(STEP_SIGNUP_ATTESTATION_TYPE, str(kind))
    return failed(
        STEP_SIGNUP_ATTESTATION_TYPE,
        f"signup says attestation_type {kind!r} and mrenclave {claimed!r}; the evidence is {report.tee}",
    )


def verify_signup(
    signup: dict[str, Any],
    policy: Policy | AttestationPolicy | None,
    *,
    nonce: bytes | None,
    collateral: Collateral | SnpCollateral | None = None,
    root_ca: x509.Certificate | None = None,
    trusted_arks: Sequence[x509.Certificate] | None = None,
    event_log: bytes | None = None,
    now: datetime | None = None,
) -> VerificationReport:
    """Verify a `ProcessWorkerSignup` result: evidence, policy, key binding and encryption key.

    The evidence's kind is told from its bytes; for TDX the worker's published RTMR events are
    replayed against the quote too. `nonce` is the one sent with the signup request (None for a
    signup fetched without one, whose REPORT_DATA must then end in 32 zero bytes). `root_ca` and
    `trusted_arks` replace the pinned vendor roots (tests only); `now` defaults to the current
    UTC time.
    """
    if not isinstance(signup, dict):
        signup = {}
    verifying_key = signup.get("verifying_key")
    label = "SHA256(verifying key) ‖ " + ("SHA256(nonce)" if nonce is not None else "32 zero bytes")
    expected = report_data(verifying_key, nonce) if isinstance(verifying_key, str) else None
    bad_field = ""
    try:
        raw = decode_quote_field(signup.get("quote"))
    except QuoteParseError as exc:
        raw, bad_field = b"", exc.message
    hint = signup.get("attestation_type")
    report = _verify(
        raw,
        as_policy(policy),
        collateral=collateral,
        now=now,
        expected_report_data=expected,
        report_data_label=label,
        root_ca=root_ca,
        trusted_arks=trusted_arks,
        logs=_signup_logs(signup) if hint == "tdx" or "tdx_rtmr_extended" in signup else RtmrLogs(),
        tee_hint=hint if isinstance(hint, str) else None,
    )
    steps = list(report.steps)
    if bad_field:
        steps[0] = failed(STEP_PARSED, bad_field)
    if expected is None:
        steps = [s for s in steps if s.name != STEP_REPORT_DATA]
        steps.append(failed(STEP_REPORT_DATA, "the signup has no verifying_key"))
    steps.append(_signup_kind_step(signup, report))
    steps.append(_encryption_key_step(signup))
    return VerificationReport(
        steps=tuple(steps),
        quote=report.quote,
        tcb_status=report.tcb_status,
        advisory_ids=report.advisory_ids,
        insecure_overrides=report.insecure_overrides,
        tee=report.tee,
        measurements=report.measurements,
        report_data=report.report_data,
    )


def _encryption_key_step(signup: Any) -> Step:
    if not isinstance(signup, dict):
        return failed(STEP_ENCRYPTION_KEY, "the signup is not a JSON object")
    verifying_key = signup.get("verifying_key")
    encryption_key = signup.get("encryption_key")
    signature = signup.get("encryption_key_signature")
    if not (
        isinstance(verifying_key, str)
        and isinstance(encryption_key, str)
        and isinstance(signature, str)
        and verifying_key
        and encryption_key
        and signature
    ):
        return failed(
            STEP_ENCRYPTION_KEY, "the signup lacks verifying_key, encryption_key or encryption_key_signature"
        )
    try:
        key = crypto.VerifyingKey(verifying_key)
        # PROTOCOL.md §6: the digest of the exact published PEM string is signed as is.
        key.verify_digest(bytes.fromhex(signature), crypto.sha256(encryption_key.encode("utf-8")))
    except (ValueError, crypto.CryptoError):
        return failed(STEP_ENCRYPTION_KEY, "the encryption key is not signed by the verifying key")
    return passed(STEP_ENCRYPTION_KEY, "ECDSA secp256k1 over SHA256(encryption key PEM)")

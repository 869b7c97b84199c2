"""Verify a worker's signup document against an attestation policy, offline.

The signup binds three things: the quote (what runs, on which platform), the verifying key
(REPORT_DATA = SHA256(verifying key PEM) ‖ SHA256(nonce) or ‖ 32 zero bytes) and the
encryption key (signed by the verifying key). Every step is reported, including those that
could not run, so a requester sees exactly what was and was not established.
"""

from __future__ import annotations

import base64
import binascii
import hmac
from datetime import datetime, timezone
from typing import Any

from cryptography import x509

from .. import crypto
from .binding import report_data
from .collateral import Collateral
from .dcap import verify_dcap_quote
from .errors import QuoteParseError
from .policy import AttestationPolicy, PolicyViolation, warn_insecure
from .quote import INTEL_QE_VENDOR_ID, DcapQuote, Quote, parse_quote
from .report import (
    SIGNATURE_CHAIN_STEPS,
    STEP_DEBUG,
    STEP_ENCLAVE,
    STEP_ENCRYPTION_KEY,
    STEP_PARSED,
    STEP_QE_IDENTITY,
    STEP_REPORT_DATA,
    STEP_REVOCATION,
    STEP_SIGNUP_MRENCLAVE,
    STEP_TCB,
    Step,
    StepStatus,
    VerificationReport,
    failed,
    not_checked,
    passed,
)
from .roots import intel_sgx_root_ca

_WAIVABLE_WITHOUT_COLLATERAL = (STEP_REVOCATION, STEP_QE_IDENTITY, STEP_TCB)


def decode_quote_field(value: Any) -> bytes:
    """The signup's base64 `quote` as bytes (raises `QuoteParseError`)."""
    if not isinstance(value, str):
        raise QuoteParseError("the signup has no quote string")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise QuoteParseError("the signup quote is not base64") from exc


def _check_quote_header(quote: Quote) -> str:
    """Header sanity (QVL step 1); returns a description or raises `QuoteParseError`."""
    if isinstance(quote, DcapQuote):
        if quote.header.qe_vendor_id != INTEL_QE_VENDOR_ID:
            raise QuoteParseError(f"QE vendor {quote.header.qe_vendor_id.hex()} is not Intel")
        return f"DCAP v{quote.version} ECDSA-P256 SGX quote, {len(quote.raw)} bytes"
    return f"EPID v{quote.version} quote, {len(quote.raw)} bytes"


def verify_quote_bytes(
    raw_quote: bytes,
    policy: AttestationPolicy,
    *,
    expected_report_data: bytes | None = None,
    report_data_label: str = "",
    collateral: Collateral | None = None,
    root_ca: x509.Certificate | None = None,
    now: datetime | None = None,
) -> VerificationReport:
    """Verify a raw quote against `policy` (and, if given, the expected 64-byte REPORT_DATA)."""
    steps, quote, tcb_status, advisories = _quote_steps(
        raw_quote, policy, expected_report_data, report_data_label, collateral, root_ca, now
    )
    return _report(steps, quote, tcb_status, advisories, policy)


def _quote_steps(
    raw_quote: bytes,
    policy: AttestationPolicy,
    expected_report_data: bytes | None,
    report_data_label: str,
    collateral: Collateral | None,
    root_ca: x509.Certificate | None,
    now: datetime | None,
) -> tuple[list[Step], Quote | None, str | None, tuple[str, ...]]:
    for name in policy.insecure_overrides():
        warn_insecure(name)
    now = now or datetime.now(timezone.utc)
    root = root_ca or intel_sgx_root_ca()
    steps: list[Step] = []
    try:
        quote = parse_quote(raw_quote)
        steps.append(passed(STEP_PARSED, _check_quote_header(quote)))
    except QuoteParseError as exc:
        steps.append(failed(STEP_PARSED, exc.message))
        unchecked = (*SIGNATURE_CHAIN_STEPS, STEP_QE_IDENTITY, STEP_TCB, STEP_ENCLAVE, STEP_DEBUG)
        steps.extend(not_checked(name, "no parsable quote") for name in unchecked)
        if expected_report_data is not None:
            steps.append(not_checked(STEP_REPORT_DATA, "no parsable quote"))
        return steps, None, None, ()

    tcb_status: str | None = None
    advisories: tuple[str, ...] = ()
    if isinstance(quote, DcapQuote):
        result = verify_dcap_quote(quote, root_ca=root, collateral=collateral, now=now)
        steps.extend(result.steps)
        tcb = result.tcb
        tcb_status, advisories = tcb.status, tcb.advisory_ids
        if not tcb.checked:
            steps.append(not_checked(STEP_TCB, tcb.error or "TCB status not checked"))
        elif tcb.status is None:
            steps.append(failed(STEP_TCB, tcb.error or "TCB status unknown"))
        elif tcb.status in policy.accepted_tcb_statuses:
            steps.append(passed(STEP_TCB, tcb.status + (f" ({tcb.tcb_date})" if tcb.tcb_date else "")))
        elif policy.tcb_status_accepted(tcb.status):
            steps.append(
                Step(
                    STEP_TCB,
                    StepStatus.FAIL,
                    f"{tcb.status}: the platform lacks security fixes",
                    "insecure_accept_out_of_date_tcb",
                )
            )
        else:
            steps.append(
                failed(
                    STEP_TCB,
                    f"{tcb.status} is not accepted (policy accepts {sorted(policy.accepted_tcb_statuses)})",
                )
            )
        if policy.insecure_accept_unchecked_tcb and collateral is None:
            steps = [
                Step(s.name, s.status, s.detail, "insecure_accept_unchecked_tcb")
                if s.status is StepStatus.NOT_CHECKED and s.name in _WAIVABLE_WITHOUT_COLLATERAL
                else s
                for s in steps
            ]
    else:
        reason = (
            "EPID quotes can only be verified by Intel's attestation service, which has reached end of life"
        )
        steps.extend(failed(name, reason) for name in SIGNATURE_CHAIN_STEPS)
        steps.append(failed(STEP_QE_IDENTITY, reason))
        steps.append(failed(STEP_TCB, reason))

    body = quote.body
    try:
        policy.enclave.check(body)
        steps.append(
            passed(
                STEP_ENCLAVE,
                f"MRENCLAVE {body.mrenclave.hex()}, MRSIGNER {body.mrsigner.hex()}, "
                f"ISVPRODID {body.isv_prod_id}, ISVSVN {body.isv_svn}",
            )
        )
    except PolicyViolation as exc:
        steps.append(failed(STEP_ENCLAVE, str(exc)))

    if not body.debug:
        steps.append(passed(STEP_DEBUG, f"ATTRIBUTES.FLAGS {body.flags:#x}"))
    else:
        waiver = "insecure_allow_debug" if policy.insecure_allow_debug else None
        steps.append(
            Step(STEP_DEBUG, StepStatus.FAIL, "DEBUG attribute set: the host can read enclave memory", waiver)
        )

    if expected_report_data is not None:
        if hmac.compare_digest(body.report_data, expected_report_data):
            steps.append(passed(STEP_REPORT_DATA, report_data_label))
        else:
            steps.append(failed(STEP_REPORT_DATA, f"REPORT_DATA is not {report_data_label}"))
    return steps, quote, tcb_status, advisories


def verify_signup(
    signup: dict[str, Any],
    policy: AttestationPolicy,
    *,
    nonce: bytes | None,
    collateral: Collateral | None = None,
    root_ca: x509.Certificate | None = None,
    now: datetime | None = None,
) -> VerificationReport:
    """Verify a `ProcessWorkerSignup` result: quote, policy, key binding and encryption key.

    `nonce` is the one sent with the signup request (None for a signup fetched without one,
    whose REPORT_DATA must then end in 32 zero bytes). `root_ca` replaces Intel's pinned root
    (tests only); `now` defaults to the current UTC time.
    """
    verifying_key = signup.get("verifying_key") if isinstance(signup, dict) else None
    label = "SHA256(verifying key) ‖ " + ("SHA256(nonce)" if nonce is not None else "32 zero bytes")
    expected: bytes | None = None
    if isinstance(verifying_key, str):
        expected = report_data(verifying_key, nonce)

    try:
        raw = decode_quote_field(signup.get("quote") if isinstance(signup, dict) else None)
    except QuoteParseError as exc:
        raw = b""
        bad_field = exc.message
    else:
        bad_field = ""
    steps, quote, tcb_status, advisories = _quote_steps(
        raw, policy, expected, label, collateral, root_ca, now
    )
    if bad_field:
        steps[0] = failed(STEP_PARSED, bad_field)
    if expected is None:
        steps = [s for s in steps if s.name != STEP_REPORT_DATA]
        steps.append(failed(STEP_REPORT_DATA, "the signup has no verifying_key"))

    claimed = signup.get("mrenclave") if isinstance(signup, dict) else None
    if quote is None:
        steps.append(not_checked(STEP_SIGNUP_MRENCLAVE, "no parsable quote"))
    elif isinstance(claimed, str) and claimed.lower() == quote.body.mrenclave.hex():
        steps.append(passed(STEP_SIGNUP_MRENCLAVE))
    else:
        steps.append(
            failed(STEP_SIGNUP_MRENCLAVE, f"signup says {claimed!r}, quote says {quote.body.mrenclave.hex()}")
        )

    steps.append(_encryption_key_step(signup))
    return _report(steps, quote, tcb_status, advisories, policy)


def _report(
    steps: list[Step], quote: Quote | None, tcb_status: str | None, advisories: tuple[str, ...], policy: AttestationPolicy
) -> VerificationReport:
    return VerificationReport(
        steps=tuple(steps),
        quote=quote,
        tcb_status=tcb_status,
        advisory_ids=advisories,
        insecure_overrides=policy.insecure_overrides(),
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

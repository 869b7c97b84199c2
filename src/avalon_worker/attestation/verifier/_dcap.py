"""Offline DCAP quote verification, step by step (Intel QVL's order; GRAMINE.md §5.5).

One core for both bodies a DCAP quote carries: an SGX enclave report or a TD report. Without
collateral the signature chain is still checked end to end — attestation key over the quote,
PCK key over the QE report, QE report binding the attestation key, PCK chain up to the pinned
Intel SGX Root CA — but revocation, QE identity and TCB status are reported as *not checked*,
never as passing. No I/O: the clock is a parameter.

TCB status and advisory IDs follow Intel's QVL (`TcbLevelCheck.cpp`, `TdxModuleCheck.cpp`,
`TDRelaunchCheck.cpp`): for SGX the PCK certificate's CPUSVN components and PCESVN select the
level; for TDX the same, and the TD report's TEE_TCB_SVN against `tdxtcbcomponents` (the two
module bytes left to the TDX module identity when the module version is not 0), converged with
the module identity's level (`tdxModuleIdentities`, `TDX_<version>`); a TD 1.5 whose module was
updated in place may be "TDRelaunchAdvised". The QE's own status is converged last.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from cryptography.x509.verification import ExtensionPolicy, PolicyBuilder, Store, VerificationError

from ..errors import AttestationError, CollateralError
from ._pck import PckExtension, parse_pck_extension
from ._quote import BODY_TYPE_TD10, CERT_TYPE_PCK_CHAIN, DcapQuote, EcdsaSignatureData, TdReport, TdxQuote
from .collateral import CERTIFICATE_CONTENT_ERRORS, Collateral
from .report import (
    STEP_CHAIN,
    STEP_QE_BINDING,
    STEP_QE_IDENTITY,
    STEP_QE_SIGNATURE,
    STEP_QUOTE_SIGNATURE,
    STEP_REVOCATION,
    Step,
    failed,
    not_checked,
    passed,
)

MAX_CHAIN_DEPTH = 2  # intermediates between leaf and root: Intel's chains have one CA

# What a TCB level in TCB info may say (QVL's VALID_TCB_INFO_STATUSES).
_TCB_INFO_STATUSES = frozenset(
    {
        "UpToDate",
        "SWHardeningNeeded",
        "ConfigurationNeeded",
        "ConfigurationAndSWHardeningNeeded",
        "OutOfDate",
        "OutOfDateConfigurationNeeded",
        "Revoked",
    }
)
# A TD 1.5 launched on an out-of-date TDX module that has since been updated in place.
TD_RELAUNCH_STATUSES = frozenset({"TDRelaunchAdvised", "TDRelaunchAdvisedConfigurationNeeded"})
TCB_STATUSES = _TCB_INFO_STATUSES | TD_RELAUNCH_STATUSES
"""Every TCB status the verifier can report."""
_MODULE_STATUSES = frozenset({"UpToDate", "OutOfDate", "Revoked"})
_CONFIGURATION_NEEDED = frozenset(
    {
        "ConfigurationNeeded",
        "OutOfDateConfigurationNeeded",
        "ConfigurationAndSWHardeningNeeded",
        "TDRelaunchAdvisedConfigurationNeeded",
    }
)
_QE_STATUSES = frozenset(
    {"UpToDate", "OutOfDate", "Revoked", "ConfigurationNeeded", "OutOfDateConfigurationNeeded"}
)


class _Fail(AttestationError):
    """Internal: a step failed with this message."""


@dataclass(frozen=True)
class TcbEvaluation:
    """The platform's TCB status from collateral, or why it could not be determined."""

    status: str | None
    advisory_ids: tuple[str, ...] = ()
    tcb_date: str | None = None
    error: str | None = None
    checked: bool = True
    note: str = ""  # TDX: which module level and whether a relaunch is advised


@dataclass(frozen=True)
class DcapResult:
    """Steps of the signature chain and collateral checks, plus the TCB evaluation."""

    steps: tuple[Step, ...]
    tcb: TcbEvaluation
    pck_extension: PckExtension | None


def ecdsa_p256_verify(public_key: ec.EllipticCurvePublicKey, raw_signature: bytes, data: bytes) -> bool:
    """Verify a raw r‖s ECDSA-P256-SHA256 signature (the form quotes and collateral use)."""
    if len(raw_signature) != 64:
        return False
    r = int.from_bytes(raw_signature[:32], "big")
    s = int.from_bytes(raw_signature[32:], "big")
    try:
        public_key.verify(encode_dss_signature(r, s), data, ec.ECDSA(hashes.SHA256()))
    except (InvalidSignature, ValueError):
        return False
    return True


def _der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


def _subject(cert: x509.Certificate) -> str:
    return cert.subject.rfc4514_string()


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        return False


def _self_signed(cert: x509.Certificate) -> bool:
    return cert.issuer == cert.subject


def verified_path(
    leaf: x509.Certificate, others: Sequence[x509.Certificate], root: x509.Certificate, now: datetime
) -> list[x509.Certificate]:
    """The path leaf → … → pinned `root` as `cryptography` validates it (RFC 5280 with the
    Web PKI's CA profile, which Intel's CAs meet), or raise `_Fail`.

    Only `root` is trusted: self-signed certificates among `others` (a quote's own copy of the
    root, in whatever issue) are never used to build the path. The leaf must not be a CA.
    """
    if _is_ca(leaf):
        raise _Fail(f"the first certificate, {_subject(leaf)}, is a CA: the chain must start with the PCK leaf")
    intermediates = [cert for cert in others if not _self_signed(cert)]
    verifier = (
        PolicyBuilder()
        .store(Store([root]))
        .time(now)
        .max_chain_depth(MAX_CHAIN_DEPTH)
        .extension_policies(ca_policy=ExtensionPolicy.webpki_defaults_ca(), ee_policy=ExtensionPolicy.permit_all())
        .build_client_verifier()
    )
    try:
        chain = verifier.verify(leaf, intermediates).chain
    except VerificationError as exc:
        reason = str(exc).removeprefix("validation failed: ").removeprefix("candidates exhausted: ")
        if "no interior errors" in reason:  # no candidate issuer at all, at some link
            reason = "the chain does not lead to the pinned root (an issuer is missing or is another root)"
        reason = re.sub(r" \(encountered processing <Certificate\(.*\)>\)$", "", reason)
        for cert in (leaf, *intermediates):
            if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
                reason += (f": {_subject(cert)} is valid from {cert.not_valid_before_utc:%Y-%m-%d %H:%M} to "
                           f"{cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC, not at {now:%Y-%m-%d %H:%M}")
                break
        raise _Fail(f"no valid path from {_subject(leaf)} to the pinned root {_subject(root)}: {reason}") from None
    return list(chain)


def _ignored_roots(others: Sequence[x509.Certificate], root: x509.Certificate) -> str:
    """What the detail says of self-signed certificates the quote carries besides the path."""
    notes = []
    for cert in others:
        if not _self_signed(cert) or _der(cert) == _der(root):
            continue
        same_key = cert.public_key() == root.public_key()
        what = "another issue of the pinned root, with its key" if same_key else "a root other than the pinned one"
        notes.append(
            f"; the quote's own {_subject(cert)} ({what}, valid {cert.not_valid_before_utc:%Y-%m-%d} to "
            f"{cert.not_valid_after_utc:%Y-%m-%d}) was not used: only the pinned root is trusted"
        )
    return "".join(notes)


def _public_key(cert: x509.Certificate) -> Any:
    """The certificate's public key, or None if its encoding is not a valid key (a corrupted quote)."""
    try:
        return cert.public_key()
    except (ValueError, TypeError, UnsupportedAlgorithm):  # e.g. "Invalid key", a curve no one supports
        return None


def _check_crl(
    crl: x509.CertificateRevocationList, issuer: x509.Certificate, now: datetime, what: str
) -> None:
    if crl.issuer != issuer.subject:
        raise _Fail(f"{what} is issued by {crl.issuer.rfc4514_string()}, expected {_subject(issuer)}")
    public_key = _public_key(issuer)
    if not isinstance(public_key, ec.EllipticCurvePublicKey) or not crl.is_signature_valid(public_key):
        raise _Fail(f"{what} signature is invalid")
    next_update = crl.next_update_utc
    # RFC 5280 §5.1.2.5: a CRL past its nextUpdate no longer proves anything is unrevoked.
    if next_update is None:
        raise _Fail(f"{what} has no nextUpdate")
    if not crl.last_update_utc <= now <= next_update:
        raise _Fail(f"{what} is not current (valid {crl.last_update_utc:%Y-%m-%d} to {next_update:%Y-%m-%d})")


def _not_revoked(crl: x509.CertificateRevocationList, cert: x509.Certificate) -> None:
    if crl.get_revoked_certificate_by_serial_number(cert.serial_number) is not None:
        raise _Fail(f"{_subject(cert)} (serial {cert.serial_number:x}) is revoked")


def _collateral_chain_key(
    chain: tuple[x509.Certificate, ...],
    root: x509.Certificate,
    collateral: Collateral,
    now: datetime,
    what: str,
) -> ec.EllipticCurvePublicKey:
    """Verify a collateral signing chain (e.g. TCB Signing → Root) and return the signer's key."""
    if not chain:
        raise _Fail(f"{what} has no issuer chain")
    path = verified_path(chain[0], chain[1:], root, now)
    _check_crl(collateral.root_ca_crl, root, now, "root CA CRL")
    for cert in path[:-1]:
        _not_revoked(collateral.root_ca_crl, cert)
    key = _public_key(path[0])
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise _Fail(f"{what} signing key is not ECDSA")
    return key


def _parse_time(value: Any, what: str) -> datetime:
    if not isinstance(value, str):
        raise _Fail(f"{what} is missing")
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise _Fail(f"{what} {value!r} is not a date") from exc
    if parsed.tzinfo is None:
        raise _Fail(f"{what} {value!r} has no time zone")
    return parsed


def _signed_json(
    text: str,
    signature: bytes,
    chain: tuple[x509.Certificate, ...],
    root: x509.Certificate,
    collateral: Collateral,
    now: datetime,
    what: str,
) -> dict[str, Any]:
    key = _collateral_chain_key(chain, root, collateral, now, what)
    # Intel signs the exact bytes of the JSON body it serves; never re-serialise before checking.
    if not ecdsa_p256_verify(key, signature, text.encode("utf-8")):
        raise _Fail(f"{what} signature is invalid")
    try:
        body = json.loads(text)
    except ValueError as exc:
        raise _Fail(f"{what} is not JSON") from exc
    if not isinstance(body, dict):
        raise _Fail(f"{what} is not a JSON object")
    issue = _parse_time(body.get("issueDate"), f"{what} issueDate")
    next_update = _parse_time(body.get("nextUpdate"), f"{what} nextUpdate")
    if now < issue:
        raise _Fail(f"{what} is issued in the future ({body['issueDate']})")
    if now > next_update:
        raise _Fail(f"{what} expired at {body['nextUpdate']}: fetch current collateral")
    return body


def _hex_field(body: dict[str, Any], key: str, size: int, what: str) -> bytes:
    try:
        value = bytes.fromhex(body[key])
    except (KeyError, TypeError, ValueError) as exc:
        raise _Fail(f"{what} {key} is missing or not hex") from exc
    if len(value) != size:
        raise _Fail(f"{what} {key} must be {size} bytes")
    return value


def _qe_identity(
    quote: DcapQuote | TdxQuote, collateral: Collateral, root: x509.Certificate, now: datetime
) -> tuple[str, tuple[str, ...], str]:
    body = _signed_json(
        collateral.qe_identity,
        collateral.qe_identity_signature,
        collateral.qe_identity_issuer_chain,
        root,
        collateral,
        now,
        "QE identity",
    )
    # QVL 4.1.2.4.14: an SGX quote needs Intel's QE identity, a TDX quote the TD QE's.
    expected_id, versions = ("TD_QE", (2, 3)) if isinstance(quote, TdxQuote) else ("QE", (2,))
    if body.get("id") != expected_id or body.get("version") not in versions:
        raise _Fail(
            f"QE identity is {body.get('id')!r} version {body.get('version')!r}, expected "
            f"{expected_id!r} version {' or '.join(map(str, versions))}"
        )
    qe = quote.signature_data.qe_report
    mrsigner = _hex_field(body, "mrsigner", 32, "QE identity")
    if not hmac.compare_digest(qe.mrsigner, mrsigner):
        raise _Fail(f"QE MRSIGNER {qe.mrsigner.hex()} is not Intel's {mrsigner.hex()}")
    if qe.isv_prod_id != body.get("isvprodid"):
        raise _Fail(f"QE ISVPRODID {qe.isv_prod_id} != {body.get('isvprodid')}")
    # Both sides compared as the raw little-endian bytes of the report (QVL does the same).
    misc = _hex_field(body, "miscselect", 4, "QE identity")
    misc_mask = _hex_field(body, "miscselectMask", 4, "QE identity")
    if any((a & m) != (e & m) for a, e, m in zip(qe.raw[16:20], misc, misc_mask, strict=True)):
        raise _Fail("QE MISCSELECT does not match QE identity")
    attributes = _hex_field(body, "attributes", 16, "QE identity")
    attributes_mask = _hex_field(body, "attributesMask", 16, "QE identity")
    if any((a & m) != (e & m) for a, e, m in zip(qe.attributes, attributes, attributes_mask, strict=True)):
        raise _Fail("QE ATTRIBUTES do not match QE identity")
    levels = body.get("tcbLevels")
    if not isinstance(levels, list):
        raise _Fail("QE identity has no tcbLevels")
    ordered = sorted(levels, key=lambda lv: -_level_int(lv, ("tcb", "isvsvn")))
    for level in ordered:
        if qe.isv_svn >= _level_int(level, ("tcb", "isvsvn")):
            status = level.get("tcbStatus")
            if status not in _QE_STATUSES:
                raise _Fail(f"QE identity level has unknown status {status!r}")
            return status, _advisories(level), f"{expected_id} ISVSVN {qe.isv_svn}: {status}"
    raise _Fail(f"QE ISVSVN {qe.isv_svn} is below every level Intel lists")


def _level_int(level: Any, path: tuple[str, ...]) -> int:
    value = level
    for key in path:
        if not isinstance(value, dict) or key not in value:
            raise _Fail(f"TCB level lacks {'.'.join(path)}")
        value = value[key]
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise _Fail(f"TCB level {'.'.join(path)} is not a non-negative integer")
    return value


def _components(level: Any, key: str) -> tuple[int, ...]:
    comps = level["tcb"].get(key)
    if not isinstance(comps, list) or len(comps) != 16:
        raise _Fail(f"TCB level must list 16 {key}")
    return tuple(_level_int(c, ("svn",)) for c in comps)


def _level_components(level: Any) -> tuple[tuple[int, ...], int]:
    tcb = level.get("tcb") if isinstance(level, dict) else None
    if not isinstance(tcb, dict):
        raise _Fail("TCB level lacks tcb")
    if "sgxtcbcomponents" in tcb:  # TCB Info v3
        svns = _components(level, "sgxtcbcomponents")
    else:  # TCB Info v2: sgxtcbcomp01svn … sgxtcbcomp16svn
        svns = tuple(_level_int(level, ("tcb", f"sgxtcbcomp{i:02d}svn")) for i in range(1, 17))
    return svns, _level_int(level, ("tcb", "pcesvn"))


def _advisories(level: dict[str, Any]) -> tuple[str, ...]:
    ids = level.get("advisoryIDs") or []
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
        raise _Fail("advisoryIDs must be a list of strings")
    return tuple(ids)


def _status(level: dict[str, Any], valid: frozenset[str], what: str) -> str:
    status = level.get("tcbStatus")
    if status not in valid:
        raise _Fail(f"{what} level has unknown status {status!r}")
    return str(status)


def converge_tcb_status(platform: str, qe: str) -> str:
    """Combine platform and QE statuses as Intel QVL does (a stale QE makes the platform stale).

    The same rule combines a TDX platform level with its TDX module's level.
    """
    if qe == "Revoked":
        return "Revoked"
    if qe == "OutOfDate":
        if platform in ("UpToDate", "SWHardeningNeeded"):
            return "OutOfDate"
        if platform in ("ConfigurationNeeded", "ConfigurationAndSWHardeningNeeded"):
            return "OutOfDateConfigurationNeeded"
    return platform


@dataclass(frozen=True)
class _Level:
    """One TCB level of TCB info, its SVNs read and checked."""

    sgx: tuple[int, ...]
    pce_svn: int
    tdx: tuple[int, ...]  # () in SGX TCB info
    body: dict[str, Any]

    def platform_met(self, pck: PckExtension) -> bool:
        return pck.pce_svn >= self.pce_svn and all(a >= b for a, b in zip(pck.tcb_components, self.sgx, strict=True))

    def tee_met(self, tee_tcb_svn: bytes) -> bool:
        # QVL isTdxTcbHigherOrEqual: with a module version (byte 1) the module's two bytes are
        # judged by its module identity instead.
        first = 2 if tee_tcb_svn[1] > 0 else 0
        return all(tee_tcb_svn[i] >= self.tdx[i] for i in range(first, 16))


def _levels(body: dict[str, Any], tdx: bool) -> list[_Level]:
    levels = body.get("tcbLevels")
    if not isinstance(levels, list) or not levels:
        raise _Fail("TCB info has no tcbLevels")
    parsed = []
    for level in levels:
        sgx, pce_svn = _level_components(level)
        parsed.append(_Level(sgx, pce_svn, _components(level, "tdxtcbcomponents") if tdx else (), level))
    # QVL keeps levels in a set ordered highest first (SGX components, then PCESVN, then TDX
    # components); Intel lists them so anyway, and sorting means the order cannot pick a laxer one.
    parsed.sort(key=lambda lv: (lv.sgx, lv.pce_svn, lv.tdx), reverse=True)
    return parsed


def _platform_tcb(
    collateral: Collateral,
    root: x509.Certificate,
    now: datetime,
    pck: PckExtension,
    quote: DcapQuote | TdxQuote,
    qe_status: str,
) -> TcbEvaluation:
    """The platform's TCB level (SGX) or TD's (TDX, module and relaunch included), before the QE's."""
    body = _signed_json(
        collateral.tcb_info,
        collateral.tcb_info_signature,
        collateral.tcb_info_issuer_chain,
        root,
        collateral,
        now,
        "TCB info",
    )
    version, tcb_id = body.get("version"), body.get("id")
    tdx = isinstance(quote, TdxQuote)
    if tdx and (version != 3 or tcb_id != "TDX"):
        raise _Fail(f"TCB info is {tcb_id!r} version {version!r}, expected TDX TCB info v3 for a TDX quote")
    if not tdx and (version not in (2, 3) or (version == 3 and tcb_id != "SGX")):
        raise _Fail(f"TCB info is {tcb_id!r} version {version!r}, expected SGX TCB info v2 or v3")
    fmspc = _hex_field(body, "fmspc", 6, "TCB info")
    if fmspc != pck.fmspc:
        raise _Fail(f"TCB info is for FMSPC {fmspc.hex()}, the PCK certificate says {pck.fmspc.hex()}")
    pce_id = _hex_field(body, "pceId", 2, "TCB info")
    if pce_id != pck.pce_id:
        raise _Fail(f"TCB info is for PCE-ID {pce_id.hex()}, the PCK certificate says {pck.pce_id.hex()}")
    levels = _levels(body, tdx)
    if isinstance(quote, TdxQuote):
        return _tdx_tcb(body, levels, pck, quote, qe_status)
    for level in levels:
        if level.platform_met(pck):
            status = _status(level.body, _TCB_INFO_STATUSES, "TCB info")
            return TcbEvaluation(status, _advisories(level.body), level.body.get("tcbDate"))
    raise _Fail("the platform's TCB is below every level in TCB info (TCB status unrecognised)")


def _module_identity(body: dict[str, Any], module_version: int) -> dict[str, Any]:
    """The `tdxModuleIdentities` entry `TDX_<version>` (QVL findTdxModuleIdentity)."""
    wanted = f"TDX_{module_version:02X}"
    identities = body.get("tdxModuleIdentities")
    if not isinstance(identities, list):
        raise _Fail(f"the TD runs TDX module {wanted} but TCB info lists no tdxModuleIdentities")
    for identity in identities:
        if isinstance(identity, dict) and str(identity.get("id", "")).upper() == wanted:
            return identity
    raise _Fail(f"TCB info has no identity for TDX module {wanted} (TDX module mismatch)")


def _check_module_signer(body: dict[str, Any], report: TdReport) -> str:
    """MRSIGNERSEAM and SEAMATTRIBUTES against the module identity (QVL 4.1.2.4.11)."""
    module_version = report.tee_tcb_svn[1]
    identity = _module_identity(body, module_version) if module_version else body.get("tdxModule")
    what = f"TDX module {identity.get('id')}" if module_version and isinstance(identity, dict) else "tdxModule"
    if not isinstance(identity, dict):
        raise _Fail("TDX TCB info lacks tdxModule")
    mrsigner = _hex_field(identity, "mrsigner", 48, what)
    attributes = _hex_field(identity, "attributes", 8, what)
    mask = _hex_field(identity, "attributesMask", 8, what)
    if not hmac.compare_digest(report.mr_signer_seam, mrsigner):
        raise _Fail(f"MRSIGNERSEAM {report.mr_signer_seam.hex()} is not {what}'s {mrsigner.hex()} (TDX module mismatch)")
    seam = report.seam_attributes
    if any((a & m) != (e & m) for a, e, m in zip(seam, attributes, mask, strict=True)) or any(seam):
        raise _Fail(f"SEAMATTRIBUTES {seam.hex()} must be zero and match {what} (TDX module mismatch)")
    return what


def _module_levels(identity: dict[str, Any]) -> list[tuple[int, dict[str, Any]]]:
    levels = identity.get("tcbLevels")
    if not isinstance(levels, list) or not levels:
        raise _Fail(f"TDX module {identity.get('id')} has no tcbLevels")
    return sorted(((_level_int(lv, ("tcb", "isvsvn")), lv) for lv in levels), key=lambda x: -x[0])


def _module_tcb(body: dict[str, Any], tee_tcb_svn: bytes) -> tuple[str, dict[str, Any]] | None:
    """The TDX module's TCB level for TEE_TCB_SVN (QVL checkTdxModuleTcbStatus); None for version 0."""
    if tee_tcb_svn[1] == 0:
        return None
    identity = _module_identity(body, tee_tcb_svn[1])
    for isv_svn, level in _module_levels(identity):
        if tee_tcb_svn[0] >= isv_svn:
            return _status(level, _MODULE_STATUSES, "TDX module identity"), level
    raise _Fail(f"TDX module ISVSVN {tee_tcb_svn[0]} is below every level of {identity.get('id')} (TCB not supported)")


def _relaunch_advised(
    body: dict[str, Any], latest: _Level, report: TdReport, statuses: tuple[str, str, str, str]
) -> bool:
    """QVL checkForRelaunch: the TD launched on an out-of-date module that was updated in place,
    and its current TEE_TCB_SVN2 meets the newest level: relaunching it would bring it up to date."""
    sgx_status, tdx_status, module_status, qe_status = statuses
    svn2 = report.tee_tcb_svn2
    if svn2 is None or qe_status in ("OutOfDate", "Revoked"):
        return False
    if sgx_status not in ("UpToDate", "SWHardeningNeeded", "ConfigurationNeeded", "ConfigurationAndSWHardeningNeeded"):
        return False
    if tdx_status not in ("OutOfDate", "OutOfDateConfigurationNeeded") or module_status != "OutOfDate":
        return False
    if svn2[1] == 0:
        newest_module_svn = latest.tdx[0]
    else:
        newest_module_svn = _module_levels(_module_identity(body, svn2[1]))[0][0]
    return svn2[0] >= newest_module_svn and svn2[2] >= latest.tdx[2]


def _tdx_tcb(
    body: dict[str, Any], levels: list[_Level], pck: PckExtension, quote: TdxQuote, qe_status: str
) -> TcbEvaluation:
    report = quote.body
    tee = report.tee_tcb_svn
    platform_levels = [level for level in levels if level.platform_met(pck)]
    if not platform_levels:
        raise _Fail("the platform's SGX TCB is below every level in TCB info (TCB status unrecognised)")
    sgx_status = _status(platform_levels[0].body, _TCB_INFO_STATUSES, "TCB info")
    chosen = next((level for level in platform_levels if level.tee_met(tee)), None)
    if chosen is None:
        raise _Fail(f"TEE_TCB_SVN {tee.hex()} is below every level in TCB info (TCB status unrecognised)")
    module_what = _check_module_signer(body, report)
    status = _status(chosen.body, _TCB_INFO_STATUSES, "TCB info")
    advisories = _advisories(chosen.body)
    tcb_date = chosen.body.get("tcbDate")
    module = _module_tcb(body, tee)
    note = f"{module_what}"
    module_status = "UpToDate"
    if module is not None:
        module_status, module_level = module
        status = converge_tcb_status(status, module_status)
        advisories += tuple(a for a in _advisories(module_level) if a not in advisories)
        # Date the level by its older part, so that a TCB date policy also covers the module.
        module_date = module_level.get("tcbDate")
        if isinstance(module_date, str) and isinstance(tcb_date, str) and module_date < tcb_date:
            tcb_date = module_date
        note += f" ISVSVN {tee[0]}: {module_status}"
    relaunch_types = (quote.body_type != BODY_TYPE_TD10) and status != "Revoked"
    if relaunch_types and _relaunch_advised(body, levels[0], report, (sgx_status, status, module_status, qe_status)):
        configuration = sgx_status in _CONFIGURATION_NEEDED or status in _CONFIGURATION_NEEDED
        status = "TDRelaunchAdvisedConfigurationNeeded" if configuration else "TDRelaunchAdvised"
        note += "; the TDX module was updated after the TD launched: relaunch the TD to run on it"
    return TcbEvaluation(status, advisories, tcb_date if isinstance(tcb_date, str) else None, note=note)


def _judged(name: str, check: Callable[[], str]) -> Step:
    """Run one check: passed with its detail, or failed with why (never an exception)."""
    try:
        with warnings.catch_warnings():  # the library warns about malformed fields it still reads
            warnings.simplefilter("ignore")
            return passed(name, check())
    except _Fail as exc:
        return failed(name, str(exc))
    except CERTIFICATE_CONTENT_ERRORS as exc:
        return failed(name, f"a certificate in the quote cannot be parsed ({type(exc).__name__})")


@dataclass
class _Chain:
    """What the chain step found: the quote's certificates and, if it verified, the path."""

    certs: list[x509.Certificate]
    path: list[x509.Certificate] | None = None


def _chain_step(sig: EcdsaSignatureData, root: x509.Certificate, now: datetime, chain: _Chain) -> Step:
    cert_data = sig.certification_data
    if cert_data.cert_type != CERT_TYPE_PCK_CHAIN:
        return failed(
            STEP_CHAIN, f"certification data type {cert_data.cert_type} carries no PCK chain (type 5 needed offline)"
        )

    def check() -> str:
        chain.certs = [x509.load_pem_x509_certificate(pem) for pem in cert_data.pem_certificates()]
        if not chain.certs:
            raise _Fail("the quote's certification data holds no certificate")
        path = verified_path(chain.certs[0], chain.certs[1:], root, now)
        detail = " → ".join(_subject(cert) for cert in path) + _ignored_roots(chain.certs[1:], root)
        chain.path = path
        return detail

    return _judged(STEP_CHAIN, check)


def _revocation_step(collateral: Collateral | None, chain: _Chain, root: x509.Certificate, now: datetime) -> Step:
    if collateral is None:
        return not_checked(STEP_REVOCATION, "no CRLs given (pass collateral)")
    path = chain.path
    if path is None:
        return not_checked(STEP_REVOCATION, "no verified PCK chain to check")

    def check() -> str:
        _check_crl(collateral.root_ca_crl, root, now, "root CA CRL")
        for cert in path[1:-1]:
            _not_revoked(collateral.root_ca_crl, cert)
        _check_crl(collateral.pck_crl, path[1], now, "PCK CRL")
        _not_revoked(collateral.pck_crl, path[0])
        return "checked against root CA CRL and PCK CRL"

    return _judged(STEP_REVOCATION, check)


def _qe_signature_step(sig: EcdsaSignatureData, chain: _Chain) -> Step:
    leaf = chain.certs[0] if chain.certs else None
    pck_key = _public_key(leaf) if leaf is not None else None
    if not isinstance(pck_key, ec.EllipticCurvePublicKey):
        return not_checked(STEP_QE_SIGNATURE, "no usable PCK certificate")
    if ecdsa_p256_verify(pck_key, sig.qe_report_signature, sig.qe_report.raw):
        return passed(STEP_QE_SIGNATURE)
    return failed(STEP_QE_SIGNATURE, "the QE report signature does not verify with the PCK key")


def _qe_binding_step(sig: EcdsaSignatureData) -> Step:
    expected = hashlib.sha256(sig.attestation_key + sig.qe_auth_data).digest() + bytes(32)
    if hmac.compare_digest(expected, sig.qe_report.report_data):
        return passed(STEP_QE_BINDING, "QE REPORT_DATA = SHA256(attestation key ‖ QE auth data) ‖ 0³²")
    return failed(STEP_QE_BINDING, "QE REPORT_DATA does not hash the attestation key and auth data")


def _quote_signature_step(quote: DcapQuote | TdxQuote) -> Step:
    sig = quote.signature_data
    try:
        ak = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), b"\x04" + sig.attestation_key)
    except ValueError:
        return failed(STEP_QUOTE_SIGNATURE, "the attestation key is not a P-256 point")
    if ecdsa_p256_verify(ak, sig.signature, quote.signed_data):
        return passed(STEP_QUOTE_SIGNATURE)
    return failed(STEP_QUOTE_SIGNATURE, "the quote signature does not verify with the attestation key")


def _qe_identity_step(
    quote: DcapQuote | TdxQuote, collateral: Collateral | None, root: x509.Certificate, now: datetime, qe_signature: Step
) -> tuple[Step, tuple[str, tuple[str, ...]] | None]:
    """The QE identity step and, when it passed, the QE's TCB status and advisories."""
    if collateral is None:
        return not_checked(STEP_QE_IDENTITY, "no QE identity collateral given"), None
    if not qe_signature.ok:
        # Without the PCK key's signature the QE report is just bytes anyone could write.
        return failed(STEP_QE_IDENTITY, "the QE report is not signed by the PCK key, so its identity proves nothing"), None
    outcome: list[tuple[str, tuple[str, ...]]] = []

    def check() -> str:
        status, advisories, detail = _qe_identity(quote, collateral, root, now)
        outcome.append((status, advisories))
        return detail

    step = _judged(STEP_QE_IDENTITY, check)
    return step, (outcome[0] if outcome and step.ok else None)


def _tcb_evaluation(
    quote: DcapQuote | TdxQuote,
    collateral: Collateral | None,
    chain: _Chain,
    root: x509.Certificate,
    now: datetime,
    qe: tuple[str, tuple[str, ...]] | None,
) -> tuple[TcbEvaluation, PckExtension | None]:
    if collateral is None:
        return TcbEvaluation(status=None, error="TCB status not checked: no collateral given", checked=False), None
    if chain.path is None:
        return TcbEvaluation(status=None, error="no verified PCK certificate to read the platform's TCB from"), None
    try:
        pck_ext = parse_pck_extension(chain.path[0])
    except (CollateralError, *CERTIFICATE_CONTENT_ERRORS):
        return TcbEvaluation(status=None, error="no readable SGX extension in the PCK certificate"), None
    if qe is None:
        return TcbEvaluation(status=None, error="the QE identity check failed"), pck_ext
    qe_status, qe_advisories = qe
    try:
        platform = _platform_tcb(collateral, root, now, pck_ext, quote, qe_status)
    except _Fail as exc:
        return TcbEvaluation(status=None, error=str(exc)), pck_ext
    except CERTIFICATE_CONTENT_ERRORS as exc:
        return TcbEvaluation(status=None, error=f"TCB info collateral cannot be parsed ({type(exc).__name__})"), pck_ext
    assert platform.status is not None
    advisories = platform.advisory_ids
    merged = advisories + tuple(a for a in qe_advisories if a not in advisories)
    status = converge_tcb_status(platform.status, qe_status)
    return replace(platform, status=status, advisory_ids=merged), pck_ext


def verify_dcap_quote(
    quote: DcapQuote | TdxQuote,
    *,
    root_ca: x509.Certificate,
    collateral: Collateral | None,
    now: datetime,
) -> DcapResult:
    """Run every cryptographic check on a parsed DCAP quote; each step is judged on its own.

    Never raises for anything the quote or collateral contains: a fault is a failed step.
    """
    sig = quote.signature_data
    chain = _Chain([])
    chain_step = _chain_step(sig, root_ca, now, chain)
    qe_signature = _qe_signature_step(sig, chain)
    qe_identity, qe = _qe_identity_step(quote, collateral, root_ca, now, qe_signature)
    tcb, pck_ext = _tcb_evaluation(quote, collateral, chain, root_ca, now, qe)
    steps = (
        chain_step,
        _revocation_step(collateral, chain, root_ca, now),
        qe_signature,
        _qe_binding_step(sig),
        _quote_signature_step(quote),
        qe_identity,
    )
    return DcapResult(steps=steps, tcb=tcb, pck_extension=pck_ext)

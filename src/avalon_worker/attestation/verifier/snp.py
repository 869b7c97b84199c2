"""Offline verification of AMD SEV-SNP evidence, step by step, down to AMD's pinned roots.

The evidence is the 1184-byte attestation report, optionally followed by the host's certificate
table (configfs-tsm ``auxblob``); further certificates and CRLs come as collateral
(`load_snp_collateral`). What is checked, in order:

1. the report parses (size, version 2/3/5, ECDSA P-384 signature algorithm);
2. the chain ARK → ASK → VCEK or ARK → ASVK → VLEK, every link RSASSA-PSS SHA-384 salt 48,
   each certificate valid at `now`, the ARK one of AMD's pinned roots (`_amd_roots`);
3. the ASK/ASVK is not on the ARK-signed CRL, when one is given;
4. the signing key the report's FLAGS name (VCEK or VLEK) is the one the chain ends in;
5. the report's ECDSA P-384 signature (r, s little-endian) over bytes 0x000–0x29F;
6. the VCEK/VLEK's TCB extensions equal REPORTED_TCB;
7. the VCEK's hwID equals CHIP_ID (unless the guest set MASK_CHIP_KEY);
8. the product (CPUID family/model in v3+) is the one the chain is for;
then the `SnpPolicy` (measurement, HOST_DATA, ID/author keys, guest policy bits, VMPL, minimum
TCB and ABI) and the REPORT_DATA binding. Every step is judged on its own and reported; nothing
the evidence or collateral contains makes this module raise. No I/O: the clock is a parameter.
"""

from __future__ import annotations

import hmac
import logging
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from ..errors import AttestationError, InsecurePolicyWarning, PolicyError
from ._amd_roots import AMD_CERTIFICATES, pinned_ark_product
from ._snp_certs import (
    Endorsement,
    load_snp_collateral,
    read_endorsement,
    serial_number,
    signed_tbs_candidates,
    split_snp_evidence,
)
from ._snp_report import (
    POLICY_DEBUG,
    POLICY_MIGRATE_MA,
    POLICY_SINGLE_SOCKET,
    POLICY_SMT,
    SIGNING_KEY_NONE,
    SIGNING_KEY_VCEK,
    SIGNING_KEY_VLEK,
    SnpParseError,
    SnpReport,
    parse_snp_report,
)
from .collateral import CERTIFICATE_CONTENT_ERRORS
from .report import STEP_REPORT_DATA, Step, StepStatus, failed, not_checked, passed

__all__ = [
    "SnpPolicy",
    "SnpVerification",
    "load_snp_collateral",
    "split_snp_evidence",
    "verify_snp_evidence",
]

logger = logging.getLogger(__name__)

STEP_SNP_PARSED = "SNP report parsed"
STEP_SNP_CHAIN = "VCEK/VLEK chain to AMD root"
STEP_SNP_REVOCATION = "AMD signing key not revoked"
STEP_SNP_SIGNING_KEY = "report names the key that signed it"
STEP_SNP_SIGNATURE = "report signed by VCEK/VLEK"
STEP_SNP_TCB = "VCEK/VLEK TCB matches REPORTED_TCB"
STEP_SNP_CHIP_ID = "VCEK hwID matches CHIP_ID"
STEP_SNP_PRODUCT = "product matches CPUID"
STEP_SNP_MEASUREMENT = "launch measurement allowed"
STEP_SNP_HOST_DATA = "HOST_DATA allowed"
STEP_SNP_ID_KEYS = "ID key and author key allowed"
STEP_SNP_GUEST_POLICY = "guest policy (debug, migration agent, SMT, single socket)"
STEP_SNP_VMPL = "VMPL allowed"
STEP_SNP_MIN_TCB = "minimum TCB"
STEP_SNP_MIN_ABI = "minimum firmware ABI"

SNP_SIGNATURE_STEPS = (
    STEP_SNP_CHAIN,
    STEP_SNP_REVOCATION,
    STEP_SNP_SIGNING_KEY,
    STEP_SNP_SIGNATURE,
    STEP_SNP_TCB,
    STEP_SNP_CHIP_ID,
    STEP_SNP_PRODUCT,
)
SNP_POLICY_STEPS = (
    STEP_SNP_MEASUREMENT,
    STEP_SNP_HOST_DATA,
    STEP_SNP_ID_KEYS,
    STEP_SNP_GUEST_POLICY,
    STEP_SNP_VMPL,
    STEP_SNP_MIN_TCB,
    STEP_SNP_MIN_ABI,
)

# AMD KDS specification 57230: ARK, ASK and ASVK sign with RSASSA-PSS, SHA-384, MGF1-SHA-384, salt 48.
_PSS = padding.PSS(mgf=padding.MGF1(hashes.SHA384()), salt_length=48)
_LEAF_NAMES = {"SEV-VCEK": "VCEK", "SEV-VLEK": "VLEK"}
_SIGNING_KEY_NAMES = {SIGNING_KEY_VCEK: "VCEK", SIGNING_KEY_VLEK: "VLEK"}
# What reading an attacker-supplied certificate can raise (cryptography parses lazily).
TCB_COMPONENTS = ("bootloader", "tee", "snp", "microcode", "fmc")


class _Fail(AttestationError):
    """Internal: a step failed with this message."""


# -- the chain ------------------------------------------------------------------------------------


def _cn(cert: x509.Certificate) -> str:
    try:
        attrs = cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    except CERTIFICATE_CONTENT_ERRORS:
        return ""
    value = attrs[0].value if attrs else ""
    return value if isinstance(value, str) else ""


def _product_of(name: str) -> str:
    """"ARK-Milan", "SEV-Milan", "SEV-VLEK-Milan" → "Milan"."""
    return name.rsplit("-", 1)[-1]


def _pss_signed(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    """Whether `issuer`'s RSA key signed `cert` with AMD's RSASSA-PSS parameters."""
    try:
        key = issuer.public_key()
        if cert.signature_algorithm_oid != x509.SignatureAlgorithmOID.RSASSA_PSS:
            return False
        candidates = signed_tbs_candidates(cert)
        signature = cert.signature
    except CERTIFICATE_CONTENT_ERRORS:
        return False
    if not isinstance(key, rsa.RSAPublicKey):
        return False
    for tbs in candidates:
        try:
            key.verify(signature, tbs, _PSS, hashes.SHA384())
            return True
        except (InvalidSignature, ValueError):
            continue
    return False


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except (x509.ExtensionNotFound, *CERTIFICATE_CONTENT_ERRORS):
        return False


def _valid_at(cert: x509.Certificate, now: datetime, what: str) -> None:
    if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
        raise _Fail(
            f"{what} {_cn(cert)} is not valid at {now:%Y-%m-%d %H:%M} UTC "
            f"(valid {cert.not_valid_before_utc:%Y-%m-%d} to {cert.not_valid_after_utc:%Y-%m-%d})"
        )


def _der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


def _unique(certs: Sequence[x509.Certificate]) -> list[x509.Certificate]:
    seen: set[bytes] = set()
    out = []
    for cert in certs:
        der = _der(cert)
        if der not in seen:
            seen.add(der)
            out.append(cert)
    return out


@dataclass(frozen=True)
class _Chain:
    leaf: x509.Certificate
    kind: str  # VCEK or VLEK
    signer: x509.Certificate  # ASK or ASVK
    ark: x509.Certificate
    product: str
    pinned: bool  # the ARK is one of AMD's pinned roots (not a test root)


def _roots(presented: Sequence[x509.Certificate], trusted_arks: Sequence[x509.Certificate] | None) -> list[x509.Certificate]:
    if trusted_arks is not None:
        return list(trusted_arks)
    # A presented ARK counts only if it carries a pinned key and signed itself (checked by the caller).
    offered = [cert for cert in presented if cert.issuer == cert.subject and pinned_ark_product(cert) is not None]
    return [*AMD_CERTIFICATES.arks, *offered]


def _issuer_of(cert: x509.Certificate, candidates: Sequence[x509.Certificate]) -> x509.Certificate | None:
    for candidate in candidates:
        if candidate.subject == cert.issuer and _pss_signed(cert, candidate):
            return candidate
    return None


def _leaves(certs: Sequence[x509.Certificate], wanted: str | None) -> list[tuple[x509.Certificate, str]]:
    found = [(cert, _LEAF_NAMES[_cn(cert)]) for cert in certs if _cn(cert) in _LEAF_NAMES]
    named = [(cert, kind) for cert, kind in found if kind == wanted]
    return named or found


def _build_chain(
    report: SnpReport | None,
    certs: Sequence[x509.Certificate],
    trusted_arks: Sequence[x509.Certificate] | None,
    now: datetime,
) -> _Chain:
    wanted = _SIGNING_KEY_NAMES.get(report.signing_key) if report is not None else None
    leaves = _leaves(certs, wanted)
    if not leaves:
        raise _Fail(
            "no VCEK or VLEK certificate was given: pass the evidence with the host's certificate table, "
            "or collateral with the VCEK/VLEK from AMD's Key Distribution Service"
        )
    # Several leaves of the named kind: prefer the one whose key signed the report.
    if report is not None and len(leaves) > 1:
        leaves.sort(key=lambda pair: not _report_signature_ok(report, pair[0]))
    leaf, kind = leaves[0]
    intermediates = [c for c in certs if c.issuer != c.subject and _cn(c) not in _LEAF_NAMES]
    signer = _issuer_of(leaf, [*intermediates, *AMD_CERTIFICATES.asks])
    if signer is None:
        raise _Fail(f"no ASK/ASVK named {leaf.issuer.rfc4514_string()} signed the {kind} (RSASSA-PSS SHA-384)")
    roots = _roots(certs, trusted_arks)
    ark = _issuer_of(signer, roots)
    if ark is None:
        raise _Fail(
            f"{_cn(signer)} is not signed by a trusted AMD root: its issuer {signer.issuer.rfc4514_string()} "
            "is not one of AMD's pinned ARKs"
            + (" (nor the root given with --insecure-amd-root)" if trusted_arks is not None else "")
        )
    if not _pss_signed(ark, ark):
        raise _Fail(f"{_cn(ark)} is not self-signed with RSASSA-PSS SHA-384")
    if not (_is_ca(signer) and _is_ca(ark)) or _is_ca(leaf):
        raise _Fail("the chain's basic constraints are wrong: ASK/ASVK and ARK must be CAs, the VCEK/VLEK not")
    for cert, what in ((leaf, kind), (signer, "signing key"), (ark, "root")):
        _valid_at(cert, now, what)
    product = _product_of(_cn(ark))
    pinned_product = pinned_ark_product(ark)
    if trusted_arks is None and pinned_product != product:
        raise _Fail(f"{_cn(ark)} carries the pinned key of {pinned_product}, not of {product}")
    if _product_of(_cn(signer)) != product:
        raise _Fail(f"{_cn(signer)} is not a {product} signing key")
    return _Chain(leaf, kind, signer, ark, product, pinned=pinned_product is not None and trusted_arks is None)


def _chain_step(
    report: SnpReport | None,
    certs: Sequence[x509.Certificate],
    trusted_arks: Sequence[x509.Certificate] | None,
    now: datetime,
    out: list[_Chain],
) -> Step:
    try:
        chain = _build_chain(report, certs, trusted_arks, now)
    except _Fail as exc:
        return failed(STEP_SNP_CHAIN, exc.message)
    except CERTIFICATE_CONTENT_ERRORS as exc:
        return failed(STEP_SNP_CHAIN, f"a certificate cannot be read ({type(exc).__name__})")
    out.append(chain)
    root = "pinned AMD root" if chain.pinned else "test root given in place of AMD's (INSECURE)"
    return passed(STEP_SNP_CHAIN, f"{chain.kind} → {_cn(chain.signer)} → {_cn(chain.ark)} ({root})")


def _crl_signed_by(crl: x509.CertificateRevocationList, ark: x509.Certificate) -> bool:
    try:
        key = ark.public_key()
        if crl.signature_algorithm_oid != x509.SignatureAlgorithmOID.RSASSA_PSS or not isinstance(key, rsa.RSAPublicKey):
            return False
        key.verify(crl.signature, crl.tbs_certlist_bytes, _PSS, hashes.SHA384())
    except (InvalidSignature, *CERTIFICATE_CONTENT_ERRORS):
        return False
    return True


def _revocation_step(
    chain: _Chain | None, crls: Sequence[x509.CertificateRevocationList], now: datetime
) -> Step:
    if not crls:
        return not_checked(STEP_SNP_REVOCATION, "no CRL given (AMD KDS serves it beside the certificate chain)")
    if chain is None:
        return not_checked(STEP_SNP_REVOCATION, "no verified chain to check")
    try:
        mine = [crl for crl in crls if crl.issuer == chain.ark.subject]
        if not mine:
            return failed(STEP_SNP_REVOCATION, f"no CRL issued by {_cn(chain.ark)} was given")
        crl = mine[0]
        if not _crl_signed_by(crl, chain.ark):
            return failed(STEP_SNP_REVOCATION, f"the CRL is not signed by {_cn(chain.ark)}")
        next_update = crl.next_update_utc
        if next_update is None or not crl.last_update_utc <= now <= next_update:
            return failed(STEP_SNP_REVOCATION, "the CRL is not current: fetch AMD's current CRL")
        for cert in (chain.signer, chain.leaf):
            serial = serial_number(cert)
            if crl.get_revoked_certificate_by_serial_number(serial) is not None:
                return failed(STEP_SNP_REVOCATION, f"{_cn(cert)} (serial {serial:#x}) is revoked")
    except CERTIFICATE_CONTENT_ERRORS as exc:
        return failed(STEP_SNP_REVOCATION, f"the CRL cannot be read ({type(exc).__name__})")
    return passed(STEP_SNP_REVOCATION, f"{_cn(chain.signer)} checked against {_cn(chain.ark)}'s CRL")


# -- the report against its chain -----------------------------------------------------------------


def _report_signature_ok(report: SnpReport, leaf: x509.Certificate) -> bool:
    try:
        key = leaf.public_key()
    except CERTIFICATE_CONTENT_ERRORS:
        return False
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP384R1):
        return False
    # r and s are 72-byte little-endian fields holding 48-byte P-384 scalars: the rest must be zero.
    if any(report.signature_r[48:]) or any(report.signature_s[48:]):
        return False
    r = int.from_bytes(report.signature_r, "little")
    s = int.from_bytes(report.signature_s, "little")
    try:
        key.verify(encode_dss_signature(r, s), report.signed_bytes, ec.ECDSA(hashes.SHA384()))
    except (InvalidSignature, ValueError):
        return False
    return True


def _signing_key_step(report: SnpReport, chain: _Chain | None) -> Step:
    key = report.signing_key
    if key == SIGNING_KEY_NONE:
        return failed(STEP_SNP_SIGNING_KEY, "the report says it is unsigned (SIGNING_KEY 7)")
    named = _SIGNING_KEY_NAMES.get(key)
    if named is None:
        return failed(STEP_SNP_SIGNING_KEY, f"SIGNING_KEY {key} is reserved")
    if chain is None:
        return not_checked(STEP_SNP_SIGNING_KEY, f"the report names the {named}; no verified chain to compare")
    if chain.kind != named:
        return failed(STEP_SNP_SIGNING_KEY, f"the report names the {named}, the chain ends in a {chain.kind}")
    return passed(STEP_SNP_SIGNING_KEY, named)


def _signature_step(report: SnpReport, chain: _Chain | None) -> Step:
    if chain is None:
        return not_checked(STEP_SNP_SIGNATURE, "no verified VCEK/VLEK")
    if _report_signature_ok(report, chain.leaf):
        return passed(STEP_SNP_SIGNATURE, f"ECDSA P-384 by the {chain.kind}")
    return failed(STEP_SNP_SIGNATURE, f"the report's signature does not verify with the {chain.kind}'s key")


def _endorsement(chain: _Chain | None) -> Endorsement | str:
    if chain is None:
        return "no verified VCEK/VLEK"
    try:
        return read_endorsement(chain.leaf)
    except (UnicodeDecodeError, *CERTIFICATE_CONTENT_ERRORS) as exc:
        return f"the {chain.kind}'s AMD extensions cannot be read: {exc}"


def _tcb_step(report: SnpReport, chain: _Chain | None, endorsement: Endorsement | str) -> Step:
    if isinstance(endorsement, str) or chain is None:
        return not_checked(STEP_SNP_TCB, endorsement if isinstance(endorsement, str) else "")
    reported = report.tcb(report.reported_tcb, chain.product).components()
    if set(endorsement.tcb) != set(reported):
        return failed(
            STEP_SNP_TCB,
            f"the {chain.kind} endorses components {sorted(endorsement.tcb)}, a {chain.product} TCB has {sorted(reported)}",
        )
    differ = [f"{name} {endorsement.tcb[name]} ≠ {reported[name]}" for name in reported if endorsement.tcb[name] != reported[name]]
    if differ:
        return failed(STEP_SNP_TCB, f"the {chain.kind} is for another TCB: {', '.join(differ)}")
    return passed(STEP_SNP_TCB, report.tcb(report.reported_tcb, chain.product).describe())


def _chip_id_step(report: SnpReport, chain: _Chain | None, endorsement: Endorsement | str) -> Step:
    if isinstance(endorsement, str) or chain is None:
        return not_checked(STEP_SNP_CHIP_ID, endorsement if isinstance(endorsement, str) else "")
    if chain.kind == "VLEK":
        return passed(STEP_SNP_CHIP_ID, "a VLEK endorses a cloud provider's platforms, not one chip")
    if report.mask_chip_key:
        return passed(STEP_SNP_CHIP_ID, "the guest masked CHIP_ID (MASK_CHIP_KEY); the VCEK is still per chip")
    hwid = endorsement.hwid
    if hwid is None or len(hwid) not in (8, 64):
        return failed(STEP_SNP_CHIP_ID, "the VCEK has no 64-byte (or Turin 8-byte) hwID extension")
    # Turin VCEKs carry the 8 significant bytes of the 64-byte CHIP_ID.
    expected = report.chip_id[: len(hwid)]
    if hmac.compare_digest(hwid, expected) and not any(report.chip_id[len(hwid) :]):
        return passed(STEP_SNP_CHIP_ID, hwid.hex())
    return failed(STEP_SNP_CHIP_ID, f"the VCEK is for chip {hwid.hex()}, the report is from {report.chip_id.hex()}")


def _product_step(report: SnpReport, chain: _Chain | None, endorsement: Endorsement | str) -> Step:
    if isinstance(endorsement, str) or chain is None:
        return not_checked(STEP_SNP_PRODUCT, endorsement if isinstance(endorsement, str) else "")
    named = endorsement.product_name
    if named is not None and named.split("-", 1)[0] != chain.product:
        return failed(STEP_SNP_PRODUCT, f"the {chain.kind} names product {named!r}, the chain is {chain.product}'s")
    if report.cpuid_family is None:
        return passed(STEP_SNP_PRODUCT, f"{chain.product} (a version 2 report carries no CPUID; product from the chain)")
    cpuid = f"family {report.cpuid_family:#x} model {report.cpuid_model:#x}"
    if report.cpuid_product != chain.product:
        return failed(STEP_SNP_PRODUCT, f"CPUID {cpuid} is {report.cpuid_product or 'no known product'}, not {chain.product}")
    return passed(STEP_SNP_PRODUCT, f"{chain.product}, CPUID {cpuid} stepping {report.cpuid_stepping}")


# -- policy ---------------------------------------------------------------------------------------


def _hex_bytes(value: Any, size: int, what: str) -> bytes:
    if not isinstance(value, str):
        raise PolicyError(f"{what} must be a string of {size * 2} hex digits, got {value!r}")
    try:
        raw = bytes.fromhex(value)
    except ValueError as exc:
        raise PolicyError(f"{what} {value!r} is not hex") from exc
    if len(raw) != size:
        raise PolicyError(f"{what} must be {size} bytes ({size * 2} hex digits), got {len(raw)}")
    return raw


def _hex_list(value: Any, size: int, what: str) -> frozenset[bytes]:
    if not isinstance(value, list) or not value:
        raise PolicyError(f"{what} must be a non-empty list of {size * 2}-hex-digit strings")
    return frozenset(_hex_bytes(item, size, what) for item in value)


def _flag(data: dict[str, Any], key: str, default: bool) -> bool:
    value = data.get(key, default)
    if not isinstance(value, bool):
        raise PolicyError(f"snp.{key} must be true or false, got {value!r}")
    return value


def _small_int(value: Any, what: str, top: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= top:
        raise PolicyError(f"{what} must be an integer from 0 to {top}, got {value!r}")
    return value


def _min_tcb(value: Any) -> dict[str, int]:
    if not isinstance(value, dict):
        raise PolicyError("snp.min_tcb must be an object such as {\"bootloader\": 3, \"snp\": 8}")
    unknown = sorted(set(value) - set(TCB_COMPONENTS))
    if unknown:
        raise PolicyError(f"snp.min_tcb has unknown components {unknown}; known: {list(TCB_COMPONENTS)}")
    return {name: _small_int(svn, f"snp.min_tcb.{name}", 255) for name, svn in value.items()}


def _abi(value: Any) -> tuple[int, int]:
    parts = value.split(".") if isinstance(value, str) else []
    if len(parts) != 2 or not all(p.isdigit() for p in parts):
        raise PolicyError(f"snp.min_abi must be \"major.minor\" such as \"1.55\", got {value!r}")
    return _small_int(int(parts[0]), "snp.min_abi major", 255), _small_int(int(parts[1]), "snp.min_abi minor", 255)


MEASUREMENT_PLACEHOLDER = "REPLACE-with-the-96-hex-digit-launch-measurement-of-your-guest-image"
_POLICY_KEYS = frozenset(
    {
        "measurements",
        "host_data",
        "id_key_digests",
        "author_key_digests",
        "vmpl",
        "allow_migration_agent",
        "allow_smt",
        "require_single_socket",
        "min_tcb",
        "min_abi",
        "insecure_allow_debug",
        "insecure_any_measurement",
        "insecure_accept_unchecked_revocation",
    }
)


@dataclass(frozen=True)
class SnpPolicy:
    """What an SEV-SNP guest's report must show (the ``"snp"`` section of a policy file).

    `measurements` is the allow-list of launch measurements (48 bytes each); the optional
    pins (`host_data`, `id_key_digests`, `author_key_digests`) are checked when set. Guest policy
    bits: DEBUG is refused unless `insecure_allow_debug`; a migration agent unless
    `allow_migration_agent`; SMT unless `allow_smt` (default true: most clouds enable it);
    `require_single_socket` demands SINGLE_SOCKET. `min_tcb` is per component of REPORTED_TCB,
    `min_abi` the running firmware's (major, minor). Relaxations are named ``insecure_*``.
    """

    measurements: frozenset[bytes] = frozenset()
    host_data: bytes | None = None
    id_key_digests: frozenset[bytes] | None = None
    author_key_digests: frozenset[bytes] | None = None
    vmpl: frozenset[int] = frozenset({0})
    allow_migration_agent: bool = False
    allow_smt: bool = True
    require_single_socket: bool = False
    min_tcb: dict[str, int] = field(default_factory=dict)
    min_abi: tuple[int, int] | None = None
    insecure_allow_debug: bool = False
    insecure_any_measurement: bool = False
    insecure_accept_unchecked_revocation: bool = False

    def __post_init__(self) -> None:
        if not self.measurements and not self.insecure_any_measurement:
            raise PolicyError(
                "an SNP policy needs at least one launch measurement",
                hint="list the guest image's measurements in snp.measurements, or set "
                "snp.insecure_any_measurement to accept any guest (development only)",
            )
        if any(len(m) != 48 for m in self.measurements):
            raise PolicyError("every SNP launch measurement is 48 bytes")
        if not self.vmpl or any(v not in range(4) for v in self.vmpl):
            raise PolicyError("snp.vmpl must list VMPLs from 0 to 3")
        unknown = set(self.min_tcb) - set(TCB_COMPONENTS)
        if unknown:
            raise PolicyError(f"unknown TCB components {sorted(unknown)}")

    @classmethod
    def from_dict(cls, data: Any) -> SnpPolicy:
        """Build the policy from its JSON form (`template()` shows every key); `PolicyError`
        on unknown keys or bad values, so a typo cannot relax a check."""
        if not isinstance(data, dict):
            raise PolicyError("the snp policy section must be a JSON object")
        unknown = sorted(set(data) - _POLICY_KEYS)
        if unknown:
            raise PolicyError(f"unknown snp policy keys {unknown}; known: {sorted(_POLICY_KEYS)}")
        if any(m == MEASUREMENT_PLACEHOLDER for m in data.get("measurements") or []):
            raise PolicyError("snp.measurements still holds the template's placeholder: put your guest's measurement")
        vmpl = data.get("vmpl", [0])
        if not isinstance(vmpl, list) or not vmpl:
            raise PolicyError("snp.vmpl must be a non-empty list such as [0]")
        optional: dict[str, Any] = {}
        if "host_data" in data:
            optional["host_data"] = _hex_bytes(data["host_data"], 32, "snp.host_data")
        for key in ("id_key_digests", "author_key_digests"):
            if key in data:
                optional[key] = _hex_list(data[key], 48, f"snp.{key}")
        if "measurements" in data:
            optional["measurements"] = _hex_list(data["measurements"], 48, "snp.measurements")
        return cls(
            vmpl=frozenset(_small_int(v, "snp.vmpl entry", 3) for v in vmpl),
            allow_migration_agent=_flag(data, "allow_migration_agent", False),
            allow_smt=_flag(data, "allow_smt", True),
            require_single_socket=_flag(data, "require_single_socket", False),
            min_tcb=_min_tcb(data.get("min_tcb", {})),
            min_abi=_abi(data["min_abi"]) if "min_abi" in data else None,
            insecure_allow_debug=_flag(data, "insecure_allow_debug", False),
            insecure_any_measurement=_flag(data, "insecure_any_measurement", False),
            insecure_accept_unchecked_revocation=_flag(data, "insecure_accept_unchecked_revocation", False),
            **optional,
        )

    @staticmethod
    def template() -> dict[str, Any]:
        """The smallest useful SNP section, for ``verify --print-policy-template --tee snp``."""
        return {
            "measurements": [MEASUREMENT_PLACEHOLDER],
            "vmpl": [0],
            "allow_migration_agent": False,
            "allow_smt": True,
            "require_single_socket": False,
            "min_tcb": {"bootloader": 0, "tee": 0, "snp": 0, "microcode": 0},
            "min_abi": "1.51",
        }

    def insecure_overrides(self) -> tuple[str, ...]:
        """Names of the insecure relaxations this policy uses."""
        names = ("insecure_allow_debug", "insecure_any_measurement", "insecure_accept_unchecked_revocation")
        return tuple(name for name in names if getattr(self, name))

    def describe(self) -> str:
        what = (
            "any measurement"
            if self.insecure_any_measurement
            else "measurement in {" + ", ".join(sorted(m.hex() for m in self.measurements)) + "}"
        )
        parts = [what, f"VMPL in {sorted(self.vmpl)}"]
        if self.host_data is not None:
            parts.append(f"HOST_DATA {self.host_data.hex()}")
        if self.min_tcb:
            parts.append("TCB ≥ " + " ".join(f"{k}={v}" for k, v in sorted(self.min_tcb.items())))
        if self.min_abi is not None:
            parts.append(f"firmware ≥ {self.min_abi[0]}.{self.min_abi[1]}")
        return "; ".join(parts + list(self.insecure_overrides()))


def _warn_insecure(what: str) -> None:
    message = f"INSECURE attestation policy in use: {what}"
    logger.warning(message)
    warnings.warn(message, InsecurePolicyWarning, stacklevel=3)


def _in_allow_list(value: bytes, allowed: frozenset[bytes] | None) -> bool:
    return allowed is None or any(hmac.compare_digest(value, a) for a in allowed)


def _measurement_step(report: SnpReport, policy: SnpPolicy) -> Step:
    measured = report.measurement.hex()
    if _in_allow_list(report.measurement, policy.measurements):
        return passed(STEP_SNP_MEASUREMENT, measured)
    if policy.insecure_any_measurement:
        return Step(STEP_SNP_MEASUREMENT, StepStatus.NOT_CHECKED, f"{measured} accepted unchecked", "insecure_any_measurement")
    return failed(STEP_SNP_MEASUREMENT, f"{measured} is not in the policy's list")


def _host_data_step(report: SnpReport, policy: SnpPolicy) -> Step:
    if policy.host_data is None:
        return passed(STEP_SNP_HOST_DATA, f"{report.host_data.hex()} (the policy pins none)")
    if hmac.compare_digest(report.host_data, policy.host_data):
        return passed(STEP_SNP_HOST_DATA, report.host_data.hex())
    return failed(STEP_SNP_HOST_DATA, f"{report.host_data.hex()} is not {policy.host_data.hex()}")


def _id_keys_step(report: SnpReport, policy: SnpPolicy) -> Step:
    if not _in_allow_list(report.id_key_digest, policy.id_key_digests):
        return failed(STEP_SNP_ID_KEYS, f"ID key digest {report.id_key_digest.hex()} is not allowed")
    if policy.author_key_digests is not None:
        if not report.author_key_en:
            return failed(STEP_SNP_ID_KEYS, "the policy pins an author key but the guest was launched without one")
        if not _in_allow_list(report.author_key_digest, policy.author_key_digests):
            return failed(STEP_SNP_ID_KEYS, f"author key digest {report.author_key_digest.hex()} is not allowed")
    pinned = [name for name, v in (("ID key", policy.id_key_digests), ("author key", policy.author_key_digests)) if v]
    return passed(STEP_SNP_ID_KEYS, f"{' and '.join(pinned)} allowed" if pinned else "the policy pins neither")


def _guest_policy_step(report: SnpReport, policy: SnpPolicy) -> Step:
    bits = report.policy
    problems: list[tuple[str, str | None]] = []
    if bits & POLICY_DEBUG:
        waiver = "insecure_allow_debug" if policy.insecure_allow_debug else None
        problems.append(("DEBUG is allowed: the host can read and change the guest's memory", waiver))
    if bits & POLICY_MIGRATE_MA and not policy.allow_migration_agent:
        problems.append(("a migration agent is allowed (MIGRATE_MA)", None))
    if bits & POLICY_SMT and not policy.allow_smt:
        problems.append(("SMT is allowed", None))
    if policy.require_single_socket and not bits & POLICY_SINGLE_SOCKET:
        problems.append(("SINGLE_SOCKET is not set", None))
    detail = f"POLICY {bits:#x}"
    if not problems:
        return passed(STEP_SNP_GUEST_POLICY, detail)
    text = f"{detail}: " + "; ".join(problem for problem, _ in problems)
    waivers = {waiver for _, waiver in problems}
    waiver = waivers.pop() if len(waivers) == 1 else None
    return Step(STEP_SNP_GUEST_POLICY, StepStatus.FAIL, text, waiver)


def _vmpl_step(report: SnpReport, policy: SnpPolicy) -> Step:
    if report.vmpl in policy.vmpl:
        return passed(STEP_SNP_VMPL, str(report.vmpl))
    return failed(STEP_SNP_VMPL, f"VMPL {report.vmpl} is not in {sorted(policy.vmpl)}")


def _min_tcb_step(report: SnpReport, policy: SnpPolicy, product: str | None) -> Step:
    tcb = report.tcb(report.reported_tcb, product)
    have = tcb.components()
    low = [
        f"{name} {have.get(name, 'absent')} < {minimum}"
        for name, minimum in sorted(policy.min_tcb.items())
        if have.get(name, -1) < minimum
    ]
    if low:
        return failed(STEP_SNP_MIN_TCB, f"REPORTED_TCB {tcb.describe()}: {', '.join(low)}")
    return passed(STEP_SNP_MIN_TCB, tcb.describe() + ("" if policy.min_tcb else " (the policy sets no minimum)"))


def _min_abi_step(report: SnpReport, policy: SnpPolicy) -> Step:
    major, minor, build = report.current_version
    running = f"{major}.{minor} build {build}"
    if policy.min_abi is None:
        return passed(STEP_SNP_MIN_ABI, f"{running} (the policy sets no minimum)")
    if (major, minor) < policy.min_abi:
        return failed(STEP_SNP_MIN_ABI, f"firmware {running} is older than {policy.min_abi[0]}.{policy.min_abi[1]}")
    return passed(STEP_SNP_MIN_ABI, running)


def _policy_steps(report: SnpReport, policy: SnpPolicy | None, product: str | None) -> list[Step]:
    if policy is None:
        return [not_checked(name, "no policy given") for name in SNP_POLICY_STEPS]
    checks: list[Callable[[], Step]] = [
        lambda: _measurement_step(report, policy),
        lambda: _host_data_step(report, policy),
        lambda: _id_keys_step(report, policy),
        lambda: _guest_policy_step(report, policy),
        lambda: _vmpl_step(report, policy),
        lambda: _min_tcb_step(report, policy, product),
        lambda: _min_abi_step(report, policy),
    ]
    return [check() for check in checks]


# -- the entry point ------------------------------------------------------------------------------


@dataclass(frozen=True)
class SnpVerification:
    """Every step of an SNP verification, with what the report claims (hex strings)."""

    steps: tuple[Step, ...]
    measurements: dict[str, str]
    report_data: bytes
    tcb_status: str | None


def _claims(report: SnpReport, product: str | None) -> dict[str, str]:
    return {
        "measurement": report.measurement.hex(),
        "host_data": report.host_data.hex(),
        "id_key_digest": report.id_key_digest.hex(),
        "author_key_digest": report.author_key_digest.hex(),
        "chip_id": report.chip_id.hex(),
        "report_data": report.report_data.hex(),
        "policy": f"{report.policy:#x}",
        "reported_tcb": f"{report.reported_tcb:#018x}",
        "vmpl": str(report.vmpl),
        "version": str(report.version),
    }


def _report_data_step(report: SnpReport, expected: bytes | None) -> Step:
    if expected is None:
        return not_checked(STEP_REPORT_DATA, "no expected REPORT_DATA given")
    if hmac.compare_digest(report.report_data, expected):
        return passed(STEP_REPORT_DATA, "REPORT_DATA is the expected 64 bytes")
    return failed(STEP_REPORT_DATA, "REPORT_DATA differs from the expected binding")


def _unparsed(message: str, expected_report_data: bytes | None) -> SnpVerification:
    steps = [failed(STEP_SNP_PARSED, message)]
    steps += [not_checked(name, "no parsable report") for name in (*SNP_SIGNATURE_STEPS, *SNP_POLICY_STEPS)]
    if expected_report_data is not None:
        steps.append(not_checked(STEP_REPORT_DATA, "no parsable report"))
    return SnpVerification(steps=tuple(steps), measurements={}, report_data=b"", tcb_status=None)


def _waive_revocation(steps: list[Step], policy: SnpPolicy | None) -> list[Step]:
    if policy is None or not policy.insecure_accept_unchecked_revocation:
        return steps
    return [
        Step(s.name, s.status, s.detail, "insecure_accept_unchecked_revocation")
        if s.name == STEP_SNP_REVOCATION and s.status is StepStatus.NOT_CHECKED
        else s
        for s in steps
    ]


def verify_snp_evidence(
    raw: bytes,
    *,
    policy: SnpPolicy | None,
    expected_report_data: bytes | None,
    certificates: Sequence[x509.Certificate] = (),
    crls: Sequence[x509.CertificateRevocationList] = (),
    now: datetime,
    trusted_arks: Sequence[x509.Certificate] | None = None,
) -> SnpVerification:
    """Verify SNP evidence (the report, optionally followed by the host's certificate table).

    `certificates` and `crls` add to what the evidence carries (`load_snp_collateral` reads
    them). `now` is the verification time (naive means UTC). `trusted_arks` replaces AMD's
    pinned roots (tests only). Without `policy` the policy steps are *not checked*; without
    `expected_report_data` so is the REPORT_DATA binding.
    Never raises for anything in the evidence or collateral: a fault is a failed step.
    """
    if policy is not None:
        for name in policy.insecure_overrides():
            _warn_insecure(name)
    if now.tzinfo is None:  # certificates' times are UTC; a naive time must not make comparisons raise
        now = now.replace(tzinfo=timezone.utc)
    try:
        report_bytes, carried = split_snp_evidence(bytes(raw))
        report = parse_snp_report(report_bytes)
    except SnpParseError as exc:
        return _unparsed(exc.message, expected_report_data)
    product_note = f", CPUID product {report.cpuid_product}" if report.cpuid_product else ""
    steps = [passed(STEP_SNP_PARSED, f"version {report.version}{product_note}, {len(carried)} certificates carried")]
    found: list[_Chain] = []
    try:
        every = _unique([*carried, *certificates])
    except CERTIFICATE_CONTENT_ERRORS:
        every = list(certificates)
    steps.append(_chain_step(report, every, trusted_arks, now, found))
    chain = found[0] if found else None
    endorsement = _endorsement(chain)
    steps += [
        _revocation_step(chain, crls, now),
        _signing_key_step(report, chain),
        _signature_step(report, chain),
        _tcb_step(report, chain, endorsement),
        _chip_id_step(report, chain, endorsement),
        _product_step(report, chain, endorsement),
    ]
    product = chain.product if chain is not None else report.cpuid_product
    steps += _policy_steps(report, policy, product)
    steps.append(_report_data_step(report, expected_report_data))
    return SnpVerification(
        steps=tuple(_waive_revocation(steps, policy)),
        measurements=_claims(report, product),
        report_data=report.report_data,
        tcb_status=f"reported TCB {report.tcb(report.reported_tcb, product).describe()}",
    )

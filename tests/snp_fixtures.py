"""A test AMD SEV-SNP PKI and report factory: ARK → ASK → VCEK and ARK → ASVK → VLEK.

Real cryptography built with `cryptography`: RSASSA-PSS SHA-384 salt 48 for the ARK, ASK and
ASVK (as AMD signs), ECDSA P-384 for the VCEK and VLEK, whose certificates carry AMD's KDS
extensions and, like AMD's, serial number 0. Reports are laid out here from the ABI spec
(56860, Table 22), not with the package's parser, and signed by the VCEK or VLEK. A test root is
trusted through `trusted_arks=` (the CLI's ``--insecure-amd-root``), never by default.
"""

from __future__ import annotations

import functools
import hashlib
import struct
import uuid
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID

PSS = padding.PSS(mgf=padding.MGF1(hashes.SHA384()), salt_length=48)
NOT_BEFORE = datetime(2024, 1, 1, tzinfo=timezone.utc)
NOW = datetime(2026, 6, 1, tzinfo=timezone.utc)
NOT_AFTER = datetime(2031, 1, 1, tzinfo=timezone.utc)

REPORT_SIZE = 1184
MEASUREMENT = hashlib.sha384(b"avalon-worker test guest").digest()
HOST_DATA = hashlib.sha256(b"avalon-worker test host data").digest()
ID_KEY_DIGEST = hashlib.sha384(b"test id key").digest()
AUTHOR_KEY_DIGEST = hashlib.sha384(b"test author key").digest()
CHIP_ID = hashlib.sha512(b"test chip").digest()
TCB = {"bootloader": 3, "tee": 0, "snp": 8, "microcode": 115, "fmc": 1}
POLICY_DEFAULT = 0x30000  # SMT allowed, the reserved bit 17 that must be one, ABI 0.0
POLICY_SMT, POLICY_MIGRATE_MA, POLICY_DEBUG, POLICY_SINGLE_SOCKET = 1 << 16, 1 << 18, 1 << 19, 1 << 20
CPUID = {"Milan": (0x19, 0x01, 0x01), "Genoa": (0x19, 0x11, 0x01), "Turin": (0x1A, 0x02, 0x00)}
PRODUCT_NAMES = {"Milan": "Milan-B0", "Genoa": "Genoa", "Turin": "Turin"}

GUIDS = {
    "VCEK": uuid.UUID("63da758d-e664-4564-adc5-f4b93be8accd"),
    "VLEK": uuid.UUID("a8074bc2-a25a-483e-aae6-39c045a0b8a1"),
    "ASK": uuid.UUID("4ab7b379-bbac-4fe4-a02f-05aef327c782"),
    "ARK": uuid.UUID("c0b406a4-a803-4952-9743-3fb6014cd0ae"),
}
AMD_OID = "1.3.6.1.4.1.3704.1"
TCB_OID_ARC = {"bootloader": 1, "tee": 2, "snp": 3, "microcode": 8, "fmc": 9}

# Report offsets (ABI spec Table 22), for tests that alter one field.
OFF_POLICY, OFF_VMPL, OFF_FLAGS, OFF_REPORT_DATA, OFF_MEASUREMENT = 0x008, 0x030, 0x048, 0x050, 0x090
OFF_HOST_DATA, OFF_REPORTED_TCB, OFF_CPUID, OFF_CHIP_ID, OFF_SIGNATURE = 0x0C0, 0x180, 0x188, 0x1A0, 0x2A0


def encode_tcb(tcb: dict[str, int], product: str) -> int:
    """TCB_VERSION as a u64: Milan/Genoa bl,tee,-,-,-,-,snp,ucode; Turin fmc,bl,tee,snp,-,-,-,ucode."""
    if product == "Turin":
        raw = bytes([tcb["fmc"], tcb["bootloader"], tcb["tee"], tcb["snp"], 0, 0, 0, tcb["microcode"]])
    else:
        raw = bytes([tcb["bootloader"], tcb["tee"], 0, 0, 0, 0, tcb["snp"], tcb["microcode"]])
    return int.from_bytes(raw, "little")


def _name(cn: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "Engineering"),
            x509.NameAttribute(NameOID.COUNTRY_NAME, "US"),
            x509.NameAttribute(NameOID.LOCALITY_NAME, "Santa Clara"),
            x509.NameAttribute(NameOID.STATE_OR_PROVINCE_NAME, "CA"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Advanced Micro Devices"),
            x509.NameAttribute(NameOID.COMMON_NAME, cn),
        ]
    )


@functools.lru_cache(maxsize=None)
def rsa_key(label: str) -> rsa.RSAPrivateKey:
    """One RSA key per label for the session (2048 bits: AMD's are 4096, the checks do not care)."""
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@functools.lru_cache(maxsize=None)
def ec_key(label: str) -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP384R1())


def _ca_cert(
    subject: str, issuer: str, key: rsa.RSAPrivateKey, signer: rsa.RSAPrivateKey, serial: int
) -> x509.Certificate:
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(_name(issuer))
        .public_key(key.public_key())
        .serial_number(serial)
        .not_valid_before(NOT_BEFORE)
        .not_valid_after(NOT_AFTER)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None if subject == issuer else 0), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
    )
    return builder.sign(signer, hashes.SHA384(), rsa_padding=PSS)


def _with_serial_zero(cert: x509.Certificate, signer: rsa.RSAPrivateKey) -> x509.Certificate:
    """Re-sign `cert` (built with serial 1) as AMD issues VCEKs: serial 0. `cryptography` will not
    build such a certificate, so the one serial byte is changed and the TBS signed again; the
    signature keeps its length, so no DER length moves."""
    der = cert.public_bytes(serialization.Encoding.DER)
    tbs = cert.tbs_certificate_bytes
    at = tbs.index(b"\x02\x01\x01")
    new_tbs = tbs[:at] + b"\x02\x01\x00" + tbs[at + 3 :]
    signature = signer.sign(new_tbs, PSS, hashes.SHA384())
    assert len(signature) == len(cert.signature)
    out = der.replace(tbs, new_tbs, 1).replace(cert.signature, signature, 1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return x509.load_der_x509_certificate(out)


def leaf_cert(
    kind: str,
    product: str,
    signer_cn: str,
    signer: rsa.RSAPrivateKey,
    key: ec.EllipticCurvePrivateKey,
    *,
    tcb: dict[str, int],
    chip_id: bytes | None,
    product_name: str | None = None,
    not_after: datetime = NOT_AFTER,
    serial_zero: bool = True,
) -> x509.Certificate:
    """A VCEK or VLEK with AMD's KDS extensions (TCB SPLs, product name, hwID for a VCEK)."""
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(f"SEV-{kind}"))
        .issuer_name(_name(signer_cn))
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(NOT_BEFORE)
        .not_valid_after(not_after)
    )
    name = (product_name if product_name is not None else PRODUCT_NAMES[product]).encode("ascii")
    extensions = {f"{AMD_OID}.1": b"\x02\x01\x00", f"{AMD_OID}.2": b"\x16" + bytes([len(name)]) + name}
    for component, arc in TCB_OID_ARC.items():
        if component != "fmc" or product == "Turin":
            extensions[f"{AMD_OID}.3.{arc}"] = b"\x02\x01" + bytes([tcb[component]]) if tcb[component] < 128 else (
                b"\x02\x02\x00" + bytes([tcb[component]])
            )
    if chip_id is not None:
        extensions[f"{AMD_OID}.4"] = chip_id[:8] if product == "Turin" else chip_id
    for oid, value in extensions.items():
        builder = builder.add_extension(x509.UnrecognizedExtension(x509.ObjectIdentifier(oid), value), critical=False)
    cert = builder.sign(signer, hashes.SHA384(), rsa_padding=PSS)
    return _with_serial_zero(cert, signer) if serial_zero else cert


@dataclass(frozen=True)
class SnpTestPki:
    """A test AMD hierarchy for one product, with a VCEK for `CHIP_ID` at `TCB` and a VLEK."""

    product: str
    ark: x509.Certificate
    ask: x509.Certificate
    asvk: x509.Certificate
    vcek: x509.Certificate
    vlek: x509.Certificate
    vcek_key: ec.EllipticCurvePrivateKey
    vlek_key: ec.EllipticCurvePrivateKey

    @property
    def ark_key(self) -> rsa.RSAPrivateKey:
        return rsa_key(f"ark-{self.product}")

    @property
    def ask_key(self) -> rsa.RSAPrivateKey:
        return rsa_key(f"ask-{self.product}")

    def vcek_chain(self) -> tuple[x509.Certificate, ...]:
        return (self.vcek, self.ask, self.ark)

    def vlek_chain(self) -> tuple[x509.Certificate, ...]:
        return (self.vlek, self.asvk, self.ark)


@functools.lru_cache(maxsize=None)
def snp_pki(product: str = "Milan") -> SnpTestPki:
    """The test PKI of `product` ("Milan", "Genoa" or "Turin"), made once per session."""
    ark_k, ask_k, asvk_k = rsa_key(f"ark-{product}"), rsa_key(f"ask-{product}"), rsa_key(f"asvk-{product}")
    ark = _ca_cert(f"ARK-{product}", f"ARK-{product}", ark_k, ark_k, 0x10000)
    ask = _ca_cert(f"SEV-{product}", f"ARK-{product}", ask_k, ark_k, 0x10001)
    asvk = _ca_cert(f"SEV-VLEK-{product}", f"ARK-{product}", asvk_k, ark_k, 0x10101)
    vcek_k, vlek_k = ec_key(f"vcek-{product}"), ec_key(f"vlek-{product}")
    vcek = leaf_cert("VCEK", product, f"SEV-{product}", ask_k, vcek_k, tcb=TCB, chip_id=CHIP_ID)
    vlek = leaf_cert("VLEK", product, f"SEV-VLEK-{product}", asvk_k, vlek_k, tcb=TCB, chip_id=None)
    return SnpTestPki(product, ark, ask, asvk, vcek, vlek, vcek_k, vlek_k)


def make_snp_report(
    report_data: bytes,
    *,
    product: str = "Milan",
    version: int = 3,
    signing_key: str = "VCEK",
    key: ec.EllipticCurvePrivateKey | None = None,
    measurement: bytes = MEASUREMENT,
    host_data: bytes = HOST_DATA,
    id_key_digest: bytes = ID_KEY_DIGEST,
    author_key_digest: bytes = bytes(48),
    policy: int = POLICY_DEFAULT,
    vmpl: int = 0,
    flags: int | None = None,
    tcb: dict[str, int] | None = None,
    chip_id: bytes = CHIP_ID,
    cpuid: tuple[int, int, int] | None = None,
    firmware: tuple[int, int, int] = (1, 55, 21),
) -> bytes:
    """A signed report (ABI spec Table 22) of `version` from the test PKI's VCEK or VLEK.

    `report_data` is padded to 64 bytes; `flags` defaults to the named signing key.
    """
    pki = snp_pki(product)
    tcb_value = encode_tcb(tcb or TCB, product)
    if flags is None:
        flags = (0 if signing_key == "VCEK" else 1) << 2
    if product == "Turin":
        chip_id = chip_id[:8] + bytes(56)
    raw = bytearray(REPORT_SIZE)
    struct.pack_into("<IIQ", raw, 0, version, 1, policy)
    struct.pack_into("<IIQQI", raw, 0x030, vmpl, 1, tcb_value, 0x3, flags)
    raw[0x050:0x090] = report_data.ljust(64, b"\0")
    raw[0x090:0x0C0] = measurement
    raw[0x0C0:0x0E0] = host_data
    raw[0x0E0:0x110] = id_key_digest
    raw[0x110:0x140] = author_key_digest
    raw[0x140:0x160] = hashlib.sha256(b"report id").digest()
    struct.pack_into("<Q", raw, 0x180, tcb_value)
    if version >= 3:
        raw[0x188:0x18B] = bytes(cpuid or CPUID[product])
    raw[0x1A0:0x1E0] = chip_id
    struct.pack_into("<Q", raw, 0x1E0, tcb_value)
    major, minor, build = firmware
    raw[0x1E8:0x1EC] = bytes([build, minor, major, 0])
    raw[0x1EC:0x1F0] = bytes([build, minor, major, 0])
    struct.pack_into("<Q", raw, 0x1F0, tcb_value)
    if version >= 5:
        struct.pack_into("<QQ", raw, 0x1F8, 0x5, 0x7)
    return sign_report(bytes(raw), key or (pki.vcek_key if signing_key == "VCEK" else pki.vlek_key))


def sign_report(raw: bytes, key: ec.EllipticCurvePrivateKey) -> bytes:
    """`raw` with its signature field replaced: ECDSA P-384 SHA-384 over 0x000–0x29F, r and s
    as 72-byte little-endian fields."""
    r, s = decode_dss_signature(key.sign(raw[:0x2A0], ec.ECDSA(hashes.SHA384())))
    signature = r.to_bytes(72, "little") + s.to_bytes(72, "little")
    return raw[:0x2A0] + signature + raw[0x2A0 + len(signature) :]


def _cert_kind(cert: x509.Certificate) -> str:
    cn = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    if cn in ("SEV-VCEK", "SEV-VLEK"):
        return str(cn)[4:]
    return "ARK" if str(cn).startswith("ARK-") else "ASK"


def make_cert_table(certs: Sequence[x509.Certificate | tuple[uuid.UUID, bytes]]) -> bytes:
    """The host's certificate table (GHCB spec): (GUID, offset, length) entries, an all-zero
    entry, then the DER certificates. A certificate's GUID follows from its common name."""
    entries = [
        item if isinstance(item, tuple) else (GUIDS[_cert_kind(item)], item.public_bytes(serialization.Encoding.DER))
        for item in certs
    ]
    header = 24 * (len(entries) + 1)
    table, body = b"", b""
    for guid, data in entries:
        table += guid.bytes_le + struct.pack("<II", header + len(body), len(data))
        body += data
    return table + bytes(24) + body


def make_crl(
    pki: SnpTestPki,
    revoked: Sequence[int] = (),
    *,
    signer: rsa.RSAPrivateKey | None = None,
    last_update: datetime = NOW - timedelta(days=1),
    next_update: datetime = NOW + timedelta(days=30),
) -> x509.CertificateRevocationList:
    """An ARK-signed CRL (RSASSA-PSS, as AMD's KDS serves) listing `revoked` serials."""
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(pki.ark.subject)
        .last_update(last_update)
        .next_update(next_update)
    )
    for serial in revoked:
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(last_update).build()
        )
    return builder.sign(signer or pki.ark_key, hashes.SHA384(), rsa_padding=PSS)


def pem_bundle(*items: x509.Certificate | x509.CertificateRevocationList) -> bytes:
    """A PEM file of certificates and CRLs in the given order."""
    return b"".join(item.public_bytes(serialization.Encoding.PEM) for item in items)

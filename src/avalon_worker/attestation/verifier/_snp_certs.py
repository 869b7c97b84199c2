"""AMD SEV-SNP certificates: the host's certificate table, PEM/DER collateral, VCEK extensions.

**Serial number 0.** Every VCEK and VLEK AMD's Key Distribution Service issues has serial number
0, which RFC 5280 forbids; `cryptography` parses such certificates with a
`CryptographyDeprecationWarning` and has announced that a future release will refuse them. We
do not pin an upper bound on `cryptography` (its security fixes matter more), so:

1. `load_amd_certificate` parses with exactly that warning silenced, in exactly that call;
2. should `cryptography` refuse the certificate, it re-encodes the one-byte serial 0 as 1 (the
   same length, so nothing else moves) and parses that copy to read the fields;
3. `signed_tbs_candidates` gives the verifier the to-be-signed bytes both as carried and with a
   serial of 1 put back to 0, so AMD's signature is always checked over the bytes AMD signed.

A VCEK's serial carries no meaning (they are all 0, and AMD revokes ASKs, not VCEKs), so
accepting the signed serial-0 form of a certificate presented with serial 1 admits nothing AMD
did not sign. `tests/test_attestation_snp.py` fails the day `cryptography` stops parsing serial 0
directly, so the change is seen, not silent.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import re
import struct
import uuid
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from cryptography import x509
from cryptography.utils import CryptographyDeprecationWarning

from ..errors import CollateralError
from ._snp_report import REPORT_SIZE, SnpParseError
from .collateral import CERTIFICATE_CONTENT_ERRORS

# GHCB specification 56421 ("SNP Extended Guest Request"), the certificate table's GUIDs.
GUID_VCEK = uuid.UUID("63da758d-e664-4564-adc5-f4b93be8accd")
GUID_VLEK = uuid.UUID("a8074bc2-a25a-483e-aae6-39c045a0b8a1")
GUID_ASK = uuid.UUID("4ab7b379-bbac-4fe4-a02f-05aef327c782")
GUID_ARK = uuid.UUID("c0b406a4-a803-4952-9743-3fb6014cd0ae")
CERTIFICATE_GUIDS = {GUID_VCEK: "VCEK", GUID_VLEK: "VLEK", GUID_ASK: "ASK", GUID_ARK: "ARK"}

# Bounds for host-supplied tables: configfs-tsm caps a blob at 32 KiB; a certificate is < 4 KiB.
MAX_CERT_TABLE_SIZE = 32 * 1024
MAX_CERT_TABLE_ENTRIES = 32
_ENTRY = struct.Struct("<16sII")

# AMD KDS specification 57230, "VCEK Certificate Extensions".
OID_STRUCT_VERSION = x509.ObjectIdentifier("1.3.6.1.4.1.3704.1.1")
OID_PRODUCT_NAME = x509.ObjectIdentifier("1.3.6.1.4.1.3704.1.2")
OID_HWID = x509.ObjectIdentifier("1.3.6.1.4.1.3704.1.4")
TCB_OIDS = {
    "bootloader": x509.ObjectIdentifier("1.3.6.1.4.1.3704.1.3.1"),
    "tee": x509.ObjectIdentifier("1.3.6.1.4.1.3704.1.3.2"),
    "snp": x509.ObjectIdentifier("1.3.6.1.4.1.3704.1.3.3"),
    "microcode": x509.ObjectIdentifier("1.3.6.1.4.1.3704.1.3.8"),
    "fmc": x509.ObjectIdentifier("1.3.6.1.4.1.3704.1.3.9"),
}

_SERIAL_ZERO = b"\x02\x01\x00"
_SERIAL_ONE = b"\x02\x01\x01"
_PEM_BLOCK = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----(.*?)-----END \1-----", re.S)


@dataclass(frozen=True)
class CertTableEntry:
    """One entry of the host's certificate table: its GUID and the bytes it points at."""

    guid: uuid.UUID
    data: bytes

    @property
    def kind(self) -> str | None:
        """VCEK, VLEK, ASK or ARK; None for a GUID that is not a certificate we know."""
        return CERTIFICATE_GUIDS.get(self.guid)


def parse_cert_table(blob: bytes) -> tuple[CertTableEntry, ...]:
    """Parse a certificate table as the host returns it (configfs-tsm `auxblob`).

    GHCB spec: entries of (16-byte GUID, u32 offset, u32 length), ended by an all-zero entry;
    offsets count from the start of the table. Raises `SnpParseError` on any inconsistency.
    """
    if len(blob) > MAX_CERT_TABLE_SIZE:
        raise SnpParseError(f"the certificate table is {len(blob)} bytes, more than {MAX_CERT_TABLE_SIZE}")
    entries: list[CertTableEntry] = []
    for index in range(MAX_CERT_TABLE_ENTRIES + 1):
        start = index * _ENTRY.size
        if start + _ENTRY.size > len(blob):
            raise SnpParseError("the certificate table ends before its terminating all-zero entry")
        guid, offset, length = _ENTRY.unpack_from(blob, start)
        if guid == bytes(16) and offset == 0 and length == 0:
            return tuple(entries)
        if index == MAX_CERT_TABLE_ENTRIES:
            break
        header_end = (index + 1) * _ENTRY.size
        if offset < header_end or offset + length > len(blob) or length == 0:
            raise SnpParseError(
                f"certificate table entry {index} points outside the table (offset {offset}, length {length})"
            )
        entries.append(CertTableEntry(uuid.UUID(bytes_le=guid), blob[offset : offset + length]))
    raise SnpParseError(f"the certificate table has more than {MAX_CERT_TABLE_ENTRIES} entries")


def _serial_offset(der: bytes, encoding: bytes) -> int | None:
    """Where the serial INTEGER of a certificate's DER starts, if it is exactly `encoding`."""
    pos = _skip_header(der, 0)  # Certificate SEQUENCE
    return _serial_in_tbs(der, _skip_header(der, pos), encoding)


def _skip_header(der: bytes, pos: int | None) -> int | None:
    """The offset of a SEQUENCE's content, or None if `pos` does not start one."""
    if pos is None or pos + 2 > len(der) or der[pos] != 0x30:
        return None
    first = der[pos + 1]
    if first < 0x80:
        return pos + 2
    count = first & 0x7F
    return pos + 2 + count if 1 <= count <= 3 else None


def _serial_in_tbs(der: bytes, pos: int | None, encoding: bytes) -> int | None:
    """Where the serial starts in a TBSCertificate whose content starts at `pos`, if it is `encoding`."""
    if pos is None or pos >= len(der):
        return None
    if der[pos] == 0xA0:  # [0] EXPLICIT version: A0 03 02 01 02
        if pos + 1 >= len(der) or der[pos + 1] >= 0x80:
            return None
        pos += 2 + der[pos + 1]
    return pos if der[pos : pos + 3] == encoding else None


def _with_serial(der: bytes, offset: int, encoding: bytes) -> bytes:
    return der[:offset] + encoding + der[offset + 3 :]


@contextlib.contextmanager
def _serial_zero_accepted() -> Iterator[None]:
    # Only the serial-number deprecation, only inside this block: every other warning still shows.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*serial number.*", category=CryptographyDeprecationWarning)
        yield


def load_amd_certificate(
    der: bytes, *, parse: Callable[[bytes], x509.Certificate] = x509.load_der_x509_certificate
) -> x509.Certificate:
    """Parse one DER certificate, accepting AMD's serial number 0 (see the module docstring).

    Raises `ValueError` for anything that is not a certificate. `parse` is the DER parser, a
    parameter so that a test can stand in a future `cryptography` that refuses serial 0.
    """
    with _serial_zero_accepted():
        try:
            return parse(der)
        except x509.InvalidVersion as exc:
            raise ValueError(f"not an X.509 certificate: {exc}") from None
        except ValueError:
            offset = _serial_offset(der, _SERIAL_ZERO)
            if offset is None:
                raise
    return parse(_with_serial(der, offset, _SERIAL_ONE))


def serial_number(cert: x509.Certificate) -> int:
    """The certificate's serial; `cryptography` warns again on reading a serial of 0."""
    with _serial_zero_accepted():
        return cert.serial_number


def signed_tbs_candidates(cert: x509.Certificate) -> tuple[bytes, ...]:
    """The to-be-signed bytes to check a signature over: as carried, and, for a certificate
    whose serial is 1, with the serial put back to AMD's 0 (see the module docstring)."""
    tbs = cert.tbs_certificate_bytes
    pos = _serial_in_tbs(tbs, _skip_header(tbs, 0), _SERIAL_ONE)
    return (tbs,) if pos is None else (tbs, _with_serial(tbs, pos, _SERIAL_ZERO))


def _pem_or_der_blocks(data: bytes) -> list[tuple[str, bytes]]:
    """(label, DER) for each PEM block, or the whole input as one unlabelled DER object."""
    blocks = _PEM_BLOCK.findall(data)
    if not blocks:
        if b"-----BEGIN" in data:
            raise CollateralError("the SNP collateral has a PEM block without its matching END line")
        return [("", data)]
    out = []
    for label, body in blocks:
        try:
            out.append((label.decode("ascii"), base64.b64decode(b"".join(body.split()), validate=True)))
        except (binascii.Error, ValueError) as exc:
            raise CollateralError(f"a PEM {label.decode('ascii', 'replace')} block is not base64") from exc
    return out


def load_snp_collateral(
    pem: bytes,
) -> tuple[tuple[x509.Certificate, ...], tuple[x509.CertificateRevocationList, ...]]:
    """A PEM (or single DER) bundle: VCEK or VLEK, ASK/ASVK, ARK in any order, CRLs optional.

    Raises `CollateralError` (one line saying which block) for anything unreadable.
    """
    if not isinstance(pem, (bytes, bytearray)) or not pem.strip():
        raise CollateralError("the SNP collateral is empty: give the VCEK or VLEK and its chain, PEM or DER")
    certs: list[x509.Certificate] = []
    crls: list[x509.CertificateRevocationList] = []
    for index, (label, der) in enumerate(_pem_or_der_blocks(bytes(pem))):
        where = f"block {index + 1}" + (f" ({label})" if label else "")
        if label in ("CERTIFICATE", "", "X509 CRL"):
            try:
                if label == "X509 CRL":
                    crls.append(x509.load_der_x509_crl(der))
                    continue
                certs.append(load_amd_certificate(der))
                continue
            except CERTIFICATE_CONTENT_ERRORS:
                if label == "":
                    try:
                        crls.append(x509.load_der_x509_crl(der))
                        continue
                    except CERTIFICATE_CONTENT_ERRORS:
                        pass
                raise CollateralError(f"SNP collateral {where} is not a readable certificate or CRL") from None
        raise CollateralError(f"SNP collateral {where} is a {label}, not a CERTIFICATE or X509 CRL")
    return tuple(certs), tuple(crls)


def certificates_from_table(entries: tuple[CertTableEntry, ...]) -> tuple[x509.Certificate, ...]:
    """The certificates of a parsed table, in its order; unknown GUIDs (e.g. AMD's extra
    platform information) are skipped. `SnpParseError` if a certificate entry is unreadable."""
    out = []
    for entry in entries:
        if entry.kind is None:
            continue
        try:
            out.append(load_amd_certificate(entry.data))
        except ValueError:
            raise SnpParseError(f"the certificate table's {entry.kind} entry is not a readable certificate") from None
    return tuple(out)


def split_snp_evidence(raw: bytes) -> tuple[bytes, tuple[x509.Certificate, ...]]:
    """The 1184-byte report and the certificates of the table that follows it (empty if none).

    Raises `SnpParseError` if the evidence is shorter than a report or its table is malformed.
    """
    if len(raw) < REPORT_SIZE:
        raise SnpParseError(f"SEV-SNP evidence is {len(raw)} bytes, shorter than a {REPORT_SIZE}-byte report")
    report, table = bytes(raw[:REPORT_SIZE]), bytes(raw[REPORT_SIZE:])
    if not table:
        return report, ()
    return report, certificates_from_table(parse_cert_table(table))


@dataclass(frozen=True)
class Endorsement:
    """What a VCEK or VLEK certificate says about the platform (AMD KDS extensions)."""

    product_name: str | None
    tcb: dict[str, int]  # component → SPL, only the components present
    hwid: bytes | None  # VCEK only: the chip's CHIP_ID (64 bytes; 8 on Turin)


def _extension_value(cert: x509.Certificate, oid: x509.ObjectIdentifier) -> bytes | None:
    try:
        value = cert.extensions.get_extension_for_oid(oid).value
    except x509.ExtensionNotFound:
        return None
    return value.value if isinstance(value, x509.UnrecognizedExtension) else None


def _der_small_integer(raw: bytes, what: str) -> int:
    # Each SPL is a DER INTEGER of one or two content bytes (0–255 needs a leading zero above 127).
    if len(raw) < 3 or raw[0] != 0x02 or raw[1] != len(raw) - 2 or raw[1] > 2:
        raise ValueError(f"the certificate's {what} extension is not a small INTEGER")
    value = int.from_bytes(raw[2:], "big", signed=True)
    if not 0 <= value <= 255:
        raise ValueError(f"the certificate's {what} extension is {value}, not an SPL from 0 to 255")
    return value


def _der_ia5(raw: bytes) -> str:
    if len(raw) < 2 or raw[0] != 0x16 or raw[1] != len(raw) - 2 or raw[1] >= 0x80:
        raise ValueError("the certificate's productName extension is not a short IA5String")
    return raw[2:].decode("ascii")


def read_endorsement(cert: x509.Certificate) -> Endorsement:
    """Read the KDS extensions of a VCEK or VLEK; `ValueError` if one is malformed."""
    tcb = {}
    for name, oid in TCB_OIDS.items():
        raw = _extension_value(cert, oid)
        if raw is not None:
            tcb[name] = _der_small_integer(raw, f"{name} SPL")
    product = _extension_value(cert, OID_PRODUCT_NAME)
    return Endorsement(
        product_name=_der_ia5(product) if product is not None else None,
        tcb=tcb,
        hwid=_extension_value(cert, OID_HWID),
    )

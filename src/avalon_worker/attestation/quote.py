"""SGX quote parsing: pure functions over bytes, no I/O and no verification.

Layouts follow Intel's DCAP headers (`sgx_quote_3.h`, `sgx_quote_4.h`, `sgx_quote_5.h`) and QVL
(`QuoteStructures.cpp`): integers are little-endian; ECDSA signatures are raw r‖s and public keys
raw x‖y (32 + 32 bytes, each big-endian). Every malformed input raises `QuoteParseError` naming
the field that did not fit; nothing here raises `IndexError` or `struct.error`.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass, field

from .errors import QuoteParseError, UnsupportedQuoteError

HEADER_SIZE = 48
REPORT_BODY_SIZE = 384
BODY_DESCRIPTOR_SIZE = 6  # v5: u16 body type + u32 body size
ECDSA_SIG_SIZE = 64
ECDSA_KEY_SIZE = 64

# Generous: Gramine caps quotes at 8 KiB (QUOTE_MAX_SIZE); real DCAP quotes are ~4.6 KiB.
MAX_QUOTE_SIZE = 64 * 1024

ATT_KEY_TYPE_ECDSA_P256 = 2
ATT_KEY_TYPE_ECDSA_P384 = 3
TEE_TYPE_SGX = 0x00000000
TEE_TYPE_TDX = 0x00000081
BODY_TYPE_SGX = 1
CERT_TYPE_PCK_CHAIN = 5
CERT_TYPE_QE_REPORT = 6
INTEL_QE_VENDOR_ID = bytes.fromhex("939a7233f79c4ca9940a0db3957f0607")

ATTRIBUTE_INIT = 0x01
ATTRIBUTE_DEBUG = 0x02
ATTRIBUTE_MODE64BIT = 0x04
ATTRIBUTE_PROVISIONKEY = 0x10

_PEM_CERT = re.compile(rb"-----BEGIN CERTIFICATE-----\r?\n.+?-----END CERTIFICATE-----", re.DOTALL)


class _Reader:
    """Bounds-checked cursor: every read names its field so a short input says what was cut."""

    def __init__(self, data: bytes, base: int = 0) -> None:
        self._data = data
        self._pos = 0
        self._base = base

    @property
    def offset(self) -> int:
        return self._base + self._pos

    @property
    def remaining(self) -> int:
        return len(self._data) - self._pos

    def take(self, n: int, what: str) -> bytes:
        if n > self.remaining:
            raise QuoteParseError(
                f"quote truncated: {what} needs {n} bytes at offset {self.offset}, only {self.remaining} left"
            )
        chunk = self._data[self._pos : self._pos + n]
        self._pos += n
        return chunk

    def u16(self, what: str) -> int:
        return int(struct.unpack("<H", self.take(2, what))[0])

    def u32(self, what: str) -> int:
        return int(struct.unpack("<I", self.take(4, what))[0])

    def end(self, what: str) -> None:
        if self.remaining:
            raise QuoteParseError(
                f"{self.remaining} unexpected trailing bytes after {what} at offset {self.offset}"
            )


@dataclass(frozen=True)
class ReportBody:
    """The 384-byte SGX report body (`sgx_report_body_t`), as in every quote and QE report."""

    cpu_svn: bytes
    misc_select: int
    isv_ext_prod_id: bytes
    attributes: bytes  # 16 bytes: FLAGS (u64 LE) ‖ XFRM (u64 LE)
    mrenclave: bytes
    mrsigner: bytes
    config_id: bytes
    isv_prod_id: int
    isv_svn: int
    config_svn: int
    isv_family_id: bytes
    report_data: bytes
    raw: bytes = field(repr=False)

    @classmethod
    def parse(cls, data: bytes) -> ReportBody:
        """Parse exactly 384 bytes."""
        if len(data) != REPORT_BODY_SIZE:
            raise QuoteParseError(f"report body must be {REPORT_BODY_SIZE} bytes, got {len(data)}")
        (misc_select,) = struct.unpack_from("<I", data, 16)
        isv_prod_id, isv_svn, config_svn = struct.unpack_from("<HHH", data, 256)
        return cls(
            cpu_svn=data[0:16],
            misc_select=misc_select,
            isv_ext_prod_id=data[32:48],
            attributes=data[48:64],
            mrenclave=data[64:96],
            mrsigner=data[128:160],
            config_id=data[192:256],
            isv_prod_id=isv_prod_id,
            isv_svn=isv_svn,
            config_svn=config_svn,
            isv_family_id=data[304:320],
            report_data=data[320:384],
            raw=data,
        )

    @property
    def flags(self) -> int:
        """ATTRIBUTES.FLAGS as an integer (INIT 0x1, DEBUG 0x2, MODE64BIT 0x4, PROVISIONKEY 0x10)."""
        return int.from_bytes(self.attributes[:8], "little")

    @property
    def xfrm(self) -> int:
        return int.from_bytes(self.attributes[8:], "little")

    @property
    def debug(self) -> bool:
        """True for a debug enclave, whose memory the host can read: never trust one."""
        return bool(self.flags & ATTRIBUTE_DEBUG)


@dataclass(frozen=True)
class DcapHeader:
    """The 48-byte header of an ECDSA (DCAP) quote, v3 to v5."""

    version: int
    att_key_type: int
    tee_type: int  # v3: att_key_data_0, which QVL reads as tee_type too
    qe_svn: int
    pce_svn: int
    qe_vendor_id: bytes
    user_data: bytes
    raw: bytes = field(repr=False)


@dataclass(frozen=True)
class EpidHeader:
    """The 48-byte header of an EPID quote (v1/v2); only Intel's retired IAS could verify it."""

    version: int
    sign_type: int  # 0 unlinkable, 1 linkable
    epid_group_id: bytes
    qe_svn: int
    pce_svn: int
    xeid: int
    basename: bytes
    raw: bytes = field(repr=False)


@dataclass(frozen=True)
class CertificationData:
    """`u16 type ‖ u32 size ‖ data`; type 5 is the PEM PCK chain (leaf first)."""

    cert_type: int
    data: bytes = field(repr=False)

    def pem_certificates(self) -> list[bytes]:
        """The PEM blocks of a type-5 chain, in quote order (leaf, intermediate CA, root)."""
        if self.cert_type != CERT_TYPE_PCK_CHAIN:
            return []
        return _PEM_CERT.findall(self.data)


@dataclass(frozen=True)
class EcdsaSignatureData:
    """The ECDSA quote signature data, flattened (v4/v5 nest the QE part in type-6 cert data)."""

    signature: bytes  # by the attestation key over the signed span
    attestation_key: bytes
    qe_report: ReportBody
    qe_report_signature: bytes  # by the PCK key over the raw QE report body
    qe_auth_data: bytes
    certification_data: CertificationData


@dataclass(frozen=True)
class DcapQuote:
    """An ECDSA-P256 (DCAP) SGX quote, version 3, 4 or 5."""

    header: DcapHeader
    body: ReportBody
    body_type: int | None  # v5 body descriptor; None before v5
    signed_data: bytes = field(repr=False)  # header ‖ [v5 descriptor] ‖ body
    signature_data: EcdsaSignatureData = field(repr=False)
    raw: bytes = field(repr=False)

    @property
    def version(self) -> int:
        return self.header.version

    @property
    def kind(self) -> str:
        return "dcap"


@dataclass(frozen=True)
class EpidQuote:
    """An EPID SGX quote (v1/v2), possibly without its signature (IAS's isvEnclaveQuoteBody)."""

    header: EpidHeader
    body: ReportBody
    signature: bytes = field(repr=False)
    raw: bytes = field(repr=False)

    @property
    def version(self) -> int:
        return self.header.version

    @property
    def kind(self) -> str:
        return "epid"


Quote = DcapQuote | EpidQuote


def parse_quote(data: bytes, *, max_size: int = MAX_QUOTE_SIZE) -> Quote:
    """Parse an SGX quote: DCAP v3/v4/v5 (ECDSA-P256, SGX body) or EPID v1/v2.

    Raises `QuoteParseError` for anything malformed and `UnsupportedQuoteError` (a subclass) for
    well-formed quotes of another kind (TDX, ECDSA-P384). Inputs over `max_size` are refused
    before parsing.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise QuoteParseError(f"a quote is bytes, not {type(data).__name__}")
    data = bytes(data)
    if not data:
        raise QuoteParseError("the quote is empty: the worker runs without SGX attestation")
    if len(data) > max_size:
        raise QuoteParseError(f"quote of {len(data)} bytes exceeds the {max_size}-byte limit")
    if len(data) < 2:
        raise QuoteParseError("quote truncated: version needs 2 bytes at offset 0, only 1 left")
    (version,) = struct.unpack_from("<H", data, 0)
    if version in (1, 2):
        return _parse_epid(data)
    if version in (3, 4, 5):
        return _parse_dcap(data)
    raise QuoteParseError(f"unknown quote version {version} (expected EPID 1/2 or DCAP 3/4/5)")


def _parse_epid(data: bytes) -> EpidQuote:
    r = _Reader(data)
    raw_header = r.take(HEADER_SIZE, "header")
    version, sign_type = struct.unpack_from("<HH", raw_header, 0)
    qe_svn, pce_svn, xeid = struct.unpack_from("<HHI", raw_header, 8)
    header = EpidHeader(
        version=version,
        sign_type=sign_type,
        epid_group_id=raw_header[4:8],
        qe_svn=qe_svn,
        pce_svn=pce_svn,
        xeid=xeid,
        basename=raw_header[16:48],
        raw=raw_header,
    )
    body = ReportBody.parse(r.take(REPORT_BODY_SIZE, "report body"))
    signature = b""
    # IAS returned only header ‖ body (432 B) as isvEnclaveQuoteBody; accept that form too.
    if r.remaining:
        sig_len = r.u32("signature length")
        signature = r.take(sig_len, "EPID signature")
        r.end("EPID signature")
    return EpidQuote(header=header, body=body, signature=signature, raw=data)


def _parse_dcap(data: bytes) -> DcapQuote:
    r = _Reader(data)
    raw_header = r.take(HEADER_SIZE, "header")
    version, att_key_type, tee_type, qe_svn, pce_svn = struct.unpack_from("<HHIHH", raw_header, 0)
    header = DcapHeader(
        version=version,
        att_key_type=att_key_type,
        tee_type=tee_type,
        qe_svn=qe_svn,
        pce_svn=pce_svn,
        qe_vendor_id=raw_header[12:28],
        user_data=raw_header[28:48],
        raw=raw_header,
    )
    if att_key_type == ATT_KEY_TYPE_ECDSA_P384:
        raise UnsupportedQuoteError("ECDSA-P384 attestation keys are not supported (only P-256)")
    if att_key_type != ATT_KEY_TYPE_ECDSA_P256:
        raise QuoteParseError(f"unknown attestation key type {att_key_type} in a v{version} quote")

    body_type: int | None = None
    if version == 5:
        body_type = r.u16("body type")
        body_size = r.u32("body size")
        if body_type != BODY_TYPE_SGX:
            if body_type in (2, 3, 4):
                raise UnsupportedQuoteError(
                    f"v5 quote with a TDX body (type {body_type}); only SGX is supported"
                )
            raise QuoteParseError(f"unknown v5 body type {body_type}")
        if body_size != REPORT_BODY_SIZE:
            raise QuoteParseError(f"v5 SGX body size is {body_size}, expected {REPORT_BODY_SIZE}")
    elif tee_type == TEE_TYPE_TDX:
        raise UnsupportedQuoteError(f"v{version} TDX quote; only SGX quotes are supported")
    elif tee_type != TEE_TYPE_SGX:
        raise QuoteParseError(f"unknown TEE type {tee_type:#x} in a v{version} quote")

    body = ReportBody.parse(r.take(REPORT_BODY_SIZE, "report body"))
    signed_len = r.offset
    sig_len = r.u32("signature data length")
    # QVL: the signature data must fill the rest of the quote exactly (Quote.cpp).
    if sig_len != r.remaining:
        raise QuoteParseError(f"signature data length says {sig_len} bytes but {r.remaining} follow it")
    sig = _Reader(r.take(sig_len, "signature data"), base=r.offset - sig_len)
    signature_data = _parse_ecdsa_sig_v3(sig) if version == 3 else _parse_ecdsa_sig_v4(sig)
    return DcapQuote(
        header=header,
        body=body,
        body_type=body_type,
        signed_data=data[:signed_len],
        signature_data=signature_data,
        raw=data,
    )


def _parse_cert_data(r: _Reader, what: str) -> CertificationData:
    cert_type = r.u16(f"{what} type")
    size = r.u32(f"{what} size")
    return CertificationData(cert_type=cert_type, data=r.take(size, what))


def _parse_qe_part(r: _Reader) -> tuple[ReportBody, bytes, bytes, CertificationData]:
    qe_report = ReportBody.parse(r.take(REPORT_BODY_SIZE, "QE report"))
    qe_report_signature = r.take(ECDSA_SIG_SIZE, "QE report signature")
    auth_len = r.u16("QE authentication data size")
    qe_auth_data = r.take(auth_len, "QE authentication data")
    cert = _parse_cert_data(r, "certification data")
    return qe_report, qe_report_signature, qe_auth_data, cert


def _parse_ecdsa_sig_v3(r: _Reader) -> EcdsaSignatureData:
    signature = r.take(ECDSA_SIG_SIZE, "quote signature")
    attestation_key = r.take(ECDSA_KEY_SIZE, "attestation key")
    qe_report, qe_sig, auth, cert = _parse_qe_part(r)
    r.end("certification data")
    return EcdsaSignatureData(signature, attestation_key, qe_report, qe_sig, auth, cert)


def _parse_ecdsa_sig_v4(r: _Reader) -> EcdsaSignatureData:
    signature = r.take(ECDSA_SIG_SIZE, "quote signature")
    attestation_key = r.take(ECDSA_KEY_SIZE, "attestation key")
    outer = _parse_cert_data(r, "QE report certification data")
    r.end("QE report certification data")
    # sgx_quote_4.h: v4/v5 wrap the QE report, its signature, the auth data and the PCK chain
    # in certification data of type 6 (QE_REPORT_CERTIFICATION_DATA).
    if outer.cert_type != CERT_TYPE_QE_REPORT:
        raise QuoteParseError(
            f"v4/v5 quote certification data has type {outer.cert_type}, expected {CERT_TYPE_QE_REPORT}"
        )
    inner = _Reader(outer.data, base=r.offset - len(outer.data))
    qe_report, qe_sig, auth, cert = _parse_qe_part(inner)
    inner.end("nested certification data")
    return EcdsaSignatureData(signature, attestation_key, qe_report, qe_sig, auth, cert)

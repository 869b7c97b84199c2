"""SGX and TDX quote parsing: pure functions over bytes, no I/O and no verification.

Layouts follow Intel's DCAP headers (`sgx_quote_3.h`, `sgx_quote_4.h`, `sgx_quote_5.h`) and QVL
(`QuoteStructures.cpp`): integers are little-endian; ECDSA signatures are raw r‖s and public keys
raw x‖y (32 + 32 bytes, each big-endian). One DCAP frame carries two kinds of body: an SGX
enclave report (v3, v4 and v5 body type 1) or a TD report (v4 with TEE type 0x81, v5 body types
2, 3 and 4: TD 1.0, TD 1.5 and TD 1.5 with its extension fields). Every malformed input raises
`QuoteParseError` naming the field that did not fit; nothing here raises `IndexError` or
`struct.error`.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass, field

from ..errors import QuoteParseError, UnsupportedQuoteError

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
BODY_TYPE_TD10 = 2
BODY_TYPE_TD15 = 3
BODY_TYPE_TD15_EX = 4
TD_REPORT10_SIZE = 584
TD_REPORT15_SIZE = 648
TD_REPORT15_EX_SIZE = 885
_TD_BODY_SIZES = {BODY_TYPE_TD10: TD_REPORT10_SIZE, BODY_TYPE_TD15: TD_REPORT15_SIZE, BODY_TYPE_TD15_EX: TD_REPORT15_EX_SIZE}
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
class TdReportExtension:
    """The fields TD 1.5ex (v5 body type 4, `sgx_report2_body_v1_5_ex_t`) adds after TD 1.5."""

    vm_id: int
    td_id: bytes
    dev_info: bytes
    init_service_td_hash: bytes
    init_service_td_attributes: bytes
    init_cpu_svn: bytes
    init_tee_tcb_svn: bytes
    init_tee_fmspc: bytes
    cur_service_td_hash: bytes
    cur_service_td_attributes: bytes

    @classmethod
    def parse(cls, data: bytes) -> TdReportExtension:
        """Parse the 237 bytes after a TD 1.5 report."""
        fields: list[bytes] = []
        pos = 1
        for size in (32, 48, 48, 8, 16, 16, 12, 48, 8):
            fields.append(data[pos : pos + size])
            pos += size
        return cls(data[0], *fields)


@dataclass(frozen=True)
class TdReport:
    """A TD report body (`sgx_report2_body_t` and its TD 1.5 successors), as in TDX quotes.

    Offsets (TD 1.0, 584 bytes): TEE_TCB_SVN 0, MRSEAM 16, MRSIGNERSEAM 64, SEAMATTRIBUTES 112,
    TDATTRIBUTES 120, XFAM 128, MRTD 136, MRCONFIGID 184, MROWNER 232, MROWNERCONFIG 280,
    RTMR0-3 328/376/424/472, REPORTDATA 520. TD 1.5 (648) appends TEE_TCB_SVN2 and MRSERVICETD;
    TD 1.5ex (885) appends the fields of `TdReportExtension`.
    """

    tee_tcb_svn: bytes
    mr_seam: bytes
    mr_signer_seam: bytes
    seam_attributes: bytes
    td_attributes: bytes
    xfam: bytes
    mr_td: bytes
    mr_config_id: bytes
    mr_owner: bytes
    mr_owner_config: bytes
    rtmrs: tuple[bytes, bytes, bytes, bytes]
    report_data: bytes
    tee_tcb_svn2: bytes | None  # TD 1.5 and later
    mr_service_td: bytes | None  # TD 1.5 and later
    extension: TdReportExtension | None  # TD 1.5ex
    raw: bytes = field(repr=False)

    @classmethod
    def parse(cls, data: bytes) -> TdReport:
        """Parse a 584-, 648- or 885-byte TD report."""
        if len(data) not in (TD_REPORT10_SIZE, TD_REPORT15_SIZE, TD_REPORT15_EX_SIZE):
            raise QuoteParseError(
                f"a TD report is {TD_REPORT10_SIZE}, {TD_REPORT15_SIZE} or {TD_REPORT15_EX_SIZE} bytes, got {len(data)}"
            )
        later = len(data) > TD_REPORT10_SIZE
        return cls(
            tee_tcb_svn=data[0:16],
            mr_seam=data[16:64],
            mr_signer_seam=data[64:112],
            seam_attributes=data[112:120],
            td_attributes=data[120:128],
            xfam=data[128:136],
            mr_td=data[136:184],
            mr_config_id=data[184:232],
            mr_owner=data[232:280],
            mr_owner_config=data[280:328],
            rtmrs=(data[328:376], data[376:424], data[424:472], data[472:520]),
            report_data=data[520:584],
            tee_tcb_svn2=data[584:600] if later else None,
            mr_service_td=data[600:648] if later else None,
            extension=TdReportExtension.parse(data[648:]) if len(data) == TD_REPORT15_EX_SIZE else None,
            raw=data,
        )

    @property
    def attributes(self) -> int:
        """TDATTRIBUTES as an integer (bit 0 DEBUG, bit 28 SEPT_VE_DISABLE, …)."""
        return int.from_bytes(self.td_attributes, "little")

    @property
    def debug(self) -> bool:
        """True for a TD in debug mode, whose memory and CPU state the host can read."""
        return bool(self.attributes & 1)


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
        """The PEM blocks of a type-5 chain, in quote order (leaf, intermediate CA, root).

        Raises `ValueError` if the data holds anything else (white space between the blocks and
        NUL padding after them aside): a damaged block is not skipped and the chain read without it.
        """
        if self.cert_type != CERT_TYPE_PCK_CHAIN:
            return []
        if _PEM_CERT.sub(b"", self.data).rstrip(b"\x00").strip():
            raise ValueError("the quote's certification data holds something other than PEM certificates")
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


class _Dcap:
    """What every DCAP quote says of itself, whatever its body."""

    header: DcapHeader

    @property
    def version(self) -> int:
        return self.header.version

    @property
    def kind(self) -> str:
        return "dcap"


@dataclass(frozen=True)
class DcapQuote(_Dcap):
    """An ECDSA-P256 (DCAP) SGX quote, version 3, 4 or 5."""

    header: DcapHeader
    body: ReportBody
    body_type: int | None  # v5 body descriptor; None before v5
    signed_data: bytes = field(repr=False)  # header ‖ [v5 descriptor] ‖ body
    signature_data: EcdsaSignatureData = field(repr=False)
    raw: bytes = field(repr=False)


@dataclass(frozen=True)
class TdxQuote(_Dcap):
    """An ECDSA-P256 (DCAP) TDX quote, version 4 or 5, over a TD report."""

    header: DcapHeader
    body: TdReport
    body_type: int  # BODY_TYPE_TD10 for v4; the v5 body descriptor's type otherwise
    signed_data: bytes = field(repr=False)  # header ‖ [v5 descriptor] ‖ body
    signature_data: EcdsaSignatureData = field(repr=False)
    raw: bytes = field(repr=False)


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


Quote = DcapQuote | EpidQuote | TdxQuote


def parse_quote(data: bytes, *, max_size: int = MAX_QUOTE_SIZE) -> Quote:
    """Parse a quote: DCAP v3/v4/v5 (ECDSA-P256, SGX or TD body) or EPID v1/v2.

    Raises `QuoteParseError` for anything malformed and `UnsupportedQuoteError` (a subclass) for
    well-formed quotes of a kind this package does not verify (ECDSA-P384 attestation keys).
    Inputs over `max_size` are refused before parsing.
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


def _parse_dcap(data: bytes) -> DcapQuote | TdxQuote:
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
    if tee_type not in (TEE_TYPE_SGX, TEE_TYPE_TDX):
        raise QuoteParseError(f"unknown TEE type {tee_type:#x} in a v{version} quote")
    if version == 3 and tee_type == TEE_TYPE_TDX:
        raise QuoteParseError("a v3 quote cannot carry a TD report (TDX quotes are v4 or v5)")

    body_type = _body_type(r, version, tee_type)
    size = REPORT_BODY_SIZE if body_type == BODY_TYPE_SGX else _TD_BODY_SIZES[body_type]
    raw_body = r.take(size, "report body" if body_type == BODY_TYPE_SGX else "TD report")
    signed_len = r.offset
    sig_len = r.u32("signature data length")
    padding = r.remaining - sig_len
    # QVL: the signature data must fill the rest of the quote exactly (Quote.cpp). A TDX quote
    # may still arrive in the guest's zero-filled quote buffer (GCP's and dcap-qvl's samples
    # do): zeros after the signature data are that buffer, anything else is refused.
    if padding < 0 or (padding and (body_type == BODY_TYPE_SGX or any(data[len(data) - padding :]))):
        raise QuoteParseError(f"signature data length says {sig_len} bytes but {r.remaining} follow it")
    sig = _Reader(r.take(sig_len, "signature data"), base=r.offset - sig_len)
    signature_data = _parse_ecdsa_sig_v3(sig) if version == 3 else _parse_ecdsa_sig_v4(sig)
    if body_type == BODY_TYPE_SGX:
        return DcapQuote(
            header=header,
            body=ReportBody.parse(raw_body),
            body_type=body_type if version == 5 else None,
            signed_data=data[:signed_len],
            signature_data=signature_data,
            raw=data,
        )
    return TdxQuote(
        header=header,
        body=TdReport.parse(raw_body),
        body_type=body_type,
        signed_data=data[:signed_len],
        signature_data=signature_data,
        raw=data,
    )


def _body_type(r: _Reader, version: int, tee_type: int) -> int:
    """The body's type: from the v5 descriptor (checked against the TEE type), else from the header."""
    if version != 5:
        return BODY_TYPE_SGX if tee_type == TEE_TYPE_SGX else BODY_TYPE_TD10
    body_type = r.u16("body type")
    body_size = r.u32("body size")
    if body_type == BODY_TYPE_SGX:
        expected_size, expected_tee = REPORT_BODY_SIZE, TEE_TYPE_SGX
    elif body_type in _TD_BODY_SIZES:
        expected_size, expected_tee = _TD_BODY_SIZES[body_type], TEE_TYPE_TDX
    else:
        raise QuoteParseError(f"unknown v5 body type {body_type}")
    if tee_type != expected_tee:
        raise QuoteParseError(f"v5 body type {body_type} does not fit TEE type {tee_type:#x}")
    if body_size != expected_size:
        raise QuoteParseError(f"v5 body type {body_type} must be {expected_size} bytes, the quote says {body_size}")
    return body_type


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

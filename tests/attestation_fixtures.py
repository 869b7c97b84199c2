"""A test SGX PKI and quote factory: root → PCK CA → PCK leaf (→ QE report) → attestation key.

Everything is real P-256 crypto built with `cryptography`; the DER of Intel's SGX extension is
written by the small encoder below (independent of the package's reader). Layouts follow
GRAMINE.md §5: header 48 B, report body 384 B, ECDSA signature data v3 or v4/v5 (type 6).

TDX quotes (v4, v5 with TD 1.0/1.5/1.5ex bodies, CONFIDENTIAL_VMS.md) are made the same way with
a TD report written field by field here; `make_tdx_collateral` signs TDX TCB info v3 and a
TD_QE identity. `make_tdx_quote` is the one-call form a stand-in for the kernel's configfs-tsm
can use: its quotes verify under `shared_pki().root` (given as `--insecure-root-ca`).
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID

INTEL_QE_VENDOR_ID = bytes.fromhex("939a7233f79c4ca9940a0db3957f0607")
INTEL_QE_MRSIGNER = bytes.fromhex("8c4f5775d796503e96137f77c68a829a0056ac8ded70140b081b094490c57bff")
SGX_OID = "1.2.840.113741.1.13.1"

MRENCLAVE = hashlib.sha256(b"avalon-worker test enclave").digest()
MRSIGNER = hashlib.sha256(b"avalon-worker test signer").digest()
ISV_PROD_ID = 7
ISV_SVN = 3
FLAGS_PRODUCTION = 0x05  # INIT | MODE64BIT
FLAGS_DEBUG = 0x07  # INIT | DEBUG | MODE64BIT
FMSPC = bytes.fromhex("00906ED50000")
PCE_ID = bytes(2)
TCB_COMPONENTS = (5, 5, 2, 4, 1, 128, 14, 0, 0, 0, 0, 0, 0, 0, 0, 0)
PCE_SVN = 13
QE_ISV_SVN = 8

# TDX: a TD on TDX module TDX_01 at ISVSVN 5, booting the test firmware, kernel and command line.
TD_QE_ISV_SVN = 4
TD_QE_ISV_PROD_ID = 2
TDX_MODULE_ISV_SVN = 5
TEE_TCB_SVN = bytes([TDX_MODULE_ISV_SVN, 1, 2]) + bytes(13)
TDX_TCB_COMPONENTS = (5, 0, 2) + (0,) * 13
MRTD = hashlib.sha384(b"avalon-worker test TD firmware").digest()
RTMRS = (
    hashlib.sha384(b"test RTMR0: firmware configuration").digest(),
    hashlib.sha384(b"test RTMR1: kernel").digest(),
    hashlib.sha384(b"test RTMR2: command line and initrd").digest(),
    bytes(48),
)
TD_ATTR_DEBUG = 1
TD_ATTR_SEPT_VE_DISABLE = 1 << 28
XFAM = 0x61AE7
TDX_MODULE_MRSIGNER = bytes(48)  # what Intel's TDX TCB info lists for its own modules

# Offsets in a v3 (and v4 SGX) quote, GRAMINE.md §5.3/§5.4.
OFF_FLAGS = 48 + 48
OFF_MRENCLAVE = 48 + 64
OFF_MRSIGNER = 48 + 128
OFF_ISVSVN = 48 + 258
OFF_REPORT_DATA = 48 + 320
OFF_SIG_DATA = 436
OFF_ISV_SIGNATURE = OFF_SIG_DATA
OFF_ATTESTATION_KEY = OFF_SIG_DATA + 64
OFF_QE_REPORT = OFF_SIG_DATA + 128
OFF_QE_REPORT_DATA = OFF_QE_REPORT + 320
OFF_QE_SIGNATURE = OFF_SIG_DATA + 512
OFF_QE_AUTH = OFF_SIG_DATA + 578
OFF_CERT_DATA_V3 = OFF_QE_AUTH + 32  # with 32 B of auth data


# -- a minimal DER encoder (test side only) -----------------------------------------------------


def _der_len(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(raw)]) + raw


def tlv(tag: int, content: bytes) -> bytes:
    return bytes([tag]) + _der_len(len(content)) + content


def der_oid(dotted: str) -> bytes:
    arcs = [int(a) for a in dotted.split(".")]
    out = bytearray([arcs[0] * 40 + arcs[1]])
    for arc in arcs[2:]:
        chunk = [arc & 0x7F]
        arc >>= 7
        while arc:
            chunk.append(0x80 | (arc & 0x7F))
            arc >>= 7
        out.extend(reversed(chunk))
    return tlv(0x06, bytes(out))


def der_int(value: int) -> bytes:
    raw = value.to_bytes(max(1, (value.bit_length() + 8) // 8), "big")
    return tlv(0x02, raw)


def der_seq(*items: bytes) -> bytes:
    return tlv(0x30, b"".join(items))


def _pair(oid: str, value: bytes) -> bytes:
    return der_seq(der_oid(oid), value)


def sgx_extension_der(
    *,
    tcb_components: tuple[int, ...] = TCB_COMPONENTS,
    pce_svn: int = PCE_SVN,
    fmspc: bytes = FMSPC,
    pce_id: bytes = PCE_ID,
    ppid: bytes = bytes(range(16)),
    sgx_type: int = 0,
) -> bytes:
    """Intel's SGX extension value, as in the PCK certificate profile."""
    tcb = [_pair(f"{SGX_OID}.2.{i + 1}", der_int(svn)) for i, svn in enumerate(tcb_components)]
    tcb.append(_pair(f"{SGX_OID}.2.17", der_int(pce_svn)))
    tcb.append(_pair(f"{SGX_OID}.2.18", tlv(0x04, bytes(tcb_components))))
    return der_seq(
        _pair(f"{SGX_OID}.1", tlv(0x04, ppid)),
        _pair(f"{SGX_OID}.2", der_seq(*tcb)),
        _pair(f"{SGX_OID}.3", tlv(0x04, pce_id)),
        _pair(f"{SGX_OID}.4", tlv(0x04, fmspc)),
        _pair(f"{SGX_OID}.5", tlv(0x0A, bytes([sgx_type]))),
    )


# -- the test PKI --------------------------------------------------------------------------------


def _name(cn: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, cn),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Avalon Worker Tests"),
            x509.NameAttribute(NameOID.COUNTRY_NAME, "US"),
        ]
    )


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def raw_sign(key: ec.EllipticCurvePrivateKey, data: bytes) -> bytes:
    """ECDSA-P256-SHA256 as raw r‖s, the form quotes and collateral carry."""
    r, s = decode_dss_signature(key.sign(data, ec.ECDSA(hashes.SHA256())))
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


def raw_public(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )[1:]


def pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _cert(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: x509.Certificate | None,
    issuer_key: ec.EllipticCurvePrivateKey,
    *,
    ca: bool,
    now: datetime,
    days: int = 365,
    not_before: datetime | None = None,
    extension: bytes | None = None,
    serial: int | None = None,
) -> x509.Certificate:
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer.subject if issuer else _name(subject))
        .public_key(key.public_key())
        .serial_number(serial or x509.random_serial_number())
        .not_valid_before(not_before or now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=not ca,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=ca,
                crl_sign=ca,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), critical=False
        )
    )
    if extension is not None:
        builder = builder.add_extension(
            x509.UnrecognizedExtension(x509.ObjectIdentifier(SGX_OID), extension), critical=False
        )
    return builder.sign(issuer_key, hashes.SHA256())


@dataclass
class TestPki:
    """Test root → PCK Platform CA → PCK leaf, and root → TCB signing cert."""

    now: datetime
    root_key: ec.EllipticCurvePrivateKey
    root: x509.Certificate
    ca_key: ec.EllipticCurvePrivateKey
    ca: x509.Certificate
    pck_key: ec.EllipticCurvePrivateKey
    pck: x509.Certificate
    tcb_key: ec.EllipticCurvePrivateKey
    tcb_cert: x509.Certificate

    __test__ = False  # not a pytest class

    @classmethod
    def create(
        cls, *, now: datetime | None = None, pck_extension: bytes | None = None, pck_days: int = 365
    ) -> TestPki:
        now = now or datetime.now(timezone.utc)
        root_key, ca_key, pck_key, tcb_key = _key(), _key(), _key(), _key()
        root = _cert("Test SGX Root CA", root_key, None, root_key, ca=True, now=now, days=3650)
        ca = _cert("Test SGX PCK Platform CA", ca_key, root, root_key, ca=True, now=now, days=3650)
        pck = _cert(
            "Test SGX PCK Certificate",
            pck_key,
            ca,
            ca_key,
            ca=False,
            now=now,
            days=pck_days,
            extension=pck_extension if pck_extension is not None else sgx_extension_der(),
        )
        tcb_cert = _cert("Test SGX TCB Signing", tcb_key, root, root_key, ca=False, now=now, days=3650)
        return cls(now, root_key, root, ca_key, ca, pck_key, pck, tcb_key, tcb_cert)

    def reissued_root(self, *, days: int) -> x509.Certificate:
        """Another issue of the root: same key, subject and serial, another validity period."""
        return _cert(
            "Test SGX Root CA", self.root_key, None, self.root_key, ca=True, now=self.now, days=days,
            not_before=self.now - timedelta(days=30), serial=self.root.serial_number,
        )

    def chain_pem(self, *, include_root: bool = True) -> bytes:
        """Quote-order PCK chain: leaf, CA, root (NUL-terminated like real quotes)."""
        certs = [self.pck, self.ca] + ([self.root] if include_root else [])
        return b"".join(pem(c) for c in certs) + b"\x00"

    def crl(
        self, issuer: str, *, revoked: tuple[int, ...] = (), days: int = 30
    ) -> x509.CertificateRevocationList:
        cert, key = (self.root, self.root_key) if issuer == "root" else (self.ca, self.ca_key)
        builder = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(cert.subject)
            .last_update(self.now - timedelta(hours=1))
            .next_update(self.now + timedelta(days=days))
            .add_extension(x509.CRLNumber(1), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(key.public_key()), critical=False
            )
        )
        for serial in revoked:
            builder = builder.add_revoked_certificate(
                x509.RevokedCertificateBuilder()
                .serial_number(serial)
                .revocation_date(self.now - timedelta(hours=2))
                .build()
            )
        return builder.sign(key, hashes.SHA256())


# -- quotes --------------------------------------------------------------------------------------


def report_body(
    *,
    report_data: bytes = bytes(64),
    mrenclave: bytes = MRENCLAVE,
    mrsigner: bytes = MRSIGNER,
    isv_prod_id: int = ISV_PROD_ID,
    isv_svn: int = ISV_SVN,
    flags: int = FLAGS_PRODUCTION,
    xfrm: int = 0x3,
    misc_select: int = 0,
    cpu_svn: bytes = bytes(TCB_COMPONENTS),
) -> bytes:
    """A 384-byte report body with the given fields (GRAMINE.md §5.1)."""
    assert len(report_data) == 64 and len(mrenclave) == 32 and len(mrsigner) == 32
    body = bytearray(384)
    body[0:16] = cpu_svn
    struct.pack_into("<I", body, 16, misc_select)
    struct.pack_into("<QQ", body, 48, flags, xfrm)
    body[64:96] = mrenclave
    body[128:160] = mrsigner
    struct.pack_into("<HHH", body, 256, isv_prod_id, isv_svn, 0)
    body[320:384] = report_data
    return bytes(body)


def td_report(
    *,
    report_data: bytes = bytes(64),
    body_type: int = 2,
    tee_tcb_svn: bytes = TEE_TCB_SVN,
    mr_seam: bytes = hashlib.sha384(b"test TDX module").digest(),
    mr_signer_seam: bytes = TDX_MODULE_MRSIGNER,
    seam_attributes: int = 0,
    td_attributes: int = TD_ATTR_SEPT_VE_DISABLE,
    xfam: int = XFAM,
    mrtd: bytes = MRTD,
    mrconfigid: bytes = bytes(48),
    mrowner: bytes = bytes(48),
    mrownerconfig: bytes = bytes(48),
    rtmr0: bytes = RTMRS[0],
    rtmr1: bytes = RTMRS[1],
    rtmr2: bytes = RTMRS[2],
    rtmr3: bytes = RTMRS[3],
    tee_tcb_svn2: bytes | None = None,
    mr_service_td: bytes = bytes(48),
    td_id: bytes = bytes(range(32)),
) -> bytes:
    """A TD report: 584 bytes (body type 2, TD 1.0), 648 (3, TD 1.5) or 885 (4, TD 1.5ex),
    laid out field by field as Intel's `sgx_report2_body_t` (CONFIDENTIAL_VMS.md)."""
    assert len(report_data) == 64 and len(tee_tcb_svn) == 16
    out = (
        tee_tcb_svn
        + mr_seam
        + mr_signer_seam
        + struct.pack("<QQQ", seam_attributes, td_attributes, xfam)
        + mrtd
        + mrconfigid
        + mrowner
        + mrownerconfig
        + rtmr0
        + rtmr1
        + rtmr2
        + rtmr3
        + report_data
    )
    if body_type >= 3:
        out += (tee_tcb_svn2 if tee_tcb_svn2 is not None else tee_tcb_svn) + mr_service_td
    if body_type == 4:
        # vm_id, td_id, dev_info, init service TD hash and attributes, init CPUSVN, init TEE_TCB_SVN,
        # init FMSPC, current service TD hash and attributes (sgx_report2_body_v1_5_ex_t).
        out += b"\x00" + td_id + bytes(48) + bytes(48) + bytes(8) + bytes(16) + tee_tcb_svn + bytes(12)
        out += bytes(48) + bytes(8)
    assert len(out) == {2: 584, 3: 648, 4: 885}[body_type]
    return out


@dataclass
class QuoteFactory:
    """Makes DCAP quotes signed through a `TestPki`: the PCK key plays Intel's QE."""

    pki: TestPki
    attestation_key: ec.EllipticCurvePrivateKey = field(default_factory=_key)
    qe_auth_data: bytes = field(default_factory=lambda: os.urandom(32))

    def qe_report(
        self, *, isv_svn: int = QE_ISV_SVN, mrsigner: bytes = INTEL_QE_MRSIGNER, isv_prod_id: int = 1
    ) -> bytes:
        binding = hashlib.sha256(raw_public(self.attestation_key) + self.qe_auth_data).digest() + bytes(32)
        return report_body(
            report_data=binding,
            mrenclave=hashlib.sha256(b"QE").digest(),
            mrsigner=mrsigner,
            isv_prod_id=isv_prod_id,
            isv_svn=isv_svn,
            flags=0x11,
            xfrm=0xE7,
        )

    def quote(
        self,
        report_data: bytes = bytes(64),
        *,
        version: int = 3,
        cert_data: bytes | None = None,
        cert_type: int = 5,
        qe_isv_svn: int = QE_ISV_SVN,
        **body_fields: object,
    ) -> bytes:
        """A complete quote over `report_data`; `body_fields` go to `report_body`."""
        header = struct.pack("<HHIHH", version, 2, 0, 10, PCE_SVN) + INTEL_QE_VENDOR_ID + bytes(20)
        body = report_body(report_data=report_data, **body_fields)  # type: ignore[arg-type]
        descriptor = struct.pack("<HI", 1, 384) if version == 5 else b""
        return self.sign(header + descriptor + body, version=version, cert_data=cert_data, cert_type=cert_type,
                         qe_report=self.qe_report(isv_svn=qe_isv_svn))

    def tdx_quote(
        self,
        report_data: bytes = bytes(64),
        *,
        version: int = 4,
        body_type: int = 2,
        qe_isv_svn: int = TD_QE_ISV_SVN,
        **td_fields: object,
    ) -> bytes:
        """A complete TDX quote (v4: TD 1.0; v5: `body_type` 2, 3 or 4) over `report_data`."""
        header = struct.pack("<HHIHH", version, 2, 0x81, 10, PCE_SVN) + INTEL_QE_VENDOR_ID + bytes(20)
        body = td_report(report_data=report_data, body_type=body_type, **td_fields)  # type: ignore[arg-type]
        descriptor = struct.pack("<HI", body_type, len(body)) if version == 5 else b""
        return self.sign(header + descriptor + body, version=version,
                         qe_report=self.qe_report(isv_svn=qe_isv_svn, isv_prod_id=TD_QE_ISV_PROD_ID))

    def sign(
        self,
        signed: bytes,
        *,
        version: int,
        qe_report: bytes,
        cert_data: bytes | None = None,
        cert_type: int = 5,
    ) -> bytes:
        """Header ‖ body, signed by the attestation key, with the QE part and PCK chain after it."""
        chain = self.pki.chain_pem() if cert_data is None else cert_data
        qe_part = (
            qe_report
            + raw_sign(self.pki.pck_key, qe_report)
            + struct.pack("<H", len(self.qe_auth_data))
            + self.qe_auth_data
            + struct.pack("<HI", cert_type, len(chain))
            + chain
        )
        head = raw_sign(self.attestation_key, signed) + raw_public(self.attestation_key)
        if version == 3:
            sig_data = head + qe_part
        else:
            sig_data = head + struct.pack("<HI", 6, len(qe_part)) + qe_part
        return signed + struct.pack("<I", len(sig_data)) + sig_data


def epid_quote(
    report_data: bytes = bytes(64), *, signature: bytes = os.urandom(680), **body_fields: object
) -> bytes:
    """An EPID v2 quote (opaque signature: nobody can verify EPID any more)."""
    header = struct.pack("<HHIHHI", 2, 1, 0x00000B39, 11, 10, 0) + bytes(range(32))
    body = report_body(report_data=report_data, **body_fields)  # type: ignore[arg-type]
    return header + body + struct.pack("<I", len(signature)) + signature


def flip(data: bytes, offset: int, mask: int = 0x01) -> bytes:
    """`data` with one bit flipped at `offset`."""
    out = bytearray(data)
    out[offset] ^= mask
    return bytes(out)


# -- collateral ----------------------------------------------------------------------------------


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def tcb_level(
    components: tuple[int, ...], pce_svn: int, status: str, advisories: tuple[str, ...] = ()
) -> dict:
    level: dict = {
        "tcb": {"sgxtcbcomponents": [{"svn": c} for c in components], "pcesvn": pce_svn},
        "tcbDate": "2024-03-13T00:00:00Z",
        "tcbStatus": status,
    }
    if advisories:
        level["advisoryIDs"] = list(advisories)
    return level


def default_tcb_levels() -> list[dict]:
    higher = tuple(c + 1 if i == 0 else c for i, c in enumerate(TCB_COMPONENTS))
    return [
        tcb_level(higher, PCE_SVN, "UpToDate"),
        tcb_level(TCB_COMPONENTS, PCE_SVN, "SWHardeningNeeded", ("INTEL-SA-00615",)),
        tcb_level(tuple(0 for _ in TCB_COMPONENTS), 0, "OutOfDate", ("INTEL-SA-00289", "INTEL-SA-00615")),
    ]


def up_to_date_levels() -> list[dict]:
    return [
        tcb_level(TCB_COMPONENTS, PCE_SVN, "UpToDate"),
        tcb_level(tuple(0 for _ in TCB_COMPONENTS), 0, "OutOfDate", ("INTEL-SA-00289",)),
    ]


def make_collateral(
    pki: TestPki,
    *,
    tcb_levels: list[dict] | None = None,
    qe_levels: list[dict] | None = None,
    fmspc: bytes = FMSPC,
    issue: datetime | None = None,
    next_update: datetime | None = None,
    root_revoked: tuple[int, ...] = (),
    pck_revoked: tuple[int, ...] = (),
    tcb_signer: ec.EllipticCurvePrivateKey | None = None,
) -> dict:
    """A collateral bundle (the package's JSON format and dcap-qvl's) signed by the test PKI."""
    issue = issue or pki.now - timedelta(hours=1)
    next_update = next_update or pki.now + timedelta(days=30)
    tcb_info = json.dumps(
        {
            "id": "SGX",
            "version": 3,
            "issueDate": _iso(issue),
            "nextUpdate": _iso(next_update),
            "fmspc": fmspc.hex().upper(),
            "pceId": PCE_ID.hex(),
            "tcbType": 0,
            "tcbEvaluationDataNumber": 17,
            "tcbLevels": tcb_levels if tcb_levels is not None else up_to_date_levels(),
        },
        separators=(",", ":"),
    )
    qe_identity = json.dumps(
        {
            "id": "QE",
            "version": 2,
            "issueDate": _iso(issue),
            "nextUpdate": _iso(next_update),
            "tcbEvaluationDataNumber": 17,
            "miscselect": "00000000",
            "miscselectMask": "FFFFFFFF",
            "attributes": "11000000000000000000000000000000",
            "attributesMask": "FBFFFFFFFFFFFFFF0000000000000000",
            "mrsigner": INTEL_QE_MRSIGNER.hex().upper(),
            "isvprodid": 1,
            "tcbLevels": qe_levels
            if qe_levels is not None
            else [
                {"tcb": {"isvsvn": 8}, "tcbDate": "2024-03-13T00:00:00Z", "tcbStatus": "UpToDate"},
                {
                    "tcb": {"isvsvn": 6},
                    "tcbDate": "2021-11-10T00:00:00Z",
                    "tcbStatus": "OutOfDate",
                    "advisoryIDs": ["INTEL-SA-00615"],
                },
            ],
        },
        separators=(",", ":"),
    )
    return signed_collateral(pki, tcb_info, qe_identity, root_revoked=root_revoked, pck_revoked=pck_revoked,
                             tcb_signer=tcb_signer)


def signed_collateral(
    pki: TestPki,
    tcb_info: str,
    qe_identity: str,
    *,
    root_revoked: tuple[int, ...] = (),
    pck_revoked: tuple[int, ...] = (),
    tcb_signer: ec.EllipticCurvePrivateKey | None = None,
) -> dict:
    """The collateral JSON around `tcb_info` and `qe_identity`, signed by the TCB signing key."""
    signer = tcb_signer or pki.tcb_key
    chain = (pem(pki.tcb_cert) + pem(pki.root)).decode()
    return {
        "pck_crl_issuer_chain": (pem(pki.ca) + pem(pki.root)).decode(),
        "root_ca_crl": pki.crl("root", revoked=root_revoked).public_bytes(serialization.Encoding.DER).hex(),
        "pck_crl": pki.crl("ca", revoked=pck_revoked).public_bytes(serialization.Encoding.DER).hex(),
        "tcb_info_issuer_chain": chain,
        "tcb_info": tcb_info,
        "tcb_info_signature": raw_sign(signer, tcb_info.encode()).hex(),
        "qe_identity_issuer_chain": chain,
        "qe_identity": qe_identity,
        "qe_identity_signature": raw_sign(signer, qe_identity.encode()).hex(),
    }


def tdx_level(
    components: tuple[int, ...] = TCB_COMPONENTS,
    pce_svn: int = PCE_SVN,
    tdx: tuple[int, ...] = TDX_TCB_COMPONENTS,
    status: str = "UpToDate",
    advisories: tuple[str, ...] = (),
    date: str = "2024-03-13T00:00:00Z",
) -> dict:
    level = tcb_level(components, pce_svn, status, advisories)
    level["tcb"]["tdxtcbcomponents"] = [{"svn": c} for c in tdx]
    level["tcbDate"] = date
    return level


def default_tdx_levels() -> list[dict]:
    older = tuple(c - 1 if i == 2 else c for i, c in enumerate(TDX_TCB_COMPONENTS))
    return [
        tdx_level(),
        tdx_level(tdx=older, status="OutOfDate", advisories=("INTEL-SA-01036",), date="2023-08-09T00:00:00Z"),
        tdx_level(tuple(0 for _ in TCB_COMPONENTS), 0, tuple(0 for _ in TDX_TCB_COMPONENTS), "OutOfDate",
                  ("INTEL-SA-00837", "INTEL-SA-01036"), "2018-01-04T00:00:00Z"),
    ]


def default_module_identities() -> list[dict]:
    return [
        {
            "id": "TDX_01",
            "mrsigner": TDX_MODULE_MRSIGNER.hex().upper(),
            "attributes": "0000000000000000",
            "attributesMask": "FFFFFFFFFFFFFFFF",
            "tcbLevels": [
                {"tcb": {"isvsvn": TDX_MODULE_ISV_SVN}, "tcbDate": "2024-03-13T00:00:00Z", "tcbStatus": "UpToDate"},
                {"tcb": {"isvsvn": 2}, "tcbDate": "2023-08-09T00:00:00Z", "tcbStatus": "OutOfDate",
                 "advisoryIDs": ["INTEL-SA-01099"]},
            ],
        },
    ]


def make_tdx_collateral(
    pki: TestPki,
    *,
    tcb_levels: list[dict] | None = None,
    module_identities: list[dict] | None = None,
    tdx_module: dict | None = None,
    qe_levels: list[dict] | None = None,
    tcb_info_id: str = "TDX",
    qe_identity_id: str = "TD_QE",
    issue: datetime | None = None,
    next_update: datetime | None = None,
    pck_revoked: tuple[int, ...] = (),
) -> dict:
    """TDX collateral: TCB info v3 with tdxtcbcomponents and module identities, and a TD_QE
    identity, signed by the test PKI (the same JSON shape as Intel's and dcap-qvl's)."""
    issue = issue or pki.now - timedelta(hours=1)
    next_update = next_update or pki.now + timedelta(days=30)
    tcb_info = json.dumps(
        {
            "id": tcb_info_id,
            "version": 3,
            "issueDate": _iso(issue),
            "nextUpdate": _iso(next_update),
            "fmspc": FMSPC.hex().upper(),
            "pceId": PCE_ID.hex(),
            "tcbType": 0,
            "tcbEvaluationDataNumber": 17,
            "tdxModule": tdx_module
            or {"mrsigner": TDX_MODULE_MRSIGNER.hex(), "attributes": "0000000000000000", "attributesMask": "FFFFFFFFFFFFFFFF"},
            "tdxModuleIdentities": module_identities if module_identities is not None else default_module_identities(),
            "tcbLevels": tcb_levels if tcb_levels is not None else default_tdx_levels(),
        },
        separators=(",", ":"),
    )
    qe_identity = json.dumps(
        {
            "id": qe_identity_id,
            "version": 2,
            "issueDate": _iso(issue),
            "nextUpdate": _iso(next_update),
            "tcbEvaluationDataNumber": 17,
            "miscselect": "00000000",
            "miscselectMask": "FFFFFFFF",
            "attributes": "11000000000000000000000000000000",
            "attributesMask": "FBFFFFFFFFFFFFFF0000000000000000",
            "mrsigner": INTEL_QE_MRSIGNER.hex().upper(),
            "isvprodid": TD_QE_ISV_PROD_ID,
            "tcbLevels": qe_levels
            if qe_levels is not None
            else [
                {"tcb": {"isvsvn": TD_QE_ISV_SVN}, "tcbDate": "2024-03-13T00:00:00Z", "tcbStatus": "UpToDate"},
                {"tcb": {"isvsvn": 2}, "tcbDate": "2023-02-15T00:00:00Z", "tcbStatus": "OutOfDate",
                 "advisoryIDs": ["INTEL-SA-00837"]},
            ],
        },
        separators=(",", ":"),
    )
    return signed_collateral(pki, tcb_info, qe_identity, pck_revoked=pck_revoked)


_SHARED: list[tuple[TestPki, QuoteFactory]] = []


def shared_pki() -> TestPki:
    """One test PKI per process, for stand-ins that cannot be handed a fixture."""
    if not _SHARED:
        pki = TestPki.create()
        _SHARED.append((pki, QuoteFactory(pki)))
    return _SHARED[0][0]


def make_tdx_quote(
    report_data: bytes,
    *,
    rtmr3: bytes = bytes(48),
    version: int = 4,
    body_type: int = 2,
    pki: TestPki | None = None,
    **td_fields: object,
) -> bytes:
    """A TDX quote over `report_data` (64 bytes, as configfs-tsm's inblob) with `rtmr3`,
    signed under `pki` (default `shared_pki()`: pass its root as `--insecure-root-ca`)."""
    if pki is None:
        shared_pki()
        factory = _SHARED[0][1]
    else:
        factory = QuoteFactory(pki)
    return factory.tdx_quote(report_data, version=version, body_type=body_type, rtmr3=rtmr3, **td_fields)


# -- signups -------------------------------------------------------------------------------------


def make_signup(
    provider: object, signing_key: object, encryption_key_pem: str, nonce: bytes | None = None
) -> dict:
    """A signup document as the worker builds it (PROTOCOL.md §6), quoted by `provider`."""
    import base64

    from avalon_worker import crypto
    from avalon_worker.attestation import report_data

    assert isinstance(signing_key, crypto.SigningKey)
    vk = signing_key.verifying_key_pem
    quote = provider.quote(report_data(vk, nonce))  # type: ignore[attr-defined]
    return {
        "sealed_data": "",
        "verifying_key": vk,
        "encryption_key": encryption_key_pem,
        "encryption_key_signature": signing_key.sign_digest(crypto.sha256(encryption_key_pem.encode())).hex(),
        "mrenclave": provider.mrenclave(),  # type: ignore[attr-defined]
        "quote": base64.b64encode(quote).decode("ascii"),
    }

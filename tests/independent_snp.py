"""A test-only SEV-SNP checker written from AMD's specifications, sharing no code with the package.

Different code and different libraries on purpose: its own DER walker for X.509, pycryptodomex
for RSASSA-PSS and ECDSA P-384, its own report field table. Tests compare its verdicts and the
fields it reads with the package's on every vector and on altered ones, so a mistake has to be
made twice, independently, to go unnoticed.

Sources: AMD SEV-SNP firmware ABI 56860 (ATTESTATION_REPORT, TCB_VERSION, guest policy), AMD
KDS 57230 (certificate chain, RSASSA-PSS SHA-384 salt 48, VCEK extensions), GHCB 56421
(certificate table), RFC 5280 (certificate structure).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime, timezone

from Cryptodome.Hash import SHA384
from Cryptodome.PublicKey import ECC, RSA
from Cryptodome.Signature import DSS, pss

# SHA-256 of the SubjectPublicKeyInfo of AMD's ARKs (KDS cert_chain, as google/go-sev-guest and
# virtee/sev publish them).
ARK_KEYS = {
    "9f056bee44377e29308cb5ffa895bdfb62d18881fa6bed8d6f075b0204089cb9": "Milan",
    "429a69c9422aa258ee4d8db5fcda9c6470ef15f8cd5a9cebd6cbc7d90b863831": "Genoa",
    "4f125410563a2ab9a50356f9243f6fe0b6f73de98603f53f90339c70e9d7ad08": "Turin",
}

# (name, offset, size) of the report, ABI spec Table 22.
FIELDS = (
    ("version", 0x000, 4),
    ("policy", 0x008, 8),
    ("vmpl", 0x030, 4),
    ("sig_algo", 0x034, 4),
    ("flags", 0x048, 4),
    ("report_data", 0x050, 64),
    ("measurement", 0x090, 48),
    ("host_data", 0x0C0, 32),
    ("id_key_digest", 0x0E0, 48),
    ("author_key_digest", 0x110, 48),
    ("reported_tcb", 0x180, 8),
    ("cpuid", 0x188, 3),
    ("chip_id", 0x1A0, 64),
    ("sig_r", 0x2A0, 72),
    ("sig_s", 0x2E8, 72),
)
OID_CN = "2.5.4.3"
OID_PSS = "1.2.840.113549.1.1.10"
OID_ECPUBKEY = "1.2.840.10045.2.1"
KDS = "1.3.6.1.4.1.3704.1"
SPL_ARCS = {"bl": 1, "tee": 2, "snp": 3, "ucode": 8, "fmc": 9}


class Bad(Exception):
    pass


def tlv(buf: bytes, at: int) -> tuple[int, int, int]:
    """(tag, start of value, end of value) of the DER element at `at`."""
    if at + 2 > len(buf):
        raise Bad("short DER")
    tag, first = buf[at], buf[at + 1]
    at += 2
    if first & 0x80:
        n = first & 0x7F
        if not 1 <= n <= 3 or at + n > len(buf):
            raise Bad("bad DER length")
        length = int.from_bytes(buf[at : at + n], "big")
        at += n
    else:
        length = first
    if at + length > len(buf):
        raise Bad("DER overrun")
    return tag, at, at + length


def children(buf: bytes, start: int, end: int) -> list[tuple[int, int, int, int]]:
    """(tag, value start, value end, element start) of each element in buf[start:end]."""
    out = []
    while start < end:
        tag, vs, ve = tlv(buf, start)
        out.append((tag, vs, ve, start))
        start = ve
    if start != end:
        raise Bad("DER overrun")
    return out


def oid(raw: bytes) -> str:
    if not raw:
        raise Bad("empty OID")
    arcs, acc = [raw[0] // 40, raw[0] % 40], 0
    for b in raw[1:]:
        acc = acc << 7 | b & 0x7F
        if not b & 0x80:
            arcs.append(acc)
            acc = 0
    return ".".join(map(str, arcs))


def der_time(tag: int, raw: bytes) -> datetime:
    text = raw.decode("ascii")
    fmt = "%y%m%d%H%M%SZ" if tag == 0x17 else "%Y%m%d%H%M%SZ"
    return datetime.strptime(text, fmt).replace(tzinfo=timezone.utc)


@dataclass
class Cert:
    der: bytes
    tbs: bytes
    sig_alg: str
    signature: bytes
    issuer: bytes
    subject: bytes
    cn: str
    not_before: datetime
    not_after: datetime
    spki: bytes
    key_alg: str
    extensions: dict[str, bytes] = field(default_factory=dict)


def parse_cert(der: bytes) -> Cert:
    tag, vs, ve = tlv(der, 0)
    if tag != 0x30 or ve != len(der):
        raise Bad("not one SEQUENCE")
    (t1, tbs_s, tbs_e, tbs_at), (t2, alg_s, alg_e, _), (t3, sig_s, sig_e, _) = children(der, vs, ve)
    if (t1, t2, t3) != (0x30, 0x30, 0x03):
        raise Bad("not a certificate")
    alg_oid = children(der, alg_s, alg_e)[0]
    parts = children(der, tbs_s, tbs_e)
    if parts[0][0] == 0xA0:
        parts = parts[1:]
    _serial, _alg, issuer, validity, subject, spki = parts[:6]
    times = children(der, validity[1], validity[2])
    spki_alg = children(der, children(der, spki[1], spki[2])[0][1], children(der, spki[1], spki[2])[0][2])[0]
    cert = Cert(
        der=der,
        tbs=der[tbs_at:tbs_e],
        sig_alg=oid(der[alg_oid[1] : alg_oid[2]]),
        signature=der[sig_s + 1 : sig_e],
        issuer=der[issuer[3] : issuer[2]],
        subject=der[subject[3] : subject[2]],
        cn=common_name(der, subject),
        not_before=der_time(times[0][0], der[times[0][1] : times[0][2]]),
        not_after=der_time(times[1][0], der[times[1][1] : times[1][2]]),
        spki=der[spki[3] : spki[2]],
        key_alg=oid(der[spki_alg[1] : spki_alg[2]]),
    )
    for tag, s, e, _ in parts[6:]:
        if tag != 0xA3:
            continue
        for _t, es, ee, _a in children(der, *children(der, s, e)[0][1:3]):
            items = children(der, es, ee)
            cert.extensions[oid(der[items[0][1] : items[0][2]])] = der[items[-1][1] : items[-1][2]]
    return cert


def common_name(der: bytes, name: tuple[int, int, int, int]) -> str:
    for _t, s, e, _a in children(der, name[1], name[2]):
        for _t2, s2, e2, _a2 in children(der, s, e):
            kv = children(der, s2, e2)
            if oid(der[kv[0][1] : kv[0][2]]) == OID_CN:
                return der[kv[1][1] : kv[1][2]].decode("utf-8", "replace")
    return ""


def pss_ok(child: Cert, issuer: Cert) -> bool:
    if child.sig_alg != OID_PSS:
        return False
    try:
        key = RSA.import_key(issuer.spki)
        pss.new(key, salt_bytes=48).verify(SHA384.new(child.tbs), child.signature)
        return True
    except (ValueError, TypeError, IndexError):
        return False


def spl(raw: bytes) -> int:
    if len(raw) < 3 or raw[0] != 0x02 or raw[1] != len(raw) - 2:
        raise Bad("SPL is not an INTEGER")
    return int.from_bytes(raw[2:], "big")


def report_fields(report: bytes) -> dict[str, bytes]:
    if len(report) != 1184:
        raise Bad("not 1184 bytes")
    return {name: report[off : off + size] for name, off, size in FIELDS}


def tcb_parts(tcb: bytes, turin: bool) -> dict[str, int]:
    if turin:
        return {"fmc": tcb[0], "bl": tcb[1], "tee": tcb[2], "snp": tcb[3], "ucode": tcb[7]}
    return {"bl": tcb[0], "tee": tcb[1], "snp": tcb[6], "ucode": tcb[7]}


def cpuid_product(cpuid: bytes) -> str | None:
    family, model = cpuid[0], cpuid[1]
    if family == 0x19:
        return "Milan" if model < 0x10 else "Genoa" if model < 0x20 or 0xA0 <= model < 0xB0 else None
    return "Turin" if family == 0x1A and model < 0x20 else None


@dataclass
class Verdict:
    fields: dict[str, bytes]
    chain: bool = False
    signature: bool = False
    tcb: bool = False
    chip: bool = False
    product: bool = False
    error: str = ""

    @property
    def ok(self) -> bool:
        return self.chain and self.signature and self.tcb and self.chip and self.product


def _chain(certs: list[Cert], roots: list[Cert] | None, now: datetime) -> tuple[Cert, str] | None:
    leaves = [c for c in certs if c.cn in ("SEV-VCEK", "SEV-VLEK")]
    for leaf in leaves:
        for mid in certs:
            if mid.subject != leaf.issuer or not pss_ok(leaf, mid):
                continue
            for root in roots if roots is not None else certs:
                if root.subject != mid.issuer or root.issuer != root.subject:
                    continue
                pinned = ARK_KEYS.get(hashlib.sha256(root.spki).hexdigest())
                if roots is None and pinned != root.cn.removeprefix("ARK-"):
                    continue
                if not (pss_ok(mid, root) and pss_ok(root, root)):
                    continue
                if all(c.not_before <= now <= c.not_after for c in (leaf, mid, root)):
                    return leaf, root.cn.removeprefix("ARK-")
    return None


def check(report: bytes, cert_ders: list[bytes], now: datetime, roots: list[bytes] | None = None) -> Verdict:
    """Judge a report against the given DER certificates (VCEK/VLEK, ASK/ASVK, ARK).

    `roots` replaces AMD's ARKs (then taken by key digest from `cert_ders`) with test roots.
    """
    try:
        verdict = Verdict(fields=report_fields(report))
    except Bad as exc:
        return Verdict(fields={}, error=str(exc))
    f = verdict.fields
    try:
        certs = [parse_cert(d) for d in cert_ders]
        root_certs = [parse_cert(d) for d in roots] if roots is not None else None
    except (Bad, ValueError, IndexError) as exc:
        verdict.error = f"certificate: {exc}"
        return verdict
    if int.from_bytes(f["version"], "little") not in (2, 3, 5) or int.from_bytes(f["sig_algo"], "little") != 1:
        verdict.error = "version or algorithm"
        return verdict
    found = _chain(certs, root_certs, now)
    if found is None:
        return verdict
    leaf, product = found
    verdict.chain = True
    signing_key = (int.from_bytes(f["flags"], "little") >> 2) & 7
    kind_ok = signing_key == {"SEV-VCEK": 0, "SEV-VLEK": 1}[leaf.cn]
    verdict.signature = kind_ok and _ecdsa_ok(leaf, report, f)
    try:
        verdict.tcb = _tcb_ok(leaf, f, product)
    except Bad:
        verdict.tcb = False
    verdict.chip = _chip_ok(leaf, f)
    name = leaf.extensions.get(f"{KDS}.2", b"")[2:].decode("ascii", "replace")
    v3 = int.from_bytes(f["version"], "little") >= 3
    verdict.product = name.split("-")[0] == product and (not v3 or cpuid_product(f["cpuid"]) == product)
    return verdict


def _ecdsa_ok(leaf: Cert, report: bytes, f: dict[str, bytes]) -> bool:
    if leaf.key_alg != OID_ECPUBKEY or any(f["sig_r"][48:]) or any(f["sig_s"][48:]):
        return False
    try:
        key = ECC.import_key(leaf.spki)
        if key.curve not in ("NIST P-384", "p384", "P-384", "secp384r1"):
            return False
        signature = f["sig_r"][:48][::-1] + f["sig_s"][:48][::-1]
        DSS.new(key, "fips-186-3").verify(SHA384.new(report[:0x2A0]), signature)
        return True
    except (ValueError, TypeError):
        return False


def _tcb_ok(leaf: Cert, f: dict[str, bytes], product: str) -> bool:
    reported = tcb_parts(f["reported_tcb"], product == "Turin")
    endorsed = {
        name: spl(leaf.extensions[f"{KDS}.3.{arc}"])
        for name, arc in SPL_ARCS.items()
        if f"{KDS}.3.{arc}" in leaf.extensions
    }
    return endorsed == reported


def _chip_ok(leaf: Cert, f: dict[str, bytes]) -> bool:
    if leaf.cn == "SEV-VLEK" or int.from_bytes(f["flags"], "little") & 2:
        return True
    hwid = leaf.extensions.get(f"{KDS}.4")
    if hwid is None or len(hwid) not in (8, 64):
        return False
    return f["chip_id"][: len(hwid)] == hwid and not any(f["chip_id"][len(hwid) :])

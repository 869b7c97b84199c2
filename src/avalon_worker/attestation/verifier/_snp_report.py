"""The AMD SEV-SNP attestation report (1184 bytes): its fields, read without trusting them.

Layout: AMD SEV-SNP firmware ABI specification 56860, "ATTESTATION_REPORT Structure" (Table 22/23
in revision 1.55 and later), versions 2, 3 and 5. Version 3 added the CPUID family, model and
stepping at 0x188; version 5 the launch and current mitigation vectors at 0x1F8 and 0x200. Every
integer is little-endian. The signature (0x2A0) covers bytes 0x000–0x29F.

TCB_VERSION (a u64 at 0x038, 0x180, 0x1E0, 0x1F0) has two layouts: Milan and Genoa put the
boot loader in byte 0, the TEE in byte 1, SNP in byte 6 and microcode in byte 7; Turin (family
1Ah) adds an FMC SPL in byte 0 and moves boot loader, TEE and SNP to bytes 1, 2 and 3. Which
one applies depends on the product, so a TCB is decoded only once the product is known.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from ..errors import QuoteParseError

REPORT_SIZE = 0x4A0
SIGNED_SIZE = 0x2A0
SUPPORTED_VERSIONS = (2, 3, 5)
SIGNATURE_ALGO_ECDSA_P384_SHA384 = 1

SIGNING_KEY_VCEK = 0
SIGNING_KEY_VLEK = 1
SIGNING_KEY_NONE = 7

# Guest POLICY bits (ABI spec, "Guest Policy Structure").
POLICY_SMT = 1 << 16
POLICY_RESERVED_ONE = 1 << 17
POLICY_MIGRATE_MA = 1 << 18
POLICY_DEBUG = 1 << 19
POLICY_SINGLE_SOCKET = 1 << 20

FLAG_AUTHOR_KEY_EN = 1 << 0
FLAG_MASK_CHIP_KEY = 1 << 1


class SnpParseError(QuoteParseError):
    """The bytes are not an SEV-SNP attestation report (or certificate table) we can read."""


@dataclass(frozen=True)
class TcbVersion:
    """The security patch levels in a TCB_VERSION; `fmc` only on Turin."""

    bootloader: int
    tee: int
    snp: int
    microcode: int
    fmc: int | None = None

    @classmethod
    def decode(cls, value: int, *, turin: bool) -> TcbVersion:
        raw = value.to_bytes(8, "little")
        if turin:
            return cls(bootloader=raw[1], tee=raw[2], snp=raw[3], microcode=raw[7], fmc=raw[0])
        return cls(bootloader=raw[0], tee=raw[1], snp=raw[6], microcode=raw[7])

    def components(self) -> dict[str, int]:
        """Component name → SPL; the names used by policies and by the VCEK extensions."""
        out = {"bootloader": self.bootloader, "tee": self.tee, "snp": self.snp, "microcode": self.microcode}
        if self.fmc is not None:
            out["fmc"] = self.fmc
        return out

    def describe(self) -> str:
        fmc = f"fmc={self.fmc} " if self.fmc is not None else ""
        return f"{fmc}bl={self.bootloader} tee={self.tee} snp={self.snp} ucode={self.microcode}"


def product_from_cpuid(family: int, model: int) -> str | None:
    """The EPYC product line of a CPUID family/model (PPR: 19h 00–0Fh Milan, 10–1Fh and A0–AFh
    Genoa and its Bergamo/Siena siblings, 1Ah 00–1Fh Turin); None if unknown."""
    if family == 0x19 and model <= 0x0F:
        return "Milan"
    if family == 0x19 and (0x10 <= model <= 0x1F or 0xA0 <= model <= 0xAF):
        return "Genoa"
    if family == 0x1A and model <= 0x1F:
        return "Turin"
    return None


@dataclass(frozen=True)
class SnpReport:
    """A parsed attestation report. Nothing here is verified: see `snp.verify_snp_evidence`."""

    raw: bytes
    version: int
    guest_svn: int
    policy: int
    family_id: bytes
    image_id: bytes
    vmpl: int
    signature_algo: int
    current_tcb: int
    platform_info: int
    flags: int
    report_data: bytes
    measurement: bytes
    host_data: bytes
    id_key_digest: bytes
    author_key_digest: bytes
    report_id: bytes
    report_id_ma: bytes
    reported_tcb: int
    cpuid_family: int | None
    cpuid_model: int | None
    cpuid_stepping: int | None
    chip_id: bytes
    committed_tcb: int
    current_version: tuple[int, int, int]  # major, minor, build of the running firmware
    committed_version: tuple[int, int, int]
    launch_tcb: int
    launch_mitigations: int | None
    current_mitigations: int | None
    signature_r: bytes  # 72 bytes, little-endian
    signature_s: bytes

    @property
    def signed_bytes(self) -> bytes:
        return self.raw[:SIGNED_SIZE]

    @property
    def signing_key(self) -> int:
        """FLAGS bits 4:2: 0 VCEK, 1 VLEK, 7 none."""
        return (self.flags >> 2) & 0x7

    @property
    def mask_chip_key(self) -> bool:
        return bool(self.flags & FLAG_MASK_CHIP_KEY)

    @property
    def author_key_en(self) -> bool:
        return bool(self.flags & FLAG_AUTHOR_KEY_EN)

    @property
    def debug(self) -> bool:
        return bool(self.policy & POLICY_DEBUG)

    @property
    def abi(self) -> tuple[int, int]:
        """The minimum firmware ABI (major, minor) the guest's policy demands."""
        return (self.policy >> 8) & 0xFF, self.policy & 0xFF

    @property
    def cpuid_product(self) -> str | None:
        """The product line the CPUID fields name (version 3 and later), or None."""
        if self.cpuid_family is None or self.cpuid_model is None:
            return None
        return product_from_cpuid(self.cpuid_family, self.cpuid_model)

    def tcb(self, value: int, product: str | None) -> TcbVersion:
        """Decode one of the report's TCB_VERSION fields in the layout of `product`."""
        return TcbVersion.decode(value, turin=product == "Turin")


def _u32(raw: bytes, offset: int) -> int:
    return int(struct.unpack_from("<I", raw, offset)[0])


def _u64(raw: bytes, offset: int) -> int:
    return int(struct.unpack_from("<Q", raw, offset)[0])


def parse_snp_report(raw: bytes) -> SnpReport:
    """Read the fields of a 1184-byte report (version 2, 3 or 5); `SnpParseError` otherwise.

    Only the framing is judged here (size, version, signature algorithm); what the fields
    claim is left to the verifier.
    """
    if not isinstance(raw, (bytes, bytearray)):
        raise SnpParseError("an SEV-SNP report must be bytes")
    raw = bytes(raw)
    if len(raw) != REPORT_SIZE:
        raise SnpParseError(f"an SEV-SNP attestation report is {REPORT_SIZE} bytes, got {len(raw)}")
    version = _u32(raw, 0x000)
    if version not in SUPPORTED_VERSIONS:
        raise SnpParseError(
            f"SEV-SNP report version {version} is not supported (versions {', '.join(map(str, SUPPORTED_VERSIONS))})"
        )
    algo = _u32(raw, 0x034)
    if algo != SIGNATURE_ALGO_ECDSA_P384_SHA384:
        raise SnpParseError(f"SEV-SNP report signature algorithm {algo} is not ECDSA P-384 with SHA-384 (1)")
    has_cpuid = version >= 3
    has_mitigations = version >= 5
    return SnpReport(
        raw=raw,
        version=version,
        guest_svn=_u32(raw, 0x004),
        policy=_u64(raw, 0x008),
        family_id=raw[0x010:0x020],
        image_id=raw[0x020:0x030],
        vmpl=_u32(raw, 0x030),
        signature_algo=algo,
        current_tcb=_u64(raw, 0x038),
        platform_info=_u64(raw, 0x040),
        flags=_u32(raw, 0x048),
        report_data=raw[0x050:0x090],
        measurement=raw[0x090:0x0C0],
        host_data=raw[0x0C0:0x0E0],
        id_key_digest=raw[0x0E0:0x110],
        author_key_digest=raw[0x110:0x140],
        report_id=raw[0x140:0x160],
        report_id_ma=raw[0x160:0x180],
        reported_tcb=_u64(raw, 0x180),
        cpuid_family=raw[0x188] if has_cpuid else None,
        cpuid_model=raw[0x189] if has_cpuid else None,
        cpuid_stepping=raw[0x18A] if has_cpuid else None,
        chip_id=raw[0x1A0:0x1E0],
        committed_tcb=_u64(raw, 0x1E0),
        current_version=(raw[0x1EA], raw[0x1E9], raw[0x1E8]),
        committed_version=(raw[0x1EE], raw[0x1ED], raw[0x1EC]),
        launch_tcb=_u64(raw, 0x1F0),
        launch_mitigations=_u64(raw, 0x1F8) if has_mitigations else None,
        current_mitigations=_u64(raw, 0x200) if has_mitigations else None,
        signature_r=raw[0x2A0:0x2E8],
        signature_s=raw[0x2E8:0x330],
    )

"""The Intel SGX extension of a PCK certificate (OID 1.2.840.113741.1.13.1).

Intel's "SGX PCK Certificate and CRL Profile" defines it as a SEQUENCE of (OID, value) pairs:
PPID, TCB (16 component SVNs, PCESVN, CPUSVN), PCE-ID, FMSPC, SGX type, and for platform CAs
optional instance id and configuration. The TCB components are what TCB Info is matched against.
A tiny bounded DER reader suffices: the structure is fixed and shallow.
"""

from __future__ import annotations

from dataclasses import dataclass

from cryptography import x509

from ..errors import CollateralError

SGX_EXTENSION_OID = x509.ObjectIdentifier("1.2.840.113741.1.13.1")
_PREFIX = "1.2.840.113741.1.13.1"


@dataclass(frozen=True)
class PckExtension:
    """What the PCK certificate says about the platform's TCB."""

    ppid: bytes
    tcb_components: tuple[int, ...]  # 16 SGX TCB component SVNs
    pce_svn: int
    cpu_svn: bytes
    pce_id: bytes
    fmspc: bytes
    sgx_type: int


def _read_tlv(data: bytes, pos: int) -> tuple[int, bytes, int]:
    """Return (tag, value, next position); raise `CollateralError` on any malformed length."""
    if pos + 2 > len(data):
        raise CollateralError("SGX extension truncated (DER header)")
    tag = data[pos]
    length = data[pos + 1]
    pos += 2
    if length & 0x80:
        n = length & 0x7F
        if n == 0 or n > 4 or pos + n > len(data):
            raise CollateralError("SGX extension has a bad DER length")
        length = int.from_bytes(data[pos : pos + n], "big")
        pos += n
    if pos + length > len(data):
        raise CollateralError("SGX extension truncated (DER value)")
    return tag, data[pos : pos + length], pos + length


def _children(data: bytes) -> list[tuple[int, bytes]]:
    out = []
    pos = 0
    while pos < len(data):
        tag, value, pos = _read_tlv(data, pos)
        out.append((tag, value))
    return out


def _oid(value: bytes) -> str:
    if not value:
        raise CollateralError("empty OID in SGX extension")
    arcs = [value[0] // 40, value[0] % 40] if value[0] < 80 else [2, value[0] - 80]
    acc = 0
    for byte in value[1:]:
        acc = (acc << 7) | (byte & 0x7F)
        if not byte & 0x80:
            arcs.append(acc)
            acc = 0
    return ".".join(str(a) for a in arcs)


def _pairs(seq_value: bytes) -> dict[str, tuple[int, bytes]]:
    out: dict[str, tuple[int, bytes]] = {}
    for tag, value in _children(seq_value):
        if tag != 0x30:
            raise CollateralError("SGX extension entry is not a SEQUENCE")
        inner = _children(value)
        if len(inner) != 2 or inner[0][0] != 0x06:
            raise CollateralError("SGX extension entry is not (OID, value)")
        out[_oid(inner[0][1])] = inner[1]
    return out


def _int(entry: tuple[int, bytes], what: str) -> int:
    tag, value = entry
    if tag not in (0x02, 0x0A) or not value:
        raise CollateralError(f"SGX extension {what} is not an INTEGER")
    return int.from_bytes(value, "big", signed=False)


def _octets(entry: tuple[int, bytes], what: str, size: int | None = None) -> bytes:
    tag, value = entry
    if tag != 0x04 or (size is not None and len(value) != size):
        raise CollateralError(f"SGX extension {what} is not a {size or ''}-byte OCTET STRING")
    return value


def parse_pck_extension(cert: x509.Certificate) -> PckExtension:
    """Read the SGX extension of a PCK leaf certificate; `CollateralError` if absent or bad."""
    try:
        ext = cert.extensions.get_extension_for_oid(SGX_EXTENSION_OID)
    except x509.ExtensionNotFound as exc:
        raise CollateralError("the PCK certificate has no Intel SGX extension") from exc
    except ValueError as exc:  # cryptography parses extensions lazily: a corrupt one surfaces here
        raise CollateralError("the PCK certificate's extensions cannot be parsed") from exc
    value = ext.value
    raw = value.value if isinstance(value, x509.UnrecognizedExtension) else b""
    tag, seq, end = _read_tlv(raw, 0)
    if tag != 0x30 or end != len(raw):
        raise CollateralError("SGX extension is not one SEQUENCE")
    top = _pairs(seq)
    try:
        tcb_tag, tcb_value = top[f"{_PREFIX}.2"]
        if tcb_tag != 0x30:
            raise CollateralError("SGX extension TCB is not a SEQUENCE")
        tcb = _pairs(tcb_value)
        components = tuple(_int(tcb[f"{_PREFIX}.2.{i}"], f"TCB component {i}") for i in range(1, 17))
        return PckExtension(
            ppid=_octets(top[f"{_PREFIX}.1"], "PPID"),
            tcb_components=components,
            pce_svn=_int(tcb[f"{_PREFIX}.2.17"], "PCESVN"),
            cpu_svn=_octets(tcb[f"{_PREFIX}.2.18"], "CPUSVN", 16),
            pce_id=_octets(top[f"{_PREFIX}.3"], "PCE-ID", 2),
            fmspc=_octets(top[f"{_PREFIX}.4"], "FMSPC", 6),
            sgx_type=_int(top[f"{_PREFIX}.5"], "SGX type"),
        )
    except KeyError as exc:
        raise CollateralError(f"SGX extension lacks {exc.args[0]}") from exc

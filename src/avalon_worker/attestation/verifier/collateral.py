"""Verification collateral: Intel's signed TCB Info, QE Identity and CRLs, given as a file.

The file is one JSON object in the shape Intel's PCCS clients and `dcap-qvl`'s
`QuoteCollateralV3` use::

    {
      "tcb_info": "<the tcbInfo JSON exactly as Intel signed it>",
      "tcb_info_signature": "<hex r||s>",
      "tcb_info_issuer_chain": "<PEM: TCB Signing cert, Root CA>",
      "qe_identity": "<the enclaveIdentity JSON exactly as signed>",
      "qe_identity_signature": "<hex r||s>",
      "qe_identity_issuer_chain": "<PEM>",
      "pck_crl": "<hex DER or PEM>",
      "pck_crl_issuer_chain": "<PEM>",
      "root_ca_crl": "<hex DER or PEM>"
    }

Loading only decodes; every signature and date is checked by the verifier.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm

from ..errors import CollateralError

# What parsing attacker-supplied certificate or CRL content can raise (cryptography parses lazily,
# so a corrupt field surfaces when it is first read; InvalidVersion is no ValueError). Every
# loader and step of the verifier treats each of them as malformed input, never lets one out.
CERTIFICATE_CONTENT_ERRORS = (
    ValueError,
    TypeError,
    UnsupportedAlgorithm,
    x509.DuplicateExtension,
    x509.InvalidVersion,
    x509.UnsupportedGeneralNameType,
)

_PEM_CERT = re.compile(r"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.DOTALL)
_REQUIRED = (
    "tcb_info",
    "tcb_info_signature",
    "tcb_info_issuer_chain",
    "qe_identity",
    "qe_identity_signature",
    "qe_identity_issuer_chain",
    "pck_crl",
    "root_ca_crl",
)
# Intel's PCS serves collateral for at most a few megabytes; refuse anything absurd.
MAX_COLLATERAL_SIZE = 4 * 1024 * 1024


@dataclass(frozen=True)
class Collateral:
    """Decoded collateral for one platform (FMSPC) and Intel's quoting enclave."""

    tcb_info: str
    tcb_info_signature: bytes
    tcb_info_issuer_chain: tuple[x509.Certificate, ...] = field(repr=False)
    qe_identity: str
    qe_identity_signature: bytes
    qe_identity_issuer_chain: tuple[x509.Certificate, ...] = field(repr=False)
    pck_crl: x509.CertificateRevocationList = field(repr=False)
    root_ca_crl: x509.CertificateRevocationList = field(repr=False)
    pck_crl_issuer_chain: tuple[x509.Certificate, ...] = field(repr=False, default=())

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Collateral:
        """Decode the JSON object described in the module docstring."""
        if not isinstance(data, dict):
            raise CollateralError("collateral must be a JSON object")
        missing = [k for k in _REQUIRED if not data.get(k)]
        if missing:
            raise CollateralError(
                f"collateral lacks {', '.join(missing)}",
                hint="fetch complete collateral for this quote's FMSPC from a PCCS or Intel PCS",
            )
        return cls(
            tcb_info=_text(data, "tcb_info"),
            tcb_info_signature=_signature(data, "tcb_info_signature"),
            tcb_info_issuer_chain=_chain(data, "tcb_info_issuer_chain"),
            qe_identity=_text(data, "qe_identity"),
            qe_identity_signature=_signature(data, "qe_identity_signature"),
            qe_identity_issuer_chain=_chain(data, "qe_identity_issuer_chain"),
            pck_crl=_crl(data, "pck_crl"),
            root_ca_crl=_crl(data, "root_ca_crl"),
            pck_crl_issuer_chain=_chain(data, "pck_crl_issuer_chain")
            if data.get("pck_crl_issuer_chain")
            else (),
        )

    @classmethod
    def from_json(cls, text: str | bytes) -> Collateral:
        """Decode collateral from JSON text."""
        if len(text) > MAX_COLLATERAL_SIZE:
            raise CollateralError(f"collateral over {MAX_COLLATERAL_SIZE} bytes refused")
        try:
            data = json.loads(text)
        except (ValueError, UnicodeDecodeError) as exc:
            raise CollateralError(f"collateral is not JSON: {exc}") from exc
        return cls.from_dict(data)


def load_collateral(path: str | Path) -> Collateral:
    """Read and decode a collateral file."""
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise CollateralError(f"cannot read collateral file {path}: {exc.strerror or exc}") from exc
    return Collateral.from_json(raw)


def _text(data: dict[str, Any], key: str) -> str:
    value = data[key]
    if not isinstance(value, str):
        raise CollateralError(f"collateral {key} must be a string")
    return value


def _signature(data: dict[str, Any], key: str) -> bytes:
    value = data[key]
    try:
        raw = bytes.fromhex(value) if isinstance(value, str) else bytes(value)
    except (ValueError, TypeError) as exc:
        raise CollateralError(f"collateral {key} is not hex") from exc
    if len(raw) != 64:
        raise CollateralError(f"collateral {key} must be a 64-byte ECDSA r||s, got {len(raw)} bytes")
    return raw


def _chain(data: dict[str, Any], key: str) -> tuple[x509.Certificate, ...]:
    text = _text(data, key)
    blocks = _PEM_CERT.findall(text)
    if not blocks:
        raise CollateralError(f"collateral {key} holds no PEM certificate")
    try:
        return tuple(x509.load_pem_x509_certificate(b.encode("ascii")) for b in blocks)
    except CERTIFICATE_CONTENT_ERRORS as exc:
        raise CollateralError(f"collateral {key} has a malformed certificate") from exc


def _crl(data: dict[str, Any], key: str) -> x509.CertificateRevocationList:
    value = _text(data, key).strip()
    try:
        if value.startswith("-----BEGIN"):
            return x509.load_pem_x509_crl(value.encode("ascii"))
        return x509.load_der_x509_crl(bytes.fromhex(value))
    except CERTIFICATE_CONTENT_ERRORS as exc:
        raise CollateralError(f"collateral {key} is not a DER (hex) or PEM CRL") from exc

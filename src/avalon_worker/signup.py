"""The worker's signup document (PROTOCOL §1, §6): its public keys, MRENCLAVE and quote."""

from __future__ import annotations

import base64
from typing import Any

from .attestation.providers import AttestationProvider, report_data
from .identity import Identity


def signup_document(
    identity: Identity, attestation: AttestationProvider | None = None, nonce: bytes | None = None
) -> dict[str, Any]:
    """The fields Avalon reads, in its encodings, plus a few descriptive extras."""
    quote = b""
    mrenclave = ""
    if attestation is not None:
        mrenclave = attestation.mrenclave()
        quote = attestation.quote(report_data(identity.verifying_key_pem, nonce))
    return {
        "sealed_data": "",
        "verifying_key": identity.verifying_key_pem,
        "encryption_key": identity.encryption_key_pem,
        "encryption_key_signature": identity.encryption_key_signature,
        "mrenclave": mrenclave,
        "quote": base64.b64encode(quote).decode("ascii"),
        "worker_id": identity.worker_id,
        "attestation_type": attestation.kind if attestation is not None else "none",
        "signing_algorithm": "SECP256K1",
        "encryption_algorithm": f"RSA-OAEP-{identity.rsa_bits}",
        "hashing_algorithm": "SHA-256",
        "data_encryption_algorithm": "AES-GCM-256",
    }

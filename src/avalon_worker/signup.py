"""The worker's signup document (PROTOCOL §1, §6): its public keys, MRENCLAVE and quote.

"quote" carries the evidence of whichever TEE the worker runs in (an SGX or TDX quote, or an
SEV-SNP report with the host's certificate table), named by "attestation_type"; on TDX the
events extended into RTMR3 come with it (`attestation.measure.RtmrRecord`).
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any

from .attestation.binding import report_data
from .attestation.measure import RtmrRecord
from .attestation.providers import AttestationProvider
from .identity import Identity

SignupFunction = Callable[[bytes | None], dict[str, Any]]
"""Makes the signup document, its quote bound to a nonce when one is given."""


def signup_document(
    identity: Identity,
    attestation: AttestationProvider | None = None,
    nonce: bytes | None = None,
    *,
    worker_id: str | None = None,
    rtmr: RtmrRecord | None = None,
) -> dict[str, Any]:
    """The fields Avalon reads, in its encodings, plus a few descriptive extras.

    `worker_id` is the id requesters address this worker by (default: SHA-256 of its
    verifying key). `rtmr` (TDX) adds the RTMR3 events: tdx_rtmr_events, tdx_rtmr_extended
    and, when there is something to say, tdx_rtmr_note.
    """
    quote = b""
    mrenclave = ""
    if attestation is not None:
        mrenclave = attestation.mrenclave()
        quote = attestation.quote(report_data(identity.verifying_key_pem, nonce))
    document = {
        "sealed_data": "",
        "verifying_key": identity.verifying_key_pem,
        "encryption_key": identity.encryption_key_pem,
        "encryption_key_signature": identity.encryption_key_signature,
        "mrenclave": mrenclave,
        "quote": base64.b64encode(quote).decode("ascii"),
        "worker_id": worker_id or identity.worker_id,
        "attestation_type": attestation.kind if attestation is not None else "none",
        "signing_algorithm": "SECP256K1",
        "encryption_algorithm": f"RSA-OAEP-{identity.rsa_bits}",
        "hashing_algorithm": "SHA-256",
        "data_encryption_algorithm": "AES-GCM-256",
    }
    if rtmr is not None:
        document.update(rtmr.signup_fields())
    return document


def signup_function(
    identity: Identity,
    attestation: AttestationProvider | None = None,
    *,
    worker_id: str | None = None,
    rtmr: RtmrRecord | None = None,
) -> SignupFunction:
    """`signup_document` for this worker, as the processor calls it: nonce in, document out."""

    def signup(nonce: bytes | None) -> dict[str, Any]:
        return signup_document(identity, attestation, nonce, worker_id=worker_id, rtmr=rtmr)

    return signup

"""REPORT_DATA: what ties a quote to a worker's keys. Shared by both sides, pure hashing."""

from __future__ import annotations

import hashlib

REPORT_DATA_SIZE = 64


def report_data(verifying_key_pem: str, nonce: bytes | None = None) -> bytes:
    """REPORT_DATA binding a quote to a worker: SHA256(verifying key PEM) ‖ SHA256(nonce) or ‖ 0³².

    The PEM is hashed exactly as published (UTF-8 of the string, line breaks included).
    """
    first = hashlib.sha256(verifying_key_pem.encode("utf-8")).digest()
    second = hashlib.sha256(nonce).digest() if nonce is not None else bytes(32)
    return first + second

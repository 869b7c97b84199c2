"""SGX SIGSTRUCT: the enclave signature `gramine-sgx-sign` writes (the ``.sig`` file).

A SIGSTRUCT carries what a quote of that enclave will show: MRENCLAVE (ENCLAVEHASH), the
signer's key (MRSIGNER is the SHA-256 of its modulus, little-endian as stored), ISVPRODID,
ISVSVN and the attributes (DEBUG). `parse_sigstruct` reads one (pure, no I/O) and checks its
fixed headers and its RSA-3072 signature, so that a truncated or edited file is an error, not
a policy with wrong values. `policy_for` turns it into the requester's policy document.

Layout: Intel SDM Vol. 3D, "Enclave Signature Structure (SIGSTRUCT)"; integers little-endian.
The signed bytes are 0..128 and 900..1028, signed with RSASSA-PKCS1-v1_5 and SHA-256.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from ..errors import AttestationError

SIGSTRUCT_SIZE = 1808
_HEADER = bytes.fromhex("06000000e10000000000010000000000")
_HEADER2 = bytes.fromhex("01010000600000006000000001000000")
_MODULUS = slice(128, 512)
_SIGNATURE = slice(516, 900)
_SIGNED = (slice(0, 128), slice(900, 1028))
_KEY_BYTES = 384  # RSA-3072, the only size SGX accepts
_FLAG_DEBUG = 0x2


class SigstructError(AttestationError):
    """The bytes are not a well-formed, correctly signed SIGSTRUCT."""

    exit_status = 2


@dataclass(frozen=True)
class Sigstruct:
    """The identity an enclave's quotes will carry, as its SIGSTRUCT states it."""

    mrenclave: bytes
    mrsigner: bytes
    isv_prod_id: int
    isv_svn: int
    attribute_flags: int
    attribute_xfrm: int
    misc_select: int
    date: str  # YYYY-MM-DD as signed (BCD in the structure)

    @property
    def debug(self) -> bool:
        """Whether the enclave is a debug enclave (its memory readable by the host)."""
        return bool(self.attribute_flags & _FLAG_DEBUG)

    def to_dict(self) -> dict[str, Any]:
        """The fields under the names `gramine-sgx-sigstruct-view --output-format=json` uses."""
        return {
            "mr_enclave": self.mrenclave.hex(),
            "mr_signer": self.mrsigner.hex(),
            "isv_prod_id": self.isv_prod_id,
            "isv_svn": self.isv_svn,
            "debug_enclave": self.debug,
        }


def parse_sigstruct(data: bytes) -> Sigstruct:
    """Parse and check a SIGSTRUCT; `SigstructError` says what is wrong with it."""
    if len(data) != SIGSTRUCT_SIZE:
        raise SigstructError(f"a SIGSTRUCT is {SIGSTRUCT_SIZE} bytes, this is {len(data)}")
    if data[0:16] != _HEADER or data[24:40] != _HEADER2:
        raise SigstructError("not a SIGSTRUCT (its fixed header bytes differ)")
    exponent = struct.unpack_from("<I", data, 512)[0]
    if exponent != 3:
        raise SigstructError(f"the signing key's public exponent is {exponent}; SGX requires 3")
    modulus = data[_MODULUS]
    _check_signature(data, modulus, exponent)
    misc_select, flags, xfrm = struct.unpack_from("<I", data, 900)[0], *struct.unpack_from("<QQ", data, 928)
    isv_prod_id, isv_svn = struct.unpack_from("<HH", data, 1024)
    return Sigstruct(
        mrenclave=bytes(data[960:992]),
        mrsigner=hashlib.sha256(modulus).digest(),
        isv_prod_id=isv_prod_id,
        isv_svn=isv_svn,
        attribute_flags=flags,
        attribute_xfrm=xfrm,
        misc_select=misc_select,
        date=_bcd_date(data[20:24]),
    )


def _check_signature(data: bytes, modulus: bytes, exponent: int) -> None:
    n = int.from_bytes(modulus, "little")
    if n.bit_length() != _KEY_BYTES * 8:
        raise SigstructError(f"the signing key is RSA-{n.bit_length()}; SGX requires RSA-3072")
    key = rsa.RSAPublicNumbers(exponent, n).public_key()
    signature = data[_SIGNATURE][::-1]  # stored little-endian, RSA works big-endian
    signed = b"".join(data[part] for part in _SIGNED)
    try:
        key.verify(signature, signed, padding.PKCS1v15(), hashes.SHA256())
    except InvalidSignature:
        raise SigstructError("its signature does not match its contents (changed after signing?)") from None


def _bcd_date(raw: bytes) -> str:
    """DATE is yyyymmdd in BCD, stored as a little-endian u32 (day, month, year low, year high)."""
    digits = raw[::-1].hex()
    return f"{digits[0:4]}-{digits[4:6]}-{digits[6:8]}"


def policy_for(sig: Sigstruct) -> dict[str, Any]:
    """The policy file that admits exactly this signed enclave (see `policy.load_policy`).

    Its "sgx" section pins MRENCLAVE (the code) and, together with it, MRSIGNER, ISVPRODID and
    ISVSVN as the minimum (who signed it, as which product and version), on an up-to-date TCB.
    """
    return {
        "sgx": {
            "enclave": {
                "all_of": [
                    {"mrenclave": [sig.mrenclave.hex()]},
                    {"mrsigner": sig.mrsigner.hex(), "isv_prod_id": sig.isv_prod_id, "min_isv_svn": sig.isv_svn},
                ]
            },
            "accepted_tcb_statuses": ["UpToDate"],
        }
    }

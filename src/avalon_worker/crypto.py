"""Cryptographic primitives of the work-order protocol, and nothing else.

OpenSSL (through `cryptography`) does RSA-OAEP and AES-256-GCM; libsecp256k1 (through
`coincurve`) does ECDSA secp256k1 in constant time. Every failure to decrypt or verify raises
`CryptoError`, whatever the library said, so callers can collapse them into one integrity error.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import os

import coincurve
from cryptography.exceptions import InvalidTag, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from .errors import Error

AES_KEY_BYTES = 32
GCM_IV_BYTES = 12
GCM_TAG_BYTES = 16

# Order of the secp256k1 group; a signature's S above n/2 is "high-S".
SECP256K1_ORDER = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141

# EEA TC 1.1 and Avalon wrap session keys with OAEP over SHA-1 (MGF1 SHA-1).
_OAEP = padding.OAEP(mgf=padding.MGF1(algorithm=hashes.SHA1()), algorithm=hashes.SHA1(), label=None)


class CryptoError(Error):
    """A decryption or verification failed (the reason is deliberately vague)."""


def sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def random_bytes(n: int) -> bytes:
    """Bytes from the operating system's CSPRNG."""
    return os.urandom(n)


def digests_equal(a: bytes, b: bytes) -> bool:
    return hmac.compare_digest(a, b)


@functools.lru_cache(maxsize=64)
def _aes_gcm(key: bytes) -> AESGCM:
    # A session key serves at least three operations per work order (request hash, input,
    # output) and a reused one serves many orders: set each key up once, not per operation.
    return AESGCM(key)


def aes_gcm_encrypt(key: bytes, iv: bytes, plaintext: bytes) -> bytes:
    """AES-256-GCM without associated data: ciphertext ‖ 16-byte tag."""
    return _aes_gcm(key).encrypt(iv, plaintext, None)


def aes_gcm_decrypt(key: bytes, iv: bytes, data: bytes) -> bytes:
    """Inverse of `aes_gcm_encrypt`; raises `CryptoError` on any failure."""
    if len(key) != AES_KEY_BYTES or not iv or len(data) < GCM_TAG_BYTES:
        raise CryptoError("bad AES-GCM input")
    try:
        return _aes_gcm(key).decrypt(iv, data, None)
    except (InvalidTag, ValueError) as exc:
        raise CryptoError("AES-GCM authentication failed") from exc


def aes_gcm_decrypt_prefixed(key: bytes, data: bytes) -> bytes:
    """Decrypt IV ‖ ciphertext ‖ tag (the Avalon convention when no IV is given elsewhere)."""
    if len(data) < GCM_IV_BYTES + GCM_TAG_BYTES:
        raise CryptoError("ciphertext too short for its IV prefix")
    return aes_gcm_decrypt(key, data[:GCM_IV_BYTES], data[GCM_IV_BYTES:])


# RSA-OAEP ------------------------------------------------------------------------------------


def generate_rsa_key(bits: int) -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


def rsa_oaep_encrypt(public_key: rsa.RSAPublicKey, plaintext: bytes) -> bytes:
    return public_key.encrypt(plaintext, _OAEP)


def rsa_oaep_decrypt(private_key: rsa.RSAPrivateKey, ciphertext: bytes) -> bytes:
    """Raises `CryptoError` for a wrong length, a value ≥ the modulus, or bad padding."""
    try:
        return private_key.decrypt(ciphertext, _OAEP)
    except ValueError as exc:
        raise CryptoError("RSA-OAEP decryption failed") from exc


def load_rsa_public_pem(pem: str | bytes) -> rsa.RSAPublicKey:
    key = _load_public_pem(pem)
    if not isinstance(key, rsa.RSAPublicKey):
        raise ValueError("not an RSA public key")
    return key


def public_pem(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> str:
    """PEM SubjectPublicKeyInfo of a private key's public half."""
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode("ascii")
    )


def private_pem(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode("ascii")


def _load_public_pem(pem: str | bytes) -> object:
    try:
        data = pem.encode("ascii") if isinstance(pem, str) else pem
        return serialization.load_pem_public_key(data)
    except (ValueError, TypeError, UnicodeError, UnsupportedAlgorithm) as exc:  # e.g. a curve OpenSSL lacks
        raise ValueError("not a PEM public key") from exc


# ECDSA secp256k1 ----------------------------------------------------------------------------


class SigningKey:
    """An ECDSA secp256k1 private key that signs 32-byte digests (libsecp256k1)."""

    def __init__(self, secret: bytes) -> None:
        self._key = coincurve.PrivateKey(secret)
        public = ec.EllipticCurvePublicKey.from_encoded_point(
            ec.SECP256K1(), self._key.public_key.format(compressed=False)
        )
        self.verifying_key_pem: str = public.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ).decode("ascii")

    @classmethod
    def generate(cls) -> SigningKey:
        return cls(coincurve.PrivateKey().secret)

    @classmethod
    def from_pem(cls, pem: str | bytes) -> SigningKey:
        data = pem.encode("ascii") if isinstance(pem, str) else pem
        key = serialization.load_pem_private_key(data, password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, ec.SECP256K1):
            raise ValueError("not a secp256k1 private key")
        return cls(key.private_numbers().private_value.to_bytes(32, "big"))

    def to_pem(self) -> str:
        key = ec.derive_private_key(int.from_bytes(self._key.secret, "big"), ec.SECP256K1())
        return private_pem(key)

    def sign_digest(self, digest: bytes) -> bytes:
        """DER ECDSA signature over a 32-byte digest (signed as is, not hashed again)."""
        if len(digest) != 32:
            raise ValueError("digest must be 32 bytes")
        return self._key.sign(digest, hasher=None)


class VerifyingKey:
    """An ECDSA secp256k1 public key, loaded once from PEM, that verifies digests."""

    def __init__(self, pem: str | bytes) -> None:
        """Raises `ValueError` for anything but a PEM secp256k1 public key."""
        key = _load_public_pem(pem)
        if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256K1):
            raise ValueError("not a secp256k1 public key")
        raw = key.public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
        self._key = coincurve.PublicKey(raw)

    def verify_digest(self, signature_der: bytes, digest: bytes) -> None:
        """Raise `CryptoError` unless `signature_der` signs the 32-byte `digest`.

        High-S signatures (as python-ecdsa and OpenSSL make) are accepted: libsecp256k1 only
        verifies low-S, so S is normalised first.
        """
        if len(digest) != 32:
            raise CryptoError("digest must be 32 bytes")
        try:
            r, s = decode_dss_signature(signature_der)
        except ValueError as exc:
            raise CryptoError("signature is not DER") from exc
        if not (0 < r < SECP256K1_ORDER and 0 < s < SECP256K1_ORDER):
            raise CryptoError("signature out of range")
        if s > SECP256K1_ORDER // 2:
            s = SECP256K1_ORDER - s
        try:
            ok = self._key.verify(encode_dss_signature(r, s), digest, hasher=None)
        except (ValueError, TypeError) as exc:
            raise CryptoError("signature invalid") from exc
        if not ok:
            raise CryptoError("signature invalid")

"""Known answers for the work-order hashes, AES-GCM and secp256k1 signatures.

The vector is the one in the protocol notes (request and response hash of EEA TC 1.1 §6.6, computed
the Avalon way on the strings as transmitted). Each answer is checked twice: by the independent
test requester (pycryptodomex + python-ecdsa, no `avalon_worker` import) and by our package, so a
mistake shared by the worker and our own client cannot pass both.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import secrets
import threading
from typing import Any

import ecdsa
import pytest
import zmq
from Cryptodome.Cipher import PKCS1_OAEP
from Cryptodome.Hash import SHA1
from Cryptodome.PublicKey import RSA
from ecdsa.util import sigdecode_der, sigencode_der
from hypothesis import given, settings
from hypothesis import strategies as st

from avalon_worker import crypto

import independent_requester as ir
from conftest import concat_items_of, request_hash_of, response_hash_of

# --- The vector ------------------------------------------------------------------------------

SESSION_KEY = bytes(range(32))
SESSION_KEY_IV = bytes.fromhex("6465666768696a6b6c6d6e6f")
WORK_ORDER_ID = "aa" * 32
REQUESTER_ID = "bb" * 32
REQUESTER_NONCE = "cc" * 16
WORKER_ID = "1e9ba3f5f133751c1664ab27ffcfa8b77ded410b254be92dc1b4119c30237ff3"
WORKLOAD_ID = "707974686f6e2d68656c6c6f"
WORLD_ITEM = {
    "index": 1,
    "dataHash": "",
    "data": "H3SsCh2+2sqW/3zhToO4j/6N5BGr",
    "encryptedDataEncryptionKey": "null",
    "iv": "",
}
PLAIN_ITEM = {"index": 0, "data": "cGxhaW4=", "encryptedDataEncryptionKey": "-"}
CAT_IN_DATA = "cGxhaW4=-H3SsCh2+2sqW/3zhToO4j/6N5BGrnull"
REQUEST_HASH = bytes.fromhex("5d9c317f0d48179e5acf11aed3d4ff6d38506b9ff8ecba5daffc9554b1fc0b71")
ENCRYPTED_REQUEST_HASH = bytes.fromhex(
    "1587ef1974a1410064ad4e4609b195907a926d957380492f082d391c4a5fae39"
    "f3365da4b1cc0a425ba4c8c0122c1cf0"
)
WORKER_NONCE = "QUJDREVGR0hJSktMTU5PUA=="
HELLO_ITEM = {
    "index": 0,
    "data": "AH6yChbJAfFMDjul19XYSrn0jEzrVFtpcSuI",
    "encryptedDataEncryptionKey": "null",
    "iv": "",
}
RESPONSE_HASH = bytes.fromhex("a9cec91ac4a15869540e5b40d1544c766987a2a82d3dd581ab20bb916947b927")
VECTOR_IDS = {
    "workOrderId": WORK_ORDER_ID,
    "requesterId": REQUESTER_ID,
    "requesterNonce": REQUESTER_NONCE,
    "workerId": WORKER_ID,
    "workloadId": WORKLOAD_ID,
}

SECP256K1_ORDER = ecdsa.SECP256k1.order


def vector_params() -> dict[str, Any]:
    return {
        **VECTOR_IDS,
        "sessionKeyIv": SESSION_KEY_IV.hex(),
        "encryptedRequestHash": ENCRYPTED_REQUEST_HASH.hex(),
        "inData": [dict(WORLD_ITEM), dict(PLAIN_ITEM)],
    }


def vector_result() -> dict[str, Any]:
    return {
        "workOrderId": WORK_ORDER_ID,
        "workloadId": WORKLOAD_ID,
        "workerId": WORKER_ID,
        "requesterId": REQUESTER_ID,
        "workerNonce": WORKER_NONCE,
        "workerSignature": "",
        "outData": [dict(HELLO_ITEM)],
    }


def test_vector_worker_id_is_sha256_of_the_worker_name() -> None:
    assert hashlib.sha256(b"graphene-worker-1").hexdigest() == WORKER_ID
    assert b"python-hello".hex() == WORKLOAD_ID


# --- (a) The independent implementation reproduces the vector --------------------------------


class TestIndependentVector:
    def test_concat_orders_items_by_index_and_keeps_null_and_dash_as_text(self) -> None:
        assert ir.concat_items(vector_params()["inData"]) == CAT_IN_DATA

    def test_request_hash(self) -> None:
        assert ir.request_hash(vector_params()) == REQUEST_HASH

    def test_encrypted_request_hash(self) -> None:
        assert ir.aes_gcm_encrypt(SESSION_KEY, SESSION_KEY_IV, REQUEST_HASH) == ENCRYPTED_REQUEST_HASH
        assert ir.aes_gcm_decrypt(SESSION_KEY, SESSION_KEY_IV, ENCRYPTED_REQUEST_HASH) == REQUEST_HASH

    @pytest.mark.parametrize(
        ("plaintext", "data"), [(b"World", WORLD_ITEM["data"]), (b"Hello World", HELLO_ITEM["data"])]
    )
    def test_aes_gcm_ciphertexts(self, plaintext: bytes, data: str) -> None:
        encrypted = base64.b64decode(data)
        assert ir.aes_gcm_encrypt(SESSION_KEY, SESSION_KEY_IV, plaintext) == encrypted
        assert ir.aes_gcm_decrypt(SESSION_KEY, SESSION_KEY_IV, encrypted) == plaintext

    def test_aes_gcm_rejects_a_flipped_tag_bit(self) -> None:
        tampered = bytearray(ENCRYPTED_REQUEST_HASH)
        tampered[-1] ^= 1
        with pytest.raises(ir.VerificationError):
            ir.aes_gcm_decrypt(SESSION_KEY, SESSION_KEY_IV, bytes(tampered))

    def test_response_hash(self) -> None:
        assert ir.response_hash(vector_result()) == RESPONSE_HASH

    def test_response_hash_ignores_the_worker_signature(self) -> None:
        result = vector_result()
        result["workerSignature"] = "anything"
        assert ir.response_hash(result) == RESPONSE_HASH


# --- (b) Our package reproduces the vector ---------------------------------------------------


class TestHashing:
    def test_concat_items(self) -> None:
        assert concat_items_of(vector_params()["inData"]) == CAT_IN_DATA

    def test_request_hash(self) -> None:
        assert request_hash_of(vector_params()) == REQUEST_HASH

    def test_response_hash(self) -> None:
        assert response_hash_of(vector_result()) == RESPONSE_HASH

    def test_request_hash_appends_non_empty_out_data(self) -> None:
        params = vector_params()
        params["outData"] = [
            {"index": 0, "dataHash": "", "data": "", "encryptedDataEncryptionKey": "-", "iv": ""}
        ]
        ids = REQUESTER_NONCE + WORK_ORDER_ID + WORKER_ID + WORKLOAD_ID + REQUESTER_ID
        expected = hashlib.sha256(
            hashlib.sha256(ids.encode()).digest()
            + hashlib.sha256(CAT_IN_DATA.encode()).digest()
            + hashlib.sha256(b"-").digest()
        ).digest()
        assert request_hash_of(params) == ir.request_hash(params) == expected
        assert expected != REQUEST_HASH

    def test_request_hash_leaves_out_empty_out_data(self) -> None:
        params = vector_params()
        params["outData"] = []
        assert request_hash_of(params) == ir.request_hash(params) == REQUEST_HASH

    @pytest.mark.parametrize("style", ["upper", "0x"])
    def test_ids_are_hashed_as_transmitted(self, style: str) -> None:
        params = vector_params()
        for name in ("workOrderId", "requesterId", "workerId"):
            params[name] = params[name].upper() if style == "upper" else "0x" + params[name]
        assert request_hash_of(params) == ir.request_hash(params) != REQUEST_HASH

    def test_a_null_field_hashes_like_an_absent_one(self) -> None:
        params = vector_params()
        params["inData"][1]["dataHash"] = None
        params["inData"][1]["iv"] = None
        assert request_hash_of(params) == ir.request_hash(params) == REQUEST_HASH

    def test_request_hashing_neither_mutates_nor_reorders_the_callers_lists(self) -> None:
        params = vector_params()
        params["outData"] = [{"index": 2, "data": "x"}, {"index": 1, "data": "y"}]
        snapshot = copy.deepcopy(params)
        in_items = list(params["inData"])
        out_items = list(params["outData"])
        request_hash_of(params)
        concat_items_of(params["inData"])
        assert params == snapshot
        assert [it["index"] for it in params["inData"]] == [1, 0]
        assert [it["index"] for it in params["outData"]] == [2, 1]
        assert all(a is b for a, b in zip(params["inData"], in_items))
        assert all(a is b for a, b in zip(params["outData"], out_items))

    def test_response_hashing_neither_mutates_nor_reorders_the_callers_lists(self) -> None:
        result = vector_result()
        result["outData"] = [dict(HELLO_ITEM, index=3), dict(HELLO_ITEM, index=0)]
        snapshot = copy.deepcopy(result)
        response_hash_of(result)
        assert result == snapshot
        assert [it["index"] for it in result["outData"]] == [3, 0]

    def test_hashing_accepts_tuples_and_read_only_mappings(self) -> None:
        from types import MappingProxyType

        params = MappingProxyType({**vector_params(), "inData": tuple(vector_params()["inData"])})
        assert request_hash_of(params) == REQUEST_HASH

    @settings(max_examples=200, deadline=None)
    @given(
        st.lists(
            st.fixed_dictionaries(
                {"index": st.integers(-5, 50)},
                optional={
                    name: st.one_of(st.none(), st.text())
                    for name in ("dataHash", "data", "encryptedDataEncryptionKey", "iv")
                },
            ),
            min_size=1,
            max_size=6,
        ),
        st.lists(st.fixed_dictionaries({"index": st.integers(0, 9), "data": st.text()}), max_size=3),
        st.dictionaries(
            st.sampled_from(["requesterNonce", "workOrderId", "workerId", "workloadId", "requesterId"]),
            st.text(),
        ),
    )
    def test_request_hash_agrees_with_the_independent_one(
        self, in_data: list[dict[str, Any]], out_data: list[dict[str, Any]], ids: dict[str, str]
    ) -> None:
        params = {**ids, "inData": in_data, "outData": out_data}
        assert concat_items_of(in_data) == ir.concat_items(in_data)
        assert request_hash_of(params) == ir.request_hash(params)
        result = {**ids, "workerNonce": "n", "outData": in_data}
        assert response_hash_of(result) == ir.response_hash(result)


class TestAesGcm:
    @pytest.mark.parametrize(
        ("plaintext", "data"),
        [(b"World", WORLD_ITEM["data"]), (b"Hello World", HELLO_ITEM["data"]), (REQUEST_HASH, None)],
    )
    def test_encrypt_matches_the_vector(self, plaintext: bytes, data: str | None) -> None:
        expected = ENCRYPTED_REQUEST_HASH if data is None else base64.b64decode(data)
        assert crypto.aes_gcm_encrypt(SESSION_KEY, SESSION_KEY_IV, plaintext) == expected
        assert crypto.aes_gcm_decrypt(SESSION_KEY, SESSION_KEY_IV, expected) == plaintext

    @pytest.mark.parametrize("position", [0, 31, 32, 47])
    def test_decrypt_rejects_a_flipped_bit(self, position: int) -> None:
        tampered = bytearray(ENCRYPTED_REQUEST_HASH)
        tampered[position] ^= 0x80
        with pytest.raises(crypto.CryptoError):
            crypto.aes_gcm_decrypt(SESSION_KEY, SESSION_KEY_IV, bytes(tampered))

    def test_decrypt_rejects_the_wrong_iv(self) -> None:
        with pytest.raises(crypto.CryptoError):
            crypto.aes_gcm_decrypt(SESSION_KEY, bytes(12), ENCRYPTED_REQUEST_HASH)

    @pytest.mark.parametrize("data", [b"", b"short", ENCRYPTED_REQUEST_HASH[:15]])
    def test_decrypt_rejects_data_shorter_than_a_tag(self, data: bytes) -> None:
        with pytest.raises(crypto.CryptoError):
            crypto.aes_gcm_decrypt(SESSION_KEY, SESSION_KEY_IV, data)

    def test_prefixed_decrypt_reads_the_iv_from_the_first_12_bytes(self) -> None:
        data = SESSION_KEY_IV + ENCRYPTED_REQUEST_HASH
        assert crypto.aes_gcm_decrypt_prefixed(SESSION_KEY, data) == REQUEST_HASH

    @given(
        key=st.binary(min_size=32, max_size=32),
        iv=st.binary(min_size=12, max_size=12),
        plaintext=st.binary(max_size=200),
    )
    def test_ciphertexts_agree_with_pycryptodome(
        self, key: bytes, iv: bytes, plaintext: bytes
    ) -> None:
        ours = crypto.aes_gcm_encrypt(key, iv, plaintext)
        assert ours == ir.aes_gcm_encrypt(key, iv, plaintext)
        assert ir.aes_gcm_decrypt(key, iv, ours) == plaintext


# --- Signatures, both ways -------------------------------------------------------------------


def _flip_bit(data: bytes, bit: int) -> bytes:
    flipped = bytearray(data)
    flipped[bit // 8] ^= 1 << (bit % 8)
    return bytes(flipped)


def _ecdsa_signature(key: ecdsa.SigningKey, digest: bytes, *, high_s: bool) -> bytes:
    r, s = key.sign_digest(digest, sigencode=lambda r, s, _order: (r, s))
    if (s > SECP256K1_ORDER // 2) != high_s:
        s = SECP256K1_ORDER - s
    return sigencode_der(r, s, SECP256K1_ORDER)


def _ecdsa_accepts(public_pem: str, signature: bytes, digest: bytes) -> bool:
    key = ecdsa.VerifyingKey.from_pem(public_pem)
    try:
        return key.verify_digest(signature, digest, sigdecode=sigdecode_der)
    except (ecdsa.BadSignatureError, ecdsa.UnexpectedDER):
        return False


def _ours_accepts(public_pem: str, signature: bytes, digest: bytes) -> bool:
    try:
        crypto.VerifyingKey(public_pem).verify_digest(signature, digest)
    except crypto.CryptoError:
        return False
    return True


@pytest.fixture(scope="module")
def our_key() -> crypto.SigningKey:
    return crypto.SigningKey.generate()


@pytest.fixture(scope="module")
def their_key() -> ecdsa.SigningKey:
    return ecdsa.SigningKey.generate(curve=ecdsa.SECP256k1)


class TestSignatureInterop:
    def test_our_verifying_key_pem_is_a_secp256k1_public_key_for_ecdsa(
        self, our_key: crypto.SigningKey
    ) -> None:
        assert our_key.verifying_key_pem.startswith("-----BEGIN PUBLIC KEY-----")
        assert ecdsa.VerifyingKey.from_pem(our_key.verifying_key_pem).curve == ecdsa.SECP256k1

    def test_our_signature_verifies_with_ecdsa(self, our_key: crypto.SigningKey) -> None:
        signature = our_key.sign_digest(REQUEST_HASH)
        assert _ecdsa_accepts(our_key.verifying_key_pem, signature, REQUEST_HASH)
        assert _ours_accepts(our_key.verifying_key_pem, signature, REQUEST_HASH)

    def test_our_key_signs_the_digest_itself_not_its_hash(self, our_key: crypto.SigningKey) -> None:
        signature = our_key.sign_digest(REQUEST_HASH)
        assert not _ecdsa_accepts(
            our_key.verifying_key_pem, signature, hashlib.sha256(REQUEST_HASH).digest()
        )

    @pytest.mark.parametrize("high_s", [True, False], ids=["high-S", "low-S"])
    def test_ecdsa_signature_verifies_with_ours(self, their_key: ecdsa.SigningKey, high_s: bool) -> None:
        pem = their_key.get_verifying_key().to_pem().decode()
        signature = _ecdsa_signature(their_key, RESPONSE_HASH, high_s=high_s)
        assert (sigdecode_der(signature, SECP256K1_ORDER)[1] > SECP256K1_ORDER // 2) == high_s
        assert _ecdsa_accepts(pem, signature, RESPONSE_HASH)
        assert _ours_accepts(pem, signature, RESPONSE_HASH)

    def test_a_flipped_signature_bit_fails_in_both(
        self, our_key: crypto.SigningKey, their_key: ecdsa.SigningKey
    ) -> None:
        their_pem = their_key.get_verifying_key().to_pem().decode()
        for pem, signature in [
            (our_key.verifying_key_pem, our_key.sign_digest(REQUEST_HASH)),
            (their_pem, _ecdsa_signature(their_key, REQUEST_HASH, high_s=True)),
            (their_pem, _ecdsa_signature(their_key, REQUEST_HASH, high_s=False)),
        ]:
            for bit in range(len(signature) * 8):
                tampered = _flip_bit(signature, bit)
                assert not _ours_accepts(pem, tampered, REQUEST_HASH), bit
            for bit in range(0, len(signature) * 8, 5):
                assert not _ecdsa_accepts(pem, _flip_bit(signature, bit), REQUEST_HASH), bit

    @pytest.mark.parametrize("bit", [0, 7, 128, 255])
    def test_a_flipped_digest_bit_fails_in_both(
        self, our_key: crypto.SigningKey, their_key: ecdsa.SigningKey, bit: int
    ) -> None:
        their_pem = their_key.get_verifying_key().to_pem().decode()
        ours = our_key.sign_digest(REQUEST_HASH)
        theirs = _ecdsa_signature(their_key, REQUEST_HASH, high_s=True)
        wrong = _flip_bit(REQUEST_HASH, bit)
        assert not _ours_accepts(our_key.verifying_key_pem, ours, wrong)
        assert not _ecdsa_accepts(our_key.verifying_key_pem, ours, wrong)
        assert not _ours_accepts(their_pem, theirs, wrong)
        assert not _ecdsa_accepts(their_pem, theirs, wrong)

    def test_another_keys_signature_fails(
        self, our_key: crypto.SigningKey, their_key: ecdsa.SigningKey
    ) -> None:
        theirs = _ecdsa_signature(their_key, REQUEST_HASH, high_s=False)
        assert not _ours_accepts(our_key.verifying_key_pem, theirs, REQUEST_HASH)

    @pytest.mark.parametrize(
        ("r", "s"),
        [(0, 1), (1, 0), (SECP256K1_ORDER, 1), (1, SECP256K1_ORDER)],
        ids=["r=0", "s=0", "r=n", "s=n"],
    )
    def test_out_of_range_signature_values_raise_crypto_error(
        self, our_key: crypto.SigningKey, r: int, s: int
    ) -> None:
        with pytest.raises(crypto.CryptoError):
            crypto.VerifyingKey(our_key.verifying_key_pem).verify_digest(
                sigencode_der(r, s, SECP256K1_ORDER), REQUEST_HASH
            )

    @pytest.mark.parametrize("signature", [b"", b"\x30\x00", b"not a signature"])
    def test_malformed_der_raises_crypto_error(
        self, our_key: crypto.SigningKey, signature: bytes
    ) -> None:
        with pytest.raises(crypto.CryptoError):
            crypto.VerifyingKey(our_key.verifying_key_pem).verify_digest(signature, REQUEST_HASH)

    def test_a_digest_of_the_wrong_length_is_refused(self, our_key: crypto.SigningKey) -> None:
        with pytest.raises(ValueError):
            our_key.sign_digest(REQUEST_HASH[:31])
        with pytest.raises(crypto.CryptoError):
            crypto.VerifyingKey(our_key.verifying_key_pem).verify_digest(
                our_key.sign_digest(REQUEST_HASH), REQUEST_HASH + b"\x00"
            )

    def test_ecdsa_verifies_the_vector_signed_over_concatenated_inner_hashes(
        self, their_key: ecdsa.SigningKey
    ) -> None:
        # §4: signing the 32-byte digest equals ECDSA-SHA256 over the concatenated inner hashes.
        ids = (WORKER_NONCE + WORK_ORDER_ID + WORKER_ID + WORKLOAD_ID + REQUESTER_ID).encode()
        cat_out = (HELLO_ITEM["data"] + "null").encode()
        inner = hashlib.sha256(ids).digest() + hashlib.sha256(cat_out).digest()
        signature = their_key.sign(inner, hashfunc=hashlib.sha256, sigencode=sigencode_der)
        assert _ours_accepts(their_key.get_verifying_key().to_pem().decode(), signature, RESPONSE_HASH)


# --- The independent requester, checked against a fake worker written here -------------------


class FakeWorker:
    """Just enough of a worker, with pycryptodome and python-ecdsa, to exercise the requester."""

    def __init__(self) -> None:
        self.rsa = RSA.generate(2048)
        self.signing_key = ecdsa.SigningKey.generate(curve=ecdsa.SECP256k1)
        encryption_key = self.rsa.public_key().export_key().decode("ascii")
        digest = hashlib.sha256(encryption_key.encode()).digest()
        signature = self.signing_key.sign_digest(digest, sigencode=sigencode_der)
        self.signup = {
            "sealed_data": "",
            "verifying_key": self.signing_key.get_verifying_key().to_pem().decode("ascii"),
            "encryption_key": encryption_key,
            "encryption_key_signature": signature.hex(),
            "mrenclave": "",
            "quote": "",
        }

    def unwrap(self, ciphertext: bytes) -> bytes:
        return PKCS1_OAEP.new(self.rsa, hashAlgo=SHA1).decrypt(ciphertext)

    def session_key(self, params: dict[str, Any]) -> bytes:
        return self.unwrap(bytes.fromhex(params["encryptedSessionKey"]))

    @staticmethod
    def decrypt(key: bytes, params: dict[str, Any], data: bytes, iv_hex: str | None) -> bytes:
        """The item's iv, else sessionKeyIv, else a 12-byte IV prefix (PROTOCOL §3)."""
        if iv_hex:
            return ir.aes_gcm_decrypt(key, bytes.fromhex(iv_hex), data)
        if "sessionKeyIv" in params:
            return ir.aes_gcm_decrypt(key, bytes.fromhex(params["sessionKeyIv"]), data)
        return ir.aes_gcm_decrypt(key, data[:12], data[12:])

    def data_key(self, params: dict[str, Any], ekey: str) -> bytes:
        wrapped = bytes.fromhex(ekey)
        session_key = self.session_key(params)
        return self.unwrap(ir.aes_gcm_decrypt(session_key, wrapped[:12], wrapped[12:]))

    def open_item(self, params: dict[str, Any], item: dict[str, Any]) -> bytes:
        ekey = item.get("encryptedDataEncryptionKey")
        data = base64.b64decode(item["data"])
        if ekey == "-":
            return data
        if ekey in (None, "", "null"):
            key = self.session_key(params)
        else:
            key = self.data_key(params, ekey)
        return self.decrypt(key, params, data, item.get("iv"))

    def reply(
        self, request: dict[str, Any], outputs: list[tuple[int, bytes, str]], *, iv: str = "fresh"
    ) -> dict[str, Any]:
        """A signed result; outputs are (index, plaintext, eKey).

        iv: "fresh" (own iv per item), "session" (reuse sessionKeyIv) or "prefix" (empty iv,
        a fresh IV prefixed to the data).
        """
        params = request["params"]
        out_data = []
        for index, plaintext, ekey in outputs:
            item: dict[str, Any] = {
                "index": index,
                "dataHash": hashlib.sha256(plaintext).hexdigest(),
                "encryptedDataEncryptionKey": ekey,
                "iv": "",
            }
            if ekey == "-":
                item["data"] = base64.b64encode(plaintext).decode()
                out_data.append(item)
                continue
            if ekey in ("", "null"):
                key = self.session_key(params)
            else:
                key = self.data_key(params, ekey)
            prefix = b""
            if iv == "fresh":
                item_iv = secrets.token_bytes(12)
                item["iv"] = item_iv.hex()
            elif iv == "session":
                item_iv = bytes.fromhex(params["sessionKeyIv"])
            else:
                item_iv = prefix = secrets.token_bytes(12)
            encrypted = prefix + ir.aes_gcm_encrypt(key, item_iv, plaintext)
            item["data"] = base64.b64encode(encrypted).decode()
            out_data.append(item)
        result = {name: params[name] for name in ("workOrderId", "workloadId", "workerId", "requesterId")}
        result["workerNonce"] = base64.b64encode(secrets.token_bytes(16)).decode()
        result["outData"] = out_data
        self.sign(result)
        return {"jsonrpc": "2.0", "id": request["id"], "result": result}

    def sign(self, result: dict[str, Any], *, high_s: bool | None = None) -> None:
        digest = ir.response_hash(result)
        if high_s is None:
            signature = self.signing_key.sign_digest(digest, sigencode=sigencode_der)
        else:
            signature = _ecdsa_signature(self.signing_key, digest, high_s=high_s)
        result["workerSignature"] = base64.b64encode(signature).decode()


@pytest.fixture(scope="module")
def fake() -> FakeWorker:
    return FakeWorker()


def _inner(frame_text: str) -> dict[str, Any]:
    outer = json.loads(frame_text)
    assert outer["jsonrpc"] == "2.0" and outer["method"] == "ProcessWorkOrder"
    assert isinstance(outer["params"], str)
    return json.loads(outer["params"])


def _is_high_s(signature: bytes) -> bool:
    return sigdecode_der(signature, SECP256K1_ORDER)[1] > SECP256K1_ORDER // 2


class TestIndependentRequesterBuild:
    def test_reproduces_the_vector_request(self, fake: FakeWorker) -> None:
        frame_text, ctx = ir.build_work_order(
            fake.signup,
            "python-hello",
            [
                ir.ItemSpec(b"World", own_iv=False, data_hash="", index=1),
                ir.ItemSpec(b"plain", mode="plain", data_hash=False, index=0),
            ],
            session_key=SESSION_KEY,
            fixed_session_key_iv=SESSION_KEY_IV,
            ids=VECTOR_IDS,
            minimal=True,
        )
        params = _inner(frame_text)["params"]
        assert params["inData"] == [WORLD_ITEM, PLAIN_ITEM]
        assert params["sessionKeyIv"] == SESSION_KEY_IV.hex()
        assert params["encryptedRequestHash"] == ENCRYPTED_REQUEST_HASH.hex()
        assert ir.request_hash(params) == ctx.request_hash == REQUEST_HASH
        assert request_hash_of(params) == REQUEST_HASH
        assert fake.session_key(params) == SESSION_KEY
        optional = {"payloadFormat", "responseTimeoutMSecs", "dataEncryptionAlgorithm"}
        assert not optional & params.keys()

    def test_verify_signup_accepts_a_good_signup(self, fake: FakeWorker) -> None:
        ir.verify_signup(fake.signup)

    def test_verify_signup_accepts_a_high_s_signature(self, fake: FakeWorker) -> None:
        signup = dict(fake.signup)
        digest = hashlib.sha256(signup["encryption_key"].encode()).digest()
        signature = _ecdsa_signature(fake.signing_key, digest, high_s=True)
        signup["encryption_key_signature"] = signature.hex()
        ir.verify_signup(signup)

    @pytest.mark.parametrize("signed_text", ["exact", "stripped"])
    def test_verify_signup_hashes_the_exact_pem_text(self, fake: FakeWorker, signed_text: str) -> None:
        signup = dict(fake.signup)
        signup["encryption_key"] = fake.signup["encryption_key"] + "\n"
        text = signup["encryption_key"] if signed_text == "exact" else fake.signup["encryption_key"]
        digest = hashlib.sha256(text.encode()).digest()
        signature = fake.signing_key.sign_digest(digest, sigencode=sigencode_der)
        signup["encryption_key_signature"] = signature.hex()
        if signed_text == "exact":
            ir.verify_signup(signup)
        else:
            with pytest.raises(ir.VerificationError):
                ir.verify_signup(signup)

    @pytest.mark.parametrize(
        "field", ["encryption_key", "encryption_key_signature", "verifying_key"]
    )
    def test_verify_signup_rejects_a_tampered_field(self, fake: FakeWorker, field: str) -> None:
        signup = dict(fake.signup)
        if field == "encryption_key":
            signup[field] = RSA.generate(1024).public_key().export_key().decode()
        elif field == "encryption_key_signature":
            signup[field] = _flip_bit(bytes.fromhex(signup[field]), 200).hex()
        else:
            other = ecdsa.SigningKey.generate(curve=ecdsa.SECP256k1)
            signup[field] = other.get_verifying_key().to_pem().decode()
        with pytest.raises(ir.RequesterError):
            ir.verify_signup(signup)

    @pytest.mark.parametrize("session_key_iv", [True, False], ids=["sessionKeyIv", "iv-prefix"])
    @pytest.mark.parametrize("own_iv", [True, False], ids=["own-iv", "shared-iv"])
    @pytest.mark.parametrize("mode", ["session", "plain", "data-key"])
    def test_every_item_mode_decrypts_on_the_worker_side(
        self, fake: FakeWorker, mode: str, own_iv: bool, session_key_iv: bool
    ) -> None:
        plaintexts = [b"first \xff", b"second"]
        frame_text, ctx = ir.build_work_order(
            fake.signup,
            "echo-result",
            [ir.ItemSpec(p, mode=mode, own_iv=own_iv) for p in plaintexts],  # type: ignore[arg-type]
            session_key_iv=session_key_iv,
        )
        params = _inner(frame_text)["params"]
        assert ("sessionKeyIv" in params) == session_key_iv
        assert [fake.open_item(params, item) for item in params["inData"]] == plaintexts
        hashes = [hashlib.sha256(p).hexdigest() for p in plaintexts]
        assert [item["dataHash"] for item in params["inData"]] == hashes
        encrypted_hash = bytes.fromhex(params["encryptedRequestHash"])
        assert len(encrypted_hash) == (48 if session_key_iv else 60)
        session_key = fake.session_key(params)
        assert fake.decrypt(session_key, params, encrypted_hash, None) == ctx.request_hash
        assert request_hash_of(params) == ctx.request_hash

    def test_keys_ivs_and_ids_are_fresh_for_every_work_order(self, fake: FakeWorker) -> None:
        contexts = [
            ir.build_work_order(fake.signup, "python-hello", [ir.ItemSpec(b"x")])[1] for _ in range(2)
        ]
        first, second = (ctx.params for ctx in contexts)
        assert contexts[0].session_key != contexts[1].session_key
        for name in ("sessionKeyIv", "workOrderId", "requesterId", "requesterNonce"):
            assert first[name] != second[name], name
        assert first["inData"][0]["iv"] != second["inData"][0]["iv"]
        assert contexts[0].inner_id != contexts[1].inner_id

    def test_own_ivs_are_distinct_and_not_the_session_key_iv(self, fake: FakeWorker) -> None:
        items = [ir.ItemSpec(b"a"), ir.ItemSpec(b"b")]
        params = _inner(ir.build_work_order(fake.signup, "echo-result", items)[0])["params"]
        ivs = [item["iv"] for item in params["inData"]] + [params["sessionKeyIv"]]
        assert len(set(ivs)) == 3
        assert all(len(bytes.fromhex(iv)) == 12 for iv in ivs)

    @pytest.mark.parametrize("s_form", ["low", "high"])
    def test_requester_signature_covers_the_request_hash(self, fake: FakeWorker, s_form: str) -> None:
        frame_text, ctx = ir.build_work_order(
            fake.signup, "python-hello", [ir.ItemSpec(b"x")], sign=True, s_form=s_form  # type: ignore[arg-type]
        )
        params = _inner(frame_text)["params"]
        signature = base64.b64decode(params["requesterSignature"])
        assert _is_high_s(signature) == (s_form == "high")
        assert _ecdsa_accepts(params["verifyingKey"], signature, ctx.request_hash)
        assert _ours_accepts(params["verifyingKey"], signature, request_hash_of(params))

    @pytest.mark.parametrize(
        ("style", "check"), [("upper", str.isupper), ("0x", lambda s: s.startswith("0x"))]
    )
    def test_hex_style_shapes_the_transmitted_ids(self, fake: FakeWorker, style: str, check: Any) -> None:
        frame_text, ctx = ir.build_work_order(
            fake.signup, "python-hello", [ir.ItemSpec(b"x")], hex_style=style  # type: ignore[arg-type]
        )
        params = _inner(frame_text)["params"]
        for name in ("workOrderId", "requesterId", "requesterNonce", "workerId", "workloadId"):
            assert check(params[name]), name
        assert request_hash_of(params) == ctx.request_hash

    def test_inner_and_outer_ids_are_kept_apart(self, fake: FakeWorker) -> None:
        frame_text, ctx = ir.build_work_order(
            fake.signup, "python-hello", [ir.ItemSpec(b"x")], inner_id="1", outer_id=9
        )
        assert json.loads(frame_text)["id"] == 9
        assert _inner(frame_text)["id"] == "1" == ctx.inner_id

    def test_reseal_makes_an_edited_request_consistent_again(self, fake: FakeWorker) -> None:
        _, ctx = ir.build_work_order(fake.signup, "python-hello", [ir.ItemSpec(b"x")], sign=True)
        ctx.params["inData"][0]["dataHash"] = "00" * 32
        params = _inner(ir.reseal(ctx))["params"]
        digest = request_hash_of(params)
        encrypted = bytes.fromhex(params["encryptedRequestHash"])
        assert ir.aes_gcm_decrypt(ctx.session_key, ctx.session_key_iv, encrypted) == digest
        signature = base64.b64decode(params["requesterSignature"])
        assert _ecdsa_accepts(params["verifyingKey"], signature, digest)


class TestIndependentRequesterOpen:
    def test_opens_the_vector_response_only_when_iv_reuse_is_allowed(self, fake: FakeWorker) -> None:
        _, ctx = ir.build_work_order(
            fake.signup,
            "python-hello",
            [ir.ItemSpec(b"World")],
            session_key=SESSION_KEY,
            fixed_session_key_iv=SESSION_KEY_IV,
            ids=VECTOR_IDS,
        )
        result = vector_result()
        fake.sign(result, high_s=True)
        reply = {"jsonrpc": "2.0", "id": ctx.inner_id, "result": result}
        with pytest.raises(ir.VerificationError, match="reuses an IV"):
            ir.open_response(reply, ctx)
        assert ir.open_response(reply, ctx, allow_iv_reuse=True) == [b"Hello World"]

    @pytest.mark.parametrize(
        ("session_key_iv", "iv"),
        [(True, "fresh"), (False, "fresh"), (False, "prefix")],
        ids=["sessionKeyIv", "no-sessionKeyIv", "no-sessionKeyIv-prefix"],
    )
    def test_opens_every_output_mode_in_index_order(
        self, fake: FakeWorker, session_key_iv: bool, iv: str
    ) -> None:
        out_data = [
            {"index": 0, "encryptedDataEncryptionKey": "null"},
            {"index": 1, "encryptedDataEncryptionKey": "-"},
            {"index": 2, "encryptedDataEncryptionKey": ir.DATA_KEY},
        ]
        frame_text, ctx = ir.build_work_order(
            fake.signup,
            "python-hello",
            [ir.ItemSpec(b"x")],
            out_data=out_data,
            session_key_iv=session_key_iv,
        )
        request = _inner(frame_text)
        data_key_ekey = request["params"]["outData"][2]["encryptedDataEncryptionKey"]
        assert data_key_ekey != ir.DATA_KEY and bytes.fromhex(data_key_ekey)
        outputs = [(2, b"two", data_key_ekey), (0, b"zero", "null"), (1, b"one", "-")]
        reply = fake.reply(request, outputs, iv=iv)
        assert ir.open_response(reply, ctx) == [b"zero", b"one", b"two"]

    def test_accepts_a_high_s_worker_signature(self, fake: FakeWorker) -> None:
        frame_text, ctx = ir.build_work_order(fake.signup, "python-hello", [ir.ItemSpec(b"x")])
        reply = fake.reply(_inner(frame_text), [(0, b"Hello x", "null")])
        fake.sign(reply["result"], high_s=True)
        assert ir.open_response(reply, ctx) == [b"Hello x"]

    @staticmethod
    def _tampered_reply(fake: FakeWorker, how: str) -> tuple[dict[str, Any], ir.RequestContext]:
        frame_text, ctx = ir.build_work_order(fake.signup, "python-hello", [ir.ItemSpec(b"x")])
        iv = "session" if how == "reused iv" else "fresh"
        reply = fake.reply(_inner(frame_text), [(0, b"Hello x", "null")], iv=iv)
        result = reply["result"]
        item = result["outData"][0]
        if how == "signature":
            signature = base64.b64decode(result["workerSignature"])
            result["workerSignature"] = base64.b64encode(_flip_bit(signature, 300)).decode()
        elif how == "nonce":
            result["workerNonce"] += "A"
        elif how == "reply id as string":
            reply["id"] = str(reply["id"])
        elif how == "reply id as float":
            reply["id"] = float(reply["id"])
        elif how == "mode":
            ctx.params["outData"] = [{"index": 0, "encryptedDataEncryptionKey": "-"}]
        # The rest are signed again, so that only the check under test can catch them.
        elif how == "work order id":
            result["workOrderId"] = "00" * 32
            fake.sign(result)
        elif how == "data":
            item["data"] = base64.b64encode(_flip_bit(base64.b64decode(item["data"]), 3)).decode()
            fake.sign(result)
        elif how == "dataHash":
            item["dataHash"] = hashlib.sha256(b"Hello y").hexdigest()
            fake.sign(result)
        return reply, ctx

    @pytest.mark.parametrize(
        "how",
        [
            "signature",
            "nonce",
            "work order id",
            "reply id as string",
            "reply id as float",
            "data",
            "dataHash",
            "reused iv",
            "mode",
        ],
    )
    def test_rejects_a_tampered_reply(self, fake: FakeWorker, how: str) -> None:
        reply, ctx = self._tampered_reply(fake, how)
        with pytest.raises(ir.VerificationError):
            ir.open_response(reply, ctx)

    def test_an_untampered_reply_opens(self, fake: FakeWorker) -> None:
        reply, ctx = self._tampered_reply(fake, "nothing")
        assert ir.open_response(reply, ctx) == [b"Hello x"]

    def test_an_error_reply_raises_with_its_code(self, fake: FakeWorker) -> None:
        _, ctx = ir.build_work_order(fake.signup, "python-hello", [ir.ItemSpec(b"x")])
        error = {"code": 4, "message": "integrity", "data": {}}
        with pytest.raises(ir.ReplyError) as raised:
            ir.open_response({"jsonrpc": "2.0", "id": ctx.inner_id, "error": error}, ctx)
        assert raised.value.code == 4
        assert raised.value.reply_id == ctx.inner_id


class TestIndependentRequesterTransport:
    def test_fetch_signup_sends_the_signup_frame_and_verifies_the_reply(self, fake: FakeWorker) -> None:
        endpoint = f"inproc://signup-{secrets.token_hex(4)}"
        server = zmq.Context.instance().socket(zmq.REP)
        server.bind(endpoint)
        received: list[bytes] = []

        def answer() -> None:
            received.append(server.recv())
            server.send(json.dumps(fake.signup).encode())

        thread = threading.Thread(target=answer)
        thread.start()
        try:
            assert ir.fetch_signup(endpoint, timeout_ms=5000) == fake.signup
        finally:
            thread.join(timeout=5)
            server.close(linger=0)
        frame_sent = json.loads(received[0])
        assert frame_sent == {"jsonrpc": "2.0", "id": 1, "method": "ProcessWorkerSignup", "params": None}

    def test_send_times_out_when_nobody_answers(self) -> None:
        endpoint = f"inproc://silent-{secrets.token_hex(4)}"
        server = zmq.Context.instance().socket(zmq.REP)
        server.bind(endpoint)
        try:
            with pytest.raises(TimeoutError):
                ir.send(endpoint, "{}", timeout_ms=200)
        finally:
            server.close(linger=0)

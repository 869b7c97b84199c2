"""verify_signup end to end: a worker quoting through simulated Gramine, checked by a requester."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path

import pytest

from avalon_worker import crypto
from avalon_worker.attestation import (
    AttestationPolicy,
    Collateral,
    GramineAttestation,
    MrEnclave,
    NoAttestation,
    StepStatus,
    VerificationReport,
    verify_signup,
)
from avalon_worker.attestation.verifier import report as R

from attestation_fixtures import MRENCLAVE, QuoteFactory, TestPki, make_collateral, make_signup
from sim_gramine import SimulatedGramine

Keys = tuple[crypto.SigningKey, str]
POLICY = AttestationPolicy(enclave=MrEnclave(MRENCLAVE))
NONCE = bytes.fromhex("c0ffee" * 8)


@pytest.fixture(scope="module")
def collateral(pki: TestPki) -> Collateral:
    return Collateral.from_dict(make_collateral(pki))


@pytest.fixture(scope="module")
def keys() -> Keys:
    return crypto.SigningKey.generate(), crypto.public_pem(crypto.generate_rsa_key(2048))


@pytest.fixture
def provider(tmp_path: Path, pki: TestPki) -> Iterator[GramineAttestation]:
    with SimulatedGramine(tmp_path / "attestation", QuoteFactory(pki)) as sim:
        yield GramineAttestation(sim.root)


def check(
    signup: dict, pki: TestPki, collateral: Collateral | None, nonce: bytes | None = NONCE
) -> VerificationReport:
    return verify_signup(signup, POLICY, nonce=nonce, collateral=collateral, root_ca=pki.root, now=pki.now)


def failing(report: VerificationReport) -> set[str]:
    return {s.name for s in report.failures}


def test_fresh_signup_verifies(
    provider: GramineAttestation, keys: Keys, pki: TestPki, collateral: Collateral
) -> None:
    report = check(make_signup(provider, *keys, NONCE), pki, collateral)
    assert report.ok, report.render()
    assert report.verdict() == "VERIFIED"
    assert report.step(R.STEP_REPORT_DATA).detail == "SHA256(verifying key) ‖ SHA256(nonce)"
    assert [s.name for s in report.steps][-3:] == [
        R.STEP_REPORT_DATA,
        R.STEP_SIGNUP_MRENCLAVE,
        R.STEP_ENCRYPTION_KEY,
    ]


def test_signup_without_nonce_binds_zeros(
    provider: GramineAttestation, keys: Keys, pki: TestPki, collateral: Collateral
) -> None:
    signup = make_signup(provider, *keys, None)
    assert check(signup, pki, collateral, nonce=None).ok
    assert failing(check(signup, pki, collateral, nonce=NONCE)) == {R.STEP_REPORT_DATA}


def test_replayed_signup_fails_freshness(
    provider: GramineAttestation, keys: Keys, pki: TestPki, collateral: Collateral
) -> None:
    old = make_signup(provider, *keys, b"an old nonce")
    assert failing(check(old, pki, collateral)) == {R.STEP_REPORT_DATA}


def test_swapped_verifying_key_breaks_binding_and_signature(
    provider: GramineAttestation, keys: Keys, pki: TestPki, collateral: Collateral
) -> None:
    signup = make_signup(provider, *keys, NONCE)
    signup["verifying_key"] = crypto.SigningKey.generate().verifying_key_pem
    assert failing(check(signup, pki, collateral)) == {R.STEP_REPORT_DATA, R.STEP_ENCRYPTION_KEY}


def test_swapped_encryption_key(
    provider: GramineAttestation, keys: Keys, pki: TestPki, collateral: Collateral
) -> None:
    signup = make_signup(provider, *keys, NONCE)
    signup["encryption_key"] = crypto.public_pem(crypto.generate_rsa_key(2048))
    assert failing(check(signup, pki, collateral)) == {R.STEP_ENCRYPTION_KEY}


def test_tampered_encryption_key_signature(
    provider: GramineAttestation, keys: Keys, pki: TestPki, collateral: Collateral
) -> None:
    signup = make_signup(provider, *keys, NONCE)
    sig = bytearray(bytes.fromhex(signup["encryption_key_signature"]))
    sig[-1] ^= 1
    signup["encryption_key_signature"] = sig.hex()
    assert failing(check(signup, pki, collateral)) == {R.STEP_ENCRYPTION_KEY}


def test_signup_mrenclave_field_must_match_quote(
    provider: GramineAttestation, keys: Keys, pki: TestPki, collateral: Collateral
) -> None:
    signup = make_signup(provider, *keys, NONCE)
    signup["mrenclave"] = "00" * 32
    assert failing(check(signup, pki, collateral)) == {R.STEP_SIGNUP_MRENCLAVE}


def test_tampered_quote_in_signup(
    provider: GramineAttestation, keys: Keys, pki: TestPki, collateral: Collateral
) -> None:
    signup = make_signup(provider, *keys, NONCE)
    raw = bytearray(base64.b64decode(signup["quote"]))
    raw[48 + 64] ^= 1  # MRENCLAVE
    signup["quote"] = base64.b64encode(bytes(raw)).decode()
    assert failing(check(signup, pki, collateral)) == {
        R.STEP_QUOTE_SIGNATURE,
        R.STEP_ENCLAVE,
        R.STEP_SIGNUP_MRENCLAVE,
    }


def test_worker_without_attestation_fails_with_a_clear_reason(
    keys: Keys, pki: TestPki, collateral: Collateral
) -> None:
    report = check(make_signup(NoAttestation(), *keys, NONCE), pki, collateral)
    assert not report.ok
    assert report.step(R.STEP_PARSED).status is StepStatus.FAIL
    assert "empty" in report.step(R.STEP_PARSED).detail
    assert report.step(R.STEP_ENCRYPTION_KEY).status is StepStatus.PASS


def test_quote_not_base64(
    provider: GramineAttestation, keys: Keys, pki: TestPki, collateral: Collateral
) -> None:
    signup = make_signup(provider, *keys, NONCE)
    signup["quote"] = "not base64!"
    report = check(signup, pki, collateral)
    assert report.step(R.STEP_PARSED).detail == "the signup quote is not base64"
    assert not report.ok


def test_signup_without_keys(pki: TestPki, collateral: Collateral) -> None:
    report = check({"quote": ""}, pki, collateral)
    assert {R.STEP_PARSED, R.STEP_REPORT_DATA, R.STEP_ENCRYPTION_KEY} <= failing(report)
    assert report.step(R.STEP_REPORT_DATA).detail == "the signup has no verifying_key"


def test_report_renders_each_step_and_the_verdict(
    provider: GramineAttestation, keys: Keys, pki: TestPki
) -> None:
    text = check(make_signup(provider, *keys, NONCE), pki, None).render()
    assert "[PASS] quote parsed" in text
    assert "[NOT CHECKED] TCB status: TCB status not checked" in text
    assert text.splitlines()[-1].startswith("FAILED:")
    data = check(make_signup(provider, *keys, NONCE), pki, None).to_dict()
    assert data["ok"] is False
    assert {"name": R.STEP_TCB, "status": "not checked"}.items() <= next(
        s for s in data["steps"] if s["name"] == R.STEP_TCB
    ).items()

"""Intel's real DCAP quote (tests/data/attestation/README.md) against the pinned Intel root."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes

from avalon_worker.attestation import (
    INTEL_SGX_ROOT_CA_SHA256,
    AttestationPolicy,
    Collateral,
    CollateralError,
    MrEnclave,
    StepStatus,
    VerificationReport,
    intel_sgx_root_ca,
    load_collateral,
    verify_quote_bytes,
)
from avalon_worker.attestation.verifier import report as R

from attestation_fixtures import OFF_QE_REPORT_DATA, OFF_REPORT_DATA, flip

DATA = Path(__file__).parent / "data" / "attestation"
QUOTE = (DATA / "dcap_qvl_sgx_quote.bin").read_bytes()
COLLATERAL = load_collateral(DATA / "dcap_qvl_sgx_quote_collateral.json")
MRENCLAVE = "33d8736db756ed4997e04ba358d27833188f1932ff7b1d156904d3f560452fbb"
NOW = datetime(2025, 6, 20, 12, 0, tzinfo=timezone.utc)
REAL_STATUS = "ConfigurationAndSWHardeningNeeded"


def verify(
    raw: bytes, policy: AttestationPolicy, *, now: datetime = NOW, collateral: Collateral | None = COLLATERAL
) -> VerificationReport:
    return verify_quote_bytes(raw, policy, collateral=collateral, now=now)


def failing(report: VerificationReport) -> set[str]:
    return {s.name for s in report.failures}


def test_pinned_root_matches_its_fingerprint_and_the_quotes_root() -> None:
    root = intel_sgx_root_ca()
    assert root.fingerprint(hashes.SHA256()).hex() == INTEL_SGX_ROOT_CA_SHA256
    assert (
        root.subject.rfc4514_string() == "C=US,ST=CA,L=Santa Clara,O=Intel Corporation,CN=Intel SGX Root CA"
    )


def test_every_cryptographic_step_passes_and_tcb_status_matches_intel() -> None:
    report = verify(QUOTE, AttestationPolicy(enclave=MrEnclave(MRENCLAVE)))
    for name in (
        R.STEP_PARSED,
        R.STEP_CHAIN,
        R.STEP_REVOCATION,
        R.STEP_QE_SIGNATURE,
        R.STEP_QE_BINDING,
        R.STEP_QUOTE_SIGNATURE,
        R.STEP_QE_IDENTITY,
        R.STEP_ENCLAVE,
        R.STEP_DEBUG,
    ):
        assert report.step(name).status is StepStatus.PASS, report.render()
    assert report.tcb_status == REAL_STATUS
    assert report.advisory_ids == ("INTEL-SA-00289", "INTEL-SA-00615")
    assert "Intel SGX PCK Processor CA" in report.step(R.STEP_CHAIN).detail


def test_default_policy_refuses_its_tcb_status() -> None:
    report = verify(QUOTE, AttestationPolicy(enclave=MrEnclave(MRENCLAVE)))
    assert failing(report) == {R.STEP_TCB}
    assert REAL_STATUS in report.step(R.STEP_TCB).detail


def test_accepted_when_the_policy_lists_its_status() -> None:
    policy = AttestationPolicy(
        enclave=MrEnclave(MRENCLAVE), accepted_tcb_statuses=frozenset({"UpToDate", REAL_STATUS})
    )
    report = verify(QUOTE, policy)
    assert report.ok and report.verdict() == "VERIFIED"


def test_without_collateral_the_chain_still_verifies_but_tcb_is_not_checked() -> None:
    report = verify(QUOTE, AttestationPolicy(enclave=MrEnclave(MRENCLAVE)), collateral=None)
    assert report.step(R.STEP_CHAIN).status is StepStatus.PASS
    assert report.step(R.STEP_QUOTE_SIGNATURE).status is StepStatus.PASS
    assert report.step(R.STEP_TCB).status is StepStatus.NOT_CHECKED
    assert report.tcb_status is None and not report.ok


@pytest.mark.parametrize(
    ("offset", "expected"),
    [
        (OFF_REPORT_DATA, {R.STEP_QUOTE_SIGNATURE}),
        (OFF_QE_REPORT_DATA, {R.STEP_QE_SIGNATURE, R.STEP_QE_BINDING, R.STEP_QE_IDENTITY, R.STEP_TCB}),
    ],
)
def test_tampering_the_real_quote(offset: int, expected: set[str]) -> None:
    policy = AttestationPolicy(enclave=MrEnclave(MRENCLAVE), accepted_tcb_statuses=frozenset({REAL_STATUS}))
    assert failing(verify(flip(QUOTE, offset), policy)) == expected


CERT_START = QUOTE.index(b"-----BEGIN CERTIFICATE-----")
CERT_END = QUOTE.rindex(b"-----END CERTIFICATE-----") + len(b"-----END CERTIFICATE-----")


@pytest.mark.parametrize("bit", range(8))
def test_a_flipped_bit_in_the_pck_leaf_fails_a_step_instead_of_raising(bit: int) -> None:
    # Offset 1640 lies in the leaf's CRL distribution point; bit 0 duplicates that extension.
    raw = bytearray(QUOTE)
    raw[1640] ^= 1 << bit
    report = verify(bytes(raw), AttestationPolicy(enclave=MrEnclave(MRENCLAVE)))
    assert report.step(R.STEP_CHAIN).status is StepStatus.FAIL
    assert not report.ok


@pytest.mark.slow
def test_every_bit_of_the_certificate_region_flipped_gives_a_failed_report_never_an_exception() -> None:
    """Exhaustive: each of the 8 × 3,546 single-bit flips of the PEM chain (without collateral,
    which the certificates do not reach) must fail verification, and nothing may raise."""
    policy = AttestationPolicy(enclave=MrEnclave(MRENCLAVE))
    raised: dict[str, int] = {}
    verified = []
    for offset in range(CERT_START, CERT_END):
        for bit in range(8):
            raw = bytearray(QUOTE)
            raw[offset] ^= 1 << bit
            try:
                report = verify(bytes(raw), policy, collateral=None)
            except Exception as exc:  # the property under test: collect, then fail with the count
                raised[type(exc).__name__] = raised.get(type(exc).__name__, 0) + 1
                continue
            if report.step(R.STEP_CHAIN).status is StepStatus.PASS:
                verified.append((offset, bit))
    assert raised == {}
    # A few flips leave every signed byte and signature of the leaf and its CA as they were: the
    # unused low bits of a base64 character, PEM framing, the "unused bits" octet of a
    # signature's BIT STRING (which the library ignores), or anything in the quote's own copy of
    # the root (never used: only the pinned root is trusted). Those may still verify; no other.
    for offset, bit in verified:
        raw = bytearray(QUOTE)
        raw[offset] ^= 1 << bit
        assert _signed_parts(bytes(raw))[:2] == _signed_parts(QUOTE)[:2], (offset, bit)


def _signed_parts(raw: bytes) -> list[tuple[bytes, bytes]]:
    from cryptography import x509

    from avalon_worker.attestation.verifier._quote import DcapQuote, parse_quote

    quote = parse_quote(raw)
    assert isinstance(quote, DcapQuote)
    pems = quote.signature_data.certification_data.pem_certificates()
    certs = [x509.load_pem_x509_certificate(p) for p in pems]
    return [(cert.tbs_certificate_bytes, cert.signature) for cert in certs]


def test_expired_collateral_is_refused() -> None:
    policy = AttestationPolicy(enclave=MrEnclave(MRENCLAVE), accepted_tcb_statuses=frozenset({REAL_STATUS}))
    report = verify(QUOTE, policy, now=datetime(2025, 9, 1, tzinfo=timezone.utc))
    assert failing(report) == {R.STEP_REVOCATION, R.STEP_QE_IDENTITY, R.STEP_TCB}
    assert "PCK CRL is not current" in report.step(R.STEP_REVOCATION).detail
    assert "expired" in report.step(R.STEP_QE_IDENTITY).detail


class TestCollateralFile:
    def test_missing_fields(self) -> None:
        data = json.loads((DATA / "dcap_qvl_sgx_quote_collateral.json").read_text())
        del data["tcb_info"], data["pck_crl"]
        with pytest.raises(CollateralError, match="lacks tcb_info, pck_crl"):
            Collateral.from_dict(data)

    def test_bad_signature_length(self) -> None:
        data = json.loads((DATA / "dcap_qvl_sgx_quote_collateral.json").read_text())
        data["tcb_info_signature"] = "00" * 63
        with pytest.raises(CollateralError, match="64-byte"):
            Collateral.from_dict(data)

    def test_bad_crl(self) -> None:
        data = json.loads((DATA / "dcap_qvl_sgx_quote_collateral.json").read_text())
        data["root_ca_crl"] = "30820102"
        with pytest.raises(CollateralError, match="root_ca_crl"):
            Collateral.from_dict(data)

    def test_not_json_and_unreadable(self, tmp_path: Path) -> None:
        with pytest.raises(CollateralError, match="not JSON"):
            Collateral.from_json("{")
        with pytest.raises(CollateralError, match="cannot read"):
            load_collateral(tmp_path / "missing.json")

"""Offline DCAP verification: every step passes on a good quote and fails on its own tampering."""

from __future__ import annotations

import base64
import re
from datetime import timedelta

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from avalon_worker.attestation import (
    AttestationPolicy,
    Collateral,
    DcapQuote,
    InsecurePolicyWarning,
    MrEnclave,
    MrSigner,
    StepStatus,
    VerificationReport,
    parse_quote,
    report_data,
    verify_quote_bytes,
)
from avalon_worker.attestation.verifier import report as R

from attestation_fixtures import (
    FLAGS_DEBUG,
    ISV_PROD_ID,
    ISV_SVN,
    MRENCLAVE,
    MRSIGNER,
    OFF_ATTESTATION_KEY,
    OFF_FLAGS,
    OFF_ISV_SIGNATURE,
    OFF_ISVSVN,
    OFF_MRENCLAVE,
    OFF_QE_AUTH,
    OFF_QE_REPORT,
    OFF_QE_REPORT_DATA,
    OFF_QE_SIGNATURE,
    OFF_REPORT_DATA,
    PCE_SVN,
    TCB_COMPONENTS,
    QuoteFactory,
    TestPki,
    default_tcb_levels,
    epid_quote,
    flip,
    make_collateral,
    pem,
    sgx_extension_der,
    tcb_level,
)

VK_PEM = "-----BEGIN PUBLIC KEY-----\nworker key\n-----END PUBLIC KEY-----\n"
NONCE = b"fresh nonce"
EXPECTED = report_data(VK_PEM, NONCE)
LABEL = "SHA256(verifying key) ‖ SHA256(nonce)"
POLICY = AttestationPolicy(enclave=MrEnclave(MRENCLAVE))


@pytest.fixture(scope="module")
def collateral(pki: TestPki) -> Collateral:
    return Collateral.from_dict(make_collateral(pki))


@pytest.fixture(scope="module")
def good(factory: QuoteFactory) -> bytes:
    return factory.quote(EXPECTED)


def verify(
    raw: bytes,
    pki: TestPki,
    collateral: Collateral | None,
    policy: AttestationPolicy = POLICY,
    **kwargs: object,
) -> VerificationReport:
    kwargs.setdefault("now", pki.now)
    return verify_quote_bytes(
        raw,
        policy,
        expected_report_data=EXPECTED,
        report_data_label=LABEL,
        collateral=collateral,
        root_ca=pki.root,
        **kwargs,  # type: ignore[arg-type]
    )


def failing(report: VerificationReport) -> set[str]:
    return {step.name for step in report.failures}


def replace_leaf_pem(quote: bytes, old: bytes, new: bytes) -> bytes:
    """Swap a PEM certificate inside a v3 quote, fixing the cert-data and signature lengths."""
    assert old in quote
    grown = len(new) - len(old)
    out = bytearray(quote.replace(old, new))
    sig_len = int.from_bytes(out[432:436], "little") + grown
    out[432:436] = sig_len.to_bytes(4, "little")
    cert_size_at = OFF_QE_AUTH + 32 + 2
    size = int.from_bytes(out[cert_size_at : cert_size_at + 4], "little") + grown
    out[cert_size_at : cert_size_at + 4] = size.to_bytes(4, "little")
    return bytes(out)


class TestGoodQuote:
    @pytest.mark.parametrize("version", [3, 4, 5])
    def test_every_step_passes_with_collateral(
        self, factory: QuoteFactory, pki: TestPki, collateral: Collateral, version: int
    ) -> None:
        report = verify(factory.quote(EXPECTED, version=version), pki, collateral)
        assert [s.status for s in report.steps] == [StepStatus.PASS] * len(report.steps)
        assert report.ok
        assert report.verdict() == "VERIFIED"
        assert report.tcb_status == "UpToDate"

    def test_steps_in_order(self, good: bytes, pki: TestPki, collateral: Collateral) -> None:
        names = [s.name for s in verify(good, pki, collateral).steps]
        assert names == [
            R.STEP_PARSED,
            R.STEP_CHAIN,
            R.STEP_REVOCATION,
            R.STEP_QE_SIGNATURE,
            R.STEP_QE_BINDING,
            R.STEP_QUOTE_SIGNATURE,
            R.STEP_QE_IDENTITY,
            R.STEP_TCB,
            R.STEP_ENCLAVE,
            R.STEP_DEBUG,
            R.STEP_REPORT_DATA,
        ]

    def test_without_collateral_tcb_is_not_checked_and_never_ok(self, good: bytes, pki: TestPki) -> None:
        report = verify(good, pki, None)
        assert report.step(R.STEP_TCB).status is StepStatus.NOT_CHECKED
        assert "TCB status not checked" in report.step(R.STEP_TCB).detail
        assert failing(report) == {R.STEP_REVOCATION, R.STEP_QE_IDENTITY, R.STEP_TCB}
        assert not report.ok
        assert "VERIFIED" not in report.verdict() and "OK" not in report.render()
        for name in (R.STEP_CHAIN, R.STEP_QE_SIGNATURE, R.STEP_QE_BINDING, R.STEP_QUOTE_SIGNATURE):
            assert report.step(name).status is StepStatus.PASS

    def test_insecure_unchecked_tcb_waives_and_warns(self, good: bytes, pki: TestPki) -> None:
        policy = AttestationPolicy(enclave=MrEnclave(MRENCLAVE), insecure_accept_unchecked_tcb=True)
        with pytest.warns(InsecurePolicyWarning, match="insecure_accept_unchecked_tcb"):
            report = verify(good, pki, None, policy)
        assert report.ok
        assert report.step(R.STEP_TCB).waived_by == "insecure_accept_unchecked_tcb"
        assert report.verdict().startswith("ACCEPTED WITH INSECURE OVERRIDES")
        assert "INSECURE" in report.render()

    def test_insecure_unchecked_tcb_does_not_waive_a_bad_signature(self, good: bytes, pki: TestPki) -> None:
        policy = AttestationPolicy(enclave=MrEnclave(MRENCLAVE), insecure_accept_unchecked_tcb=True)
        with pytest.warns(InsecurePolicyWarning):
            report = verify(flip(good, OFF_ISV_SIGNATURE + 5), pki, None, policy)
        assert failing(report) == {R.STEP_QUOTE_SIGNATURE}

    def test_the_pinned_intel_root_rejects_a_test_chain(self, good: bytes, pki: TestPki) -> None:
        report = verify_quote_bytes(good, POLICY, now=pki.now)
        assert report.step(R.STEP_CHAIN).status is StepStatus.FAIL
        assert "does not lead to the pinned root" in report.step(R.STEP_CHAIN).detail


class TestTamperingBreaksItsOwnStep:
    """Raw byte flips: the signature over them fails, and so does the check of that field.

    A QE report the PCK key did not sign proves nothing about the QE, so its identity (and the
    TCB status that needs it) fail with it; a broken chain leaves no TCB to read."""

    @pytest.mark.parametrize(
        ("offset", "mask", "expected"),
        [
            (OFF_MRENCLAVE, 0x01, {R.STEP_QUOTE_SIGNATURE, R.STEP_ENCLAVE}),
            (OFF_REPORT_DATA + 3, 0x01, {R.STEP_QUOTE_SIGNATURE, R.STEP_REPORT_DATA}),
            (OFF_REPORT_DATA + 40, 0x80, {R.STEP_QUOTE_SIGNATURE, R.STEP_REPORT_DATA}),
            (OFF_FLAGS, 0x02, {R.STEP_QUOTE_SIGNATURE, R.STEP_DEBUG}),
            (OFF_ISVSVN, 0x01, {R.STEP_QUOTE_SIGNATURE}),
            (OFF_ISV_SIGNATURE + 10, 0x01, {R.STEP_QUOTE_SIGNATURE}),
            (OFF_ATTESTATION_KEY + 7, 0x01, {R.STEP_QE_BINDING, R.STEP_QUOTE_SIGNATURE}),
            (OFF_QE_REPORT + 64, 0x01, {R.STEP_QE_SIGNATURE, R.STEP_QE_IDENTITY, R.STEP_TCB}),
            (OFF_QE_REPORT_DATA, 0x01, {R.STEP_QE_SIGNATURE, R.STEP_QE_BINDING, R.STEP_QE_IDENTITY, R.STEP_TCB}),
            (OFF_QE_SIGNATURE + 40, 0x01, {R.STEP_QE_SIGNATURE, R.STEP_QE_IDENTITY, R.STEP_TCB}),
            (OFF_QE_AUTH + 5, 0x01, {R.STEP_QE_BINDING}),
        ],
    )
    def test_flip(
        self, good: bytes, pki: TestPki, collateral: Collateral, offset: int, mask: int, expected: set[str]
    ) -> None:
        assert failing(verify(flip(good, offset, mask), pki, collateral)) == expected

    def test_header_byte_breaks_the_quote_signature(
        self, good: bytes, pki: TestPki, collateral: Collateral
    ) -> None:
        assert failing(verify(flip(good, 10), pki, collateral)) == {R.STEP_QUOTE_SIGNATURE}

    def test_non_intel_vendor_fails_parsing(self, good: bytes, pki: TestPki, collateral: Collateral) -> None:
        report = verify(flip(good, 12), pki, collateral)
        assert report.step(R.STEP_PARSED).status is StepStatus.FAIL
        assert "not Intel" in report.step(R.STEP_PARSED).detail
        assert not report.ok

    def test_tampered_pck_certificate_signature(
        self, good: bytes, pki: TestPki, collateral: Collateral
    ) -> None:
        leaf_pem = pem(pki.pck)
        der = bytearray(pki.pck.public_bytes(serialization.Encoding.DER))
        der[-5] ^= 0x01  # inside the issuer's signature
        body = base64.encodebytes(bytes(der)).replace(b"\n", b"")
        lines = b"\n".join(body[i : i + 64] for i in range(0, len(body), 64))
        bad_pem = b"-----BEGIN CERTIFICATE-----\n" + lines + b"\n-----END CERTIFICATE-----\n"
        report = verify(replace_leaf_pem(good, leaf_pem, bad_pem), pki, collateral)
        assert failing(report) == {R.STEP_CHAIN, R.STEP_REVOCATION, R.STEP_TCB}
        assert "signature does not match" in report.step(R.STEP_CHAIN).detail
        assert report.step(R.STEP_REVOCATION).status is StepStatus.NOT_CHECKED

    def test_chain_to_another_root(self, factory: QuoteFactory, pki: TestPki, collateral: Collateral) -> None:
        other = TestPki.create(now=pki.now)
        rogue = QuoteFactory(
            other, attestation_key=factory.attestation_key, qe_auth_data=factory.qe_auth_data
        )
        report = verify(rogue.quote(EXPECTED), pki, collateral)
        assert R.STEP_CHAIN in failing(report)
        assert "signature does not match" in report.step(R.STEP_CHAIN).detail  # same names, other keys

    def test_intermediate_named_like_the_root_but_signed_by_another_key(
        self, factory: QuoteFactory, pki: TestPki, collateral: Collateral
    ) -> None:
        other = TestPki.create(now=pki.now)  # same names, different keys
        rogue = QuoteFactory(
            other, attestation_key=factory.attestation_key, qe_auth_data=factory.qe_auth_data
        )
        report = verify(rogue.quote(EXPECTED, cert_data=other.chain_pem(include_root=False)), pki, collateral)
        assert failing(report) == {R.STEP_CHAIN, R.STEP_REVOCATION, R.STEP_TCB}
        assert "signature does not match" in report.step(R.STEP_CHAIN).detail

    def test_chain_without_its_intermediate(
        self, factory: QuoteFactory, pki: TestPki, collateral: Collateral
    ) -> None:
        chain = pem(pki.pck) + pem(pki.root)
        report = verify(factory.quote(EXPECTED, cert_data=chain), pki, collateral)
        assert failing(report) == {R.STEP_CHAIN, R.STEP_REVOCATION, R.STEP_TCB}
        assert "does not lead to the pinned root" in report.step(R.STEP_CHAIN).detail

    def test_chain_without_root_is_completed_by_the_pinned_root(
        self, factory: QuoteFactory, pki: TestPki, collateral: Collateral
    ) -> None:
        report = verify(factory.quote(EXPECTED, cert_data=pki.chain_pem(include_root=False)), pki, collateral)
        assert report.ok

    def test_certification_data_without_pck_chain(
        self, factory: QuoteFactory, pki: TestPki, collateral: Collateral
    ) -> None:
        report = verify(factory.quote(EXPECTED, cert_data=b"\x01" * 20, cert_type=3), pki, collateral)
        assert R.STEP_CHAIN in failing(report)
        assert "type 3" in report.step(R.STEP_CHAIN).detail

    def test_expired_pck_certificate(self, factory: QuoteFactory, pki: TestPki) -> None:
        report = verify(factory.quote(EXPECTED), pki, None, now=pki.now + timedelta(days=400))
        assert report.step(R.STEP_CHAIN).status is StepStatus.FAIL
        assert "not valid at validation time" in report.step(R.STEP_CHAIN).detail

    def test_pck_signed_by_a_non_ca_is_refused(self, pki: TestPki, collateral: Collateral) -> None:
        # A leaf issued by the TCB signing certificate (not a CA) must not chain.
        from attestation_fixtures import _cert, _key  # test-internal helpers

        key = _key()
        leaf = _cert(
            "Rogue PCK", key, pki.tcb_cert, pki.tcb_key, ca=False, now=pki.now, extension=sgx_extension_der()
        )
        chain = pem(leaf) + pem(pki.tcb_cert) + pem(pki.root)
        rogue_pki = TestPki(
            pki.now, pki.root_key, pki.root, pki.tcb_key, pki.tcb_cert, key, leaf, pki.tcb_key, pki.tcb_cert
        )
        report = verify(QuoteFactory(rogue_pki).quote(EXPECTED, cert_data=chain), pki, collateral)
        assert "basicConstraints.cA must be asserted" in report.step(R.STEP_CHAIN).detail


class TestChainRules:
    @pytest.mark.parametrize("first", ["ca", "root"])
    def test_a_chain_that_does_not_start_with_the_leaf_fails(
        self, factory: QuoteFactory, pki: TestPki, collateral: Collateral, first: str
    ) -> None:
        chain = pem(pki.ca) + pem(pki.root) if first == "ca" else pem(pki.root)
        report = verify(factory.quote(EXPECTED, cert_data=chain), pki, collateral)
        assert report.step(R.STEP_CHAIN).status is StepStatus.FAIL
        assert "is a CA: the chain must start with the PCK leaf" in report.step(R.STEP_CHAIN).detail
        assert not report.ok

    def test_another_issue_of_the_pinned_root_in_the_quote_is_ignored_like_a_missing_root(
        self, factory: QuoteFactory, pki: TestPki, collateral: Collateral
    ) -> None:
        older = pki.reissued_root(days=100)
        assert (older.subject, older.serial_number) == (pki.root.subject, pki.root.serial_number)
        with_older = verify(factory.quote(EXPECTED, cert_data=pem(pki.pck) + pem(pki.ca) + pem(older)), pki, collateral)
        without = verify(factory.quote(EXPECTED, cert_data=pki.chain_pem(include_root=False)), pki, collateral)
        assert with_older.ok and without.ok
        detail = with_older.step(R.STEP_CHAIN).detail
        assert detail.startswith(without.step(R.STEP_CHAIN).detail)
        assert (
            f"the quote's own {older.subject.rfc4514_string()} (another issue of the pinned root, with its key, "
            f"valid {older.not_valid_before_utc:%Y-%m-%d} to {older.not_valid_after_utc:%Y-%m-%d}) was not used: "
            "only the pinned root is trusted"
        ) in detail

    def test_a_foreign_root_in_the_quote_is_never_trusted(
        self, factory: QuoteFactory, pki: TestPki, collateral: Collateral
    ) -> None:
        other = TestPki.create(now=pki.now)
        good_path = verify(factory.quote(EXPECTED, cert_data=pem(pki.pck) + pem(pki.ca) + pem(other.root)), pki, collateral)
        assert good_path.ok
        assert "a root other than the pinned one" in good_path.step(R.STEP_CHAIN).detail
        rogue = QuoteFactory(other, attestation_key=factory.attestation_key, qe_auth_data=factory.qe_auth_data)
        assert R.STEP_CHAIN in failing(verify(rogue.quote(EXPECTED), pki, collateral))

    def test_qe_identity_does_not_pass_on_a_qe_report_the_pck_key_did_not_sign(
        self, good: bytes, pki: TestPki, collateral: Collateral
    ) -> None:
        report = verify(flip(good, OFF_QE_SIGNATURE + 3), pki, collateral)
        assert report.step(R.STEP_QE_SIGNATURE).status is StepStatus.FAIL
        assert report.step(R.STEP_QE_IDENTITY).status is StepStatus.FAIL
        assert "not signed by the PCK key" in report.step(R.STEP_QE_IDENTITY).detail


class TestPolicyFailuresOnProperlySignedQuotes:
    """Values signed correctly but not allowed: only the policy step fails."""

    def test_other_mrenclave(self, factory: QuoteFactory, pki: TestPki, collateral: Collateral) -> None:
        report = verify(factory.quote(EXPECTED, mrenclave=bytes(32)), pki, collateral)
        assert failing(report) == {R.STEP_ENCLAVE}
        assert "is not allowed" in report.step(R.STEP_ENCLAVE).detail

    def test_debug_enclave_refused(self, factory: QuoteFactory, pki: TestPki, collateral: Collateral) -> None:
        report = verify(factory.quote(EXPECTED, flags=FLAGS_DEBUG), pki, collateral)
        assert failing(report) == {R.STEP_DEBUG}

    def test_debug_enclave_with_insecure_allow_debug(
        self, factory: QuoteFactory, pki: TestPki, collateral: Collateral
    ) -> None:
        policy = AttestationPolicy(enclave=MrEnclave(MRENCLAVE), insecure_allow_debug=True)
        with pytest.warns(InsecurePolicyWarning, match="insecure_allow_debug"):
            report = verify(factory.quote(EXPECTED, flags=FLAGS_DEBUG), pki, collateral, policy)
        assert report.ok
        assert report.step(R.STEP_DEBUG).status is StepStatus.FAIL
        assert report.step(R.STEP_DEBUG).waived_by == "insecure_allow_debug"

    def test_old_isvsvn_refused_by_mrsigner_policy(
        self, factory: QuoteFactory, pki: TestPki, collateral: Collateral
    ) -> None:
        policy = AttestationPolicy(
            enclave=MrSigner(MRSIGNER, isv_prod_id=ISV_PROD_ID, min_isv_svn=ISV_SVN + 1)
        )
        report = verify(factory.quote(EXPECTED), pki, collateral, policy)
        assert failing(report) == {R.STEP_ENCLAVE}
        assert "below the minimum" in report.step(R.STEP_ENCLAVE).detail
        assert verify(factory.quote(EXPECTED, isv_svn=ISV_SVN + 1), pki, collateral, policy).ok

    def test_other_product_refused(self, factory: QuoteFactory, pki: TestPki, collateral: Collateral) -> None:
        policy = AttestationPolicy(enclave=MrSigner(MRSIGNER, isv_prod_id=ISV_PROD_ID, min_isv_svn=0))
        report = verify(factory.quote(EXPECTED, isv_prod_id=ISV_PROD_ID + 1), pki, collateral, policy)
        assert failing(report) == {R.STEP_ENCLAVE}

    def test_report_data_for_another_key(
        self, factory: QuoteFactory, pki: TestPki, collateral: Collateral
    ) -> None:
        other = report_data(VK_PEM.replace("worker", "attacker"), NONCE)
        assert failing(verify(factory.quote(other), pki, collateral)) == {R.STEP_REPORT_DATA}

    def test_replayed_quote_with_old_nonce(
        self, factory: QuoteFactory, pki: TestPki, collateral: Collateral
    ) -> None:
        stale = report_data(VK_PEM, b"yesterday's nonce")
        assert failing(verify(factory.quote(stale), pki, collateral)) == {R.STEP_REPORT_DATA}

    def test_quote_without_nonce_when_one_was_asked(
        self, factory: QuoteFactory, pki: TestPki, collateral: Collateral
    ) -> None:
        assert failing(verify(factory.quote(report_data(VK_PEM)), pki, collateral)) == {R.STEP_REPORT_DATA}


class TestCollateral:
    def test_sw_hardening_needed_refused_by_default(self, factory: QuoteFactory, pki: TestPki) -> None:
        collateral = Collateral.from_dict(make_collateral(pki, tcb_levels=default_tcb_levels()))
        report = verify(factory.quote(EXPECTED), pki, collateral)
        assert failing(report) == {R.STEP_TCB}
        assert report.tcb_status == "SWHardeningNeeded"
        assert report.advisory_ids == ("INTEL-SA-00615",)
        assert "INTEL-SA-00615" in report.render()

    def test_sw_hardening_needed_accepted_when_listed(self, factory: QuoteFactory, pki: TestPki) -> None:
        collateral = Collateral.from_dict(make_collateral(pki, tcb_levels=default_tcb_levels()))
        policy = AttestationPolicy(
            enclave=MrEnclave(MRENCLAVE), accepted_tcb_statuses=frozenset({"UpToDate", "SWHardeningNeeded"})
        )
        report = verify(factory.quote(EXPECTED), pki, collateral, policy)
        assert report.ok and report.verdict() == "VERIFIED"

    def test_out_of_date_platform(self, factory: QuoteFactory, pki: TestPki) -> None:
        higher = tuple(c + 1 for c in TCB_COMPONENTS)
        levels = [
            tcb_level(higher, PCE_SVN, "UpToDate"),
            tcb_level(TCB_COMPONENTS, PCE_SVN, "OutOfDate", ("INTEL-SA-00828",)),
        ]
        collateral = Collateral.from_dict(make_collateral(pki, tcb_levels=levels))
        report = verify(factory.quote(EXPECTED), pki, collateral)
        assert failing(report) == {R.STEP_TCB}
        assert report.tcb_status == "OutOfDate"
        policy = AttestationPolicy(enclave=MrEnclave(MRENCLAVE), insecure_accept_out_of_date_tcb=True)
        with pytest.warns(InsecurePolicyWarning):
            waived = verify(factory.quote(EXPECTED), pki, collateral, policy)
        assert waived.ok and waived.step(R.STEP_TCB).waived_by == "insecure_accept_out_of_date_tcb"

    def test_pce_svn_below_every_level(self, factory: QuoteFactory, pki: TestPki) -> None:
        levels = [tcb_level(TCB_COMPONENTS, PCE_SVN + 1, "UpToDate")]
        report = verify(
            factory.quote(EXPECTED), pki, Collateral.from_dict(make_collateral(pki, tcb_levels=levels))
        )
        assert failing(report) == {R.STEP_TCB}
        assert "below every level" in report.step(R.STEP_TCB).detail

    def test_reordered_levels_cannot_pick_a_laxer_level(self, factory: QuoteFactory, pki: TestPki) -> None:
        levels = [
            tcb_level(tuple(0 for _ in TCB_COMPONENTS), 0, "UpToDate"),
            tcb_level(TCB_COMPONENTS, PCE_SVN, "OutOfDate"),
        ]
        report = verify(
            factory.quote(EXPECTED), pki, Collateral.from_dict(make_collateral(pki, tcb_levels=levels))
        )
        assert report.tcb_status == "OutOfDate"

    def test_stale_quoting_enclave_makes_the_platform_out_of_date(
        self, factory: QuoteFactory, pki: TestPki, collateral: Collateral
    ) -> None:
        report = verify(factory.quote(EXPECTED, qe_isv_svn=6), pki, collateral)
        assert report.step(R.STEP_QE_IDENTITY).status is StepStatus.PASS
        assert report.tcb_status == "OutOfDate"
        assert failing(report) == {R.STEP_TCB}

    def test_revoked_pck_certificate(self, good: bytes, pki: TestPki) -> None:
        collateral = Collateral.from_dict(make_collateral(pki, pck_revoked=(pki.pck.serial_number,)))
        report = verify(good, pki, collateral)
        assert failing(report) == {R.STEP_REVOCATION}
        assert "revoked" in report.step(R.STEP_REVOCATION).detail

    def test_revoked_pck_ca(self, good: bytes, pki: TestPki) -> None:
        collateral = Collateral.from_dict(make_collateral(pki, root_revoked=(pki.ca.serial_number,)))
        assert failing(verify(good, pki, collateral)) == {R.STEP_REVOCATION}

    def test_revoked_tcb_signing_certificate(self, good: bytes, pki: TestPki) -> None:
        collateral = Collateral.from_dict(make_collateral(pki, root_revoked=(pki.tcb_cert.serial_number,)))
        assert failing(verify(good, pki, collateral)) == {R.STEP_QE_IDENTITY, R.STEP_TCB}

    def test_tcb_info_edited_after_signing(self, good: bytes, pki: TestPki) -> None:
        data = make_collateral(pki, tcb_levels=default_tcb_levels())
        data["tcb_info"] = data["tcb_info"].replace("SWHardeningNeeded", "UpToDate")
        report = verify(good, pki, Collateral.from_dict(data))
        assert failing(report) == {R.STEP_TCB}
        assert "TCB info signature is invalid" in report.step(R.STEP_TCB).detail

    def test_qe_identity_edited_after_signing(self, good: bytes, pki: TestPki) -> None:
        data = make_collateral(pki)
        data["qe_identity"] = data["qe_identity"].replace('"isvprodid":1', '"isvprodid":2')
        assert failing(verify(good, pki, Collateral.from_dict(data))) == {R.STEP_QE_IDENTITY, R.STEP_TCB}

    def test_collateral_signed_by_a_stranger(self, good: bytes, pki: TestPki) -> None:
        data = make_collateral(pki, tcb_signer=ec.generate_private_key(ec.SECP256R1()))
        assert failing(verify(good, pki, Collateral.from_dict(data))) == {R.STEP_QE_IDENTITY, R.STEP_TCB}

    def test_expired_collateral(self, good: bytes, pki: TestPki) -> None:
        data = make_collateral(
            pki, issue=pki.now - timedelta(days=40), next_update=pki.now - timedelta(days=10)
        )
        report = verify(good, pki, Collateral.from_dict(data))
        assert failing(report) == {R.STEP_QE_IDENTITY, R.STEP_TCB}
        assert "expired" in report.step(R.STEP_QE_IDENTITY).detail

    def test_tcb_info_for_another_platform(self, good: bytes, pki: TestPki) -> None:
        report = verify(
            good, pki, Collateral.from_dict(make_collateral(pki, fmspc=bytes.fromhex("00A067110000")))
        )
        assert failing(report) == {R.STEP_TCB}
        assert re.search("FMSPC", report.step(R.STEP_TCB).detail)

    def test_quoting_enclave_not_signed_by_intel(self, pki: TestPki, collateral: Collateral) -> None:
        class RogueQe(QuoteFactory):
            def qe_report(self, *, isv_svn: int = 8, mrsigner: bytes = bytes(32)) -> bytes:
                return super().qe_report(isv_svn=isv_svn, mrsigner=bytes(32))

        report = verify(RogueQe(pki).quote(EXPECTED), pki, collateral)
        assert failing(report) == {R.STEP_QE_IDENTITY, R.STEP_TCB}
        assert "MRSIGNER" in report.step(R.STEP_QE_IDENTITY).detail


class TestHostileInput:
    @settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), min_size=1, max_size=6))
    def test_corrupted_quotes_never_raise_nor_pass_with_altered_signed_content(
        self, good: bytes, pki: TestPki, collateral: Collateral, edits: list[tuple[int, int]]
    ) -> None:
        raw = bytearray(good)
        for offset, value in edits:
            raw[offset % len(raw)] = value
        report = verify(bytes(raw), pki, collateral)
        if report.ok:
            # Only unsigned framing (e.g. the PEM text of the optional root) may differ: what the
            # quote attests must be exactly what was signed.
            ours, original = parse_quote(bytes(raw)), parse_quote(good)
            assert isinstance(ours, DcapQuote) and isinstance(original, DcapQuote)
            assert ours.signed_data == original.signed_data
            assert ours.signature_data.qe_report == original.signature_data.qe_report
            assert ours.signature_data.attestation_key == original.signature_data.attestation_key
            assert ours.signature_data.qe_auth_data == original.signature_data.qe_auth_data

    @settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(st.integers(0, 3000), st.binary(min_size=1, max_size=8))
    def test_corrupted_certificate_chains_never_raise(
        self, factory: QuoteFactory, pki: TestPki, collateral: Collateral, offset: int, junk: bytes
    ) -> None:
        chain = bytearray(pki.chain_pem())
        at = offset % len(chain)
        chain[at : at + len(junk)] = junk
        report = verify(factory.quote(EXPECTED, cert_data=bytes(chain)), pki, collateral)
        assert isinstance(report.ok, bool)


class TestEpidAndGarbage:
    def test_epid_quote_cannot_be_verified(self, pki: TestPki, collateral: Collateral) -> None:
        report = verify(epid_quote(EXPECTED), pki, collateral)
        assert report.step(R.STEP_PARSED).status is StepStatus.PASS
        assert R.STEP_CHAIN in failing(report)
        assert "end of life" in report.step(R.STEP_CHAIN).detail
        assert report.step(R.STEP_ENCLAVE).status is StepStatus.PASS
        assert not report.ok

    def test_garbage_fails_parsing_and_checks_nothing_else(
        self, pki: TestPki, collateral: Collateral
    ) -> None:
        report = verify(b"\x03\x00garbage", pki, collateral)
        assert report.step(R.STEP_PARSED).status is StepStatus.FAIL
        assert all(s.status is StepStatus.NOT_CHECKED for s in report.steps[1:])
        assert not report.ok

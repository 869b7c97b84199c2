"""SEV-SNP evidence in the one verifier: told from its bytes and handed to `attestation.snp`.

The SNP checks themselves (chain to AMD's roots, signature, TCB, policy) are tested with the SNP
module; here, what the frame around them promises: the kind is recognised, a missing or
malformed piece is a failed step with a readable reason, never an exception.
"""

from __future__ import annotations

import importlib.util
import struct

import pytest

from avalon_worker.attestation import StepStatus, detect_tee, verify_evidence
from avalon_worker.attestation import report as R
from avalon_worker.attestation.policy import Policy

SNP_REPORT = struct.pack("<I", 3) + bytes(1180)
HAVE_SNP = importlib.util.find_spec("avalon_worker.attestation.snp") is not None


def test_an_snp_report_is_told_from_a_quote() -> None:
    assert detect_tee(SNP_REPORT) == "snp"
    assert detect_tee(SNP_REPORT + b"\x00" * 64) == "snp"  # with a certificate table after it


@pytest.mark.skipif(HAVE_SNP, reason="only meaningful where the SNP module is not installed")
def test_without_the_snp_module_the_evidence_fails_with_a_reason() -> None:
    report = verify_evidence(SNP_REPORT)
    assert report.tee == "snp" and not report.ok
    assert report.step(R.STEP_PARSED).status is StepStatus.FAIL
    assert "cannot verify AMD SEV-SNP evidence" in report.step(R.STEP_PARSED).detail


def test_a_tdx_policy_does_not_trust_snp_evidence() -> None:
    policy = Policy.from_dict({"tdx": {"insecure_any_td": True}})
    report = verify_evidence(SNP_REPORT, policy)  # no warning: the insecure section is not the one used
    assert report.tee == "snp" and not report.ok
    if HAVE_SNP:
        assert report.step(R.STEP_POLICY_TEE).status is StepStatus.FAIL

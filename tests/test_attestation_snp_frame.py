"""SEV-SNP evidence in the one verifier: told from its bytes and handed to `attestation.snp`.

The SNP checks themselves (chain to AMD's roots, signature, TCB, policy) are tested with the SNP
module; here, what the frame around them promises: the kind is recognised, a missing or
malformed piece is a failed step with a readable reason, never an exception.
"""

from __future__ import annotations

import argparse
import io
import json
import struct
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from avalon_worker._cli.parser import add_verify_arguments
from avalon_worker._cli.verify import EXIT_ERROR, EXIT_FAILED, EXIT_VERIFIED
from avalon_worker._cli.verify import run as run_verify
from avalon_worker.attestation import StepStatus, detect_tee, verify_evidence
from avalon_worker.attestation.verifier import report as R
from avalon_worker.attestation.verifier.policy import Policy

import snp_fixtures as fixtures

SNP_REPORT = struct.pack("<I", 3) + bytes(1180)


def test_an_snp_report_is_told_from_a_quote() -> None:
    assert detect_tee(SNP_REPORT) == "snp"
    assert detect_tee(SNP_REPORT + b"\x00" * 64) == "snp"  # with a certificate table after it


def test_a_report_that_is_not_one_fails_parsing_with_a_reason() -> None:
    report = verify_evidence(SNP_REPORT)
    assert report.tee == "snp" and not report.ok
    assert report.step("SNP report parsed").status is StepStatus.FAIL


def test_a_tdx_policy_does_not_trust_snp_evidence() -> None:
    policy = Policy.from_dict({"tdx": {"insecure_any_td": True}})
    report = verify_evidence(SNP_REPORT, policy)  # no warning: the insecure section is not the one used
    assert report.tee == "snp" and not report.ok
    assert report.step(R.STEP_POLICY_TEE).status is StepStatus.FAIL


# The whole path: `verify --evidence` on an SNP report signed under the test AMD PKI, its chain
# given as a PEM bundle or carried after the report.


@pytest.fixture
def snp_files(tmp_path: Path) -> dict[str, Path]:
    pki = fixtures.snp_pki("Milan")
    files = {
        "report": tmp_path / "report.bin",
        "with-table": tmp_path / "report-and-table.bin",
        "bundle": tmp_path / "vcek-chain.pem",
        "ark": tmp_path / "ark.pem",
        "policy": tmp_path / "policy.json",
    }
    report = fixtures.make_snp_report(b"\x5a" * 64)
    files["report"].write_bytes(report)
    files["with-table"].write_bytes(report + fixtures.make_cert_table(pki.vcek_chain()))
    files["bundle"].write_bytes(b"".join(c.public_bytes(serialization.Encoding.PEM) for c in pki.vcek_chain()))
    files["ark"].write_bytes(pki.ark.public_bytes(serialization.Encoding.PEM))
    # The test PKI publishes no CRL: revocation cannot be checked, which this policy waives.
    files["policy"].write_text(json.dumps({"snp": {"measurements": [fixtures.MEASUREMENT.hex()],
                                                   "insecure_accept_unchecked_revocation": True}}))
    return files


def run_verify_cli(argv: list[str]) -> tuple[int, str]:
    parser = argparse.ArgumentParser()
    add_verify_arguments(parser)
    out, err = io.StringIO(), io.StringIO()
    code = run_verify(parser.parse_args(argv), out=out, err=err)
    return code, out.getvalue() + err.getvalue()


@pytest.mark.parametrize("source", ["bundle", "table"])
def test_verify_evidence_on_an_snp_report(snp_files: dict[str, Path], source: str) -> None:
    evidence = snp_files["report"] if source == "bundle" else snp_files["with-table"]
    chain = ["--collateral", str(snp_files["bundle"])] if source == "bundle" else []
    code, out = run_verify_cli(["--evidence", str(evidence), *chain, "--insecure-amd-root", str(snp_files["ark"]),
                                "--at", fixtures.NOW.isoformat(), "--json", "--report-data", "5a" * 64])
    data = json.loads(out)
    assert data["tee"] == "snp" and data["report_data"] == "5a" * 64
    signature = [s for s in data["steps"] if s["name"] == "report signed by VCEK/VLEK"]
    assert signature and signature[0]["status"] == "pass", out
    assert code == EXIT_FAILED  # no policy: the measurement is not checked


def test_verify_evidence_on_an_snp_report_under_a_policy(snp_files: dict[str, Path]) -> None:
    with pytest.warns(UserWarning, match="insecure_accept_unchecked_revocation") as warned:
        code, out = run_verify_cli(["--evidence", str(snp_files["report"]), "--collateral", str(snp_files["bundle"]),
                                    "--insecure-amd-root", str(snp_files["ark"]), "--at", fixtures.NOW.isoformat(),
                                    "--policy", str(snp_files["policy"])])
    assert len(warned) == 1
    assert "evidence: snp" in out and "[PASS] launch measurement allowed" in out
    assert code == EXIT_VERIFIED, out
    assert "ACCEPTED WITH INSECURE OVERRIDES (insecure_accept_unchecked_revocation)" in out
    assert "report data binds" not in out  # no --report-data: the step is left out, as for quotes


def test_an_snp_report_with_dcap_collateral_exits_two(snp_files: dict[str, Path]) -> None:
    code, out = run_verify_cli(["--evidence", str(snp_files["report"]), "--collateral",
                                str(Path(__file__).parent / "data" / "attestation" / "dcap_qvl_tdx_quote_collateral.json")])
    assert code == EXIT_ERROR and "Traceback" not in out


def test_verify_evidence_on_amds_real_milan_report() -> None:
    data = Path(__file__).parent / "data" / "attestation"
    code, out = run_verify_cli(["--evidence", str(data / "snp_milan_v2_report.bin"),
                                "--collateral", str(data / "snp_milan_vcek.der"), "--at", "2026-12-01", "--json"])
    report = json.loads(out)
    status = {s["name"]: s["status"] for s in report["steps"]}
    assert report["tee"] == "snp" and code == EXIT_FAILED  # no policy, no CRL
    assert status["VCEK/VLEK chain to AMD root"] == "pass"
    assert status["report signed by VCEK/VLEK"] == "pass"
    assert status["VCEK/VLEK TCB matches REPORTED_TCB"] == "pass"
    assert status["VCEK hwID matches CHIP_ID"] == "pass"
    assert len(report["measurements"]["measurement"]) == 96

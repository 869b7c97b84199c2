"""Attestation policy objects and the JSON policy file: strict by default, loud when relaxed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from avalon_worker.attestation import (
    AllOf,
    AnyOf,
    AttestationPolicy,
    InsecureAnyEnclave,
    InsecurePolicyWarning,
    MrEnclave,
    MrSigner,
    PolicyError,
    PolicyViolation,
    ReportBody,
    load_policy,
)

from attestation_fixtures import ISV_PROD_ID, ISV_SVN, MRENCLAVE, MRSIGNER, report_body

BODY = ReportBody.parse(report_body())


class TestEnclavePolicies:
    def test_mrenclave_allows_listed(self) -> None:
        MrEnclave("00" * 32, MRENCLAVE.hex()).check(BODY)

    def test_mrenclave_refuses_others(self) -> None:
        with pytest.raises(PolicyViolation, match=MRENCLAVE.hex()):
            MrEnclave("00" * 32).check(BODY)

    def test_mrsigner_checks_signer_product_and_svn(self) -> None:
        MrSigner(MRSIGNER, isv_prod_id=ISV_PROD_ID, min_isv_svn=ISV_SVN).check(BODY)
        with pytest.raises(PolicyViolation, match="MRSIGNER"):
            MrSigner(bytes(32), isv_prod_id=ISV_PROD_ID, min_isv_svn=0).check(BODY)
        with pytest.raises(PolicyViolation, match="ISVPRODID"):
            MrSigner(MRSIGNER, isv_prod_id=ISV_PROD_ID + 1, min_isv_svn=0).check(BODY)
        with pytest.raises(PolicyViolation, match="below the minimum"):
            MrSigner(MRSIGNER, isv_prod_id=ISV_PROD_ID, min_isv_svn=ISV_SVN + 1).check(BODY)

    def test_any_of_and_all_of(self) -> None:
        wrong = MrEnclave("11" * 32)
        right = MrSigner(MRSIGNER, isv_prod_id=ISV_PROD_ID, min_isv_svn=0)
        AnyOf(wrong, right).check(BODY)
        with pytest.raises(PolicyViolation, match="none of the allowed"):
            AnyOf(wrong, MrEnclave("22" * 32)).check(BODY)
        AllOf(MrEnclave(MRENCLAVE), right).check(BODY)
        with pytest.raises(PolicyViolation):
            AllOf(right, wrong).check(BODY)

    def test_insecure_any_enclave_warns_on_every_use(self) -> None:
        policy = InsecureAnyEnclave()
        for _ in range(2):
            with pytest.warns(InsecurePolicyWarning, match="insecure_any_enclave"):
                policy.check(BODY)

    @pytest.mark.parametrize("bad", ["zz" * 32, "00" * 31, ""])
    def test_bad_measurements(self, bad: str) -> None:
        with pytest.raises(PolicyError):
            MrEnclave(bad)

    def test_svn_range(self) -> None:
        with pytest.raises(PolicyError, match="0 to 65535"):
            MrSigner(MRSIGNER, isv_prod_id=0, min_isv_svn=70000)


class TestAttestationPolicy:
    def test_default_accepts_only_up_to_date(self) -> None:
        policy = AttestationPolicy(enclave=MrEnclave(MRENCLAVE))
        assert policy.accepted_tcb_statuses == frozenset({"UpToDate"})
        assert not policy.tcb_status_accepted("SWHardeningNeeded")
        assert policy.insecure_overrides() == ()

    def test_revoked_can_never_be_accepted(self) -> None:
        with pytest.raises(PolicyError, match="Revoked"):
            AttestationPolicy(enclave=MrEnclave(MRENCLAVE), accepted_tcb_statuses=frozenset({"Revoked"}))

    def test_out_of_date_needs_the_insecure_flag(self) -> None:
        with pytest.raises(PolicyError, match="out-of-date") as info:
            AttestationPolicy(enclave=MrEnclave(MRENCLAVE), accepted_tcb_statuses=frozenset({"OutOfDate"}))
        assert "insecure_accept_out_of_date_tcb" in info.value.diagnostics()
        policy = AttestationPolicy(enclave=MrEnclave(MRENCLAVE), insecure_accept_out_of_date_tcb=True)
        assert policy.tcb_status_accepted("OutOfDate")
        assert not policy.tcb_status_accepted("Revoked")
        assert policy.insecure_overrides() == ("insecure_accept_out_of_date_tcb",)

    def test_unknown_status(self) -> None:
        with pytest.raises(PolicyError, match="unknown TCB status"):
            AttestationPolicy(enclave=MrEnclave(MRENCLAVE), accepted_tcb_statuses=frozenset({"Fine"}))

    def test_enclave_must_be_a_policy(self) -> None:
        with pytest.raises(PolicyError, match="enclave identity policy"):
            AttestationPolicy(enclave="any")  # type: ignore[arg-type]


class TestPolicyFile:
    def test_full_example(self, tmp_path: Path) -> None:
        path = tmp_path / "policy.json"
        path.write_text(
            json.dumps(
                {
                    "enclave": {
                        "any_of": [
                            {"mrenclave": [MRENCLAVE.hex()]},
                            {"mrsigner": MRSIGNER.hex(), "isv_prod_id": ISV_PROD_ID, "min_isv_svn": 2},
                        ]
                    },
                    "accepted_tcb_statuses": ["UpToDate", "SWHardeningNeeded"],
                }
            )
        )
        policy = load_policy(path)
        assert isinstance(policy.enclave, AnyOf)
        assert policy.accepted_tcb_statuses == frozenset({"UpToDate", "SWHardeningNeeded"})
        assert policy.insecure_overrides() == ()
        policy.enclave.check(BODY)

    def test_single_mrenclave_string(self) -> None:
        policy = AttestationPolicy.from_json(json.dumps({"enclave": {"mrenclave": MRENCLAVE.hex()}}))
        assert policy.enclave == MrEnclave(MRENCLAVE)

    def test_all_of(self) -> None:
        policy = AttestationPolicy.from_json(
            json.dumps({"enclave": {"all_of": [{"mrenclave": MRENCLAVE.hex()}, {"mrenclave": "00" * 32}]}})
        )
        with pytest.raises(PolicyViolation):
            policy.enclave.check(BODY)

    def test_insecure_forms(self) -> None:
        policy = AttestationPolicy.from_json(
            json.dumps(
                {
                    "enclave": {"insecure_any_enclave": True},
                    "insecure_allow_debug": True,
                    "insecure_accept_unchecked_tcb": True,
                }
            )
        )
        assert policy.insecure_overrides() == (
            "insecure_any_enclave",
            "insecure_allow_debug",
            "insecure_accept_unchecked_tcb",
        )
        assert "INSECURE" in policy.describe()

    @pytest.mark.parametrize(
        ("document", "message"),
        [
            ({}, "lacks 'enclave'"),
            ({"enclave": {"mrenclave": [MRENCLAVE.hex()]}, "allow_debug": True}, "unknown key"),
            ({"enclave": {"mrenclave": [MRENCLAVE.hex()], "extra": 1}}, "unknown key"),
            ({"enclave": {"mrsigner": MRSIGNER.hex()}}, "needs isv_prod_id"),
            ({"enclave": {"mrsigner": MRSIGNER.hex(), "isv_prod_id": 1}}, "needs min_isv_svn"),
            ({"enclave": {"mrenclave": []}}, "non-empty list"),
            ({"enclave": {"any_of": []}}, "non-empty list"),
            ({"enclave": {"insecure_any_enclave": False}}, "must be true"),
            ({"enclave": {}}, "must have one of"),
            ({"enclave": {"mrenclave": MRENCLAVE.hex()}, "insecure_allow_debug": "yes"}, "true or false"),
            (
                {"enclave": {"mrenclave": MRENCLAVE.hex()}, "accepted_tcb_statuses": "UpToDate"},
                "list of strings",
            ),
            (
                {"enclave": {"mrenclave": MRENCLAVE.hex()}, "accepted_tcb_statuses": ["OutOfDate"]},
                "out-of-date",
            ),
            ([], "JSON object"),
        ],
    )
    def test_invalid_documents(self, document: object, message: str) -> None:
        with pytest.raises(PolicyError, match=message):
            AttestationPolicy.from_json(json.dumps(document))

    def test_errors_name_the_file(self, tmp_path: Path) -> None:
        path = tmp_path / "p.json"
        path.write_text("{not json")
        with pytest.raises(PolicyError, match=str(path)):
            load_policy(path)
        with pytest.raises(PolicyError, match="cannot read"):
            load_policy(tmp_path / "missing.json")

"""Attestation policy objects and the JSON policy file: strict by default, loud when relaxed."""

from __future__ import annotations

import json
import re
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
    Policy,
    PolicyError,
    PolicyViolation,
    ReportBody,
    RtmrRule,
    SnpPolicy,
    TdxPolicy,
    load_policy,
)
from avalon_worker.attestation.verifier.policy import policy_template

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
                    "sgx": {
                        "enclave": {
                            "any_of": [
                                {"mrenclave": [MRENCLAVE.hex()]},
                                {"mrsigner": MRSIGNER.hex(), "isv_prod_id": ISV_PROD_ID, "min_isv_svn": 2},
                            ]
                        },
                        "accepted_tcb_statuses": ["UpToDate", "SWHardeningNeeded"],
                    }
                }
            )
        )
        policy = load_policy(path).sgx
        assert policy is not None
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


MRTD_HEX = "11" * 48
RTMR_HEX = "22" * 48


class TestPolicyFileSections:
    def test_a_section_per_tee(self, tmp_path: Path) -> None:
        path = tmp_path / "policy.json"
        path.write_text(json.dumps({
            "sgx": {"enclave": {"mrenclave": [MRENCLAVE.hex()]}},
            "tdx": {"mrtd": [MRTD_HEX], "rtmr2": RTMR_HEX, "accepted_tcb_statuses": ["UpToDate", "SWHardeningNeeded"]},
        }))
        policy = load_policy(path)
        assert isinstance(policy.sgx, AttestationPolicy) and isinstance(policy.tdx, TdxPolicy)
        assert policy.snp is None
        assert policy.tdx.mrtd == frozenset({bytes.fromhex(MRTD_HEX)})
        assert policy.tdx.rtmrs[2] == RtmrRule(values=frozenset({bytes.fromhex(RTMR_HEX)}))
        assert policy.tdx.require_sept_ve_disable and not policy.tdx.allow_migratable
        assert policy.describe().startswith("sgx: enclave MRENCLAVE in {") and " | tdx: MRTD in {" in policy.describe()
        assert policy.insecure_overrides() == ()

    def test_the_old_sgx_only_shape_is_refused_saying_how_to_convert(self, tmp_path: Path) -> None:
        path = tmp_path / "old.json"
        path.write_text(json.dumps({"enclave": {"mrenclave": [MRENCLAVE.hex()]}}))
        with pytest.raises(PolicyError, match="old SGX-only shape") as info:
            load_policy(path)
        assert 'move its keys under "sgx"' in info.value.diagnostics()
        assert str(path) in info.value.diagnostics() and "\n" not in info.value.diagnostics()

    @pytest.mark.parametrize(
        ("document", "message"),
        [
            ({}, "at least one section"),
            ({"sgx": {"enclave": {"mrenclave": MRENCLAVE.hex()}}, "tpm": {}}, r"unknown key\(s\) \['tpm'\]"),
            ({"tdx": []}, "tdx section must be a JSON object"),
            ({"tdx": {"rtmr1": RTMR_HEX}}, "lacks 'mrtd'"),
            ({"tdx": {"mrtd": MRTD_HEX}}, "pins no code"),
            ({"tdx": {"mrtd": MRTD_HEX, "rtmr0": RTMR_HEX}}, "pins no code"),  # RTMR0 is firmware configuration
            ({"tdx": {"mrtd": "11" * 32, "rtmr1": RTMR_HEX}}, "48 bytes"),
            ({"tdx": {"mrtd": MRTD_HEX, "rtmr1": RTMR_HEX, "rtmr4": RTMR_HEX}}, "unknown key"),
            ({"tdx": {"mrtd": MRTD_HEX, "rtmr3": {"start": RTMR_HEX}}}, "needs allowed_event_digests"),
            ({"tdx": {"mrtd": MRTD_HEX, "rtmr3": {"allowed_event_digests": [], "x": 1}}}, "unknown key"),
            ({"tdx": {"mrtd": MRTD_HEX, "rtmr3": {"allowed_event_digests": []}}}, "non-empty list"),
            ({"tdx": {"mrtd": MRTD_HEX, "rtmr1": RTMR_HEX, "xfam": "00"}}, "8 bytes"),
            ({"tdx": {"mrtd": MRTD_HEX, "rtmr1": RTMR_HEX, "min_tee_tcb_svn": "00"}}, "16 bytes"),
            ({"tdx": {"mrtd": MRTD_HEX, "rtmr1": RTMR_HEX, "require_sept_ve_disable": "no"}}, "true or false"),
            ({"tdx": {"mrtd": MRTD_HEX, "rtmr1": RTMR_HEX, "accepted_tcb_statuses": ["TDRelaunchAdvised"]}},
             "out-of-date"),
            ({"tdx": {"mrtd": MRTD_HEX, "rtmr1": RTMR_HEX, "accepted_tcb_statuses": ["Revoked"]}}, "never be accepted"),
            ({"sgx": {"accepted_tcb_statuses": ["UpToDate"]}}, "sgx lacks 'enclave'"),
        ],
    )
    def test_invalid_sections(self, document: object, message: str) -> None:
        with pytest.raises(PolicyError, match=message):
            Policy.from_json(json.dumps(document))

    def test_worker_code_in_rtmr3_pins_the_code(self) -> None:
        policy = Policy.from_dict(
            {"tdx": {"mrtd": MRTD_HEX, "rtmr3": {"allowed_event_digests": [RTMR_HEX], "start": "33" * 48}}}
        )
        assert policy.tdx is not None
        rule = policy.tdx.rtmrs[3]
        assert rule is not None and rule.allowed_event_digests == frozenset({bytes.fromhex(RTMR_HEX)})
        assert rule.start == bytes.fromhex("33" * 48)
        assert "RTMR3 replayed from 3333" in policy.describe()

    def test_insecure_any_td(self) -> None:
        policy = Policy.from_dict({"tdx": {"insecure_any_td": True, "insecure_allow_debug": True}})
        assert policy.tdx is not None and policy.tdx.mrtd is None
        assert policy.insecure_overrides() == ("tdx.insecure_any_td", "tdx.insecure_allow_debug")
        assert "any TD (INSECURE)" in policy.describe()

    def test_all_three_sections(self) -> None:
        policy = Policy.from_dict({
            "sgx": {"enclave": {"mrenclave": MRENCLAVE.hex()}},
            "tdx": {"mrtd": MRTD_HEX, "rtmr2": RTMR_HEX},
            "snp": {"measurements": ["33" * 48]},
        })
        assert isinstance(policy.snp, SnpPolicy)
        assert policy.describe().count(" | ") == 2 and "snp: measurement in {" + "33" * 48 in policy.describe()
        with pytest.raises(PolicyError, match="unknown snp policy keys"):
            Policy.from_dict({"snp": {"measurements": ["33" * 48], "no such key": 1}})

    @pytest.mark.parametrize("tee", ["sgx", "tdx", "snp"])
    def test_templates_are_policies_once_the_placeholders_are_filled(self, tee: str) -> None:
        template = json.dumps(policy_template(tee))
        assert "REPLACE" in template
        with pytest.raises(PolicyError, match="not hex|placeholder"):
            Policy.from_json(template)
        filled = re.sub(r"REPLACE-with-the-(\d+)-hex[^\"]*", lambda m: "ab" * (int(m.group(1)) // 2), template)
        policy = Policy.from_json(filled)
        assert getattr(policy, tee) is not None and policy.insecure_overrides() == ()

    def test_no_template_for_an_unknown_tee(self) -> None:
        with pytest.raises(PolicyError, match="no policy template for 'tpm'"):
            policy_template("tpm")

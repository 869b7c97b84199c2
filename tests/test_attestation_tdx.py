"""TDX quotes on the DCAP core: TD report layouts, TDX TCB info v3, TD attributes, the tdx policy."""

from __future__ import annotations

import hashlib
import json
import struct
from datetime import datetime, timezone
from pathlib import Path

import pytest

from avalon_worker.attestation import (
    Collateral,
    QuoteParseError,
    StepStatus,
    TdxQuote,
    VerificationReport,
    detect_tee,
    parse_quote,
    verify_evidence,
)
from avalon_worker.attestation.verifier import report as R
from avalon_worker.attestation.verifier.policy import Policy, TdxPolicy

from attestation_fixtures import (
    MRTD,
    RTMRS,
    TD_ATTR_DEBUG,
    TD_ATTR_SEPT_VE_DISABLE,
    TDX_MODULE_ISV_SVN,
    TEE_TCB_SVN,
    QuoteFactory,
    TestPki,
    default_module_identities,
    flip,
    make_tdx_collateral,
    tdx_level,
)

DATA = Path(__file__).parent / "data" / "attestation"
REPORT_DATA = bytes(range(64))
POLICY = {"tdx": {"mrtd": MRTD.hex(), "rtmr1": RTMRS[1].hex(), "rtmr2": [RTMRS[2].hex(), "00" * 48]}}
OFF_TD_BODY = 48  # v4; v5 adds the 6-byte body descriptor


def svn(module_isv_svn: int = TDX_MODULE_ISV_SVN, module_version: int = 1, third: int = 2) -> bytes:
    return bytes([module_isv_svn, module_version, third]) + bytes(13)


def failing(report: VerificationReport) -> set[str]:
    return {s.name for s in report.failures}


def verify(
    raw: bytes,
    pki: TestPki,
    collateral: dict | None = None,
    policy: dict | None = POLICY,
    **kwargs: object,
) -> VerificationReport:
    return verify_evidence(
        raw,
        Policy.from_dict(policy) if policy is not None else None,
        collateral=Collateral.from_dict(collateral if collateral is not None else make_tdx_collateral(pki)),
        root_ca=pki.root,
        now=pki.now,
        **kwargs,  # type: ignore[arg-type]
    )


class TestLayouts:
    @pytest.mark.parametrize(("version", "body_type", "size"), [(4, 2, 584), (5, 2, 584), (5, 3, 648), (5, 4, 885)])
    def test_every_field_lands_where_intel_puts_it(
        self, factory: QuoteFactory, version: int, body_type: int, size: int
    ) -> None:
        raw = factory.tdx_quote(REPORT_DATA, version=version, body_type=body_type, rtmr3=b"\x33" * 48,
                                mrconfigid=b"\xc0" * 48, tee_tcb_svn2=svn(7) if body_type > 2 else None)
        quote = parse_quote(raw)
        assert isinstance(quote, TdxQuote)
        assert (quote.version, quote.body_type, len(quote.body.raw)) == (version, body_type, size)
        body = quote.body
        start = OFF_TD_BODY + (6 if version == 5 else 0)
        assert raw[start : start + 16] == body.tee_tcb_svn == TEE_TCB_SVN
        assert raw[start + 136 : start + 184] == body.mr_td == MRTD
        assert raw[start + 184 : start + 232] == body.mr_config_id == b"\xc0" * 48
        assert body.rtmrs == (*RTMRS[:3], b"\x33" * 48)
        assert raw[start + 520 : start + 584] == body.report_data == REPORT_DATA
        assert body.attributes == TD_ATTR_SEPT_VE_DISABLE and not body.debug
        assert quote.signed_data == raw[: start + size]
        if body_type > 2:
            assert body.tee_tcb_svn2 == svn(7) and body.mr_service_td == bytes(48)
        else:
            assert body.tee_tcb_svn2 is None and body.mr_service_td is None
        assert (body.extension is not None) == (body_type == 4)
        if body.extension is not None:
            assert body.extension.td_id == bytes(range(32))

    def test_zero_padding_after_the_signature_data_is_the_quote_buffer(self, factory: QuoteFactory) -> None:
        raw = factory.tdx_quote(REPORT_DATA)
        assert parse_quote(raw + bytes(70)).raw == raw + bytes(70)
        with pytest.raises(QuoteParseError, match="signature data length says"):
            parse_quote(raw + bytes(69) + b"\x01")

    def test_sgx_quotes_admit_no_padding(self, factory: QuoteFactory) -> None:
        with pytest.raises(QuoteParseError, match="signature data length says"):
            parse_quote(factory.quote(REPORT_DATA, version=4) + bytes(8))

    @pytest.mark.parametrize(("body_type", "size"), [(2, 648), (3, 584), (4, 648)])
    def test_v5_body_size_must_match_its_type(self, factory: QuoteFactory, body_type: int, size: int) -> None:
        raw = bytearray(factory.tdx_quote(REPORT_DATA, version=5, body_type=body_type))
        struct.pack_into("<I", raw, 50, size)
        with pytest.raises(QuoteParseError, match=f"body type {body_type} must be"):
            parse_quote(bytes(raw))

    def test_v5_td_body_under_an_sgx_tee_type(self, factory: QuoteFactory) -> None:
        raw = bytearray(factory.tdx_quote(REPORT_DATA, version=5, body_type=3))
        struct.pack_into("<I", raw, 4, 0)
        with pytest.raises(QuoteParseError, match="body type 3 does not fit TEE type 0x0"):
            parse_quote(bytes(raw))

    def test_every_truncation_is_a_parse_error(self, factory: QuoteFactory) -> None:
        raw = factory.tdx_quote(REPORT_DATA, version=5, body_type=4)
        for length in range(0, len(raw), 7):
            with pytest.raises(QuoteParseError):
                parse_quote(raw[:length])


class TestDetectTee:
    def test_kinds(self, factory: QuoteFactory) -> None:
        assert detect_tee(factory.quote(REPORT_DATA)) == "sgx"
        assert detect_tee(factory.tdx_quote(REPORT_DATA)) == "tdx"
        assert detect_tee(factory.tdx_quote(REPORT_DATA, version=5, body_type=3)) == "tdx"
        assert detect_tee(struct.pack("<I", 2) + bytes(1180)) == "snp"
        assert detect_tee(struct.pack("<I", 5) + bytes(1180) + b"certificate table") == "snp"

    @pytest.mark.parametrize(
        ("raw", "message"),
        [
            (b"", "empty"),
            (b"\x04\x00", "too short"),
            (struct.pack("<HHI", 4, 2, 0x42) + bytes(40), "unknown TEE type 0x42"),
            (struct.pack("<I", 9) + bytes(1180), "neither a DCAP quote"),
            (struct.pack("<I", 2) + bytes(100), "neither a DCAP quote"),  # too short for an SNP report
        ],
    )
    def test_anything_else_says_what_it_is_not(self, raw: bytes, message: str) -> None:
        with pytest.raises(QuoteParseError, match=message):
            detect_tee(raw)


class TestVerification:
    def test_a_good_td_passes_every_step(self, factory: QuoteFactory, pki: TestPki) -> None:
        report = verify(factory.tdx_quote(REPORT_DATA), pki, expected_report_data=REPORT_DATA,
                        report_data_label="the test's 64 bytes")
        assert report.ok, report.render()
        assert report.verdict() == "VERIFIED"
        assert report.tee == "tdx" and report.tcb_status == "UpToDate"
        assert report.measurements["mrtd"] == MRTD.hex()
        assert report.measurements["rtmr3"] == "00" * 48
        assert report.report_data == REPORT_DATA
        assert [s.name for s in report.steps] == [
            R.STEP_PARSED, *R.SIGNATURE_CHAIN_STEPS, R.STEP_QE_IDENTITY, R.STEP_TCB,
            R.STEP_TD_MEASUREMENTS, R.STEP_TD_ATTRIBUTES, R.STEP_REPORT_DATA,
        ]
        assert "TD_QE ISVSVN 4: UpToDate" in report.step(R.STEP_QE_IDENTITY).detail
        assert "TDX module TDX_01 ISVSVN 5: UpToDate" in report.step(R.STEP_TCB).detail
        assert report.to_dict()["tee"] == "tdx"
        assert report.to_dict()["report_data"] == REPORT_DATA.hex()

    def test_without_a_policy_everything_but_the_measurements_runs(self, factory: QuoteFactory, pki: TestPki) -> None:
        report = verify(factory.tdx_quote(REPORT_DATA), pki, policy=None)
        assert not report.ok
        assert report.failures == (report.step(R.STEP_TD_MEASUREMENTS),)
        assert report.step(R.STEP_TD_MEASUREMENTS).status is StepStatus.NOT_CHECKED
        assert report.verdict() == f"FAILED: not checked: {R.STEP_TD_MEASUREMENTS}"

    def test_a_policy_for_sgx_only_does_not_trust_a_td(self, factory: QuoteFactory, pki: TestPki) -> None:
        report = verify(factory.tdx_quote(REPORT_DATA), pki, policy={"sgx": {"enclave": {"mrenclave": "00" * 32}}})
        assert failing(report) == {R.STEP_POLICY_TEE, R.STEP_TD_MEASUREMENTS}
        assert 'no "tdx" section: it trusts sgx only' in report.step(R.STEP_POLICY_TEE).detail

    def test_without_collateral_the_chain_still_verifies(self, factory: QuoteFactory, pki: TestPki) -> None:
        report = verify_evidence(factory.tdx_quote(REPORT_DATA), Policy.from_dict(POLICY), root_ca=pki.root, now=pki.now)
        assert failing(report) == {R.STEP_REVOCATION, R.STEP_QE_IDENTITY, R.STEP_TCB}
        assert report.step(R.STEP_QUOTE_SIGNATURE).status is StepStatus.PASS
        assert report.tcb_status is None

    @pytest.mark.parametrize(
        ("offset", "expected"),
        [
            (OFF_TD_BODY + 136, {R.STEP_QUOTE_SIGNATURE, R.STEP_TD_MEASUREMENTS}),  # MRTD
            (OFF_TD_BODY + 520, {R.STEP_QUOTE_SIGNATURE}),  # REPORTDATA
            (OFF_TD_BODY + 120, {R.STEP_QUOTE_SIGNATURE, R.STEP_TD_ATTRIBUTES}),  # TDATTRIBUTES.DEBUG
            (OFF_TD_BODY + 584 + 4 + 128 + 6 + 200, {R.STEP_QE_SIGNATURE, R.STEP_QE_IDENTITY, R.STEP_TCB}),  # QE report
        ],
    )
    def test_tampering_breaks_a_signature(
        self, factory: QuoteFactory, pki: TestPki, offset: int, expected: set[str]
    ) -> None:
        assert failing(verify(flip(factory.tdx_quote(REPORT_DATA), offset), pki)) == expected

    def test_a_flipped_tee_type_is_no_quote_at_all(self, factory: QuoteFactory, pki: TestPki) -> None:
        report = verify(flip(factory.tdx_quote(REPORT_DATA), 4), pki)
        assert report.step(R.STEP_PARSED).status is StepStatus.FAIL
        assert "unknown TEE type 0x80" in report.step(R.STEP_PARSED).detail
        assert all(s.status is StepStatus.NOT_CHECKED for s in report.steps[1:])

    def test_wrong_report_data(self, factory: QuoteFactory, pki: TestPki) -> None:
        report = verify(factory.tdx_quote(REPORT_DATA), pki, expected_report_data=bytes(64))
        assert failing(report) == {R.STEP_REPORT_DATA}


class TestTcbStatus:
    """TDX TCB info v3 evaluated as Intel's QVL does (the same scenarios are cross-checked
    against dcap-qvl in test_attestation_dcap_qvl.py)."""

    def status(self, factory: QuoteFactory, pki: TestPki, collateral: dict | None = None, **fields: object) -> tuple:
        report = verify(factory.tdx_quote(REPORT_DATA, **fields), pki, collateral)  # type: ignore[arg-type]
        return report.tcb_status, report.advisory_ids, report.step(R.STEP_TCB)

    def test_tee_tcb_svn_below_the_first_level_selects_the_next(self, factory: QuoteFactory, pki: TestPki) -> None:
        status, advisories, step = self.status(factory, pki, tee_tcb_svn=svn(third=1))
        assert (status, advisories) == ("OutOfDate", ("INTEL-SA-01036",))
        assert step.status is StepStatus.FAIL and "OutOfDate is not accepted" in step.detail

    def test_module_bytes_are_left_to_the_module_identity(self, factory: QuoteFactory, pki: TestPki) -> None:
        # With a module version, TEE_TCB_SVN[0] below the level's tdxtcbcomponents[0] (5) is judged
        # by TDX_01's levels alone: ISVSVN 3 is OutOfDate there, with its advisory.
        status, advisories, _ = self.status(factory, pki, tee_tcb_svn=svn(3))
        assert (status, advisories) == ("OutOfDate", ("INTEL-SA-01099",))

    def test_module_version_zero_compares_every_byte_with_the_level(self, factory: QuoteFactory, pki: TestPki) -> None:
        status, _, _ = self.status(factory, pki, tee_tcb_svn=svn(5, module_version=0))
        assert status == "UpToDate"
        status, _, _ = self.status(factory, pki, tee_tcb_svn=svn(4, module_version=0))
        assert status == "OutOfDate"

    def test_module_below_every_level_is_not_supported(self, factory: QuoteFactory, pki: TestPki) -> None:
        status, _, step = self.status(factory, pki, tee_tcb_svn=svn(1))
        assert status is None and "ISVSVN 1 is below every level of TDX_01" in step.detail

    def test_unknown_module_version_is_a_mismatch(self, factory: QuoteFactory, pki: TestPki) -> None:
        status, _, step = self.status(factory, pki, tee_tcb_svn=svn(module_version=3))
        assert status is None and "no identity for TDX module TDX_03" in step.detail

    def test_module_signer_and_seam_attributes(self, factory: QuoteFactory, pki: TestPki) -> None:
        _, _, step = self.status(factory, pki, mr_signer_seam=b"\x01" * 48)
        assert step.status is StepStatus.FAIL and "MRSIGNERSEAM" in step.detail
        _, _, step = self.status(factory, pki, seam_attributes=1)
        assert step.status is StepStatus.FAIL and "SEAMATTRIBUTES" in step.detail

    def test_stale_td_qe_makes_the_td_out_of_date(self, factory: QuoteFactory, pki: TestPki) -> None:
        status, advisories, _ = self.status(factory, pki, qe_isv_svn=3)
        assert (status, advisories) == ("OutOfDate", ("INTEL-SA-00837",))

    def test_a_td_on_an_updated_module_is_advised_to_relaunch(self, factory: QuoteFactory, pki: TestPki) -> None:
        status, advisories, step = self.status(
            factory, pki, version=5, body_type=3, tee_tcb_svn=svn(3), tee_tcb_svn2=svn(TDX_MODULE_ISV_SVN)
        )
        assert (status, advisories) == ("TDRelaunchAdvised", ("INTEL-SA-01099",))
        assert "relaunch the TD" in step.detail
        # Not for a TD 1.0 report, which has no TEE_TCB_SVN2 to tell that the module was updated.
        status, _, _ = self.status(factory, pki, tee_tcb_svn=svn(3))
        assert status == "OutOfDate"

    def test_relaunch_with_configuration_needed(self, factory: QuoteFactory, pki: TestPki) -> None:
        levels = [tdx_level(status="ConfigurationNeeded", advisories=("INTEL-SA-00615",))]
        status, _, _ = self.status(
            factory, pki, make_tdx_collateral(pki, tcb_levels=levels), version=5, body_type=3,
            tee_tcb_svn=svn(3), tee_tcb_svn2=svn(TDX_MODULE_ISV_SVN),
        )
        assert status == "TDRelaunchAdvisedConfigurationNeeded"

    def test_revoked_level(self, factory: QuoteFactory, pki: TestPki) -> None:
        status, _, step = self.status(factory, pki, make_tdx_collateral(pki, tcb_levels=[tdx_level(status="Revoked")]))
        assert status == "Revoked" and step.status is StepStatus.FAIL and step.waived_by is None

    def test_sgx_tcb_info_or_sgx_qe_identity_for_a_td(self, factory: QuoteFactory, pki: TestPki) -> None:
        _, _, step = self.status(factory, pki, make_tdx_collateral(pki, tcb_info_id="SGX"))
        assert "expected TDX TCB info v3" in step.detail
        report = verify(factory.tdx_quote(REPORT_DATA), pki, make_tdx_collateral(pki, qe_identity_id="QE"))
        assert "expected 'TD_QE'" in report.step(R.STEP_QE_IDENTITY).detail

    def test_levels_are_judged_in_svn_order_whatever_the_list_order(self, factory: QuoteFactory, pki: TestPki) -> None:
        levels = make_tdx_collateral(pki)
        reordered = json.loads(levels["tcb_info"])["tcbLevels"][::-1]
        status, _, _ = self.status(factory, pki, make_tdx_collateral(pki, tcb_levels=reordered))
        assert status == "UpToDate"

    def test_malformed_levels_fail_the_step(self, factory: QuoteFactory, pki: TestPki) -> None:
        bad = tdx_level()
        bad["tcb"]["tdxtcbcomponents"] = bad["tcb"]["tdxtcbcomponents"][:15]
        _, _, step = self.status(factory, pki, make_tdx_collateral(pki, tcb_levels=[bad]))
        assert "16 tdxtcbcomponents" in step.detail
        identities = default_module_identities()
        identities[0]["tcbLevels"][0]["tcbStatus"] = "ConfigurationNeeded"  # not a module status
        _, _, step = self.status(factory, pki, make_tdx_collateral(pki, module_identities=identities))
        assert "unknown status 'ConfigurationNeeded'" in step.detail

    def test_out_of_date_only_under_the_insecure_flag(self, factory: QuoteFactory, pki: TestPki) -> None:
        policy = {"tdx": {**POLICY["tdx"], "insecure_accept_out_of_date_tcb": True}}
        with pytest.warns(UserWarning, match="insecure_accept_out_of_date_tcb"):
            report = verify(factory.tdx_quote(REPORT_DATA, tee_tcb_svn=svn(3)), pki, policy=policy)
        assert report.ok
        assert report.verdict().startswith("ACCEPTED WITH INSECURE OVERRIDES (insecure_accept_out_of_date_tcb)")


class TestAttributesAndMeasurements:
    def test_a_debug_td_is_refused_unless_the_policy_says_insecure(self, factory: QuoteFactory, pki: TestPki) -> None:
        raw = factory.tdx_quote(REPORT_DATA, td_attributes=TD_ATTR_DEBUG | TD_ATTR_SEPT_VE_DISABLE)
        report = verify(raw, pki)
        assert failing(report) == {R.STEP_TD_ATTRIBUTES}
        assert "DEBUG" in report.step(R.STEP_TD_ATTRIBUTES).detail
        with pytest.warns(UserWarning, match="insecure_allow_debug"):
            relaxed = verify(raw, pki, policy={"tdx": {**POLICY["tdx"], "insecure_allow_debug": True}})
        assert relaxed.ok and relaxed.step(R.STEP_TD_ATTRIBUTES).waived_by == "insecure_allow_debug"

    def test_sept_ve_disable_is_a_policy_choice(self, factory: QuoteFactory, pki: TestPki) -> None:
        raw = factory.tdx_quote(REPORT_DATA, td_attributes=0)
        assert "SEPT_VE_DISABLE is clear" in verify(raw, pki).step(R.STEP_TD_ATTRIBUTES).detail
        assert verify(raw, pki, policy={"tdx": {**POLICY["tdx"], "require_sept_ve_disable": False}}).ok

    @pytest.mark.parametrize(
        ("attributes", "message"),
        [
            (TD_ATTR_SEPT_VE_DISABLE | 1 << 40, "reserved bits 0x10000000000"),
            (TD_ATTR_SEPT_VE_DISABLE | 1 << 29, "MIGRATABLE"),
            (TD_ATTR_SEPT_VE_DISABLE | 1 << 17, "SERVTD_EXT"),
        ],
    )
    def test_attributes_no_policy_may_waive_silently(
        self, factory: QuoteFactory, pki: TestPki, attributes: int, message: str
    ) -> None:
        with pytest.warns(UserWarning, match="insecure_allow_debug"):
            report = verify(factory.tdx_quote(REPORT_DATA, td_attributes=attributes), pki,
                            policy={"tdx": {**POLICY["tdx"], "insecure_allow_debug": True}})
        step = report.step(R.STEP_TD_ATTRIBUTES)
        assert step.status is StepStatus.FAIL and step.waived_by is None and message in step.detail

    def test_a_service_td_must_be_listed(self, factory: QuoteFactory, pki: TestPki) -> None:
        service = hashlib.sha384(b"migration TD").digest()
        raw = factory.tdx_quote(REPORT_DATA, version=5, body_type=3, mr_service_td=service)
        assert "MRSERVICETD" in verify(raw, pki).step(R.STEP_TD_ATTRIBUTES).detail
        assert verify(raw, pki, policy={"tdx": {**POLICY["tdx"], "mrservicetd": service.hex()}}).ok

    @pytest.mark.parametrize(
        ("policy", "message"),
        [
            ({"mrtd": "11" * 48}, "MRTD " + MRTD.hex() + " is not allowed"),
            ({"rtmr1": "11" * 48}, "RTMR1 " + RTMRS[1].hex() + " is not allowed"),
            ({"mrconfigid": ["11" * 48]}, "MRCONFIGID"),
            ({"mrowner": ["11" * 48]}, "MROWNER"),
            ({"xfam": "ff00000000000000"}, "XFAM"),
            ({"min_tee_tcb_svn": "06" + "00" * 15}, "TEE_TCB_SVN 05010200000000000000000000000000 is below"),
        ],
    )
    def test_each_pinned_value_is_compared(
        self, factory: QuoteFactory, pki: TestPki, policy: dict, message: str
    ) -> None:
        report = verify(factory.tdx_quote(REPORT_DATA), pki, policy={"tdx": {**POLICY["tdx"], **policy}})
        assert failing(report) == {R.STEP_TD_MEASUREMENTS}
        assert message in report.step(R.STEP_TD_MEASUREMENTS).detail

    def test_matching_pins_pass_and_say_what_was_compared(self, factory: QuoteFactory, pki: TestPki) -> None:
        policy = {"tdx": {**POLICY["tdx"], "rtmr0": RTMRS[0].hex(), "xfam": (0x61AE7).to_bytes(8, "little").hex(),
                          "min_tee_tcb_svn": TEE_TCB_SVN.hex()}}
        report = verify(factory.tdx_quote(REPORT_DATA), pki, policy=policy)
        assert report.ok, report.render()
        assert report.step(R.STEP_TD_MEASUREMENTS).detail == "MRTD, XFAM, TEE_TCB_SVN, RTMR0, RTMR1, RTMR2 allowed"


class TestRealQuotes:
    """Intel-signed TDX quotes and collateral from dcap-qvl 0.7.0 (tests/data/attestation/README.md)."""

    CASES = {
        "dcap_qvl_tdx_quote": (datetime(2025, 6, 20, tzinfo=timezone.utc), "UpToDate", "TD 1.0"),
        "dcap_qvl_tdx_quote_td15ex": (datetime(2026, 10, 10, tzinfo=timezone.utc), "UpToDate", "TD 1.5 with extensions"),
        "dcap_qvl_tdx_quote_outdated": (datetime(2026, 2, 20, tzinfo=timezone.utc), None, "TD 1.5"),
    }

    def verify(self, name: str, now: datetime | None = None, policy: Policy | None = None) -> VerificationReport:
        when, _, _ = self.CASES[name]
        return verify_evidence(
            (DATA / f"{name}.bin").read_bytes(),
            policy,
            collateral=Collateral.from_json((DATA / f"{name}_collateral.json").read_text()),
            now=now or when,
        )

    @pytest.mark.parametrize("name", list(CASES))
    def test_signature_chain_to_intels_root_and_tcb_status(self, name: str) -> None:
        _, status, body = self.CASES[name]
        report = self.verify(name)
        for step in (R.STEP_CHAIN, R.STEP_REVOCATION, R.STEP_QE_SIGNATURE, R.STEP_QE_BINDING,
                     R.STEP_QUOTE_SIGNATURE, R.STEP_QE_IDENTITY, R.STEP_TD_ATTRIBUTES):
            assert report.step(step).status is StepStatus.PASS, report.render()
        assert body in report.step(R.STEP_PARSED).detail
        assert report.tcb_status == status
        if status is None:
            assert "CPUSVN" not in report.step(R.STEP_TCB).detail
            assert "SGX TCB is below every level" in report.step(R.STEP_TCB).detail

    def test_pinning_the_real_measurements_verifies_it(self) -> None:
        quote = parse_quote((DATA / "dcap_qvl_tdx_quote.bin").read_bytes())
        assert isinstance(quote, TdxQuote)
        policy = Policy(tdx=TdxPolicy(mrtd=frozenset({quote.body.mr_td}),
                                      rtmrs=(None, None, None, None),
                                      mrconfigid=frozenset({quote.body.mr_config_id})))
        report = self.verify("dcap_qvl_tdx_quote", policy=policy)
        assert report.ok and report.verdict() == "VERIFIED", report.render()

    def test_expired_collateral(self) -> None:
        report = self.verify("dcap_qvl_tdx_quote", now=datetime(2025, 8, 1, tzinfo=timezone.utc))
        assert R.STEP_REVOCATION in failing(report) and "expired" in report.step(R.STEP_QE_IDENTITY).detail

    def test_the_same_platform_judged_a_year_later_is_out_of_date(self) -> None:
        # The 1.5ex sample's collateral is for the same FMSPC, 16 months on: Intel has since
        # published four advisories and a newer TDX module, so the 2025 TD is out of date.
        report = verify_evidence(
            (DATA / "dcap_qvl_tdx_quote.bin").read_bytes(), None,
            collateral=Collateral.from_json((DATA / "dcap_qvl_tdx_quote_td15ex_collateral.json").read_text()),
            now=datetime(2026, 10, 10, tzinfo=timezone.utc),
        )
        assert report.step(R.STEP_QE_IDENTITY).status is StepStatus.PASS
        assert report.tcb_status == "OutOfDate"
        assert report.advisory_ids == ("INTEL-SA-01192", "INTEL-SA-01245", "INTEL-SA-01312", "INTEL-SA-01313")
        assert "TDX module TDX_01 ISVSVN 6: OutOfDate" in report.step(R.STEP_TCB).detail

    @pytest.mark.parametrize("name", ["dcap_qvl_tdx_quote.hex", "dcap_qvl_quote_from_tappd.hex"])
    def test_hex_quotes_without_collateral(self, name: str) -> None:
        from avalon_worker._cli.verify import read_evidence

        raw = read_evidence(str(DATA / name))
        report = verify_evidence(raw, None, now=datetime(2025, 1, 1, tzinfo=timezone.utc))
        assert report.tee == "tdx"
        for step in (R.STEP_CHAIN, R.STEP_QE_SIGNATURE, R.STEP_QE_BINDING, R.STEP_QUOTE_SIGNATURE):
            assert report.step(step).status is StepStatus.PASS, report.render()
        assert report.step(R.STEP_TCB).status is StepStatus.NOT_CHECKED


def test_collateral_signed_by_another_key_is_refused(factory: QuoteFactory, pki: TestPki) -> None:
    collateral = make_tdx_collateral(pki)
    collateral["tcb_info"] = collateral["tcb_info"].replace('"UpToDate"', '"Revoked"', 1)
    report = verify(factory.tdx_quote(REPORT_DATA), pki, collateral)
    assert "TCB info signature is invalid" in report.step(R.STEP_TCB).detail


def test_a_td_signed_under_another_root_fails_the_chain(factory: QuoteFactory, pki: TestPki) -> None:
    other = TestPki.create(now=pki.now)
    report = verify_evidence(factory.tdx_quote(REPORT_DATA), None, root_ca=other.root, now=pki.now)
    assert report.step(R.STEP_CHAIN).status is StepStatus.FAIL
    assert report.step(R.STEP_QUOTE_SIGNATURE).status is StepStatus.PASS

"""Cross-check against an independent implementation: Phala's dcap-qvl (Rust, test-only).

The same quotes — synthetic SGX and TDX ones from the test PKI and Intel's real ones — go
through both parsers and both verifiers; they must agree on every field and on every verdict:
TCB status and advisory IDs, or refusal.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import dcap_qvl
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from hypothesis import example, given, settings
from hypothesis import strategies as st

from avalon_worker.attestation import (
    AttestationPolicy,
    Collateral,
    CollateralError,
    DcapQuote,
    InsecureAnyEnclave,
    InsecurePolicyWarning,
    QuoteParseError,
    TdxQuote,
    VerificationReport,
    parse_quote,
    verify_evidence,
)
from avalon_worker.attestation.verifier import report as R
from avalon_worker.attestation.verifier._dcap import verify_dcap_quote
from avalon_worker.attestation.verifier._pck import parse_pck_extension
from avalon_worker.attestation.verifier._roots import intel_sgx_root_ca
from avalon_worker.attestation.verifier.verify import verify_quote_bytes

from attestation_fixtures import (
    FLAGS_DEBUG,
    OFF_ISV_SIGNATURE,
    OFF_QE_SIGNATURE,
    PCE_SVN,
    TCB_COMPONENTS,
    TD_ATTR_DEBUG,
    TD_ATTR_SEPT_VE_DISABLE,
    TDX_MODULE_ISV_SVN,
    QuoteFactory,
    TestPki,
    default_tcb_levels,
    flip,
    make_collateral,
    make_tdx_collateral,
    tcb_level,
    tdx_level,
)

DATA = Path(__file__).parent / "data" / "attestation"
REAL_QUOTE = (DATA / "dcap_qvl_sgx_quote.bin").read_bytes()
REAL_COLLATERAL = (DATA / "dcap_qvl_sgx_quote_collateral.json").read_text()
REAL_NOW = datetime(2025, 6, 20, tzinfo=timezone.utc)


def quotes(factory: QuoteFactory) -> dict[str, bytes]:
    return {
        "v3": factory.quote(bytes(range(64))),
        "v4": factory.quote(bytes(range(64, 128)), version=4, isv_svn=11),
        "v5": factory.quote(bytes(64), version=5, flags=FLAGS_DEBUG),
        "real": REAL_QUOTE,
    }


@pytest.mark.parametrize("name", ["v3", "v4", "v5", "real"])
def test_parsers_agree(factory: QuoteFactory, name: str) -> None:
    raw = quotes(factory)[name]
    ours = parse_quote(raw)
    theirs = dcap_qvl.parse_quote(raw)
    assert isinstance(ours, DcapQuote)
    assert theirs.is_sgx()
    assert (ours.header.version, ours.header.att_key_type, ours.header.tee_type) == (
        theirs.header.version,
        theirs.header.attestation_key_type,
        theirs.header.tee_type,
    )
    assert (ours.header.qe_svn, ours.header.pce_svn) == (theirs.header.qe_svn, theirs.header.pce_svn)
    assert ours.header.qe_vendor_id == bytes(theirs.header.qe_vendor_id)
    assert ours.header.user_data == bytes(theirs.header.user_data)
    assert ours.body.mrenclave == bytes(theirs.report.mr_enclave)
    assert ours.body.mrsigner == bytes(theirs.report.mr_signer)
    assert ours.body.report_data == bytes(theirs.report.report_data)
    assert ours.body.attributes == bytes(theirs.report.attributes)
    assert ours.body.cpu_svn == bytes(theirs.report.cpu_svn)
    chain = theirs.cert_chain_pem_bytes()
    assert chain is not None
    ours_ders = [
        x509.load_pem_x509_certificate(p).public_bytes(serialization.Encoding.DER)
        for p in ours.signature_data.certification_data.pem_certificates()
    ]
    theirs_ders = [
        c.public_bytes(serialization.Encoding.DER)
        for c in x509.load_pem_x509_certificates(bytes(chain).rstrip(b"\x00"))
    ]
    assert ours_ders == theirs_ders


@pytest.mark.parametrize("name", ["v3", "real"])
def test_pck_extensions_agree(factory: QuoteFactory, name: str) -> None:
    raw = quotes(factory)[name]
    quote = parse_quote(raw)
    assert isinstance(quote, DcapQuote)
    leaf = x509.load_pem_x509_certificate(quote.signature_data.certification_data.pem_certificates()[0])
    ours = parse_pck_extension(leaf)
    theirs = dcap_qvl.parse_quote(raw).pck_extension()
    assert theirs is not None
    assert ours.fmspc == bytes(theirs.fmspc)
    assert ours.pce_id == bytes(theirs.pce_id)
    assert ours.pce_svn == theirs.pce_svn
    assert ours.cpu_svn == bytes(theirs.cpu_svn)
    assert ours.ppid == bytes(theirs.ppid)
    assert ours.sgx_type == theirs.sgx_type


def test_both_reject_truncated_quotes(factory: QuoteFactory) -> None:
    raw = quotes(factory)["v3"]
    for cut in (10, 47, 48, 431, 436, 600, len(raw) - 1):
        with pytest.raises(ValueError):
            dcap_qvl.parse_quote(raw[:cut])
        with pytest.raises(QuoteParseError):
            parse_quote(raw[:cut])


def theirs_verdict(raw: bytes, collateral: dict, root: x509.Certificate, now: datetime) -> str:
    """dcap-qvl's TCB status, or "refused"."""
    col = dcap_qvl.QuoteCollateralV3.from_json(json.dumps(collateral))
    try:
        report = dcap_qvl.verify_with_root_ca(
            raw, col, root.public_bytes(serialization.Encoding.DER), int(now.timestamp())
        )
    except ValueError:
        return "refused"
    return str(report.status)


def ours_verdict(raw: bytes, collateral: dict, root: x509.Certificate, now: datetime) -> str:
    quote = parse_quote(raw)
    assert isinstance(quote, DcapQuote)
    result = verify_dcap_quote(quote, root_ca=root, collateral=Collateral.from_dict(collateral), now=now)
    if (
        not all(step.ok for step in result.steps)
        or result.tcb.status in (None, "Revoked")
        or quote.body.debug
    ):
        return "refused"
    return str(result.tcb.status)


def scenarios(pki: TestPki, factory: QuoteFactory) -> dict[str, tuple[bytes, dict, str]]:
    good = factory.quote(bytes(64))
    higher = tuple(c + 1 for c in TCB_COMPONENTS)
    config_levels = [
        tcb_level(higher, PCE_SVN, "UpToDate"),
        tcb_level(TCB_COMPONENTS, PCE_SVN, "ConfigurationAndSWHardeningNeeded", ("INTEL-SA-00289",)),
    ]
    edited = make_collateral(pki)
    edited["tcb_info"] = edited["tcb_info"].replace("OutOfDate", "UpToDate")
    return {
        "up to date": (good, make_collateral(pki), "UpToDate"),
        "sw hardening": (good, make_collateral(pki, tcb_levels=default_tcb_levels()), "SWHardeningNeeded"),
        "configuration": (
            good,
            make_collateral(pki, tcb_levels=config_levels),
            "ConfigurationAndSWHardeningNeeded",
        ),
        "stale QE": (factory.quote(bytes(64), qe_isv_svn=6), make_collateral(pki), "OutOfDate"),
        "stale QE + configuration": (
            factory.quote(bytes(64), qe_isv_svn=6),
            make_collateral(pki, tcb_levels=config_levels),
            "OutOfDateConfigurationNeeded",
        ),
        "revoked PCK": (good, make_collateral(pki, pck_revoked=(pki.pck.serial_number,)), "refused"),
        "revoked CA": (good, make_collateral(pki, root_revoked=(pki.ca.serial_number,)), "refused"),
        "bad quote signature": (flip(good, OFF_ISV_SIGNATURE + 3), make_collateral(pki), "refused"),
        "bad QE signature": (flip(good, OFF_QE_SIGNATURE + 3), make_collateral(pki), "refused"),
        "edited TCB info": (good, edited, "refused"),
        "expired collateral": (
            good,
            make_collateral(pki, issue=pki.now - timedelta(days=40), next_update=pki.now - timedelta(days=1)),
            "refused",
        ),
        "debug enclave": (factory.quote(bytes(64), flags=FLAGS_DEBUG), make_collateral(pki), "refused"),
    }


@pytest.mark.parametrize(
    "scenario",
    [
        "up to date",
        "sw hardening",
        "configuration",
        "stale QE",
        "stale QE + configuration",
        "revoked PCK",
        "revoked CA",
        "bad quote signature",
        "bad QE signature",
        "edited TCB info",
        "expired collateral",
        "debug enclave",
    ],
)
def test_verifiers_agree_on_synthetic_quotes(pki: TestPki, factory: QuoteFactory, scenario: str) -> None:
    raw, collateral, expected = scenarios(pki, factory)[scenario]
    assert theirs_verdict(raw, collateral, pki.root, pki.now) == expected
    assert ours_verdict(raw, collateral, pki.root, pki.now) == expected


def test_verifiers_agree_on_the_real_intel_quote() -> None:
    collateral = json.loads(REAL_COLLATERAL)
    root = intel_sgx_root_ca()
    assert theirs_verdict(REAL_QUOTE, collateral, root, REAL_NOW) == "ConfigurationAndSWHardeningNeeded"
    assert ours_verdict(REAL_QUOTE, collateral, root, REAL_NOW) == "ConfigurationAndSWHardeningNeeded"
    their_advisories = dcap_qvl.verify(
        REAL_QUOTE, dcap_qvl.QuoteCollateralV3.from_json(REAL_COLLATERAL), int(REAL_NOW.timestamp())
    ).advisory_ids
    policy = AttestationPolicy(enclave=InsecureAnyEnclave())
    with pytest.warns(InsecurePolicyWarning):
        ours = verify_quote_bytes(
            REAL_QUOTE, policy, collateral=Collateral.from_dict(collateral), now=REAL_NOW
        )
    assert list(ours.advisory_ids) == list(their_advisories) == ["INTEL-SA-00289", "INTEL-SA-00615"]


def test_both_refuse_the_real_quote_once_its_collateral_expired() -> None:
    collateral = json.loads(REAL_COLLATERAL)
    later = datetime(2025, 8, 1, tzinfo=timezone.utc)
    assert theirs_verdict(REAL_QUOTE, collateral, intel_sgx_root_ca(), later) == "refused"
    assert ours_verdict(REAL_QUOTE, collateral, intel_sgx_root_ca(), later) == "refused"


# -- TDX ----------------------------------------------------------------------------------------


def svn(module_isv_svn: int = TDX_MODULE_ISV_SVN, module_version: int = 1, third: int = 2) -> bytes:
    return bytes([module_isv_svn, module_version, third]) + bytes(13)


REAL_TDX = {
    # quote, collateral, time, what dcap-qvl 0.7.0 says
    "v4 TD 1.0": ("dcap_qvl_tdx_quote.bin", "dcap_qvl_tdx_quote_collateral.json", datetime(2025, 6, 20, tzinfo=timezone.utc)),
    "v5 TD 1.5ex": ("dcap_qvl_tdx_quote_td15ex.bin", "dcap_qvl_tdx_quote_td15ex_collateral.json",
                    datetime(2026, 10, 10, tzinfo=timezone.utc)),
    "v5 TD 1.5, unsupported TCB": ("dcap_qvl_tdx_quote_outdated.bin", "dcap_qvl_tdx_quote_outdated_collateral.json",
                                   datetime(2026, 2, 20, tzinfo=timezone.utc)),
    "v4 TD 1.0, collateral of 2026": ("dcap_qvl_tdx_quote.bin", "dcap_qvl_tdx_quote_td15ex_collateral.json",
                                      datetime(2026, 10, 10, tzinfo=timezone.utc)),
}


def their_tdx_verdict(raw: bytes, collateral: dict, root: x509.Certificate, now: datetime) -> tuple[str, list[str]]:
    """dcap-qvl's TCB status and advisories, or ("refused", [why])."""
    # dcap-qvl prefers a PCK chain carried in the collateral to the quote's own; ours always uses
    # the quote's. The 1.5ex sample's collateral carries one, for its own platform.
    collateral = {k: v for k, v in collateral.items() if k != "pck_certificate_chain"}
    col = dcap_qvl.QuoteCollateralV3.from_json(json.dumps(collateral))
    try:
        report = dcap_qvl.verify_with_root_ca(
            raw, col, root.public_bytes(serialization.Encoding.DER), int(now.timestamp())
        )
    except ValueError as exc:
        return "refused", [str(exc)]
    return str(report.status), list(report.advisory_ids)


def our_tdx_verdict(raw: bytes, collateral: dict, root: x509.Certificate, now: datetime) -> tuple[str, list[str]]:
    """Ours, judged like dcap-qvl's default: every step but the (policy's) measurements."""
    report = verify_evidence(raw, None, collateral=Collateral.from_dict(collateral), root_ca=root, now=now)
    failed = [s for s in report.failures if s.name != R.STEP_TD_MEASUREMENTS and s.name != R.STEP_TCB]
    if failed or report.tcb_status in (None, "Revoked"):
        return "refused", [s.render() for s in failed] or [report.step(R.STEP_TCB).render()]
    return str(report.tcb_status), list(report.advisory_ids)


@pytest.mark.parametrize("name", list(REAL_TDX))
def test_verifiers_agree_on_real_tdx_quotes(name: str) -> None:
    quote_file, collateral_file, now = REAL_TDX[name]
    raw = (DATA / quote_file).read_bytes()
    collateral = json.loads((DATA / collateral_file).read_text())
    theirs = their_tdx_verdict(raw, collateral, intel_sgx_root_ca(), now)
    ours = our_tdx_verdict(raw, collateral, intel_sgx_root_ca(), now)
    assert ours[0] == theirs[0], (ours, theirs)
    if theirs[0] != "refused":
        assert ours[1] == theirs[1]
    expected = {"v4 TD 1.0": "UpToDate", "v5 TD 1.5ex": "UpToDate", "v5 TD 1.5, unsupported TCB": "refused",
                "v4 TD 1.0, collateral of 2026": "OutOfDate"}[name]
    assert ours[0] == expected


@pytest.mark.parametrize("name", ["dcap_qvl_tdx_quote.bin", "dcap_qvl_tdx_quote_td15ex.bin",
                                  "dcap_qvl_tdx_quote_outdated.bin", "v4", "v5 TD 1.0", "v5 TD 1.5", "v5 TD 1.5ex"])
def test_tdx_parsers_agree(factory: QuoteFactory, name: str) -> None:
    synthetic = {"v4": (4, 2), "v5 TD 1.0": (5, 2), "v5 TD 1.5": (5, 3), "v5 TD 1.5ex": (5, 4)}
    if name in synthetic:
        version, body_type = synthetic[name]
        raw = factory.tdx_quote(bytes(range(64)), version=version, body_type=body_type, rtmr3=b"\x03" * 48,
                                tee_tcb_svn2=svn(9) if body_type > 2 else None, mrowner=b"\x0a" * 48)
    else:
        raw = (DATA / name).read_bytes()
    ours = parse_quote(raw)
    theirs = dcap_qvl.parse_quote(raw)
    assert isinstance(ours, TdxQuote) and theirs.is_tdx()
    assert (ours.header.version, ours.header.tee_type) == (theirs.header.version, theirs.header.tee_type)
    body, report = ours.body, theirs.report
    pairs = [
        (body.tee_tcb_svn, report.tee_tcb_svn), (body.mr_seam, report.mr_seam),
        (body.mr_signer_seam, report.mr_signer_seam), (body.seam_attributes, report.seam_attributes),
        (body.td_attributes, report.td_attributes), (body.xfam, report.xfam), (body.mr_td, report.mr_td),
        (body.mr_config_id, report.mr_config_id), (body.mr_owner, report.mr_owner),
        (body.mr_owner_config, report.mr_owner_config), (body.rtmrs[0], report.rt_mr0),
        (body.rtmrs[1], report.rt_mr1), (body.rtmrs[2], report.rt_mr2), (body.rtmrs[3], report.rt_mr3),
        (body.report_data, report.report_data),
    ]
    if body.tee_tcb_svn2 is not None:
        pairs += [(body.tee_tcb_svn2, report.tee_tcb_svn2), (body.mr_service_td, report.mr_service_td)]
    if body.extension is not None:
        ext = body.extension
        pairs += [(ext.td_id, report.td_id), (ext.dev_info, report.dev_info),
                  (ext.init_tee_tcb_svn, report.init_tee_tcb_svn), (ext.init_tee_fmspc, report.init_tee_fmspc),
                  (ext.cur_service_td_hash, report.cur_service_td_hash)]
        assert ext.vm_id == report.vm_id if hasattr(report, "vm_id") else ext.vm_id == report.vmid
    for mine, theirs_value in pairs:
        assert mine == bytes(theirs_value)
    assert ours.signature_data.certification_data.pem_certificates()[0].rstrip() in bytes(theirs.cert_chain_pem_bytes())


def tdx_scenarios(pki: TestPki, factory: QuoteFactory) -> dict[str, tuple[bytes, dict]]:
    collateral = make_tdx_collateral(pki)
    config_levels = [tdx_level(status="ConfigurationNeeded", advisories=("INTEL-SA-00615",))]
    edited = make_tdx_collateral(pki)
    edited["tcb_info"] = edited["tcb_info"].replace('"isvsvn":5', '"isvsvn":4')
    good = factory.tdx_quote(bytes(64))
    return {
        "up to date": (good, collateral),
        "TEE TCB SVN below the newest level": (factory.tdx_quote(tee_tcb_svn=svn(third=1)), collateral),
        "module out of date": (factory.tdx_quote(tee_tcb_svn=svn(3)), collateral),
        "module below every level": (factory.tdx_quote(tee_tcb_svn=svn(1)), collateral),
        "module version 0": (factory.tdx_quote(tee_tcb_svn=svn(5, module_version=0)), collateral),
        "module version 0, below": (factory.tdx_quote(tee_tcb_svn=svn(4, module_version=0)), collateral),
        "unknown module version": (factory.tdx_quote(tee_tcb_svn=svn(module_version=3)), collateral),
        "module signer": (factory.tdx_quote(mr_signer_seam=b"\x01" * 48), collateral),
        "SEAM attributes": (factory.tdx_quote(seam_attributes=1 << 8), collateral),
        "stale TD QE": (factory.tdx_quote(qe_isv_svn=3), collateral),
        "configuration needed": (good, make_tdx_collateral(pki, tcb_levels=config_levels)),
        "stale TD QE + configuration": (factory.tdx_quote(qe_isv_svn=3), make_tdx_collateral(pki, tcb_levels=config_levels)),
        "TD 1.5 relaunch advised": (factory.tdx_quote(version=5, body_type=3, tee_tcb_svn=svn(3), tee_tcb_svn2=svn(5)), collateral),
        "TD 1.5 relaunch + configuration": (
            factory.tdx_quote(version=5, body_type=3, tee_tcb_svn=svn(3), tee_tcb_svn2=svn(5)),
            make_tdx_collateral(pki, tcb_levels=config_levels),
        ),
        "TD 1.5ex up to date": (factory.tdx_quote(version=5, body_type=4), collateral),
        "revoked level": (good, make_tdx_collateral(pki, tcb_levels=[tdx_level(status="Revoked")])),
        "revoked PCK": (good, make_tdx_collateral(pki, pck_revoked=(pki.pck.serial_number,))),
        "SGX TCB info": (good, make_tdx_collateral(pki, tcb_info_id="SGX")),
        "SGX QE identity": (good, make_tdx_collateral(pki, qe_identity_id="QE")),
        "edited TCB info": (good, edited),
        "bad quote signature": (flip(good, 48 + 584 + 4 + 3), collateral),
        "debug TD": (factory.tdx_quote(td_attributes=TD_ATTR_DEBUG | TD_ATTR_SEPT_VE_DISABLE), collateral),
        "SEPT_VE_DISABLE clear": (factory.tdx_quote(td_attributes=0), collateral),
        "migratable TD": (factory.tdx_quote(td_attributes=TD_ATTR_SEPT_VE_DISABLE | 1 << 29), collateral),
        "service TD": (factory.tdx_quote(version=5, body_type=3, mr_service_td=b"\x05" * 48), collateral),
        "expired collateral": (good, make_tdx_collateral(pki, issue=pki.now - timedelta(days=40),
                                                         next_update=pki.now - timedelta(days=1))),
    }


TDX_EXPECTED = {
    "up to date": ("UpToDate", []),
    "TEE TCB SVN below the newest level": ("OutOfDate", ["INTEL-SA-01036"]),
    "module out of date": ("OutOfDate", ["INTEL-SA-01099"]),
    "module below every level": ("refused", []),
    "module version 0": ("UpToDate", []),
    "module version 0, below": ("OutOfDate", ["INTEL-SA-00837", "INTEL-SA-01036"]),
    "unknown module version": ("refused", []),
    "module signer": ("refused", []),
    "SEAM attributes": ("refused", []),
    "stale TD QE": ("OutOfDate", ["INTEL-SA-00837"]),
    "configuration needed": ("ConfigurationNeeded", ["INTEL-SA-00615"]),
    "stale TD QE + configuration": ("OutOfDateConfigurationNeeded", ["INTEL-SA-00615", "INTEL-SA-00837"]),
    "TD 1.5 relaunch advised": ("TDRelaunchAdvised", ["INTEL-SA-01099"]),
    "TD 1.5 relaunch + configuration": ("TDRelaunchAdvisedConfigurationNeeded", ["INTEL-SA-00615", "INTEL-SA-01099"]),
    "TD 1.5ex up to date": ("UpToDate", []),
    "revoked level": ("refused", []),
    "revoked PCK": ("refused", []),
    "SGX TCB info": ("refused", []),
    "SGX QE identity": ("refused", []),
    "edited TCB info": ("refused", []),
    "bad quote signature": ("refused", []),
    "debug TD": ("refused", []),
    "SEPT_VE_DISABLE clear": ("refused", []),
    "migratable TD": ("refused", []),
    "service TD": ("refused", []),
    "expired collateral": ("refused", []),
}


@pytest.mark.parametrize("scenario", list(TDX_EXPECTED))
def test_verifiers_agree_on_synthetic_tdx_quotes(pki: TestPki, factory: QuoteFactory, scenario: str) -> None:
    raw, collateral = tdx_scenarios(pki, factory)[scenario]
    expected_status, expected_advisories = TDX_EXPECTED[scenario]
    theirs = their_tdx_verdict(raw, collateral, pki.root, pki.now)
    ours = our_tdx_verdict(raw, collateral, pki.root, pki.now)
    assert theirs[0] == expected_status, theirs
    assert ours[0] == expected_status, ours
    if expected_status != "refused":
        assert ours[1] == theirs[1] == expected_advisories


# A real quote is 5 KB and its collateral 16 KB: flips are sampled here; benchmarks/verify.py
# --flips runs every bit of the signed region and reports the counts.
REAL_TDX_QUOTE = (DATA / "dcap_qvl_tdx_quote.bin").read_bytes()
REAL_TDX_COLLATERAL = json.loads((DATA / "dcap_qvl_tdx_quote_collateral.json").read_text())
REAL_TDX_NOW = datetime(2025, 6, 20, tzinfo=timezone.utc)


def _accepted(raw: bytes, collateral: dict) -> VerificationReport | None:
    """Our report if the evidence passed every step but the measurements, else None."""
    try:
        loaded = Collateral.from_dict(collateral)
    except CollateralError:
        return None  # refused before verifying: a malformed collateral file is a usage error
    report = verify_evidence(raw, None, collateral=loaded, now=REAL_TDX_NOW)
    if any(s.name != R.STEP_TD_MEASUREMENTS for s in report.failures):
        return None
    return report


@settings(max_examples=150, deadline=None)
# "-----END CERTIFICATE-----" of the root made "-----END BERTIFICATE-----": the damaged block was
# skipped and the chain read without it (ending at the pinned root) while dcap-qvl refuses the quote.
@example(flips=[(4918, 0)])
@given(st.lists(st.tuples(st.integers(0, len(REAL_TDX_QUOTE) - 1), st.integers(0, 7)), min_size=1, max_size=4))
def test_bit_flips_in_the_real_tdx_quote_never_raise_nor_pass_altered(flips: list[tuple[int, int]]) -> None:
    raw = bytearray(REAL_TDX_QUOTE)
    for offset, bit in flips:
        raw[offset] ^= 1 << bit
    report = _accepted(bytes(raw), REAL_TDX_COLLATERAL)
    if report is not None:
        ours, original = parse_quote(bytes(raw)), parse_quote(REAL_TDX_QUOTE)
        assert isinstance(ours, TdxQuote) and isinstance(original, TdxQuote)
        assert ours.signed_data == original.signed_data
        assert ours.signature_data.qe_report == original.signature_data.qe_report
        assert ours.signature_data.attestation_key == original.signature_data.attestation_key
        assert ours.signature_data.qe_auth_data == original.signature_data.qe_auth_data
        assert their_tdx_verdict(bytes(raw), REAL_TDX_COLLATERAL, intel_sgx_root_ca(), REAL_TDX_NOW)[0] == "UpToDate"


@settings(max_examples=150, deadline=None)
# A flip in the root CA CRL's version field: cryptography raises InvalidVersion, which is no ValueError.
@example(field="root_ca_crl", offset=4690, bit=0)
@given(
    st.sampled_from(["tcb_info", "qe_identity", "tcb_info_signature", "qe_identity_signature", "pck_crl", "root_ca_crl"]),
    st.integers(0, 1 << 20),
    st.integers(0, 7),
)
def test_bit_flips_in_the_real_tdx_collateral_never_raise_nor_pass_altered(field: str, offset: int, bit: int) -> None:
    collateral = dict(REAL_TDX_COLLATERAL)
    value = bytearray(collateral[field].encode("latin-1"))
    value[offset % len(value)] ^= 1 << bit
    collateral[field] = value.decode("latin-1")
    report = _accepted(REAL_TDX_QUOTE, collateral)
    if report is None:
        return
    # Accepted: the flip touched nothing that is signed (e.g. a hex digit's case).
    if field in ("tcb_info", "qe_identity"):
        assert collateral[field] == REAL_TDX_COLLATERAL[field]
    elif field.endswith("_signature"):
        assert bytes.fromhex(collateral[field]) == bytes.fromhex(REAL_TDX_COLLATERAL[field])
    else:
        ours = x509.load_der_x509_crl(bytes.fromhex(collateral[field]))
        original = x509.load_der_x509_crl(bytes.fromhex(REAL_TDX_COLLATERAL[field]))
        assert ours.tbs_certlist_bytes == original.tbs_certlist_bytes
        assert ours.signature == original.signature

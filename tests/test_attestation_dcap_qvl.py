"""Cross-check against an independent implementation: Phala's dcap-qvl (Rust, test-only).

The same quotes — synthetic ones from the test PKI and Intel's real one — go through both
parsers and both verifiers; they must agree on every field and on every verdict.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import dcap_qvl
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from avalon_worker.attestation import (
    AttestationPolicy,
    Collateral,
    DcapQuote,
    InsecureAnyEnclave,
    InsecurePolicyWarning,
    QuoteParseError,
    parse_quote,
)
from avalon_worker.attestation.dcap import verify_dcap_quote
from avalon_worker.attestation.pck import parse_pck_extension
from avalon_worker.attestation.roots import intel_sgx_root_ca
from avalon_worker.attestation.verify import verify_quote_bytes

from attestation_fixtures import (
    FLAGS_DEBUG,
    OFF_ISV_SIGNATURE,
    OFF_QE_SIGNATURE,
    PCE_SVN,
    TCB_COMPONENTS,
    QuoteFactory,
    TestPki,
    default_tcb_levels,
    flip,
    make_collateral,
    tcb_level,
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

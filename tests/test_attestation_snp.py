"""The SEV-SNP verifier on reports from the test AMD PKI: every step, pass and fail."""

from __future__ import annotations

import struct
import uuid
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from avalon_worker.attestation import (
    CollateralError,
    InsecurePolicyWarning,
    PolicyError,
    SnpParseError,
    SnpPolicy,
    StepStatus,
    load_snp_collateral,
    parse_snp_report,
    split_snp_evidence,
    verify_snp_evidence,
)
from avalon_worker.attestation.verifier import snp as S
from avalon_worker.attestation.verifier._snp_certs import parse_cert_table
from avalon_worker.attestation.verifier.report import STEP_REPORT_DATA

import independent_snp
import snp_fixtures as F

REPORT_DATA = bytes(range(64))
POLICY = SnpPolicy(measurements=frozenset({F.MEASUREMENT}))
SIGNATURE_STEPS = set(S.SNP_SIGNATURE_STEPS) - {S.STEP_SNP_REVOCATION}


def der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


def verify(
    raw: bytes,
    *,
    product: str = "Milan",
    policy: SnpPolicy | None = POLICY,
    certificates: Sequence[x509.Certificate] | None = None,
    crls: Sequence[x509.CertificateRevocationList] = (),
    expected: bytes | None = REPORT_DATA,
    trusted: bool = True,
    **kw: Any,
) -> S.SnpVerification:
    pki = F.snp_pki(product)
    certs = pki.vcek_chain() if certificates is None else certificates
    return verify_snp_evidence(
        raw,
        policy=policy,
        expected_report_data=expected,
        certificates=certs,
        crls=crls or (F.make_crl(pki),),
        now=kw.pop("now", F.NOW),
        trusted_arks=[pki.ark] if trusted else None,
    )


def failing(result: S.SnpVerification) -> set[str]:
    return {s.name for s in result.steps if not s.ok}


def status(result: S.SnpVerification, name: str) -> StepStatus:
    return next(s.status for s in result.steps if s.name == name)


def detail(result: S.SnpVerification, name: str) -> str:
    return next(s.detail for s in result.steps if s.name == name)


@pytest.mark.parametrize("product", ["Milan", "Genoa", "Turin"])
@pytest.mark.parametrize("version", [2, 3, 5])
@pytest.mark.parametrize("kind", ["VCEK", "VLEK"])
def test_every_product_version_and_signing_key_verifies(product: str, version: int, kind: str) -> None:
    pki = F.snp_pki(product)
    raw = F.make_snp_report(REPORT_DATA, product=product, version=version, signing_key=kind)
    chain = pki.vcek_chain() if kind == "VCEK" else pki.vlek_chain()
    result = verify(raw, product=product, certificates=chain)
    assert failing(result) == set(), [s.render() for s in result.steps]
    assert result.report_data == REPORT_DATA
    assert result.measurements["measurement"] == F.MEASUREMENT.hex()
    assert result.measurements["version"] == str(version)
    expected_tcb = "fmc=1 bl=3 tee=0 snp=8 ucode=115" if product == "Turin" else "bl=3 tee=0 snp=8 ucode=115"
    assert result.tcb_status == f"reported TCB {expected_tcb}"
    assert f"{kind} → SEV-{'VLEK-' if kind == 'VLEK' else ''}{product} → ARK-{product}" in detail(result, S.STEP_SNP_CHAIN)


def test_the_certificate_table_after_the_report_supplies_the_chain() -> None:
    pki = F.snp_pki("Genoa")
    evidence = F.make_snp_report(REPORT_DATA, product="Genoa") + F.make_cert_table(pki.vcek_chain())
    report, certs = split_snp_evidence(evidence)
    assert len(report) == 1184 and [der(c) for c in certs] == [der(c) for c in pki.vcek_chain()]
    assert failing(verify(evidence, product="Genoa", certificates=())) == set()


def test_a_test_root_is_not_trusted_by_default() -> None:
    result = verify(F.make_snp_report(REPORT_DATA), trusted=False)
    assert status(result, S.STEP_SNP_CHAIN) is StepStatus.FAIL
    assert "not one of AMD's pinned ARKs" in detail(result, S.STEP_SNP_CHAIN)
    assert status(result, S.STEP_SNP_SIGNATURE) is StepStatus.NOT_CHECKED


def test_another_roots_chain_fails() -> None:
    # Genoa's test chain offered for a report verified against Milan's test root.
    genoa = F.snp_pki("Genoa")
    raw = F.make_snp_report(REPORT_DATA, product="Genoa")
    assert S.STEP_SNP_CHAIN in failing(verify(raw, product="Milan", certificates=genoa.vcek_chain()))


def test_no_vcek_at_all_says_where_to_get_one() -> None:
    result = verify(F.make_snp_report(REPORT_DATA), certificates=())
    assert "certificate table" in detail(result, S.STEP_SNP_CHAIN)
    assert not_ok_but_not_raised(result)


def not_ok_but_not_raised(result: S.SnpVerification) -> bool:
    return any(not s.ok for s in result.steps)


def test_a_report_signed_by_another_key_fails_the_signature() -> None:
    raw = F.make_snp_report(REPORT_DATA, key=F.ec_key("intruder"))
    assert failing(verify(raw)) == {S.STEP_SNP_SIGNATURE}


@pytest.mark.parametrize("offset", [F.OFF_MEASUREMENT, F.OFF_REPORT_DATA, F.OFF_HOST_DATA, 0x29F, F.OFF_SIGNATURE])
def test_an_altered_signed_byte_or_signature_fails_the_signature(offset: int) -> None:
    raw = bytearray(F.make_snp_report(REPORT_DATA))
    raw[offset] ^= 0x01
    assert S.STEP_SNP_SIGNATURE in failing(verify(bytes(raw)))


def test_nonzero_bytes_above_the_p384_scalar_fail_the_signature() -> None:
    raw = bytearray(F.make_snp_report(REPORT_DATA))
    raw[F.OFF_SIGNATURE + 71] = 1  # r's 72nd little-endian byte: r would no longer be a P-384 scalar
    assert failing(verify(bytes(raw))) == {S.STEP_SNP_SIGNATURE}


def test_a_vcek_for_another_tcb_fails() -> None:
    raw = F.make_snp_report(REPORT_DATA, tcb={**F.TCB, "snp": 7})
    result = verify(raw)
    assert failing(result) == {S.STEP_SNP_TCB}
    assert "snp 8 ≠ 7" in detail(result, S.STEP_SNP_TCB)


def test_turin_reads_fmc_and_its_own_layout() -> None:
    raw = F.make_snp_report(REPORT_DATA, product="Turin", tcb={**F.TCB, "fmc": 2})
    result = verify(raw, product="Turin")
    assert failing(result) == {S.STEP_SNP_TCB}
    assert "fmc 1 ≠ 2" in detail(result, S.STEP_SNP_TCB)


def test_a_vcek_for_another_chip_fails() -> None:
    raw = F.make_snp_report(REPORT_DATA, chip_id=bytes(64))
    result = verify(raw)
    assert failing(result) == {S.STEP_SNP_CHIP_ID}


def test_mask_chip_key_skips_the_chip_comparison_and_says_so() -> None:
    raw = F.make_snp_report(REPORT_DATA, chip_id=bytes(64), flags=0b10)
    result = verify(raw)
    assert failing(result) == set()
    assert "MASK_CHIP_KEY" in detail(result, S.STEP_SNP_CHIP_ID)


def test_the_report_must_name_the_key_that_signed_it() -> None:
    pki = F.snp_pki("Milan")
    # Signed by the VLEK but FLAGS name the VCEK: the chain offered is the VLEK's.
    raw = F.make_snp_report(REPORT_DATA, key=pki.vlek_key, flags=0)
    result = verify(raw, certificates=pki.vlek_chain())
    assert failing(result) == {S.STEP_SNP_SIGNING_KEY}
    assert status(result, S.STEP_SNP_SIGNING_KEY) is StepStatus.FAIL


def test_an_unsigned_report_fails() -> None:
    raw = F.make_snp_report(REPORT_DATA, flags=7 << 2)
    assert S.STEP_SNP_SIGNING_KEY in failing(verify(raw))


def test_cpuid_of_another_product_fails() -> None:
    raw = F.make_snp_report(REPORT_DATA, cpuid=(0x19, 0x11, 0x01))  # Genoa's CPUID, Milan's chain
    result = verify(raw)
    assert failing(result) == {S.STEP_SNP_PRODUCT}
    assert "Genoa, not Milan" in detail(result, S.STEP_SNP_PRODUCT)


def test_a_version_2_report_takes_its_product_from_the_chain() -> None:
    result = verify(F.make_snp_report(REPORT_DATA, version=2))
    assert "version 2 report carries no CPUID" in detail(result, S.STEP_SNP_PRODUCT)


def test_a_vcek_naming_another_product_fails() -> None:
    pki = F.snp_pki("Milan")
    vcek = F.leaf_cert("VCEK", "Milan", "SEV-Milan", pki.ask_key, pki.vcek_key, tcb=F.TCB, chip_id=F.CHIP_ID, product_name="Genoa")
    result = verify(F.make_snp_report(REPORT_DATA), certificates=(vcek, pki.ask, pki.ark))
    assert failing(result) == {S.STEP_SNP_PRODUCT}


def test_an_expired_vcek_fails_the_chain_and_an_audit_time_inside_its_validity_passes() -> None:
    pki = F.snp_pki("Milan")
    vcek = F.leaf_cert(
        "VCEK", "Milan", "SEV-Milan", pki.ask_key, pki.vcek_key, tcb=F.TCB, chip_id=F.CHIP_ID, not_after=F.NOW - timedelta(days=1)
    )
    raw = F.make_snp_report(REPORT_DATA)
    expired = verify(raw, certificates=(vcek, pki.ask, pki.ark))
    assert "is not valid at" in detail(expired, S.STEP_SNP_CHAIN)
    audit = verify(raw, certificates=(vcek, pki.ask, pki.ark), now=F.NOW - timedelta(days=30), crls=(
        F.make_crl(pki, last_update=F.NOW - timedelta(days=31)),
    ))
    assert failing(audit) == set()


def test_revocation_is_checked_against_the_ark_signed_crl() -> None:
    pki = F.snp_pki("Milan")
    raw = F.make_snp_report(REPORT_DATA)
    revoked = verify(raw, crls=(F.make_crl(pki, revoked=[pki.ask.serial_number]),))
    assert failing(revoked) == {S.STEP_SNP_REVOCATION}
    assert "is revoked" in detail(revoked, S.STEP_SNP_REVOCATION)
    forged = verify(raw, crls=(F.make_crl(pki, signer=F.rsa_key("intruder")),))
    assert "not signed by ARK-Milan" in detail(forged, S.STEP_SNP_REVOCATION)
    stale = verify(raw, crls=(F.make_crl(pki, last_update=F.NOW - timedelta(days=60), next_update=F.NOW - timedelta(days=1)),))
    assert "not current" in detail(stale, S.STEP_SNP_REVOCATION)
    other = verify(raw, crls=(F.make_crl(F.snp_pki("Genoa")),))
    assert "no CRL issued by ARK-Milan" in detail(other, S.STEP_SNP_REVOCATION)


def test_without_a_crl_revocation_is_not_checked_unless_the_policy_waives_it() -> None:
    pki = F.snp_pki("Milan")
    raw = F.make_snp_report(REPORT_DATA)
    result = verify_snp_evidence(
        raw, policy=POLICY, expected_report_data=REPORT_DATA, certificates=pki.vcek_chain(), now=F.NOW, trusted_arks=[pki.ark]
    )
    assert failing(result) == {S.STEP_SNP_REVOCATION}
    assert status(result, S.STEP_SNP_REVOCATION) is StepStatus.NOT_CHECKED
    relaxed = SnpPolicy(measurements=frozenset({F.MEASUREMENT}), insecure_accept_unchecked_revocation=True)
    with pytest.warns(InsecurePolicyWarning):
        waived = verify_snp_evidence(
            raw, policy=relaxed, expected_report_data=REPORT_DATA, certificates=pki.vcek_chain(), now=F.NOW, trusted_arks=[pki.ark]
        )
    assert failing(waived) == set()
    assert next(s for s in waived.steps if s.name == S.STEP_SNP_REVOCATION).waived_by == "insecure_accept_unchecked_revocation"


def test_without_policy_the_policy_steps_are_not_checked_but_the_rest_runs() -> None:
    result = verify(F.make_snp_report(REPORT_DATA), policy=None, expected=None)
    assert failing(result) == {*S.SNP_POLICY_STEPS, STEP_REPORT_DATA}
    assert all(status(result, name) is StepStatus.PASS for name in SIGNATURE_STEPS)


def test_report_data_binding() -> None:
    raw = F.make_snp_report(REPORT_DATA)
    assert failing(verify(raw, expected=bytes(64))) == {STEP_REPORT_DATA}
    assert status(verify(raw), STEP_REPORT_DATA) is StepStatus.PASS


def test_debug_is_refused_by_default_and_waived_only_by_name() -> None:
    raw = F.make_snp_report(REPORT_DATA, policy=F.POLICY_DEFAULT | F.POLICY_DEBUG)
    result = verify(raw)
    assert failing(result) == {S.STEP_SNP_GUEST_POLICY}
    assert "DEBUG" in detail(result, S.STEP_SNP_GUEST_POLICY)
    relaxed = SnpPolicy(measurements=frozenset({F.MEASUREMENT}), insecure_allow_debug=True)
    with pytest.warns(InsecurePolicyWarning, match="insecure_allow_debug"):
        waived = verify(raw, policy=relaxed)
    assert failing(waived) == set()
    assert relaxed.insecure_overrides() == ("insecure_allow_debug",)


@pytest.mark.parametrize(
    ("bits", "policy", "words"),
    [
        (F.POLICY_MIGRATE_MA, {}, "migration agent"),
        (F.POLICY_SMT, {"allow_smt": False}, "SMT"),
        (0, {"require_single_socket": True}, "SINGLE_SOCKET"),
    ],
)
def test_guest_policy_bits(bits: int, policy: dict[str, Any], words: str) -> None:
    raw = F.make_snp_report(REPORT_DATA, policy=F.POLICY_DEFAULT | bits)
    strict = SnpPolicy(measurements=frozenset({F.MEASUREMENT}), **policy)
    result = verify(raw, policy=strict)
    assert failing(result) == {S.STEP_SNP_GUEST_POLICY}
    assert words in detail(result, S.STEP_SNP_GUEST_POLICY)


def test_debug_together_with_another_violation_is_not_waived() -> None:
    raw = F.make_snp_report(REPORT_DATA, policy=F.POLICY_DEFAULT | F.POLICY_DEBUG | F.POLICY_MIGRATE_MA)
    relaxed = SnpPolicy(measurements=frozenset({F.MEASUREMENT}), insecure_allow_debug=True)
    with pytest.warns(InsecurePolicyWarning):
        result = verify(raw, policy=relaxed)
    step = next(s for s in result.steps if s.name == S.STEP_SNP_GUEST_POLICY)
    assert step.status is StepStatus.FAIL and step.waived_by is None


def policy_from(**kw: Any) -> SnpPolicy:
    return SnpPolicy.from_dict({"measurements": [F.MEASUREMENT.hex()], **kw})


@pytest.mark.parametrize(
    ("report", "policy", "step"),
    [
        ({"measurement": bytes(48)}, {}, S.STEP_SNP_MEASUREMENT),
        ({}, {"host_data": "00" * 32}, S.STEP_SNP_HOST_DATA),
        ({}, {"id_key_digests": ["00" * 48]}, S.STEP_SNP_ID_KEYS),
        ({}, {"author_key_digests": [F.AUTHOR_KEY_DIGEST.hex()]}, S.STEP_SNP_ID_KEYS),
        ({"author_key_digest": F.AUTHOR_KEY_DIGEST, "flags": 1}, {"author_key_digests": ["00" * 48]}, S.STEP_SNP_ID_KEYS),
        ({"vmpl": 2}, {}, S.STEP_SNP_VMPL),
        ({}, {"min_tcb": {"microcode": 116}}, S.STEP_SNP_MIN_TCB),
        ({}, {"min_tcb": {"snp": 9}}, S.STEP_SNP_MIN_TCB),
        ({"firmware": (1, 51, 3)}, {"min_abi": "1.55"}, S.STEP_SNP_MIN_ABI),
    ],
)
def test_each_policy_pin_fails_alone(report: dict[str, Any], policy: dict[str, Any], step: str) -> None:
    raw = F.make_snp_report(REPORT_DATA, **report)
    assert failing(verify(raw, policy=policy_from(**policy))) == {step}


def test_every_policy_pin_passes_when_met() -> None:
    raw = F.make_snp_report(REPORT_DATA, author_key_digest=F.AUTHOR_KEY_DIGEST, flags=1, vmpl=1)
    policy = policy_from(
        host_data=F.HOST_DATA.hex(),
        id_key_digests=[F.ID_KEY_DIGEST.hex()],
        author_key_digests=[F.AUTHOR_KEY_DIGEST.hex()],
        vmpl=[0, 1],
        min_tcb={"bootloader": 3, "tee": 0, "snp": 8, "microcode": 115},
        min_abi="1.55",
    )
    assert failing(verify(raw, policy=policy)) == set()
    assert "HOST_DATA" in policy.describe() and "firmware ≥ 1.55" in policy.describe()


def test_any_measurement_is_an_insecure_named_relaxation() -> None:
    policy = SnpPolicy.from_dict({"insecure_any_measurement": True})
    with pytest.warns(InsecurePolicyWarning):
        result = verify(F.make_snp_report(REPORT_DATA, measurement=bytes(48)), policy=policy)
    step = next(s for s in result.steps if s.name == S.STEP_SNP_MEASUREMENT)
    assert step.waived_by == "insecure_any_measurement" and step.ok


@pytest.mark.parametrize(
    ("data", "words"),
    [
        ({"measurements": ["00" * 48], "allow_debug": True}, "unknown snp policy keys"),
        ({"measurements": ["zz" * 48]}, "not hex"),
        ({"measurements": ["00" * 32]}, "48 bytes"),
        ({"measurements": []}, "non-empty list"),
        ({}, "at least one launch measurement"),
        ({"measurements": ["00" * 48], "vmpl": [4]}, "vmpl"),
        ({"measurements": ["00" * 48], "min_tcb": {"ucode": 1}}, "unknown components"),
        ({"measurements": ["00" * 48], "min_tcb": {"snp": 256}}, "0 to 255"),
        ({"measurements": ["00" * 48], "min_abi": "1"}, "major.minor"),
        ({"measurements": ["00" * 48], "insecure_allow_debug": "yes"}, "true or false"),
        ({"measurements": [S.MEASUREMENT_PLACEHOLDER]}, "placeholder"),
        ([], "JSON object"),
    ],
)
def test_bad_policies_are_refused_with_a_readable_error(data: Any, words: str) -> None:
    with pytest.raises(PolicyError, match=words):
        SnpPolicy.from_dict(data)


def test_the_template_names_every_secure_default_and_becomes_a_policy_once_filled() -> None:
    template = SnpPolicy.template()
    assert template["vmpl"] == [0] and template["allow_migration_agent"] is False
    policy = SnpPolicy.from_dict({**template, "measurements": [F.MEASUREMENT.hex()]})
    assert policy.min_abi == (1, 51) and policy.insecure_overrides() == ()
    assert failing(verify(F.make_snp_report(REPORT_DATA), policy=policy)) == set()


@pytest.mark.parametrize(
    ("raw", "words"),
    [
        (b"", "shorter than"),
        (bytes(100), "shorter than"),
        (F.make_snp_report(REPORT_DATA)[:-1], "shorter than"),
    ],
)
def test_truncated_evidence_fails_the_parse_step(raw: bytes, words: str) -> None:
    result = verify(raw)
    assert status(result, S.STEP_SNP_PARSED) is StepStatus.FAIL and words in detail(result, S.STEP_SNP_PARSED)
    assert all(s.status is StepStatus.NOT_CHECKED for s in result.steps[1:])
    assert result.report_data == b"" and result.tcb_status is None


@pytest.mark.parametrize("version", [0, 1, 4, 6, 0x81])
def test_unsupported_versions_fail_the_parse_step(version: int) -> None:
    raw = bytearray(F.make_snp_report(REPORT_DATA))
    struct.pack_into("<I", raw, 0, version)
    assert f"version {version} is not supported" in detail(verify(bytes(raw)), S.STEP_SNP_PARSED)


def test_another_signature_algorithm_fails_the_parse_step() -> None:
    raw = bytearray(F.make_snp_report(REPORT_DATA))
    struct.pack_into("<I", raw, 0x34, 2)
    assert "not ECDSA P-384" in detail(verify(bytes(raw)), S.STEP_SNP_PARSED)


def table_entry(guid: uuid.UUID, offset: int, length: int) -> bytes:
    return guid.bytes_le + struct.pack("<II", offset, length)


@pytest.mark.parametrize(
    ("table", "words"),
    [
        (bytes(10), "ends before its terminating"),
        (table_entry(F.GUIDS["VCEK"], 48, 10), "outside the table"),
        (table_entry(F.GUIDS["VCEK"], 48, 100) + bytes(24) + bytes(10), "outside the table"),
        (table_entry(F.GUIDS["VCEK"], 0, 24) + bytes(24), "outside the table"),
        (table_entry(F.GUIDS["VCEK"], 48, 4) + bytes(24) + b"junk", "not a readable certificate"),
        (b"".join(table_entry(uuid.uuid4(), 40 * 24, 1) for _ in range(40)) + b"x", "more than 32 entries"),
        (bytes(33 * 1024), "more than"),
    ],
)
def test_a_bad_certificate_table_fails_the_parse_step(table: bytes, words: str) -> None:
    raw = F.make_snp_report(REPORT_DATA) + table
    assert words in detail(verify(raw), S.STEP_SNP_PARSED)
    with pytest.raises(SnpParseError, match=words):
        split_snp_evidence(raw)


def test_unknown_guids_in_the_table_are_skipped() -> None:
    pki = F.snp_pki("Milan")
    extra = (uuid.UUID("ecae0c0f-9502-43b1-afa2-0ae2e0d565b6"), b"platform info")
    table = F.make_cert_table([extra, *pki.vcek_chain()])
    assert [e.kind for e in parse_cert_table(table)] == [None, "VCEK", "ASK", "ARK"]
    assert failing(verify(F.make_snp_report(REPORT_DATA) + table, certificates=())) == set()


def test_an_empty_table_carries_no_certificates() -> None:
    raw = F.make_snp_report(REPORT_DATA)
    assert split_snp_evidence(raw + bytes(24)) == (raw, ())


def test_collateral_in_any_order_with_a_crl_pem_or_der() -> None:
    pki = F.snp_pki("Turin")
    crl = F.make_crl(pki)
    certs, crls = load_snp_collateral(F.pem_bundle(pki.ark, crl, pki.vcek, pki.ask))
    assert [der(c) for c in certs] == [der(pki.ark), der(pki.vcek), der(pki.ask)] and len(crls) == 1
    (single,), () = load_snp_collateral(der(pki.vcek))
    assert der(single) == der(pki.vcek)
    (), (crl_der,) = load_snp_collateral(crl.public_bytes(serialization.Encoding.DER))
    assert crl_der.issuer == pki.ark.subject


@pytest.mark.parametrize(
    ("data", "words"),
    [
        (b"", "empty"),
        (b"not a certificate", "not a readable certificate"),
        (b"-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----\n", "not base64"),
        (b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", r"block 1 \(CERTIFICATE\)"),
        (b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n", "PRIVATE KEY, not"),
        (b"-----BEGIN CERTIFICATE-----\nAAAA\n", "without its matching END"),
    ],
)
def test_unreadable_collateral_is_one_clear_error(data: bytes, words: str) -> None:
    with pytest.raises(CollateralError, match=words):
        load_snp_collateral(data)


@pytest.mark.parametrize("product", ["Milan", "Turin"])
def test_parsed_fields_agree_with_the_independent_checker(product: str) -> None:
    raw = F.make_snp_report(REPORT_DATA, product=product, version=5, vmpl=2, policy=0x1F0000)
    report = parse_snp_report(raw)
    theirs = independent_snp.report_fields(raw)
    assert report.measurement == theirs["measurement"] and report.chip_id == theirs["chip_id"]
    assert report.policy == int.from_bytes(theirs["policy"], "little") and report.vmpl == 2
    assert report.tcb(report.reported_tcb, product).components() == {
        {"bl": "bootloader", "ucode": "microcode"}.get(k, k): v
        for k, v in independent_snp.tcb_parts(theirs["reported_tcb"], product == "Turin").items()
    }
    assert report.launch_mitigations == 5 and report.current_mitigations == 7


def test_a_naive_verification_time_is_taken_as_utc() -> None:
    result = verify(F.make_snp_report(REPORT_DATA), now=F.NOW.replace(tzinfo=None))
    assert failing(result) == set()

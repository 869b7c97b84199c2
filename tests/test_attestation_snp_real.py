"""AMD's real SEV-SNP reports and certificates (tests/data/attestation/README.md), AMD's pinned
roots, serial number 0, the independent checker and bit flips."""

from __future__ import annotations

import warnings
from datetime import datetime, timezone
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.utils import CryptographyDeprecationWarning
from hypothesis import given, settings
from hypothesis import strategies as st

from avalon_worker.attestation import (
    AMD_ARK_SPKI_SHA256,
    InsecurePolicyWarning,
    SnpPolicy,
    StepStatus,
    parse_snp_report,
    verify_snp_evidence,
)
from avalon_worker.attestation.verifier import snp as S
from avalon_worker.attestation.verifier._amd_roots import AMD_CERT_SHA256, AMD_CERTIFICATES, spki_sha256
from avalon_worker.attestation.verifier._snp_certs import load_amd_certificate, read_endorsement, serial_number

import independent_snp
import snp_fixtures as F

DATA = Path(__file__).parent / "data" / "attestation"
MILAN_REPORT = (DATA / "snp_milan_v2_report.bin").read_bytes()
MILAN_VCEK_DER = (DATA / "snp_milan_vcek.der").read_bytes()
GENOA_REPORT = (DATA / "snp_genoa_v3_report.bin").read_bytes()
GENOA_VCEK_DER = (DATA / "snp_genoa_vcek.der").read_bytes()
NOW = datetime(2026, 10, 1, tzinfo=timezone.utc)
MILAN_MEASUREMENT = "b07af9620f3b839b47996422ddec6058338951d984e312115131ea82705eaf5b6bdf8a9ece31a5a608eb0cf2e4872b01"
SIGNATURE_STEPS = set(S.SNP_SIGNATURE_STEPS) - {S.STEP_SNP_REVOCATION}
AMD_DERS = [c.public_bytes(serialization.Encoding.DER) for c in (*AMD_CERTIFICATES.asks, *AMD_CERTIFICATES.arks)]


def vcek(der: bytes = MILAN_VCEK_DER) -> x509.Certificate:
    return load_amd_certificate(der)


def verify(raw: bytes, certs: list[x509.Certificate], policy: SnpPolicy | None = None) -> S.SnpVerification:
    return verify_snp_evidence(raw, policy=policy, expected_report_data=None, certificates=certs, now=NOW)


def passing(result: S.SnpVerification) -> set[str]:
    return {s.name for s in result.steps if s.status is StepStatus.PASS}


def test_pinned_roots_match_their_fingerprints_and_keys() -> None:
    names = {x509_cn(c): c for c in (*AMD_CERTIFICATES.arks, *AMD_CERTIFICATES.asks)}
    assert set(names) == {"ARK-Milan", "SEV-Milan", "ARK-Genoa", "SEV-Genoa"}
    for name, cert in names.items():
        assert cert.fingerprint(hashes.SHA256()).hex() == AMD_CERT_SHA256[name]
    assert spki_sha256(names["ARK-Milan"]) == AMD_ARK_SPKI_SHA256["Milan"]
    assert spki_sha256(names["ARK-Genoa"]) == AMD_ARK_SPKI_SHA256["Genoa"]
    assert set(AMD_ARK_SPKI_SHA256) == {"Milan", "Genoa", "Turin"}


def x509_cn(cert: x509.Certificate) -> str:
    return str(cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value)


def test_the_real_milan_report_verifies_to_amds_root() -> None:
    result = verify(MILAN_REPORT, [vcek()])
    assert passing(result) >= {S.STEP_SNP_PARSED, *SIGNATURE_STEPS}, [s.render() for s in result.steps]
    assert "VCEK → SEV-Milan → ARK-Milan (pinned AMD root)" in next(
        s.detail for s in result.steps if s.name == S.STEP_SNP_CHAIN
    )
    assert result.tcb_status == "reported TCB bl=2 tee=0 snp=5 ucode=68"
    assert result.measurements["measurement"] == MILAN_MEASUREMENT
    assert result.report_data[:5] == bytes([1, 2, 3, 4, 5])


def test_the_real_milan_guest_allows_debug_so_the_default_policy_refuses_it() -> None:
    policy = SnpPolicy.from_dict({"measurements": [MILAN_MEASUREMENT], "insecure_accept_unchecked_revocation": True})
    with pytest.warns(InsecurePolicyWarning):
        result = verify_snp_evidence(
            MILAN_REPORT, policy=policy, expected_report_data=MILAN_REPORT[0x50:0x90], certificates=[vcek()], now=NOW
        )
    assert {s.name for s in result.steps if not s.ok} == {S.STEP_SNP_GUEST_POLICY}
    assert "DEBUG" in next(s.detail for s in result.steps if s.name == S.STEP_SNP_GUEST_POLICY)


def test_a_real_genoa_vcek_chains_to_the_pinned_genoa_root_but_is_not_the_reports_chip() -> None:
    result = verify(GENOA_REPORT, [vcek(GENOA_VCEK_DER)])
    assert "VCEK → SEV-Genoa → ARK-Genoa (pinned AMD root)" in next(
        s.detail for s in result.steps if s.name == S.STEP_SNP_CHAIN
    )
    failed = {s.name for s in result.steps if s.status is StepStatus.FAIL}
    assert failed == {S.STEP_SNP_SIGNATURE, S.STEP_SNP_TCB, S.STEP_SNP_CHIP_ID}
    assert S.STEP_SNP_PRODUCT in passing(result)  # CPUID 19h/11h is Genoa, as the chain is


def test_the_real_genoa_report_parses_as_the_independent_reader_reads_it() -> None:
    report = parse_snp_report(GENOA_REPORT)
    theirs = independent_snp.report_fields(GENOA_REPORT)
    assert (report.version, report.vmpl, report.cpuid_product) == (3, 0, "Genoa")
    assert report.measurement == theirs["measurement"] and report.chip_id == theirs["chip_id"]
    assert report.tcb(report.reported_tcb, "Genoa").components() == {
        "bootloader": 10, "tee": 0, "snp": 23, "microcode": 84
    }


def test_vcek_extensions_are_read_as_the_independent_reader_reads_them() -> None:
    for der, tcb in ((MILAN_VCEK_DER, (2, 0, 5, 68)), (GENOA_VCEK_DER, (7, 0, 11, 62))):
        mine = read_endorsement(vcek(der))
        theirs = independent_snp.parse_cert(der)
        assert tuple(mine.tcb[k] for k in ("bootloader", "tee", "snp", "microcode")) == tcb
        assert mine.hwid == theirs.extensions[f"{independent_snp.KDS}.4"]


def test_an_amd_vcek_with_serial_0_still_parses_in_this_cryptography() -> None:
    """The canary: fails the day `cryptography` refuses serial 0 (then the fallback takes over,
    tested below); see the serial-0 note in docs/attestation.md."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CryptographyDeprecationWarning)
        cert = x509.load_der_x509_certificate(MILAN_VCEK_DER)
        assert cert.serial_number == 0


def test_loading_an_amd_vcek_shows_no_warning() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cert = load_amd_certificate(MILAN_VCEK_DER)
        assert serial_number(cert) == 0


def refusing_parser(der: bytes) -> x509.Certificate:
    """Stands in for the announced `cryptography` that refuses non-positive serials."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", CryptographyDeprecationWarning)
        try:
            return x509.load_der_x509_certificate(der)
        except CryptographyDeprecationWarning:
            raise ValueError("invalid certificate: serial number is not positive") from None


def test_if_cryptography_refuses_serial_0_the_vcek_is_read_and_amds_signature_still_checked() -> None:
    with pytest.raises(ValueError):
        refusing_parser(MILAN_VCEK_DER)
    reencoded = load_amd_certificate(MILAN_VCEK_DER, parse=refusing_parser)
    assert reencoded.serial_number == 1
    result = verify(MILAN_REPORT, [reencoded])
    assert passing(result) >= SIGNATURE_STEPS


def test_a_serial_1_copy_is_not_accepted_under_another_content() -> None:
    raw = bytearray(MILAN_VCEK_DER)
    raw[MILAN_VCEK_DER.index(b"\x02\x01\x00")] ^= 0  # serial stays; alter a signed name byte
    raw[raw.index(b"SEV-VCEK") + 4] ^= 0x20
    result = verify(MILAN_REPORT, [load_amd_certificate(bytes(raw), parse=refusing_parser)])
    assert next(s for s in result.steps if s.name == S.STEP_SNP_CHAIN).status is StepStatus.FAIL


def agree(report: bytes, certs: list[bytes], roots: list[bytes] | None = None, now: datetime = NOW) -> tuple[bool, bool]:
    """(ours, theirs): whether each judges the chain, signature, TCB, chip and product sound."""
    parsed: list[x509.Certificate] = []
    for der in certs:
        try:
            parsed.append(load_amd_certificate(der))
        except ValueError:
            continue
    trusted = [x509.load_der_x509_certificate(d) for d in roots] if roots is not None else None
    result = verify_snp_evidence(report, policy=None, expected_report_data=None, certificates=parsed, now=now, trusted_arks=trusted)
    ours = passing(result) >= {S.STEP_SNP_PARSED, *SIGNATURE_STEPS}
    theirs = independent_snp.check(report, certs + AMD_DERS if roots is None else certs, now, roots).ok
    return ours, theirs


def test_both_verifiers_accept_the_real_milan_report_and_refuse_the_genoa_pair() -> None:
    assert agree(MILAN_REPORT, [MILAN_VCEK_DER]) == (True, True)
    assert agree(GENOA_REPORT, [GENOA_VCEK_DER]) == (False, False)


def fixture_vectors() -> list[tuple[str, bytes, list[bytes], list[bytes]]]:
    out = []
    for product in ("Milan", "Genoa", "Turin"):
        pki = F.snp_pki(product)
        for version in (2, 3, 5):
            for kind in ("VCEK", "VLEK"):
                chain = pki.vcek_chain() if kind == "VCEK" else pki.vlek_chain()
                ders = [c.public_bytes(serialization.Encoding.DER) for c in chain]
                report = F.make_snp_report(b"r", product=product, version=version, signing_key=kind)
                out.append((f"{product}-v{version}-{kind}", report, ders, [ders[-1]]))
    return out


VECTORS = fixture_vectors()


@pytest.mark.parametrize(("name", "report", "certs", "roots"), VECTORS, ids=[v[0] for v in VECTORS])
def test_both_verifiers_agree_on_every_test_vector(name: str, report: bytes, certs: list[bytes], roots: list[bytes]) -> None:
    assert agree(report, certs, roots, F.NOW) == (True, True)


def flip(data: bytes, offset: int, bit: int) -> bytes:
    out = bytearray(data)
    out[offset] ^= 1 << bit
    return bytes(out)


@pytest.mark.slow
@settings(max_examples=400, deadline=None)
@given(offset=st.integers(0, 0x2A0 + 144 - 1), bit=st.integers(0, 7))
def test_a_bit_flip_in_the_signed_part_or_signature_of_the_real_report_is_refused_by_both(offset: int, bit: int) -> None:
    assert agree(flip(MILAN_REPORT, offset, bit), [MILAN_VCEK_DER]) == (False, False)


@pytest.mark.slow
@settings(max_examples=300, deadline=None)
@given(offset=st.integers(0, len(MILAN_VCEK_DER) - 1), bit=st.integers(0, 7))
def test_a_bit_flip_in_the_real_vcek_never_raises_and_never_verifies_altered_signed_bytes(offset: int, bit: int) -> None:
    altered = flip(MILAN_VCEK_DER, offset, bit)
    ours, theirs = agree(MILAN_REPORT, [altered])
    if ours:
        # Only bytes outside what AMD signed may change without failing (e.g. the BIT STRING's
        # unused-bits octet), and the serial 0 may read 1 (snp_certs: a VCEK's serial carries no
        # meaning); every other byte of the TBS and the signature value must be the genuine ones.
        signed = independent_snp.parse_cert(MILAN_VCEK_DER)
        now_signed = independent_snp.parse_cert(altered)
        serial_one = signed.tbs.replace(b"\xa0\x03\x02\x01\x02\x02\x01\x00", b"\xa0\x03\x02\x01\x02\x02\x01\x01", 1)
        assert now_signed.tbs in (signed.tbs, serial_one) and now_signed.signature == signed.signature


@pytest.mark.slow
@settings(max_examples=200, deadline=None)
@given(offset=st.integers(0, 1184 + 2000), bit=st.integers(0, 7))
def test_a_bit_flip_anywhere_in_evidence_with_its_table_never_raises(offset: int, bit: int) -> None:
    pki = F.snp_pki("Genoa")
    evidence = F.make_snp_report(b"r", product="Genoa") + F.make_cert_table(pki.vcek_chain())
    offset %= len(evidence)
    result = verify_snp_evidence(
        flip(evidence, offset, bit), policy=None, expected_report_data=None, now=F.NOW, trusted_arks=[pki.ark]
    )
    sound = passing(result) >= {S.STEP_SNP_PARSED, *SIGNATURE_STEPS}
    if sound:
        assert offset >= 0x2A0 + 144  # never a signed report byte or the signature itself

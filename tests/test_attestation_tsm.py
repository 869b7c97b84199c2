"""The configfs-tsm provider (`--attestation tdx|snp`) against a stand-in of the kernel's interface.

The stand-in (`sim_tsm`) is served through FUSE, so the provider makes its real system calls:
mkdir, one write to inblob, reads of outblob/auxblob/generation/provider, rmdir.
"""

from __future__ import annotations

import errno
import logging
import os
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest

from avalon_worker.attestation import AttestationUnavailable, NoAttestation, report_data, select_provider
from avalon_worker.attestation.errors import QuoteGenerationError
from avalon_worker.attestation.providers import PLATFORM_CHECK, TsmAttestation
from avalon_worker.attestation.tsm import (
    OUTBLOB_MAX,
    ConfigfsTsm,
    check_cert_table,
    check_snp_report,
    check_tdx_quote,
)

from conftest import errors_in_threads
from sim_tsm import SNP, TDX, VCEK_GUID, SimulatedTsm, cert_table, framed_snp_report, framed_tdx_quote

REAL = Path(__file__).with_name("data") / "attestation"  # real evidence, provenance in its README
PEM = "-----BEGIN PUBLIC KEY-----\nMFYwEAYHKoZIzj0CAQYFK4EEAAoDQgAE\n-----END PUBLIC KEY-----\n"
DATA = report_data(PEM, b"nonce")


@pytest.fixture
def tdx(tmp_path: Path) -> Iterator[SimulatedTsm]:
    with SimulatedTsm(tmp_path / "tsm", TDX) as sim:
        yield sim


@pytest.fixture
def snp(tmp_path: Path) -> Iterator[SimulatedTsm]:
    with SimulatedTsm(tmp_path / "tsm", SNP, measurements=False) as sim:
        yield sim


def td_report_data(quote: bytes) -> bytes:
    body = 48 if struct.unpack_from("<H", quote)[0] == 4 else 54
    return quote[body + 520 : body + 584]


def left_behind(sim: SimulatedTsm) -> list[str]:
    return os.listdir(sim.report_dir)


# -- the checks on what the kernel returns (no kernel needed) ------------------------------------


class TestEvidenceChecks:
    @pytest.mark.parametrize("version", [4, 5])
    def test_a_tdx_quote_over_the_report_data_passes(self, version: int) -> None:
        check_tdx_quote(framed_tdx_quote(DATA, version=version), DATA)

    @pytest.mark.parametrize(
        ("quote", "message"),
        [
            (framed_tdx_quote(DATA)[:100], "too short for a TDX quote v4"),
            (framed_tdx_quote(DATA)[:20], "too short for a TDX quote"),
            (struct.pack("<HHI", 4, 2, 0) + framed_tdx_quote(DATA)[8:], "TEE type 0x0 is not TDX"),
            (struct.pack("<H", 3) + framed_tdx_quote(DATA)[2:], "version 3 is not a TDX quote version"),
            (framed_tdx_quote(bytes(64)), "REPORTDATA is not the inblob written"),
            (framed_tdx_quote(DATA)[:-1], "signature data (134 bytes) runs past"),
        ],
    )
    def test_anything_else_is_refused_with_its_reason(self, quote: bytes, message: str) -> None:
        with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
            check_tdx_quote(quote, DATA)

    def test_a_v5_quote_must_carry_a_td_body(self) -> None:
        quote = bytearray(framed_tdx_quote(DATA, version=5))
        struct.pack_into("<H", quote, 48, 1)  # body type 1: an SGX enclave report
        with pytest.raises(ValueError, match="body type 1 of 584 bytes is not a TD report"):
            check_tdx_quote(bytes(quote), DATA)
        struct.pack_into("<HI", quote, 48, 2, 384)
        with pytest.raises(ValueError, match="body type 2 of 384 bytes is not a TD report"):
            check_tdx_quote(bytes(quote), DATA)

    def test_later_td_bodies_only_append(self) -> None:
        quote = framed_tdx_quote(DATA, version=5)
        head, body, tail = quote[:48], quote[54 : 54 + 584], quote[54 + 584 :]
        for body_type, extra in ((3, 64), (4, 301)):  # TD 1.5 (648 bytes), TD 1.5ex (885 bytes)
            longer = head + struct.pack("<HI", body_type, 584 + extra) + body + bytes(extra) + tail
            check_tdx_quote(longer, DATA)

    def test_zero_padding_after_the_quote_is_accepted(self) -> None:
        check_tdx_quote(framed_tdx_quote(DATA) + bytes(4096), DATA)

    def test_snp_report_checks(self) -> None:
        check_snp_report(framed_snp_report(DATA), DATA)
        for report, message in (
            (framed_snp_report(DATA)[:-1], "1183 bytes is not the size of an SEV-SNP report"),
            (framed_snp_report(DATA) + b"\0", "1185 bytes"),
            (framed_snp_report(DATA, version=1), "version 1 is not an SEV-SNP report version"),
            (framed_snp_report(bytes(64)), "REPORT_DATA is not the inblob written"),
        ):
            with pytest.raises(ValueError, match=message):
                check_snp_report(report, DATA)

    @pytest.mark.parametrize("name", ["snp_milan_v2_report.bin", "snp_genoa_v3_report.bin"])
    def test_real_snp_reports_pass(self, name: str) -> None:
        report = (REAL / name).read_bytes()
        check_snp_report(report, report[0x50:0x90])
        with pytest.raises(ValueError, match="REPORT_DATA is not the inblob written"):
            check_snp_report(report, bytes(a ^ 1 for a in report[0x50:0x90]))

    @pytest.mark.parametrize(
        "name", ["dcap_qvl_tdx_quote.bin", "dcap_qvl_tdx_quote_outdated.bin", "dcap_qvl_tdx_quote_td15ex.bin"]
    )
    def test_real_tdx_quotes_pass(self, name: str) -> None:
        quote = (REAL / name).read_bytes()
        data = td_report_data(quote)
        check_tdx_quote(quote, data)
        with pytest.raises(ValueError, match="REPORTDATA is not the inblob written"):
            check_tdx_quote(quote, bytes(a ^ 1 for a in data))

    def test_a_real_sgx_quote_is_not_taken_for_a_tdx_one(self) -> None:
        with pytest.raises(ValueError, match="TEE type 0x0 is not TDX"):
            check_tdx_quote((REAL / "dcap_qvl_sgx_quote.bin").read_bytes(), DATA)

    def test_certificate_tables(self) -> None:
        assert check_cert_table(cert_table([(VCEK_GUID, b"a" * 10), (b"\x01" * 16, b"b" * 3)])) == 2
        assert check_cert_table(bytes(24)) == 0
        with pytest.raises(ValueError, match="no terminating entry"):
            check_cert_table(VCEK_GUID + struct.pack("<II", 24, 0))
        pointing_out = VCEK_GUID + struct.pack("<II", 48, 100) + bytes(24)
        with pytest.raises(ValueError, match="entry 0 points outside the table"):
            check_cert_table(pointing_out)


# -- platforms without configfs-tsm --------------------------------------------------------------


class TestMissingInterface:
    def test_no_configfs(self, tmp_path: Path) -> None:
        with pytest.raises(AttestationUnavailable, match="configfs is not mounted") as info:
            select_provider("tdx", tsm_report_dir=str(tmp_path / "config" / "tsm" / "report"))
        assert "Linux >= 6.7" in info.value.diagnostics() and "tdx_guest" in info.value.diagnostics()

    def test_configfs_without_tsm(self, tmp_path: Path) -> None:
        (tmp_path / "config").mkdir()
        with pytest.raises(AttestationUnavailable, match="this kernel has no configfs-tsm"):
            select_provider("snp", tsm_report_dir=str(tmp_path / "config" / "tsm" / "report"))

    def test_tsm_without_report(self, tmp_path: Path) -> None:
        (tmp_path / "config" / "tsm").mkdir(parents=True)
        assert "cannot make reports" in str(ConfigfsTsm(tmp_path / "config" / "tsm" / "report").missing())

    def test_auto_without_anything_is_none(self, tmp_path: Path) -> None:
        provider = select_provider("auto", str(tmp_path / "no-sgx"), tsm_report_dir=str(tmp_path / "no-tsm"))
        assert isinstance(provider, NoAttestation)

    def test_unknown_kind(self, tmp_path: Path) -> None:
        with pytest.raises(ValueError, match="choose tdx or snp"):
            TsmAttestation("sev", tmp_path)


# -- the stand-in kernel -----------------------------------------------------------------------------


class TestPlatform:
    def test_a_kernel_without_the_provider_driver(self, tmp_path: Path) -> None:
        with SimulatedTsm(tmp_path / "tsm", provider=None) as sim:
            with pytest.raises(AttestationUnavailable, match="no attestation provider registered") as info:
                select_provider("tdx", tsm_report_dir=str(sim.report_dir))
            assert "tdx_guest" in info.value.diagnostics() and "sev_guest" in info.value.diagnostics()
            assert isinstance(select_provider("auto", tsm_report_dir=str(sim.report_dir)), NoAttestation)

    def test_a_provider_of_the_other_kind(self, snp: SimulatedTsm) -> None:
        with pytest.raises(AttestationUnavailable, match="provider is sev_guest .AMD SEV-SNP., not tdx_guest") as info:
            select_provider("tdx", tsm_report_dir=str(snp.report_dir))
        assert "--attestation snp" in info.value.diagnostics()

    def test_an_unsupported_provider(self, tmp_path: Path) -> None:
        with SimulatedTsm(tmp_path / "tsm", provider="arm_cca_guest") as sim:
            with pytest.raises(AttestationUnavailable, match="provider is arm_cca_guest, not sev_guest"):
                select_provider("snp", tsm_report_dir=str(sim.report_dir))
            assert isinstance(select_provider("auto", tsm_report_dir=str(sim.report_dir)), NoAttestation)

    @pytest.mark.parametrize(("provider", "kind"), [(TDX, "tdx"), (SNP, "snp")])
    def test_auto_finds_the_provider(self, tmp_path: Path, provider: str, kind: str) -> None:
        with SimulatedTsm(tmp_path / "tsm", provider) as sim:
            found = select_provider("auto", str(tmp_path / "no-sgx"), tsm_report_dir=str(sim.report_dir))
            assert isinstance(found, TsmAttestation) and found.kind == kind and found.mrenclave() == ""
            assert left_behind(sim) == []

    def test_the_platform_is_checked_with_one_report(self, tdx: SimulatedTsm) -> None:
        TsmAttestation("tdx", tdx.report_dir)
        assert tdx.reports_made == 1
        assert tdx.directories_made == 2  # one to read the provider, one for the report
        assert left_behind(tdx) == []

    @pytest.mark.parametrize(
        ("outblob", "message"),
        [
            (b"\x04\x00\x02\x00\x81", "too short for a TDX quote"),
            (bytes(OUTBLOB_MAX + 1), "larger than the kernel's 32768-byte limit"),
            (framed_snp_report(PLATFORM_CHECK), "TEE type 0x0 is not TDX"),
        ],
    )
    def test_an_unusable_outblob_stops_the_start(self, tdx: SimulatedTsm, outblob: bytes, message: str) -> None:
        tdx.outblob_override = outblob
        with pytest.raises(AttestationUnavailable, match=message):
            TsmAttestation("tdx", tdx.report_dir)
        assert left_behind(tdx) == []

    def test_a_short_snp_report_stops_the_start(self, snp: SimulatedTsm) -> None:
        snp.outblob_override = framed_snp_report(PLATFORM_CHECK)[:1000]
        with pytest.raises(AttestationUnavailable, match="1000 bytes is not the size of an SEV-SNP report"):
            TsmAttestation("snp", snp.report_dir)

    def test_a_failing_quote_service_stops_the_start(self, tdx: SimulatedTsm) -> None:
        tdx.fail_with = errno.EIO
        with pytest.raises(AttestationUnavailable, match="could not make a report .outblob: Input/output error.") as info:
            TsmAttestation("tdx", tdx.report_dir)
        assert "quote generation service" in info.value.diagnostics()
        assert left_behind(tdx) == []

    def test_a_race_that_never_settles_stops_the_start(self, tdx: SimulatedTsm) -> None:
        tdx.interfere = 1000
        with pytest.raises(AttestationUnavailable, match="every one of 3 reports was disturbed") as info:
            TsmAttestation("tdx", tdx.report_dir)
        assert "avalon-worker-<pid>" in info.value.diagnostics()
        assert tdx.reports_made == 3 and left_behind(tdx) == []


class TestTdxReports:
    def test_the_quote_carries_the_report_data_and_rtmr3(self, tdx: SimulatedTsm) -> None:
        provider = TsmAttestation("tdx", tdx.report_dir)
        tdx.rtmr[3] = b"\x33" * 48
        quote = provider.quote(DATA)
        assert td_report_data(quote) == DATA
        assert quote[48 + 472 : 48 + 520] == b"\x33" * 48
        assert left_behind(tdx) == []

    def test_each_quote_is_made_in_a_fresh_directory(self, tdx: SimulatedTsm) -> None:
        provider = TsmAttestation("tdx", tdx.report_dir)
        made = tdx.directories_made
        first, second = provider.quote(report_data(PEM, b"1")), provider.quote(report_data(PEM, b"2"))
        assert td_report_data(first) != td_report_data(second)
        assert tdx.directories_made == made + 2 and left_behind(tdx) == []

    def test_a_report_disturbed_once_is_made_again(self, tdx: SimulatedTsm, caplog: pytest.LogCaptureFixture) -> None:
        provider = TsmAttestation("tdx", tdx.report_dir)
        tdx.interfere = 2
        with caplog.at_level(logging.WARNING):
            quote = provider.quote(DATA)
        assert td_report_data(quote) == DATA  # never the other writer's report
        assert caplog.text.count("discarded: another process wrote to the report directory") == 2
        assert left_behind(tdx) == []

    def test_a_race_at_run_time_is_a_quote_error(self, tdx: SimulatedTsm) -> None:
        provider = TsmAttestation("tdx", tdx.report_dir, attempts=2)
        tdx.interfere = 2
        with pytest.raises(QuoteGenerationError, match="every one of 2 reports"):
            provider.quote(DATA)

    def test_report_data_must_be_64_bytes(self, tdx: SimulatedTsm) -> None:
        with pytest.raises(ValueError, match="64 bytes"):
            TsmAttestation("tdx", tdx.report_dir).quote(b"short")

    def test_concurrent_callers_each_get_their_own_report_data(self, tdx: SimulatedTsm) -> None:
        provider = TsmAttestation("tdx", tdx.report_dir)

        def worker(i: int) -> None:
            for round_ in range(3):
                data = report_data(PEM, f"{i}-{round_}".encode())
                assert td_report_data(provider.quote(data)) == data

        assert not errors_in_threads(worker, 5) and left_behind(tdx) == []
        assert tdx.reports_made == 1 + 15


class TestSnpReports:
    def test_the_report_is_followed_by_the_hosts_certificate_table(self, snp: SimulatedTsm) -> None:
        evidence = TsmAttestation("snp", snp.report_dir).quote(DATA)
        report, table = evidence[:1184], evidence[1184:]
        assert report[0x50:0x90] == DATA
        assert check_cert_table(table) >= 1
        assert left_behind(snp) == []

    def test_a_guest_above_vmpl_0_asks_at_its_privilege_floor(self, tmp_path: Path) -> None:
        with SimulatedTsm(tmp_path / "tsm", SNP, privlevel_floor=2) as sim:
            provider = TsmAttestation("snp", sim.report_dir)
            assert provider.quote(DATA)[0x50:0x90] == DATA
            assert sim.privlevels == [2, 2] and left_behind(sim) == []

    def test_without_certificates_the_report_stands_alone(self, tmp_path: Path) -> None:
        with SimulatedTsm(tmp_path / "tsm", SNP, evidence=lambda kind, data, rtmr3: (framed_snp_report(data), b"")) as sim:
            assert len(TsmAttestation("snp", sim.report_dir).quote(DATA)) == 1184

    def test_a_malformed_certificate_table_is_left_out(
        self, tmp_path: Path, caplog: pytest.LogCaptureFixture
    ) -> None:
        def evidence(kind: str, data: bytes, rtmr3: bytes) -> tuple[bytes, bytes]:
            return framed_snp_report(data), b"\x01" * 40

        with SimulatedTsm(tmp_path / "tsm", SNP, evidence=evidence) as sim, caplog.at_level(logging.WARNING):
            assert len(TsmAttestation("snp", sim.report_dir).quote(DATA)) == 1184
        assert "certificate table is malformed" in caplog.text

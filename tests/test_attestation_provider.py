"""Attestation providers against a simulated /dev/attestation tree (FIFOs, real EACCES)."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from avalon_worker.attestation import (
    AttestationProvider,
    AttestationUnavailable,
    GramineAttestation,
    NoAttestation,
    parse_quote,
    report_data,
    select_provider,
)
from avalon_worker.attestation.errors import QuoteGenerationError

from attestation_fixtures import MRENCLAVE, QuoteFactory
from conftest import errors_in_threads
from sim_gramine import SimulatedGramine, eacces_target

PEM = "-----BEGIN PUBLIC KEY-----\nMFYwEAYHKoZIzj0CAQYFK4EEAAoDQgAE\n-----END PUBLIC KEY-----\n"


@pytest.fixture
def sim(tmp_path: Path, factory: QuoteFactory) -> Iterator[SimulatedGramine]:
    with SimulatedGramine(tmp_path / "attestation", factory) as simulated:
        yield simulated


class TestReportData:
    def test_without_nonce_second_half_is_zero(self) -> None:
        data = report_data(PEM)
        assert data == hashlib.sha256(PEM.encode()).digest() + bytes(32)

    def test_with_nonce_second_half_hashes_it(self) -> None:
        nonce = bytes.fromhex("00ff10")
        assert (
            report_data(PEM, nonce) == hashlib.sha256(PEM.encode()).digest() + hashlib.sha256(nonce).digest()
        )

    def test_known_answer(self) -> None:
        assert report_data("abc", b"").hex() == (
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        )

    def test_pem_hashed_exactly_as_published(self) -> None:
        assert report_data(PEM) != report_data(PEM.replace("\n", "\r\n"))


class TestSelection:
    def test_none(self, caplog: pytest.LogCaptureFixture) -> None:
        with caplog.at_level(logging.WARNING):
            provider = select_provider("none")
        assert isinstance(provider, NoAttestation)
        assert provider.kind == "none" and provider.mrenclave() == ""
        assert provider.quote(bytes(64)) == b""
        assert "empty quote" in caplog.text

    def test_auto_without_sgx_is_none(self, tmp_path: Path) -> None:
        assert select_provider("auto", str(tmp_path / "missing")).kind == "none"

    def test_auto_with_attestation_type_none_is_none(self, tmp_path: Path, factory: QuoteFactory) -> None:
        with SimulatedGramine(tmp_path / "a", factory, attestation_type="none", with_quote=False):
            assert select_provider("auto", str(tmp_path / "a")).kind == "none"

    def test_auto_detects_gramine(self, sim: SimulatedGramine) -> None:
        provider = select_provider("auto", str(sim.root))
        assert isinstance(provider, GramineAttestation)
        assert isinstance(provider, AttestationProvider)
        assert provider.kind == "gramine"
        assert provider.mrenclave() == MRENCLAVE.hex()

    def test_unknown_mode(self) -> None:
        with pytest.raises(ValueError, match="auto, none, gramine"):
            select_provider("sgx")

    def test_gramine_requested_without_tree(self, tmp_path: Path) -> None:
        with pytest.raises(AttestationUnavailable, match="not running inside Gramine-SGX") as info:
            select_provider("gramine", str(tmp_path / "missing"))
        assert "--attestation none" in info.value.diagnostics()

    def test_gramine_direct_tree_has_only_keys(self, tmp_path: Path) -> None:
        (tmp_path / "keys").mkdir()
        with pytest.raises(AttestationUnavailable, match="attestation_type is missing") as info:
            select_provider("gramine", str(tmp_path))
        assert "sgx.remote_attestation" in info.value.diagnostics()

    def test_gramine_with_remote_attestation_disabled(self, tmp_path: Path, factory: QuoteFactory) -> None:
        with SimulatedGramine(tmp_path / "a", factory, attestation_type="none", with_quote=False):
            with pytest.raises(AttestationUnavailable, match="remote attestation is disabled") as info:
                select_provider("gramine", str(tmp_path / "a"))
        assert 'sgx.remote_attestation = "dcap"' in info.value.diagnostics()

    def test_gramine_without_quote_file(self, tmp_path: Path, factory: QuoteFactory) -> None:
        with SimulatedGramine(tmp_path / "a", factory, with_quote=False):
            with pytest.raises(AttestationUnavailable, match="quote is missing"):
                select_provider("gramine", str(tmp_path / "a"))

    def test_short_target_info(self, sim: SimulatedGramine) -> None:
        (sim.root / "my_target_info").write_bytes(bytes(100))
        with pytest.raises(AttestationUnavailable, match="expected 512"):
            GramineAttestation(sim.root)


class TestGramineQuotes:
    def test_quote_carries_the_report_data(self, sim: SimulatedGramine) -> None:
        provider = GramineAttestation(sim.root)
        data = report_data(PEM, b"nonce")
        quote = parse_quote(provider.quote(data))
        assert quote.body.report_data == data
        assert sim.report_data == data

    def test_each_call_makes_a_fresh_quote(self, sim: SimulatedGramine) -> None:
        provider = GramineAttestation(sim.root)
        first = provider.quote(report_data(PEM, b"1"))
        second = provider.quote(report_data(PEM, b"2"))
        assert parse_quote(first).body.report_data != parse_quote(second).body.report_data
        assert sim.quotes_served == 2

    def test_content_is_made_at_open(self, sim: SimulatedGramine) -> None:
        (sim.root / "user_report_data").write_bytes(b"\x01" * 64)
        one = (sim.root / "quote").read_bytes()
        two = (sim.root / "quote").read_bytes()
        assert one != two  # new ECDSA signature each open
        assert parse_quote(one).body.report_data == parse_quote(two).body.report_data == b"\x01" * 64

    def test_short_write_is_zero_padded_and_long_write_truncated(self, sim: SimulatedGramine) -> None:
        (sim.root / "user_report_data").write_bytes(b"\x02" * 10)
        assert parse_quote((sim.root / "quote").read_bytes()).body.report_data == b"\x02" * 10 + bytes(54)
        (sim.root / "user_report_data").write_bytes(b"\x03" * 64 + b"\x04" * 10)
        assert parse_quote((sim.root / "quote").read_bytes()).body.report_data == b"\x03" * 64

    def test_report_data_must_be_64_bytes(self, sim: SimulatedGramine) -> None:
        provider = GramineAttestation(sim.root)
        with pytest.raises(ValueError, match="64 bytes"):
            provider.quote(b"short")
        with pytest.raises(ValueError, match="64 bytes"):
            NoAttestation().quote(bytes(65))

    def test_concurrent_callers_each_get_their_own_report_data(self, sim: SimulatedGramine) -> None:
        provider = GramineAttestation(sim.root)
        results: dict[int, bytes] = {}

        def worker(i: int) -> None:
            for round_ in range(3):
                data = report_data(PEM, f"{i}-{round_}".encode())
                results[i * 10 + round_] = parse_quote(provider.quote(data)).body.report_data
                assert results[i * 10 + round_] == data

        assert not errors_in_threads(worker, 6)
        assert len(results) == 18
        assert sim.quotes_served == 18

    @pytest.mark.parametrize("version", [4, 5])
    def test_other_quote_versions(self, tmp_path: Path, factory: QuoteFactory, version: int) -> None:
        with SimulatedGramine(tmp_path / "a", factory, quote_version=version) as sim:
            quote = parse_quote(GramineAttestation(sim.root).quote(report_data(PEM)))
        assert quote.version == version


@pytest.mark.skipif(eacces_target() is None, reason="no write-only sysctl to produce EACCES")
class TestEacces:
    def test_retries_then_succeeds(self, sim: SimulatedGramine) -> None:
        delays: list[float] = []

        def sleep(seconds: float) -> None:
            delays.append(seconds)
            if len(delays) == 2:
                sim.heal()

        provider = GramineAttestation(sim.root, retries=4, retry_delay=0.5, sleep=sleep)
        sim.fail_with_eacces()
        quote = provider.quote(report_data(PEM, b"x"))
        assert parse_quote(quote).body.report_data == report_data(PEM, b"x")
        assert delays == [0.5, 1.0]

    def test_gives_up_after_bounded_attempts(
        self, sim: SimulatedGramine, caplog: pytest.LogCaptureFixture
    ) -> None:
        delays: list[float] = []
        provider = GramineAttestation(sim.root, retries=3, retry_delay=0.1, sleep=delays.append)
        sim.fail_with_eacces()
        with (
            caplog.at_level(logging.WARNING),
            pytest.raises(QuoteGenerationError, match="refused 3 times") as info,
        ):
            provider.quote(report_data(PEM))
        assert delays == [0.1, 0.2]
        assert "aesmd" in info.value.diagnostics()
        assert caplog.text.count("EACCES") == 3

    def test_other_errors_are_not_retried(self, sim: SimulatedGramine) -> None:
        delays: list[float] = []
        provider = GramineAttestation(sim.root, sleep=delays.append)
        (sim.root / "quote").unlink()
        with pytest.raises(QuoteGenerationError, match="quote generation failed"):
            provider.quote(report_data(PEM))
        assert delays == []

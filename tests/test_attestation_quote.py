"""Quote parsing: DCAP v3/v4/v5 and EPID layouts, and one clear error for any bad input."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from avalon_worker.attestation import (
    DcapQuote,
    EpidQuote,
    QuoteParseError,
    UnsupportedQuoteError,
    parse_quote,
)

from attestation_fixtures import (
    FLAGS_DEBUG,
    ISV_PROD_ID,
    MRENCLAVE,
    MRSIGNER,
    OFF_SIG_DATA,
    QuoteFactory,
    epid_quote,
)

REAL_QUOTE = Path(__file__).parent / "data" / "attestation" / "dcap_qvl_sgx_quote.bin"
REPORT_DATA = bytes(range(64))


@pytest.fixture(scope="module")
def v3(factory: QuoteFactory) -> bytes:
    return factory.quote(REPORT_DATA)


class TestDcapLayouts:
    @pytest.mark.parametrize("version", [3, 4, 5])
    def test_report_body_fields(self, factory: QuoteFactory, version: int) -> None:
        quote = parse_quote(factory.quote(REPORT_DATA, version=version, isv_svn=9))
        assert isinstance(quote, DcapQuote)
        assert quote.version == version
        assert quote.body.mrenclave == MRENCLAVE
        assert quote.body.mrsigner == MRSIGNER
        assert quote.body.isv_prod_id == ISV_PROD_ID
        assert quote.body.isv_svn == 9
        assert quote.body.report_data == REPORT_DATA
        assert quote.body.debug is False

    @pytest.mark.parametrize(
        ("version", "signed_len", "body_type"), [(3, 432, None), (4, 432, None), (5, 438, 1)]
    )
    def test_signed_span_includes_v5_body_descriptor(
        self, factory: QuoteFactory, version: int, signed_len: int, body_type: int | None
    ) -> None:
        raw = factory.quote(REPORT_DATA, version=version)
        quote = parse_quote(raw)
        assert isinstance(quote, DcapQuote)
        assert quote.signed_data == raw[:signed_len]
        assert quote.body_type == body_type

    @pytest.mark.parametrize("version", [3, 4, 5])
    def test_signature_data_is_flattened_for_every_version(self, factory: QuoteFactory, version: int) -> None:
        quote = parse_quote(factory.quote(REPORT_DATA, version=version))
        assert isinstance(quote, DcapQuote)
        sig = quote.signature_data
        assert len(sig.signature) == 64 and len(sig.attestation_key) == 64
        assert sig.qe_auth_data == factory.qe_auth_data
        assert sig.qe_report.isv_prod_id == 1
        assert sig.certification_data.cert_type == 5
        assert len(sig.certification_data.pem_certificates()) == 3

    def test_header_fields(self, v3: bytes) -> None:
        quote = parse_quote(v3)
        assert isinstance(quote, DcapQuote)
        assert quote.header.att_key_type == 2
        assert quote.header.tee_type == 0
        assert quote.header.qe_svn == 10
        assert quote.header.qe_vendor_id.hex() == "939a7233f79c4ca9940a0db3957f0607"

    def test_debug_flag(self, factory: QuoteFactory) -> None:
        quote = parse_quote(factory.quote(REPORT_DATA, flags=FLAGS_DEBUG))
        assert quote.body.debug is True
        assert quote.body.flags == FLAGS_DEBUG


class TestEpid:
    def test_epid_quote_with_signature(self) -> None:
        raw = epid_quote(REPORT_DATA, signature=b"\xab" * 680)
        quote = parse_quote(raw)
        assert isinstance(quote, EpidQuote)
        assert quote.header.version == 2
        assert quote.header.sign_type == 1
        assert quote.header.basename == bytes(range(32))
        assert quote.body.report_data == REPORT_DATA
        assert quote.signature == b"\xab" * 680

    def test_ias_quote_body_without_signature(self) -> None:
        quote = parse_quote(epid_quote(REPORT_DATA)[:432])
        assert isinstance(quote, EpidQuote)
        assert quote.signature == b""
        assert quote.body.mrenclave == MRENCLAVE

    def test_epid_signature_length_must_match(self) -> None:
        with pytest.raises(QuoteParseError, match="EPID signature"):
            parse_quote(epid_quote(REPORT_DATA, signature=b"x" * 10)[:-1])


class TestMalformedInput:
    def test_every_truncation_raises_parse_error(self, v3: bytes) -> None:
        for length in range(len(v3)):
            with pytest.raises(QuoteParseError):
                parse_quote(v3[:length])

    def test_trailing_bytes_are_refused(self, v3: bytes) -> None:
        with pytest.raises(QuoteParseError, match="signature data length"):
            parse_quote(v3 + b"\x00")

    def test_signature_length_too_long(self, v3: bytes) -> None:
        bad = v3[:432] + struct.pack("<I", len(v3) - 436 + 1) + v3[436:]
        with pytest.raises(QuoteParseError, match="signature data length says"):
            parse_quote(bad)

    def test_trailing_bytes_inside_signature_data(self, v3: bytes) -> None:
        sig = v3[436:] + b"\x00"
        with pytest.raises(QuoteParseError, match="trailing"):
            parse_quote(v3[:432] + struct.pack("<I", len(sig)) + sig)

    def test_empty_quote_says_it_is_empty(self) -> None:
        with pytest.raises(QuoteParseError, match="empty"):
            parse_quote(b"")

    @pytest.mark.parametrize("version", [0, 6, 0xFFFF])
    def test_unknown_version(self, v3: bytes, version: int) -> None:
        with pytest.raises(QuoteParseError, match="unknown quote version"):
            parse_quote(struct.pack("<H", version) + v3[2:])

    def test_a_v3_quote_cannot_carry_a_td_report(self, v3: bytes) -> None:
        with pytest.raises(QuoteParseError, match="v3 quote cannot carry a TD report"):
            parse_quote(struct.pack("<HHI", 3, 2, 0x81) + v3[8:])

    def test_unknown_tee_type(self, v3: bytes) -> None:
        with pytest.raises(QuoteParseError, match="unknown TEE type 0x7"):
            parse_quote(struct.pack("<HHI", 4, 2, 7) + v3[8:])

    def test_v5_body_type_must_fit_the_tee_type(self, factory: QuoteFactory) -> None:
        raw = bytearray(factory.quote(REPORT_DATA, version=5))
        struct.pack_into("<H", raw, 48, 2)
        with pytest.raises(QuoteParseError, match="body type 2 does not fit TEE type 0x0"):
            parse_quote(bytes(raw))

    def test_v5_unknown_body_type(self, factory: QuoteFactory) -> None:
        raw = bytearray(factory.quote(REPORT_DATA, version=5))
        struct.pack_into("<H", raw, 48, 9)
        with pytest.raises(QuoteParseError, match="unknown v5 body type 9"):
            parse_quote(bytes(raw))

    def test_v5_body_size_must_be_384(self, factory: QuoteFactory) -> None:
        raw = bytearray(factory.quote(REPORT_DATA, version=5))
        struct.pack_into("<I", raw, 50, 383)
        with pytest.raises(QuoteParseError, match="body type 1 must be 384 bytes, the quote says 383"):
            parse_quote(bytes(raw))

    def test_p384_attestation_key_is_unsupported(self, v3: bytes) -> None:
        with pytest.raises(UnsupportedQuoteError, match="P384"):
            parse_quote(v3[:2] + struct.pack("<H", 3) + v3[4:])

    def test_v4_requires_qe_report_certification_data(self, factory: QuoteFactory) -> None:
        raw = bytearray(factory.quote(REPORT_DATA, version=4))
        struct.pack_into("<H", raw, OFF_SIG_DATA + 128, 5)
        with pytest.raises(QuoteParseError, match="expected 6"):
            parse_quote(bytes(raw))

    def test_oversized_input_refused_before_parsing(self, v3: bytes) -> None:
        with pytest.raises(QuoteParseError, match="limit"):
            parse_quote(v3, max_size=1000)

    def test_not_bytes(self) -> None:
        with pytest.raises(QuoteParseError, match="bytes"):
            parse_quote("AwACAA==")  # type: ignore[arg-type]

    @settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
    @given(st.binary(max_size=2000))
    def test_arbitrary_bytes_parse_or_raise_parse_error(self, data: bytes) -> None:
        try:
            parse_quote(data)
        except QuoteParseError:
            pass

    @settings(
        max_examples=300, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
    )
    @given(st.lists(st.tuples(st.integers(0, 5000), st.integers(0, 255)), min_size=1, max_size=8))
    def test_corrupted_quotes_parse_or_raise_parse_error(
        self, v3: bytes, edits: list[tuple[int, int]]
    ) -> None:
        raw = bytearray(v3)
        for offset, value in edits:
            raw[offset % len(raw)] = value
        try:
            parse_quote(bytes(raw))
        except QuoteParseError:
            pass


class TestRealQuote:
    def test_real_intel_quote_fields(self) -> None:
        quote = parse_quote(REAL_QUOTE.read_bytes())
        assert isinstance(quote, DcapQuote)
        assert quote.version == 3
        assert quote.header.qe_svn == 10 and quote.header.pce_svn == 15
        assert (
            quote.body.mrenclave.hex() == "33d8736db756ed4997e04ba358d27833188f1932ff7b1d156904d3f560452fbb"
        )
        assert quote.body.debug is False
        assert quote.signature_data.certification_data.cert_type == 5
        assert len(quote.signature_data.certification_data.pem_certificates()) == 3

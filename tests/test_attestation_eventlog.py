"""Event logs and RTMR replay: the CCEL, the worker's published events, and TDX signups.

CCEL bytes are written here by a small independent writer (TCG PC Client crypto-agile format:
the SHA-1 "Spec ID Event03" event, then TCG_PCR_EVENT2 records), and RTMRs are extended with
hashlib by hand, so that the parser and the replay are checked against something they do not
share code with.
"""

from __future__ import annotations

import base64
import hashlib
import json
import struct
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from avalon_worker import crypto
from avalon_worker.attestation import (
    Collateral,
    EventLogError,
    StepStatus,
    parse_ccel,
    report_data,
    verify_evidence,
    verify_signup,
)
from avalon_worker.attestation.verifier import report as R
from avalon_worker.attestation.verifier._eventlog import event_digest, parse_worker_events, replay
from avalon_worker.attestation.verifier.policy import Policy

from attestation_fixtures import MRTD, RTMRS, QuoteFactory, TestPki, make_tdx_collateral

SHA256, SHA384 = 0x000B, 0x000C
EV_NO_ACTION, EV_SEPARATOR, EV_EFI_BOOT_SERVICES_APPLICATION = 3, 4, 0x80000003


def spec_id_event(algorithms: list[tuple[int, int]]) -> bytes:
    data = b"Spec ID Event03\x00" + struct.pack("<IBBBB", 0, 0, 2, 0, 2) + struct.pack("<I", len(algorithms))
    data += b"".join(struct.pack("<HH", alg, size) for alg, size in algorithms) + b"\x00"
    return struct.pack("<II", 0, EV_NO_ACTION) + bytes(20) + struct.pack("<I", len(data)) + data


def event2(mr_index: int, event_type: int, data: bytes, algorithms: list[tuple[int, int]]) -> bytes:
    digests = b""
    for alg, _size in algorithms:
        digests += struct.pack("<H", alg) + (hashlib.sha256(data).digest() if alg == SHA256 else hashlib.sha384(data).digest())
    return struct.pack("<III", mr_index, event_type, len(algorithms)) + digests + struct.pack("<I", len(data)) + data


def ccel(events: list[tuple[int, int, bytes]], *, algorithms: list[tuple[int, int]] | None = None,
         padding: bytes = b"") -> bytes:
    algorithms = algorithms or [(SHA384, 48)]
    return spec_id_event(algorithms) + b"".join(event2(i, t, d, algorithms) for i, t, d in events) + padding


def extend_by_hand(*datas: bytes, start: bytes = bytes(48)) -> bytes:
    value = start
    for data in datas:
        value = hashlib.sha384(value + hashlib.sha384(data).digest()).digest()
    return value


BOOT = [
    (1, EV_EFI_BOOT_SERVICES_APPLICATION, b"firmware config"),
    (2, EV_EFI_BOOT_SERVICES_APPLICATION, b"kernel image"),
    (1, EV_SEPARATOR, b"\x00\x00\x00\x00"),
    (0, EV_NO_ACTION, b"a note that extends nothing"),
    (3, EV_EFI_BOOT_SERVICES_APPLICATION, b"console=ttyS0 initrd"),
]
BOOT_RTMRS = (
    extend_by_hand(b"firmware config", b"\x00\x00\x00\x00"),
    extend_by_hand(b"kernel image"),
    extend_by_hand(b"console=ttyS0 initrd"),
)


class TestCcel:
    def test_events_and_replay(self) -> None:
        log = parse_ccel(ccel(BOOT))
        assert log.algorithms == {SHA384: 48}
        assert [(e.mr_index, e.event_type, e.data) for e in log.events] == BOOT
        assert [e.rtmr for e in log.events] == [0, 1, 0, None, 2]
        assert replay(log.rtmr_events()) == dict(enumerate(BOOT_RTMRS))

    @pytest.mark.parametrize("padding", [b"", b"\xff" * 4096, bytes(4096)])
    def test_the_log_area_after_the_last_event_is_padding(self, padding: bytes) -> None:
        assert len(parse_ccel(ccel(BOOT, padding=padding)).events) == len(BOOT)

    def test_several_algorithms(self) -> None:
        log = parse_ccel(ccel(BOOT, algorithms=[(SHA256, 32), (SHA384, 48)]))
        assert log.events[1].digests[SHA256] == hashlib.sha256(b"kernel image").digest()
        assert replay(log.rtmr_events()) == dict(enumerate(BOOT_RTMRS))

    def test_replay_from_a_start_value(self) -> None:
        start = hashlib.sha384(b"before").digest()
        assert replay([(3, hashlib.sha384(b"x").digest())], start={3: start}) == {3: extend_by_hand(b"x", start=start)}

    @pytest.mark.parametrize(
        ("log", "message"),
        [
            (b"CCEL" + bytes(52), "the CCEL ACPI table, not the log"),
            (struct.pack("<II", 0, 1) + bytes(100), "not EV_NO_ACTION"),
            (spec_id_event([(SHA384, 48)]).replace(b"Spec ID Event03", b"Spec ID Event02"), "Spec ID Event03"),
            (spec_id_event([(SHA256, 32)]), "no SHA-384 digests"),
            (ccel([(7, EV_SEPARATOR, b"x")]), "MR index 7"),
            (ccel([(1, 5, b"x")], algorithms=[(SHA384, 48)]).replace(struct.pack("<H", SHA384) + hashlib.sha384(b"x").digest(),
                                                                      struct.pack("<H", 0x0D) + hashlib.sha384(b"x").digest()),
             "algorithm 0x000d"),
        ],
    )
    def test_malformed_logs_say_what_is_wrong(self, log: bytes, message: str) -> None:
        with pytest.raises(EventLogError, match=message):
            parse_ccel(log)

    def test_every_truncation_is_an_event_log_error(self) -> None:
        raw = ccel(BOOT)
        for length in range(0, len(raw) - 1):
            try:
                parse_ccel(raw[:length])
            except EventLogError:
                continue
            # A cut exactly between two events is a shorter, well-formed log.
            assert len(parse_ccel(raw[:length]).events) < len(BOOT)

    @settings(max_examples=300, deadline=None)
    @given(st.lists(st.tuples(st.integers(0, 2000), st.integers(0, 255)), min_size=1, max_size=6))
    def test_corrupted_logs_raise_only_event_log_errors(self, edits: list[tuple[int, int]]) -> None:
        raw = bytearray(ccel(BOOT))
        for offset, value in edits:
            raw[offset % len(raw)] = value
        try:
            parse_ccel(bytes(raw))
        except EventLogError:
            pass


def worker_event(data: Any, *, rtmr: int = 3, name: str = "avalon-worker code") -> dict[str, Any]:
    canonical = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()
    return {"rtmr": rtmr, "digest": hashlib.sha384(canonical).hexdigest(), "event": name, "data": data}


CODE = {"files": {"avalon_worker/core.py": "ab" * 32}, "config": {"workers": 1}, "note": "café"}


class TestWorkerEvents:
    def test_digest_is_sha384_of_canonical_json(self) -> None:
        (event,) = parse_worker_events([worker_event(CODE)])
        assert event.digest == event_digest(CODE) == bytes.fromhex(worker_event(CODE)["digest"])
        assert event.rtmr == 3 and event.event == "avalon-worker code"

    @pytest.mark.parametrize(
        ("events", "message"),
        [
            ({"rtmr": 3}, "must be a list"),
            ([{"rtmr": 3, "digest": "00"}], "exactly rtmr, digest, event and data"),
            ([{**worker_event(CODE), "rtmr": 4}], "RTMR 4"),
            ([{**worker_event(CODE), "rtmr": True}], "RTMR True"),
            ([{**worker_event(CODE), "digest": "zz"}], "not hex"),
            ([{**worker_event(CODE), "digest": "00" * 32}], "48 bytes"),
            ([{**worker_event(CODE), "event": 7}], "no event name"),
            ([{**worker_event(CODE), "data": {**CODE, "config": {"workers": 2}}}], "not the SHA-384 of its data"),
        ],
    )
    def test_bad_events(self, events: Any, message: str) -> None:
        with pytest.raises(EventLogError, match=message):
            parse_worker_events(events)


def td_policy(**extra: Any) -> Policy:
    return Policy.from_dict({"tdx": {"mrtd": MRTD.hex(), "rtmr1": RTMRS[1].hex(), **extra}})


class TestTdxReplay:
    def test_ccel_and_worker_events_replay_to_the_quote(self, factory: QuoteFactory, pki: TestPki) -> None:
        rtmr3 = extend_by_hand(json.dumps(CODE, sort_keys=True, separators=(",", ":")).encode())
        raw = factory.tdx_quote(rtmr0=BOOT_RTMRS[0], rtmr1=BOOT_RTMRS[1], rtmr2=BOOT_RTMRS[2], rtmr3=rtmr3)
        code_digest = worker_event(CODE)["digest"]
        policy = Policy.from_dict({"tdx": {"mrtd": MRTD.hex(), "rtmr1": BOOT_RTMRS[1].hex(),
                                           "rtmr3": {"allowed_event_digests": [code_digest]}}})
        report = verify_evidence(raw, policy, collateral=Collateral.from_dict(make_tdx_collateral(pki)),
                                 root_ca=pki.root, now=pki.now, event_log=ccel(BOOT), rtmr_events=[worker_event(CODE)])
        assert report.ok, report.render()
        assert report.step(R.STEP_EVENT_LOG).detail == (
            "RTMR0, RTMR1, RTMR2, RTMR3 replayed from 5 CCEL events and 1 worker events (avalon-worker code)"
        )

    def test_a_log_that_does_not_replay_fails(self, factory: QuoteFactory, pki: TestPki) -> None:
        raw = factory.tdx_quote()  # RTMRs of another boot
        report = verify_evidence(raw, None, root_ca=pki.root, now=pki.now, event_log=ccel(BOOT))
        step = report.step(R.STEP_EVENT_LOG)
        assert step.status is StepStatus.FAIL
        assert f"RTMR1 replays to {BOOT_RTMRS[1].hex()}, the quote says {RTMRS[1].hex()}" in step.detail

    def test_an_unparsable_log_fails_its_step(self, factory: QuoteFactory, pki: TestPki) -> None:
        report = verify_evidence(factory.tdx_quote(), None, root_ca=pki.root, now=pki.now, event_log=b"junk" * 10)
        assert report.step(R.STEP_EVENT_LOG).status is StepStatus.FAIL

    def test_worker_code_not_allowed(self, factory: QuoteFactory, pki: TestPki) -> None:
        rtmr3 = extend_by_hand(json.dumps(CODE, sort_keys=True, separators=(",", ":")).encode())
        raw = factory.tdx_quote(rtmr3=rtmr3)
        report = verify_evidence(raw, td_policy(rtmr3={"allowed_event_digests": ["11" * 48]}),
                                 root_ca=pki.root, now=pki.now, rtmr_events=[worker_event(CODE)])
        assert "RTMR3 holds events the policy does not allow" in report.step(R.STEP_TD_MEASUREMENTS).detail
        assert report.step(R.STEP_EVENT_LOG).status is StepStatus.PASS

    def test_rtmr3_start_for_what_extended_it_before_the_worker(self, factory: QuoteFactory, pki: TestPki) -> None:
        start = hashlib.sha384(b"the platform's own RTMR3 events").digest()
        payload = json.dumps(CODE, sort_keys=True, separators=(",", ":")).encode()
        raw = factory.tdx_quote(rtmr3=extend_by_hand(payload, start=start))
        digest = worker_event(CODE)["digest"]
        without = verify_evidence(raw, td_policy(rtmr3={"allowed_event_digests": [digest]}),
                                  root_ca=pki.root, now=pki.now, rtmr_events=[worker_event(CODE)])
        assert without.step(R.STEP_EVENT_LOG).status is StepStatus.FAIL
        with_start = verify_evidence(raw, td_policy(rtmr3={"allowed_event_digests": [digest], "start": start.hex()}),
                                     root_ca=pki.root, now=pki.now, rtmr_events=[worker_event(CODE)])
        assert with_start.step(R.STEP_EVENT_LOG).status is StepStatus.PASS
        assert with_start.step(R.STEP_TD_MEASUREMENTS).status is StepStatus.PASS


def tdx_signup(factory: QuoteFactory, nonce: bytes | None, **fields: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """A TDX signup as the contract describes it: the quote, the keys and the RTMR3 events."""
    key = crypto.SigningKey.generate()
    encryption_pem = crypto.public_pem(crypto.generate_rsa_key(2048))
    vk = key.verifying_key_pem
    events = [worker_event(CODE)]
    rtmr3 = extend_by_hand(json.dumps(CODE, sort_keys=True, separators=(",", ":")).encode())
    signup = {
        "sealed_data": "",
        "verifying_key": vk,
        "encryption_key": encryption_pem,
        "encryption_key_signature": key.sign_digest(crypto.sha256(encryption_pem.encode())).hex(),
        "mrenclave": "",
        "attestation_type": "tdx",
        "quote": base64.b64encode(factory.tdx_quote(report_data(vk, nonce), rtmr3=rtmr3)).decode(),
        "tdx_rtmr_events": events,
        "tdx_rtmr_extended": True,
    }
    signup.update(fields)
    return signup, events[0]


class TestTdxSignup:
    NONCE = b"requester nonce"

    def check(self, signup: dict[str, Any], pki: TestPki, policy: Policy | None = None, nonce: bytes | None = NONCE):
        return verify_signup(signup, policy or td_policy(rtmr3={"allowed_event_digests": [worker_event(CODE)["digest"]]}),
                             nonce=nonce, collateral=Collateral.from_dict(make_tdx_collateral(pki)),
                             root_ca=pki.root, now=pki.now)

    def test_a_fresh_tdx_signup_verifies(self, factory: QuoteFactory, pki: TestPki) -> None:
        signup, _ = tdx_signup(factory, self.NONCE)
        report = self.check(signup, pki)
        assert report.ok, report.render()
        assert report.tee == "tdx"
        names = [s.name for s in report.steps]
        assert names[-4:] == [R.STEP_EVENT_LOG, R.STEP_REPORT_DATA, R.STEP_SIGNUP_ATTESTATION_TYPE, R.STEP_ENCRYPTION_KEY]

    def test_replayed_signup_fails_freshness(self, factory: QuoteFactory, pki: TestPki) -> None:
        signup, _ = tdx_signup(factory, b"old nonce")
        assert {s.name for s in self.check(signup, pki).failures} == {R.STEP_REPORT_DATA}

    def test_published_events_that_lie_about_the_code(self, factory: QuoteFactory, pki: TestPki) -> None:
        other = {**CODE, "config": {"workers": 9}}
        signup, _ = tdx_signup(factory, self.NONCE, tdx_rtmr_events=[worker_event(other)])
        report = self.check(signup, pki, policy=td_policy(rtmr3={"allowed_event_digests": [worker_event(other)["digest"]]}))
        assert report.step(R.STEP_EVENT_LOG).status is StepStatus.FAIL
        assert R.STEP_TD_MEASUREMENTS in {s.name for s in report.failures}

    def test_edited_event_data_is_caught_before_replay(self, factory: QuoteFactory, pki: TestPki) -> None:
        signup, event = tdx_signup(factory, self.NONCE)
        signup["tdx_rtmr_events"] = [{**event, "data": {**CODE, "note": "edited"}}]
        report = self.check(signup, pki)
        assert "not the SHA-384 of its data" in report.step(R.STEP_EVENT_LOG).detail

    def test_a_worker_that_could_not_extend_says_so(self, factory: QuoteFactory, pki: TestPki) -> None:
        signup, _ = tdx_signup(factory, self.NONCE, tdx_rtmr_extended=False, tdx_rtmr_events=[],
                               tdx_rtmr_note="this kernel has no TDX RTMR sysfs interface (Linux >= 6.16)")
        signup["quote"] = base64.b64encode(
            factory.tdx_quote(report_data(signup["verifying_key"], self.NONCE))).decode()
        required = self.check(signup, pki)
        assert "the worker says: this kernel has no TDX RTMR sysfs interface" in \
            required.step(R.STEP_TD_MEASUREMENTS).detail
        relaxed = self.check(signup, pki, policy=td_policy())
        assert relaxed.ok, relaxed.render()
        assert "RTMR3 does not bind the worker's code: this kernel has no TDX RTMR sysfs interface" in \
            relaxed.step(R.STEP_TD_MEASUREMENTS).detail

    def test_the_signup_must_name_its_kind(self, factory: QuoteFactory, pki: TestPki) -> None:
        signup, _ = tdx_signup(factory, self.NONCE, attestation_type="gramine")
        report = self.check(signup, pki)
        assert {s.name for s in report.failures} == {R.STEP_SIGNUP_ATTESTATION_TYPE}
        signup, _ = tdx_signup(factory, self.NONCE, mrenclave="ab" * 32)
        assert {s.name for s in self.check(signup, pki).failures} == {R.STEP_SIGNUP_ATTESTATION_TYPE}

    def test_events_without_the_extended_flag(self, factory: QuoteFactory, pki: TestPki) -> None:
        signup, _ = tdx_signup(factory, self.NONCE)
        del signup["tdx_rtmr_extended"]
        assert "tdx_rtmr_extended" in self.check(signup, pki).step(R.STEP_EVENT_LOG).detail

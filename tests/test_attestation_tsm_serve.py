"""`avalon-worker serve --attestation tdx|snp` as a real process, against the configfs-tsm stand-in.

The signup must carry the evidence bound to the worker's keys, and on TDX the RTMR3 events whose
replay gives the quote's RTMR3; a machine that cannot attest must stop the worker with one
clear message, exit status 2 and no identity made.
"""

from __future__ import annotations

import base64
import hashlib
import json
import struct
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from avalon_worker.attestation import report_data
from avalon_worker.attestation.verifier.report import StepStatus
from avalon_worker.attestation.verifier.snp import SnpPolicy, split_snp_evidence, verify_snp_evidence

import snp_fixtures
from conftest import RunningWorker, launch_worker, run_cli
from sim_tsm import SNP, TDX, SimulatedTsm, framed_snp_report

pytestmark = pytest.mark.slow

NONCE = bytes.fromhex("5eed" * 16)


def serve_options(sim: SimulatedTsm, kind: str) -> list[str]:
    return ["--attestation", kind, "--tsm-report-dir", str(sim.report_dir),
            "--tdx-measurements-dir", str(sim.measurements_dir), "--workers", "1"]


def nonce_frame(nonce: bytes) -> str:
    return json.dumps({"jsonrpc": "2.0", "id": 2, "method": "ProcessWorkerSignup", "params": {"nonce": nonce.hex()}})


def evidence_of(signup: dict) -> bytes:
    return base64.b64decode(signup["quote"])


def td_field(quote: bytes, offset: int, size: int) -> bytes:
    body = 48 if struct.unpack_from("<H", quote)[0] == 4 else 54
    return quote[body + offset : body + offset + size]


def replay_events(events: list[dict]) -> bytes:
    """A requester's replay, written from the signup's description alone."""
    value = bytes(48)
    for event in events:
        canonical = json.dumps(event["data"], sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()
        assert hashlib.sha384(canonical).hexdigest() == event["digest"]
        value = hashlib.sha384(value + bytes.fromhex(event["digest"])).digest()
    return value


@pytest.fixture(scope="module")
def tdx_worker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningWorker, SimulatedTsm]]:
    folder = tmp_path_factory.mktemp("tdx")
    with SimulatedTsm(folder / "kernel", TDX) as sim:
        worker = launch_worker(folder / "state", serve_options(sim, "tdx"))
        try:
            yield worker, sim
        finally:
            worker.stop()


@pytest.fixture(scope="module")
def snp_worker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningWorker, SimulatedTsm]]:
    folder = tmp_path_factory.mktemp("snp")
    with SimulatedTsm(folder / "kernel", SNP, measurements=False) as sim:
        worker = launch_worker(folder / "state", serve_options(sim, "snp"))
        try:
            yield worker, sim
        finally:
            worker.stop()


class TestTdxWorker:
    def test_the_signup_carries_a_tdx_quote_bound_to_the_keys(self, tdx_worker) -> None:
        worker, _ = tdx_worker
        signup = worker.signup()
        assert signup["attestation_type"] == "tdx" and signup["mrenclave"] == ""
        quote = evidence_of(signup)
        assert struct.unpack_from("<HHI", quote) == (4, 2, 0x81)
        assert td_field(quote, 520, 64) == report_data(signup["verifying_key"])

    def test_the_rtmr3_events_replay_to_the_quotes_rtmr3(self, tdx_worker) -> None:
        worker, sim = tdx_worker
        signup = worker.signup()
        assert signup["tdx_rtmr_extended"] is True and "tdx_rtmr_note" not in signup
        events = signup["tdx_rtmr_events"]
        assert [(e["rtmr"], e["event"]) for e in events] == [(3, "avalon-worker code")]
        assert replay_events(events) == td_field(evidence_of(signup), 472, 48) == sim.rtmr[3]
        data = events[0]["data"]
        assert data["configuration"]["insecure_reuse_session_iv"] is False
        assert "avalon_worker/attestation/measure.py" in data["worker"]["files"]
        assert data["workloads"]["registry"] == "built-in"

    def test_anyone_can_compute_the_event_a_worker_with_these_options_extends(
        self, tdx_worker, tmp_path: Path
    ) -> None:
        worker, _ = tdx_worker
        done = run_cli("serve", "--print-code-measurement", "--workers", "1", "--state-dir", str(tmp_path / "s"))
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout) == worker.signup()["tdx_rtmr_events"][0]
        assert not (tmp_path / "s").exists()
        other = run_cli("serve", "--print-code-measurement", "--workers", "1", "--timeout-s", "5",
                        "--state-dir", str(tmp_path / "s"))
        assert json.loads(other.stdout)["digest"] != json.loads(done.stdout)["digest"]

    def test_a_nonce_signup_is_a_fresh_quote_and_rtmr3_is_extended_only_once(self, tdx_worker) -> None:
        worker, sim = tdx_worker
        made = sim.reports_made
        signup = worker.call(nonce_frame(NONCE))
        quote = evidence_of(signup)
        assert td_field(quote, 520, 64) == report_data(signup["verifying_key"], NONCE)
        assert sim.reports_made > made
        assert len(sim.extensions) == 1  # at start, not per process nor per signup

    def test_the_sample_work_orders_are_served(self, tdx_worker) -> None:
        worker, _ = tdx_worker
        sample = Path(__file__).with_name("test_work_orders.json")
        done = run_cli("run-orders", "--endpoint", worker.endpoint, str(sample))
        assert done.returncode == 0, done.stdout + done.stderr
        assert "9 of 9 work orders verified" in done.stdout


class TestSnpWorker:
    def test_the_signup_carries_the_report_and_the_hosts_certificates(self, snp_worker) -> None:
        worker, _ = snp_worker
        signup = worker.signup()
        assert signup["attestation_type"] == "snp" and signup["mrenclave"] == ""
        evidence = evidence_of(signup)
        assert len(evidence) > 1184 and struct.unpack_from("<I", evidence)[0] >= 2
        assert evidence[0x50:0x90] == report_data(signup["verifying_key"])
        assert not [name for name in signup if name.startswith("tdx_")]

    def test_a_nonce_signup_binds_the_nonce(self, snp_worker) -> None:
        worker, _ = snp_worker
        signup = worker.call(nonce_frame(NONCE))
        assert evidence_of(signup)[0x50:0x90] == report_data(signup["verifying_key"], NONCE)

    def test_the_snp_verifier_passes_every_step_with_the_certificates_it_carries(self, snp_worker) -> None:
        worker, _ = snp_worker
        signup = worker.call(nonce_frame(NONCE))
        evidence = evidence_of(signup)
        _, carried = split_snp_evidence(evidence)
        pki, now = snp_fixtures.snp_pki(), datetime.now(timezone.utc)
        result = verify_snp_evidence(
            evidence,
            policy=SnpPolicy.from_dict({"measurements": [snp_fixtures.MEASUREMENT.hex()]}),
            expected_report_data=report_data(signup["verifying_key"], NONCE),
            certificates=carried,
            crls=[snp_fixtures.make_crl(pki, last_update=now - timedelta(days=1), next_update=now + timedelta(days=1))],
            now=now,
            trusted_arks=[pki.ark],
        )
        assert len(carried) == 3  # VCEK, ASK, ARK from the host's certificate table
        assert [(s.name, s.status) for s in result.steps if s.status is not StepStatus.PASS] == []


# -- machines that cannot attest: one message, exit 2, no identity -------------------------------------


def refused_start(tmp_path: Path, *options: str) -> str:
    state = tmp_path / "state"
    done = run_cli("serve", "--bind", "tcp://127.0.0.1:*", "--state-dir", str(state), "--rsa-bits", "2048", *options)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert not state.exists(), "no identity is made for a worker that cannot attest"
    errors = [line for line in done.stderr.splitlines() if line.startswith("avalon-worker: ")]
    assert len(errors) == 1, done.stderr
    return done.stderr


def test_no_configfs(tmp_path: Path) -> None:
    stderr = refused_start(tmp_path, "--attestation", "tdx", "--tsm-report-dir", str(tmp_path / "config/tsm/report"))
    assert "configfs is not mounted" in stderr and "Linux >= 6.7" in stderr


def test_a_kernel_without_the_driver(tmp_path: Path) -> None:
    with SimulatedTsm(tmp_path / "kernel", provider=None) as sim:
        stderr = refused_start(tmp_path, "--attestation", "snp", "--tsm-report-dir", str(sim.report_dir))
    assert "no attestation provider registered" in stderr and "sev_guest" in stderr


def test_a_provider_of_the_wrong_kind(tmp_path: Path) -> None:
    with SimulatedTsm(tmp_path / "kernel", TDX) as sim:
        stderr = refused_start(tmp_path, "--attestation", "snp", "--tsm-report-dir", str(sim.report_dir))
    assert "provider is tdx_guest (Intel TDX), not sev_guest" in stderr and "--attestation tdx" in stderr


@pytest.mark.parametrize(
    ("outblob", "message"),
    [(framed_snp_report(bytes(64))[:600], "600 bytes is not the size of an SEV-SNP report"),
     (bytes(40000), "larger than the kernel's 32768-byte limit")],
)
def test_a_short_or_oversized_outblob(tmp_path: Path, outblob: bytes, message: str) -> None:
    with SimulatedTsm(tmp_path / "kernel", SNP) as sim:
        sim.outblob_override = outblob
        stderr = refused_start(tmp_path, "--attestation", "snp", "--tsm-report-dir", str(sim.report_dir))
    assert message in stderr


def test_a_generation_race_that_never_settles(tmp_path: Path) -> None:
    with SimulatedTsm(tmp_path / "kernel", TDX) as sim:
        sim.interfere = 1000
        stderr = refused_start(tmp_path, "--attestation", "tdx", "--tsm-report-dir", str(sim.report_dir))
        assert sim.reports_made == 3 and not list(sim.report_dir.iterdir())
    assert "disturbed by another writer" in stderr

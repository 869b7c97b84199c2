"""The whole chain on TDX and SEV-SNP, with real processes: `avalon-worker serve --attestation tdx|snp`
reporting through the configfs-tsm stand-in (evidence signed under the test PKIs), then
`avalon-worker verify` and `run-orders --policy` checking the key binding, the policy and, on TDX,
the worker's RTMR3 events replayed against the quote.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.serialization import Encoding

import attestation_fixtures as fixtures
import snp_fixtures
from conftest import RunningWorker, launch_worker, run_cli
from sim_tsm import SNP, TDX, SimulatedTsm

pytestmark = pytest.mark.slow

SAMPLE = Path(__file__).with_name("test_work_orders.json")


def code_event(*options: str) -> dict:
    """The event a TDX worker with `options` extends, computed without one (as a requester would)."""
    done = run_cli("serve", "--print-code-measurement", "--workers", "1", *options)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def tdx_policy(*allowed_events: dict) -> dict:
    return {
        "tdx": {
            "mrtd": [fixtures.MRTD.hex()],
            "rtmr0": [fixtures.RTMRS[0].hex()],
            "rtmr1": [fixtures.RTMRS[1].hex()],
            "rtmr2": [fixtures.RTMRS[2].hex()],
            "rtmr3": {"allowed_event_digests": [event["digest"] for event in allowed_events]},
        }
    }


def verify(folder: Path, source: list[str], policy: str, *extra: str):
    return run_cli("verify", *source, "--policy", str(folder / policy), "--collateral",
                   str(folder / "collateral.json"), "--insecure-root-ca", str(folder / "root.pem"), *extra)


@pytest.fixture(scope="module")
def tdx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningWorker, SimulatedTsm, Path]]:
    folder = tmp_path_factory.mktemp("tdx")
    pki = fixtures.shared_pki()  # the stand-in signs its quotes under this one
    (folder / "root.pem").write_bytes(pki.root.public_bytes(Encoding.PEM))
    (folder / "collateral.json").write_text(json.dumps(fixtures.make_tdx_collateral(pki)))
    expected = code_event()
    (folder / "policy.json").write_text(json.dumps(tdx_policy(expected)))
    (folder / "other-code.json").write_text(json.dumps(tdx_policy(code_event("--timeout-s", "5"))))
    with SimulatedTsm(folder / "kernel", TDX, mrtd=fixtures.MRTD) as sim:
        sim.rtmr[:3] = fixtures.RTMRS[:3]
        options = ["--attestation", "tdx", "--tsm-report-dir", str(sim.report_dir),
                   "--tdx-measurements-dir", str(sim.measurements_dir), "--workers", "1"]
        worker = launch_worker(folder / "state", options)
        try:
            yield worker, sim, folder
        finally:
            worker.stop()


class TestTdx:
    def test_verify_passes_the_worker_whose_code_event_the_policy_allows(self, tdx) -> None:
        worker, _, folder = tdx
        done = verify(folder, ["--endpoint", worker.endpoint], "policy.json", "--json")
        assert done.returncode == 0, done.stdout + done.stderr
        report = json.loads(done.stdout)
        assert report["tee"] == "tdx" and report["verdict"] == "VERIFIED"

    def test_a_policy_for_other_code_refuses_it(self, tdx) -> None:
        worker, _, folder = tdx
        done = verify(folder, ["--endpoint", worker.endpoint], "other-code.json")
        assert done.returncode == 1
        assert "RTMR3" in done.stdout

    def test_an_event_altered_after_the_fact_fails_the_replay(self, tdx) -> None:
        worker, _, folder = tdx
        signup = worker.signup()
        signup["tdx_rtmr_events"][0]["data"]["configuration"]["timeout_s"] = 5.0
        (folder / "altered.json").write_text(json.dumps(signup))
        done = verify(folder, ["--signup", str(folder / "altered.json")], "policy.json")
        assert done.returncode == 1 and "Traceback" not in done.stderr

    def test_another_workers_keys_fail_the_binding(self, tdx, tmp_path: Path) -> None:
        worker, _, folder = tdx
        signup = worker.signup()
        other = launch_worker(tmp_path / "other-state")
        try:
            signup["verifying_key"] = other.signup()["verifying_key"]
        finally:
            other.stop()
        (folder / "stolen.json").write_text(json.dumps(signup))
        done = verify(folder, ["--signup", str(folder / "stolen.json")], "policy.json")
        assert done.returncode == 1

    def test_run_orders_sends_only_to_the_attested_worker(self, tdx) -> None:
        worker, _, folder = tdx
        done = run_cli("run-orders", "--endpoint", worker.endpoint, "--policy", str(folder / "policy.json"),
                       "--collateral", str(folder / "collateral.json"), "--insecure-root-ca",
                       str(folder / "root.pem"), str(SAMPLE))
        assert done.returncode == 0, done.stdout + done.stderr
        assert "9 of 9 work orders verified" in done.stdout and "passed attestation" in done.stderr


def test_a_tdx_worker_that_could_not_extend_rtmr3_is_not_verified(tmp_path: Path) -> None:
    pki = fixtures.shared_pki()
    (tmp_path / "root.pem").write_bytes(pki.root.public_bytes(Encoding.PEM))
    (tmp_path / "collateral.json").write_text(json.dumps(fixtures.make_tdx_collateral(pki)))
    (tmp_path / "policy.json").write_text(json.dumps(tdx_policy(code_event())))
    with SimulatedTsm(tmp_path / "kernel", TDX, measurements=False) as sim:
        sim.rtmr[:3] = fixtures.RTMRS[:3]
        worker = launch_worker(tmp_path / "state", ["--attestation", "tdx", "--tsm-report-dir", str(sim.report_dir),
                                                    "--tdx-measurements-dir", str(sim.measurements_dir)])
        try:
            assert worker.signup()["tdx_rtmr_extended"] is False
            done = verify(tmp_path, ["--endpoint", worker.endpoint], "policy.json")
        finally:
            worker.stop()
    assert done.returncode == 1
    assert "Linux >= 6.16" in done.stdout  # the worker's note reaches the requester


@pytest.fixture(scope="module")
def snp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningWorker, Path]]:
    folder = tmp_path_factory.mktemp("snp")
    pki = snp_fixtures.snp_pki()  # the stand-in's reports are signed by its VCEK
    (folder / "ark.pem").write_bytes(pki.ark.public_bytes(Encoding.PEM))
    now = datetime.now(timezone.utc)
    crl = snp_fixtures.make_crl(pki, last_update=now - timedelta(days=1), next_update=now + timedelta(days=30))
    (folder / "crl.pem").write_bytes(snp_fixtures.pem_bundle(crl))
    section = {"measurements": [snp_fixtures.MEASUREMENT.hex()], "host_data": snp_fixtures.HOST_DATA.hex()}
    (folder / "policy.json").write_text(json.dumps({"snp": section}))
    (folder / "other.json").write_text(json.dumps({"snp": {**section, "measurements": ["00" * 48]}}))
    with SimulatedTsm(folder / "kernel", SNP, measurements=False) as sim:
        worker = launch_worker(folder / "state", ["--attestation", "snp", "--tsm-report-dir", str(sim.report_dir)])
        try:
            yield worker, folder
        finally:
            worker.stop()


def verify_snp(folder: Path, worker: RunningWorker, policy: str, *extra: str):
    return run_cli("verify", "--endpoint", worker.endpoint, "--policy", str(folder / policy),
                   "--collateral", str(folder / "crl.pem"), "--insecure-amd-root", str(folder / "ark.pem"), *extra)


class TestSnp:
    def test_verify_passes_the_worker_with_the_certificates_it_carries(self, snp) -> None:
        worker, folder = snp
        done = verify_snp(folder, worker, "policy.json", "--json")
        assert done.returncode == 0, done.stdout + done.stderr
        report = json.loads(done.stdout)
        assert report["tee"] == "snp" and report["verdict"] == "VERIFIED"

    def test_a_policy_for_another_launch_measurement_refuses_it(self, snp) -> None:
        worker, folder = snp
        done = verify_snp(folder, worker, "other.json")
        assert done.returncode == 1
        assert snp_fixtures.MEASUREMENT.hex() in done.stdout  # the message names what it saw

    def test_run_orders_sends_only_to_the_attested_worker(self, snp) -> None:
        worker, folder = snp
        done = run_cli("run-orders", "--endpoint", worker.endpoint, "--policy", str(folder / "policy.json"),
                       "--collateral", str(folder / "crl.pem"), "--insecure-amd-root", str(folder / "ark.pem"),
                       str(SAMPLE))
        assert done.returncode == 0, done.stdout + done.stderr
        assert "9 of 9 work orders verified" in done.stdout

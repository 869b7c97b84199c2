"""The whole chain with real processes: `avalon-worker serve --attestation gramine` quoting through
a simulated /dev/attestation, then `avalon-worker verify` and `run-orders --policy` checking it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from attestation_fixtures import MRENCLAVE, QuoteFactory, TestPki, make_collateral
from conftest import RunningWorker, launch_worker, run_cli
from sim_gramine import SimulatedGramine


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningWorker, Path]]:
    folder = tmp_path_factory.mktemp("attested")
    pki = TestPki.create()
    (folder / "root.pem").write_bytes(pki.root.public_bytes(Encoding.PEM))
    (folder / "collateral.json").write_text(json.dumps(make_collateral(pki)))
    (folder / "good-policy.json").write_text(json.dumps({"sgx": {"enclave": {"mrenclave": [MRENCLAVE.hex()]}}}))
    (folder / "other-policy.json").write_text(json.dumps({"sgx": {"enclave": {"mrenclave": ["00" * 32]}}}))
    with SimulatedGramine(folder / "attestation", QuoteFactory(pki)) as sim:
        worker = launch_worker(folder / "state", ["--attestation", "gramine", "--attestation-root", str(sim.root)])
        try:
            yield worker, folder
        finally:
            worker.stop()


def verify(worker: RunningWorker, folder: Path, policy: str, *extra: str):
    return run_cli("verify", "--endpoint", worker.endpoint, "--policy", str(folder / policy),
                   "--insecure-root-ca", str(folder / "root.pem"), *extra)


def test_the_worker_serves_a_quote_and_its_mrenclave(files) -> None:
    worker, _ = files
    signup = worker.signup()
    assert signup["mrenclave"] == MRENCLAVE.hex()
    assert signup["quote"] and signup["attestation_type"] == "gramine"


def test_verify_passes_under_a_matching_policy_with_collateral(files) -> None:
    worker, folder = files
    done = verify(worker, folder, "good-policy.json", "--collateral", str(folder / "collateral.json"))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "VERIFIED" in done.stdout


def test_verify_without_collateral_never_says_the_tcb_is_ok(files) -> None:
    worker, folder = files
    done = verify(worker, folder, "good-policy.json")
    assert done.returncode == 1
    assert "not checked" in done.stdout.lower()


def test_verify_fails_an_enclave_the_policy_does_not_allow(files) -> None:
    worker, folder = files
    done = verify(worker, folder, "other-policy.json", "--collateral", str(folder / "collateral.json"))
    assert done.returncode == 1
    assert MRENCLAVE.hex() in done.stdout  # the message names the enclave it saw


def test_run_orders_sends_to_an_attested_worker(files) -> None:
    worker, folder = files
    sample = Path(__file__).with_name("test_work_orders.json")
    done = run_cli("run-orders", "--endpoint", worker.endpoint, "--policy", str(folder / "good-policy.json"),
                   "--collateral", str(folder / "collateral.json"), "--insecure-root-ca", str(folder / "root.pem"),
                   str(sample))
    assert done.returncode == 0, done.stderr
    assert "9 of 9 work orders verified" in done.stdout
    assert "passed attestation" in done.stderr

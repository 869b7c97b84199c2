"""The enclave scripts/measure-enclave.sh signed: its files, its SIGSTRUCT, its policy, and that it runs.

scripts/sgx-measurement-test.sh (the CI stage) builds the enclave and runs this module with
AVALON_SIGNED_ENCLAVE set to its directory; run alone, it is skipped.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from avalon_worker.attestation.verifier._sigstruct import parse_sigstruct
from avalon_worker.attestation.verifier.policy import load_policy

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    tomllib = pytest.importorskip("tomli")

if not os.environ.get("AVALON_SIGNED_ENCLAVE"):
    pytest.skip("checks a signed enclave: use scripts/sgx-measurement-test.sh", allow_module_level=True)

pytestmark = pytest.mark.slow  # Gramine and a whole signed enclave

ROOT = Path(__file__).resolve().parent.parent
MEASURE = ROOT / "scripts" / "measure-enclave.sh"


@pytest.fixture(scope="module")
def enclave() -> Path:
    return Path(os.environ["AVALON_SIGNED_ENCLAVE"]).resolve()


@pytest.fixture(scope="module")
def signed_manifest(enclave: Path) -> dict:
    return tomllib.loads((enclave / "python-worker.manifest.sgx").read_text(encoding="utf-8"))


def printed(enclave: Path) -> dict[str, str]:
    """The four last lines measure-enclave.sh printed (measurement.txt)."""
    lines = (enclave / "measurement.txt").read_text(encoding="utf-8").splitlines()[-4:]
    return dict(line.split(": ", 1) for line in lines)


def test_every_trusted_file_exists_with_the_hash_the_signed_manifest_records(
    enclave: Path, signed_manifest: dict
) -> None:
    entries = signed_manifest["sgx"]["trusted_files"]
    assert len(entries) > 100, "the interpreter, its libraries, the standard library and the packages"
    for entry in entries:
        path = enclave / entry["uri"].removeprefix("file:")  # relative URIs: from where Gramine starts
        assert path.is_file(), entry["uri"]
        assert hashlib.sha256(path.read_bytes()).hexdigest() == entry["sha256"], entry["uri"]


def test_the_enclave_measures_only_its_own_install_and_the_hosts_runtime(signed_manifest: dict) -> None:
    uris = [entry["uri"] for entry in signed_manifest["sgx"]["trusted_files"]]
    assert any(uri.startswith("file:packages/avalon_worker/") for uri in uris)
    assert "file:app/workloads.json" in uris
    assert not [uri for uri in uris if "-packages/" in uri], "no site-packages or dist-packages of the host"
    assert not [uri for uri in uris if uri.endswith(".pyc") and uri.startswith("file:packages/")]
    assert signed_manifest["loader"]["argv"][1] == "-S"
    assert "insecure__use_cmdline_argv" not in signed_manifest["loader"]
    assert "insecure__keys" not in signed_manifest["fs"]


def test_our_parser_reads_the_sig_as_gramine_does(enclave: Path) -> None:
    view = json.loads(subprocess.run(["gramine-sgx-sigstruct-view", "--output-format=json",
                                      str(enclave / "python-worker.sig")],
                                     check=True, capture_output=True, timeout=60).stdout)
    sig = parse_sigstruct((enclave / "python-worker.sig").read_bytes())
    assert sig.to_dict() == view
    assert printed(enclave) == {"mr_enclave": sig.mrenclave.hex(), "mr_signer": sig.mrsigner.hex(),
                                "isv_prod_id": str(sig.isv_prod_id), "isv_svn": str(sig.isv_svn)}


def test_the_policy_template_from_the_sig_names_the_measured_enclave(enclave: Path, tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "avalon_worker", "verify", "--print-policy-template",
                           "--sigstruct", str(enclave / "python-worker.sig")], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    policy = tmp_path / "policy.json"
    policy.write_text(done.stdout)
    values = printed(enclave)
    described = load_policy(policy).describe()
    assert values["mr_enclave"] in described and values["mr_signer"] in described
    assert f"ISVPRODID {values['isv_prod_id']}" in described and f"ISVSVN ≥ {values['isv_svn']}" in described


def test_the_signed_manifest_runs_up_to_the_attestation_it_lacks_outside_sgx(enclave: Path) -> None:
    """gramine-direct runs the very manifest that was signed: interpreter, libraries, packages and
    command line load under its trusted-file rules, and the worker stops only because
    gramine-direct has no SGX attestation (its measured command line says --attestation gramine)."""
    if shutil.which("gramine-direct") is None:
        pytest.fail("gramine-direct is not on PATH")
    done = subprocess.run(["gramine-direct", "python-worker"], cwd=enclave, capture_output=True, text=True,
                          timeout=600)
    output = done.stdout + done.stderr
    assert done.returncode != 0
    assert "no remote attestation" in output and "gramine-sgx" in output, output[-3000:]
    assert "Traceback" not in output and "ModuleNotFoundError" not in output


@pytest.mark.parametrize("victim", ["packages/avalon_worker/__init__.py", "app/workloads.json"])
def test_a_file_changed_after_signing_is_named_exit_two(enclave: Path, tmp_path: Path, victim: str) -> None:
    copy = tmp_path / "enclave"
    shutil.copytree(enclave, copy, symlinks=True)
    with open(copy / victim, "a", encoding="utf-8") as changed:
        changed.write("\n")
    done = subprocess.run(["bash", str(MEASURE), "--check", str(copy)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 2
    assert done.stderr == f"measure-enclave: {victim} changed after the manifest was signed (its sha256 differs): " \
        "sign again\n"
    ok = subprocess.run(["bash", str(MEASURE), "--check", str(enclave)], capture_output=True, text=True, timeout=600)
    assert ok.returncode == 0, ok.stderr

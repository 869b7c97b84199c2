"""scripts/measure-enclave.sh refuses a bad signing key or option before building anything.

Each case: exit status 2, one line on stderr naming the key or option, and the output directory
left as it was. (The whole run, with Gramine, is tests/test_signed_enclave.py's.)
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

ROOT = Path(__file__).resolve().parent.parent
MEASURE = ROOT / "scripts" / "measure-enclave.sh"

if shutil.which("openssl") is None:  # pragma: no cover - openssl is on every Debian
    pytest.skip("measure-enclave.sh checks keys with the openssl command", allow_module_level=True)


def write_key(path: Path, key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey,
              encryption: serialization.KeySerializationEncryption | None = None) -> Path:
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       encryption or serialization.NoEncryption()))
    return path


def measure(*args: str, out: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(MEASURE), "--out", str(out), *args], capture_output=True, text=True,
                          timeout=120)


@pytest.fixture
def out(tmp_path: Path) -> Path:
    """An earlier result that a refused run must leave alone."""
    previous = tmp_path / "results" / "enclave"
    previous.mkdir(parents=True)
    (previous / "python-worker.manifest.sgx").write_bytes(b"earlier")
    return previous


def refused(done: subprocess.CompletedProcess[str], out: Path, *, naming: str, saying: str) -> None:
    assert done.returncode == 2, done.stderr
    assert done.stdout == ""
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("measure-enclave: "), done.stderr
    assert naming in lines[0] and saying in lines[0], lines[0]
    assert [p.name for p in out.parent.iterdir()] == [out.name]
    assert [(p.name, p.read_bytes()) for p in out.iterdir()] == [("python-worker.manifest.sgx", b"earlier")]


def test_no_key_at_all(out: Path) -> None:
    refused(measure(out=out), out, naming="--key FILE", saying="no signing key")


def test_a_missing_key_file(out: Path, tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.pem"
    refused(measure("--key", str(missing), out=out), out, naming=str(missing), saying="cannot read")


@pytest.mark.parametrize(("make", "saying"), [
    (lambda: rsa.generate_private_key(public_exponent=3, key_size=2048), "is RSA-2048"),
    (lambda: rsa.generate_private_key(public_exponent=65537, key_size=3072), "has exponent 65537"),
    (lambda: ec.generate_private_key(ec.SECP256R1()), "is not an RSA key"),
])
def test_a_key_sgx_cannot_use(out: Path, tmp_path: Path, make: object, saying: str) -> None:
    key = write_key(tmp_path / "key.pem", make())  # type: ignore[operator]
    refused(measure("--key", str(key), out=out), out, naming=str(key), saying=saying)


def test_an_encrypted_or_garbled_key(out: Path, tmp_path: Path) -> None:
    rsa3 = rsa.generate_private_key(public_exponent=3, key_size=3072)
    encrypted = write_key(tmp_path / "encrypted.pem", rsa3, serialization.BestAvailableEncryption(b"pw"))
    refused(measure("--key", str(encrypted), out=out), out, naming=str(encrypted), saying="not an unencrypted")
    garbled = tmp_path / "garbled.pem"
    garbled.write_text("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
    refused(measure("--key", str(garbled), out=out), out, naming=str(garbled), saying="not an unencrypted")


def test_an_unknown_option(out: Path) -> None:
    refused(measure("--throwaway-key", "THREADS=4", out=out), out, naming="THREADS", saying="unknown option")


def test_an_output_directory_that_is_not_an_enclave_is_never_replaced(tmp_path: Path) -> None:
    home = tmp_path / "results" / "home"
    home.mkdir(parents=True)
    (home / "python-worker.manifest.sgx.bak").write_bytes(b"earlier")  # someone's files, not a result
    done = measure("--throwaway-key", out=home)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr == f"measure-enclave: {home} is neither empty nor a signed enclave directory: " \
        "give --out a new directory\n"
    assert [(p.name, p.read_bytes()) for p in home.iterdir()] == [("python-worker.manifest.sgx.bak", b"earlier")]


def test_a_check_of_a_directory_without_a_signed_enclave(tmp_path: Path) -> None:
    empty = tmp_path / "results" / "enclave"
    empty.mkdir(parents=True)
    done = subprocess.run(["bash", str(MEASURE), "--check", str(empty)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr == f"measure-enclave: {empty}/python-worker.manifest.sgx: no signed manifest there\n"


def test_trusted_files_lists_in_sha256sum_form_and_refuses_an_unexpanded_manifest(tmp_path: Path) -> None:
    lister = ROOT / "scripts" / "trusted-files.py"
    (tmp_path / "app").mkdir()
    (tmp_path / "app" / "workloads.json").write_text("{}")
    digest = hashlib.sha256(b"{}").hexdigest()
    signed = tmp_path / "signed.manifest.sgx"
    signed.write_text(f'[sgx]\ntrusted_files = [{{ uri = "file:app/workloads.json", sha256 = "{digest}" }}]\n')
    listed = subprocess.run([sys.executable, str(lister), str(signed)], capture_output=True, text=True, check=True)
    assert listed.stdout == f"{digest}  app/workloads.json\n"
    (tmp_path / "list").write_text(listed.stdout)
    assert subprocess.run(["sha256sum", "--quiet", "--strict", "-c", "list"], cwd=tmp_path).returncode == 0
    unexpanded = tmp_path / "plain.manifest"
    unexpanded.write_text('[sgx]\ntrusted_files = ["file:app/"]\n')
    done = subprocess.run([sys.executable, str(lister), str(unexpanded)], capture_output=True, text=True)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr == f"trusted-files: {unexpanded}: trusted file 'file:app/' has no sha256: render the " \
        "manifest with gramine-manifest\n"

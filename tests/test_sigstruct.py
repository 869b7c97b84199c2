"""SIGSTRUCT (`attestation.verifier._sigstruct`) and `verify --print-policy-template --sigstruct`.

The cross-check is Gramine's own: `gramine-sgx-sign` signs small manifests with keys made here and
`gramine-sgx-sigstruct-view` reads its result back; our parser must agree on every field (those
tests need Gramine's SGX tools on PATH, as scripts/measure-enclave.sh and the CI stage provide;
they skip without, and fail under CI_REQUIRE_GRAMINE=1). The other tests take a SIGSTRUCT laid
out by `make_sigstruct` below, from the SDM table, to show what is refused.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import warnings
from dataclasses import replace
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from avalon_worker import crypto
from avalon_worker._cli.parser import add_verify_arguments
from avalon_worker._cli.verify import run as run_verify
from avalon_worker.attestation import GramineAttestation
from avalon_worker.attestation.verifier._sigstruct import Sigstruct, SigstructError, parse_sigstruct, policy_for
from avalon_worker.attestation.verifier.policy import load_policy

from attestation_fixtures import QuoteFactory, TestPki, make_collateral, make_signup, pem
from sim_gramine import SimulatedGramine

FLAGS_PRODUCTION = 0x4  # MODE64BIT
FLAGS_DEBUG = 0x6  # MODE64BIT | DEBUG


@pytest.fixture(scope="module")
def key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=3, key_size=3072)


def make_sigstruct(
    key: rsa.RSAPrivateKey, *, mrenclave: bytes, isv_prod_id: int = 1, isv_svn: int = 1,
    flags: int = FLAGS_PRODUCTION, date: bytes = bytes.fromhex("14042320"),
) -> bytes:
    """A signed SIGSTRUCT (Intel SDM Vol. 3D, "Enclave Signature Structure")."""
    data = bytearray(1808)
    data[0:16] = bytes.fromhex("06000000e10000000000010000000000")
    data[20:24] = date
    data[24:40] = bytes.fromhex("01010000600000006000000001000000")
    numbers = key.public_key().public_numbers()
    data[128:512] = numbers.n.to_bytes(384, "little")
    struct.pack_into("<I", data, 512, numbers.e)
    struct.pack_into("<QQ", data, 928, flags, 0x3)
    data[960:992] = mrenclave
    struct.pack_into("<HH", data, 1024, isv_prod_id, isv_svn)
    signature = key.sign(bytes(data[0:128] + data[900:1028]), padding.PKCS1v15(), hashes.SHA256())
    data[516:900] = signature[::-1]
    return bytes(data)


class TestParse:
    def test_fields_come_out_as_signed(self, key: rsa.RSAPrivateKey) -> None:
        sig = parse_sigstruct(make_sigstruct(key, mrenclave=bytes(range(32)), isv_prod_id=7, isv_svn=300))
        modulus = key.public_key().public_numbers().n.to_bytes(384, "little")
        assert sig.mrenclave == bytes(range(32))
        assert sig.mrsigner == hashlib.sha256(modulus).digest()
        assert (sig.isv_prod_id, sig.isv_svn, sig.debug, sig.date) == (7, 300, False, "2023-04-14")
        assert parse_sigstruct(make_sigstruct(key, mrenclave=bytes(32), flags=FLAGS_DEBUG)).debug

    @pytest.mark.parametrize("length", [0, 1807, 1809, 4096])
    def test_a_wrong_length_is_refused(self, key: rsa.RSAPrivateKey, length: int) -> None:
        data = make_sigstruct(key, mrenclave=bytes(32))
        with pytest.raises(SigstructError, match="1808 bytes"):
            parse_sigstruct((data * 3)[:length])

    @pytest.mark.parametrize("offset", [0, 15, 24, 39])
    def test_a_changed_header_is_refused(self, key: rsa.RSAPrivateKey, offset: int) -> None:
        data = bytearray(make_sigstruct(key, mrenclave=bytes(32)))
        data[offset] ^= 0x01
        with pytest.raises(SigstructError, match="header"):
            parse_sigstruct(bytes(data))

    @pytest.mark.parametrize("offset", [20, 128, 511, 516, 899, 928, 960, 991, 1024, 1027])
    def test_a_byte_changed_after_signing_is_refused(self, key: rsa.RSAPrivateKey, offset: int) -> None:
        data = bytearray(make_sigstruct(key, mrenclave=bytes(32)))
        data[offset] ^= 0x80
        with pytest.raises(SigstructError, match="signature does not match|RSA-"):
            parse_sigstruct(bytes(data))

    def test_bytes_outside_the_signed_parts_do_not_matter(self, key: rsa.RSAPrivateKey) -> None:
        data = bytearray(make_sigstruct(key, mrenclave=bytes(32)))
        data[1040:1808] = os.urandom(768)  # Q1 and Q2: the CPU's shortcut, not signed
        assert parse_sigstruct(bytes(data)).mrenclave == bytes(32)

    def test_an_exponent_other_than_3_is_refused(self) -> None:
        other = rsa.generate_private_key(public_exponent=65537, key_size=3072)
        with pytest.raises(SigstructError, match="exponent is 65537; SGX requires 3"):
            parse_sigstruct(make_sigstruct(other, mrenclave=bytes(32)))

    def test_a_key_shorter_than_3072_bits_is_refused(self, key: rsa.RSAPrivateKey) -> None:
        data = bytearray(make_sigstruct(key, mrenclave=bytes(32)))
        short = rsa.generate_private_key(public_exponent=3, key_size=2048)
        data[128:512] = short.public_key().public_numbers().n.to_bytes(384, "little")
        with pytest.raises(SigstructError, match="RSA-2048; SGX requires RSA-3072"):
            parse_sigstruct(bytes(data))


class TestPolicyFromSigstruct:
    def test_the_policy_names_every_value_and_loads(self, key: rsa.RSAPrivateKey, tmp_path: Path) -> None:
        sig = parse_sigstruct(make_sigstruct(key, mrenclave=b"\x11" * 32, isv_prod_id=3, isv_svn=9))
        path = tmp_path / "policy.json"
        path.write_text(json.dumps(policy_for(sig)))
        described = load_policy(path).describe()
        for value in ("11" * 32, sig.mrsigner.hex(), "ISVPRODID 3", "ISVSVN ≥ 9", "UpToDate"):
            assert value in described

    def test_verify_accepts_the_enclave_it_names_and_no_other(self, key: rsa.RSAPrivateKey, tmp_path: Path) -> None:
        sig_file = tmp_path / "enclave.sig"
        sig_file.write_bytes(make_sigstruct(key, mrenclave=b"\x22" * 32, isv_prod_id=2, isv_svn=5))
        policy = policy_file(sig_file, tmp_path)
        signed = parse_sigstruct(sig_file.read_bytes())
        assert verify_saved_signup(signed, policy, tmp_path) == 0
        assert verify_saved_signup(replace(signed, isv_svn=6), policy, tmp_path) == 0  # a later version
        for other in (replace(signed, mrenclave=b"\x23" * 32), replace(signed, mrsigner=b"\x01" * 32),
                      replace(signed, isv_prod_id=3), replace(signed, isv_svn=4)):
            assert verify_saved_signup(other, policy, tmp_path) == 1, other


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "avalon_worker", *args], capture_output=True, text=True, timeout=60)


def policy_file(sig_file: Path, tmp_path: Path) -> Path:
    """The policy `verify --print-policy-template --sigstruct` prints for `sig_file`, in a file."""
    template = run_cli("verify", "--print-policy-template", "--sigstruct", str(sig_file))
    assert template.returncode == 0, template.stderr
    policy = tmp_path / "policy.json"
    policy.write_text(template.stdout)
    return policy


def verify_saved_signup(worker: Sigstruct, policy: Path, tmp_path: Path) -> int:
    """`verify --signup` (in this process) of a signup quoted, through a test PKI, with `worker`'s identity."""
    pki = TestPki.create()
    work = Path(tempfile.mkdtemp(dir=tmp_path))
    root, collateral, signup_file = work / "root.pem", work / "collateral.json", work / "signup.json"
    root.write_bytes(pem(pki.root))
    collateral.write_text(json.dumps(make_collateral(pki)))
    with SimulatedGramine(work / "attestation", QuoteFactory(pki), mrenclave=worker.mrenclave,
                          mrsigner=worker.mrsigner, isv_prod_id=worker.isv_prod_id, isv_svn=worker.isv_svn) as sim:
        signup = make_signup(GramineAttestation(sim.root), crypto.SigningKey.generate(),
                             crypto.public_pem(crypto.generate_rsa_key(2048)))
    signup_file.write_text(json.dumps(signup))
    parser = argparse.ArgumentParser()
    add_verify_arguments(parser)
    args = parser.parse_args(["--signup", str(signup_file), "--policy", str(policy), "--collateral", str(collateral),
                              "--insecure-root-ca", str(root)])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # --insecure-root-ca says it is insecure
        return run_verify(args, out=io.StringIO(), err=io.StringIO())


class TestPrintPolicyTemplate:
    def test_either_order_of_the_options(self, key: rsa.RSAPrivateKey, tmp_path: Path) -> None:
        sig_file = tmp_path / "enclave.sig"
        sig_file.write_bytes(make_sigstruct(key, mrenclave=b"\x33" * 32))
        first = run_cli("verify", "--print-policy-template", "--sigstruct", str(sig_file))
        second = run_cli("verify", "--sigstruct", str(sig_file), "--print-policy-template")
        assert first.returncode == second.returncode == 0
        assert json.loads(first.stdout) == json.loads(second.stdout) == policy_for(parse_sigstruct(sig_file.read_bytes()))

    def test_a_debug_enclave_gets_the_secure_policy_and_a_warning(self, key: rsa.RSAPrivateKey, tmp_path: Path) -> None:
        sig_file = tmp_path / "debug.sig"
        sig_file.write_bytes(make_sigstruct(key, mrenclave=b"\x44" * 32, flags=FLAGS_DEBUG))
        done = run_cli("verify", "--print-policy-template", "--sigstruct", str(sig_file))
        assert done.returncode == 0
        assert "insecure_allow_debug" not in json.loads(done.stdout)
        assert done.stderr == f"avalon-worker: warning: {sig_file} is a debug enclave; its quotes fail this policy " \
            "(the host can read a debug enclave's memory)\n"

    def test_bad_files_exit_two_naming_the_file(self, key: rsa.RSAPrivateKey, tmp_path: Path) -> None:
        changed = bytearray(make_sigstruct(key, mrenclave=bytes(32)))
        changed[960] ^= 1
        (tmp_path / "changed.sig").write_bytes(bytes(changed))
        (tmp_path / "text.sig").write_text("not a sigstruct")
        for name, reason in (("missing.sig", "cannot read"), ("text.sig", "is 1808 bytes"),
                             ("changed.sig", "changed after signing")):
            done = run_cli("verify", "--print-policy-template", "--sigstruct", str(tmp_path / name))
            assert done.returncode == 2 and done.stdout == "", name
            assert done.stderr.startswith("avalon-worker: ") and str(tmp_path / name) in done.stderr.splitlines()[0]
            assert reason in done.stderr.splitlines()[0]

    def test_without_print_policy_template_or_with_another_tee_it_is_a_usage_error(
        self, key: rsa.RSAPrivateKey, tmp_path: Path
    ) -> None:
        sig_file = tmp_path / "enclave.sig"
        sig_file.write_bytes(make_sigstruct(key, mrenclave=b"\x55" * 32))
        alone = run_cli("verify", "--sigstruct", str(sig_file), "--signup", str(tmp_path / "s.json"))
        assert alone.returncode == 2 and alone.stdout == ""
        assert alone.stderr.startswith("avalon-worker: --sigstruct goes with --print-policy-template")
        tdx = run_cli("verify", "--print-policy-template", "--tee", "tdx", "--sigstruct", str(sig_file))
        assert tdx.returncode == 2 and tdx.stdout == ""
        assert "does not go with --tee tdx" in tdx.stderr


# Against Gramine's own tools -----------------------------------------------------------------------

GRAMINE_TOOLS = ("gramine-manifest", "gramine-sgx-sign", "gramine-sgx-sigstruct-view")
# The smallest manifest gramine-sgx-sign signs: the LibOS and a binary to start.
MINIMAL_TEMPLATE = """\
loader.entrypoint.uri = "file:{{ gramine.libos }}"
libos.entrypoint = "/usr/bin/true"
fs.mounts = [{ path = "/usr/bin/true", uri = "file:/usr/bin/true" }]
sgx.debug = {{ debug }}
sgx.isvprodid = {{ isvprodid }}
sgx.isvsvn = {{ isvsvn }}
sgx.enclave_size = "64M"
sgx.max_threads = 4
sgx.trusted_files = ["file:{{ gramine.libos }}", "file:/usr/bin/true"]
"""


@pytest.fixture(scope="module")
def gramine() -> None:
    missing = [tool for tool in GRAMINE_TOOLS if shutil.which(tool) is None]
    if missing:
        if os.environ.get("CI_REQUIRE_GRAMINE") == "1":
            pytest.fail(f"CI_REQUIRE_GRAMINE=1 but {', '.join(missing)} not on PATH")
        pytest.skip(f"{', '.join(missing)} not on PATH (scripts/build-gramine.sh builds them)")


def gramine_sign(tmp_path: Path, key: rsa.RSAPrivateKey, *, debug: bool, isvprodid: int, isvsvn: int) -> Path:
    """Render and sign MINIMAL_TEMPLATE with Gramine; the .sig file it wrote."""
    key_file = tmp_path / "key.pem"
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                                           serialization.NoEncryption()))
    (tmp_path / "t.manifest.template").write_text(MINIMAL_TEMPLATE)
    subprocess.run(["gramine-manifest", f"-Ddebug={'true' if debug else 'false'}", f"-Disvprodid={isvprodid}",
                    f"-Disvsvn={isvsvn}", "t.manifest.template", "t.manifest"], cwd=tmp_path, check=True, timeout=120)
    subprocess.run(["gramine-sgx-sign", "--key", str(key_file), "--manifest", "t.manifest", "--output",
                    "t.manifest.sgx"], cwd=tmp_path, check=True, timeout=600, stdout=subprocess.DEVNULL)
    return tmp_path / "t.sig"


def sigstruct_view(sig_file: Path) -> dict[str, object]:
    out = subprocess.run(["gramine-sgx-sigstruct-view", "--verbose", "--output-format=json", str(sig_file)],
                         check=True, capture_output=True, timeout=60).stdout
    return dict(json.loads(out))


@pytest.mark.slow
@pytest.mark.usefixtures("gramine")
class TestAgainstGramine:
    @pytest.mark.parametrize(("debug", "isvprodid", "isvsvn"), [(False, 1, 1), (True, 65535, 258)])
    def test_our_parser_reads_what_gramine_signed_as_gramine_reads_it(
        self, key: rsa.RSAPrivateKey, tmp_path: Path, debug: bool, isvprodid: int, isvsvn: int
    ) -> None:
        sig_file = gramine_sign(tmp_path, key, debug=debug, isvprodid=isvprodid, isvsvn=isvsvn)
        view = sigstruct_view(sig_file)
        sig = parse_sigstruct(sig_file.read_bytes())
        assert sig.to_dict() == {k: view[k] for k in ("mr_enclave", "mr_signer", "isv_prod_id", "isv_svn",
                                                      "debug_enclave")}
        assert (hex(sig.attribute_flags), hex(sig.attribute_xfrm), hex(sig.misc_select), sig.date) == (
            view["attribute_flags"], view["attribute_xfrms"], view["misc_select"], view["date"])
        assert (sig.isv_prod_id, sig.isv_svn, sig.debug) == (isvprodid, isvsvn, debug)

    def test_the_template_from_gramines_sig_admits_that_enclave(self, key: rsa.RSAPrivateKey, tmp_path: Path) -> None:
        sig_file = gramine_sign(tmp_path, key, debug=False, isvprodid=4, isvsvn=2)
        policy = policy_file(sig_file, tmp_path)
        signed = parse_sigstruct(sig_file.read_bytes())
        assert verify_saved_signup(signed, policy, tmp_path) == 0
        assert verify_saved_signup(replace(signed, mrenclave=bytes(32)), policy, tmp_path) == 1

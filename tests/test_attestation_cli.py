"""The requester CLI: `verify` from a saved signup and from a live ZMQ endpoint on 127.0.0.1."""

from __future__ import annotations

import argparse
import io
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import zmq

from avalon_worker import crypto
from avalon_worker._cli.parser import add_policy_arguments, add_verify_arguments
from avalon_worker._cli.verify import EXIT_ERROR, EXIT_FAILED, EXIT_VERIFIED, fetch_signup, require_attested_worker
from avalon_worker._cli.verify import run as run_verify
from avalon_worker.attestation import AttestationFailed, GramineAttestation
from avalon_worker.attestation.errors import SignupFetchError

from attestation_fixtures import MRENCLAVE, QuoteFactory, TestPki, make_collateral, make_signup, pem
from sim_gramine import SimulatedGramine


class SignupServer:
    """A REP socket answering ProcessWorkerSignup like the worker, quoting via simulated Gramine."""

    def __init__(self, provider: GramineAttestation, *, replay: dict | None = None) -> None:
        self.provider = provider
        self.replay = replay
        self.keys = (crypto.SigningKey.generate(), crypto.public_pem(crypto.generate_rsa_key(2048)))
        self.requests: list[dict] = []
        self.context = zmq.Context()
        self.socket = self.context.socket(zmq.REP)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.port = self.socket.bind_to_random_port("tcp://127.0.0.1")
        self.endpoint = f"tcp://127.0.0.1:{self.port}"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        poller = zmq.Poller()
        poller.register(self.socket, zmq.POLLIN)
        while not self._stop.is_set():
            if not poller.poll(50):
                continue
            request = json.loads(self.socket.recv())
            self.requests.append(request)
            nonce_hex = (request.get("params") or {}).get("nonce")
            nonce = bytes.fromhex(nonce_hex) if nonce_hex else None
            signup = self.replay or make_signup(self.provider, *self.keys, nonce)
            self.socket.send(json.dumps(signup).encode())

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.socket.close(linger=0)
        self.context.term()


@pytest.fixture
def files(tmp_path: Path, pki: TestPki) -> dict[str, Path]:
    policy = tmp_path / "policy.json"
    policy.write_text(json.dumps({"sgx": {"enclave": {"mrenclave": [MRENCLAVE.hex()]}}}))
    collateral = tmp_path / "collateral.json"
    collateral.write_text(json.dumps(make_collateral(pki)))
    root = tmp_path / "root.pem"
    root.write_bytes(pem(pki.root))
    return {"policy": policy, "collateral": collateral, "root": root}


@pytest.fixture
def provider(tmp_path: Path, pki: TestPki) -> Iterator[GramineAttestation]:
    with SimulatedGramine(tmp_path / "attestation", QuoteFactory(pki)) as sim:
        yield GramineAttestation(sim.root)


@pytest.fixture
def server(provider: GramineAttestation) -> Iterator[SignupServer]:
    srv = SignupServer(provider)
    yield srv
    srv.close()


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="avalon-worker verify")
    add_verify_arguments(parser)
    return parser.parse_args(argv)


def run(argv: list[str]) -> tuple[int, str]:
    """Exit code, and what was printed: the report, or the error that stopped it."""
    out, err = io.StringIO(), io.StringIO()
    code = run_verify(parse(argv), out=out, err=err)
    return code, out.getvalue() + err.getvalue()


def common(files: dict[str, Path], *, collateral: bool = True) -> list[str]:
    args = ["--policy", str(files["policy"]), "--insecure-root-ca", str(files["root"])]
    return args + (["--collateral", str(files["collateral"])] if collateral else [])


class TestVerifyEndpoint:
    def test_verified_worker_exits_zero_and_prints_every_step(
        self, server: SignupServer, files: dict[str, Path]
    ) -> None:
        code, out = run(["--endpoint", server.endpoint, *common(files)])
        assert code == EXIT_VERIFIED, out
        for line in (
            "[PASS] quote parsed",
            "[PASS] PCK certificate chain to Intel SGX Root CA",
            "[PASS] TCB status: UpToDate",
            "[PASS] MRENCLAVE/MRSIGNER allowed",
            "[PASS] not a debug enclave",
            "[PASS] report data binds verifying key: SHA256(verifying key) ‖ SHA256(nonce)",
            "[PASS] encryption-key signature",
        ):
            assert line in out
        assert out.rstrip().endswith("VERIFIED")

    def test_sends_a_fresh_random_nonce_each_time(self, server: SignupServer, files: dict[str, Path]) -> None:
        run(["--endpoint", server.endpoint, *common(files)])
        run(["--endpoint", server.endpoint, *common(files)])
        nonces = [r["params"]["nonce"] for r in server.requests]
        assert len(nonces) == 2 and nonces[0] != nonces[1] and len(bytes.fromhex(nonces[0])) == 32
        assert all(r["method"] == "ProcessWorkerSignup" and r["jsonrpc"] == "2.0" for r in server.requests)

    def test_replayed_signup_exits_one(self, provider: GramineAttestation, files: dict[str, Path]) -> None:
        keys = (crypto.SigningKey.generate(), crypto.public_pem(crypto.generate_rsa_key(2048)))
        stale = make_signup(provider, *keys, b"old nonce")
        srv = SignupServer(provider, replay=stale)
        try:
            code, out = run(["--endpoint", srv.endpoint, *common(files)])
        finally:
            srv.close()
        assert code == EXIT_FAILED
        assert "[FAIL] report data binds verifying key" in out

    def test_without_collateral_exits_one_saying_tcb_not_checked(
        self, server: SignupServer, files: dict[str, Path]
    ) -> None:
        code, out = run(["--endpoint", server.endpoint, *common(files, collateral=False)])
        assert code == EXIT_FAILED
        assert "[NOT CHECKED] TCB status: TCB status not checked" in out

    def test_intel_root_refuses_the_test_chain(self, server: SignupServer, files: dict[str, Path]) -> None:
        code, out = run(
            [
                "--endpoint",
                server.endpoint,
                "--policy",
                str(files["policy"]),
                "--collateral",
                str(files["collateral"]),
            ]
        )
        assert code == EXIT_FAILED
        assert "[FAIL] PCK certificate chain to Intel SGX Root CA" in out

    def test_save_signup_then_verify_it_offline(
        self, server: SignupServer, files: dict[str, Path], tmp_path: Path
    ) -> None:
        saved = tmp_path / "signup.json"
        code, _ = run(["--endpoint", server.endpoint, "--save-signup", str(saved), *common(files)])
        assert code == EXIT_VERIFIED
        nonce = server.requests[-1]["params"]["nonce"]
        assert run(["--signup", str(saved), "--nonce", nonce, *common(files)])[0] == EXIT_VERIFIED
        code, out = run(["--signup", str(saved), *common(files)])
        assert code == EXIT_FAILED and "32 zero bytes" in out

    def test_an_unwritable_save_signup_exits_two(self, server: SignupServer, files: dict[str, Path],
                                                 tmp_path: Path) -> None:
        target = tmp_path / "no such directory" / "signup.json"
        code, out = run(["--endpoint", server.endpoint, "--save-signup", str(target), *common(files)])
        assert code == EXIT_ERROR and f"cannot write {target}" in out

    def test_json_output(self, server: SignupServer, files: dict[str, Path]) -> None:
        code, out = run(["--endpoint", server.endpoint, "--json", *common(files)])
        data = json.loads(out)
        assert code == EXIT_VERIFIED and data["ok"] is True and data["tcb_status"] == "UpToDate"

    def test_unreachable_endpoint_exits_one(self, files: dict[str, Path]) -> None:
        with zmq.Context() as ctx, ctx.socket(zmq.REP) as sock:
            port = sock.bind_to_random_port("tcp://127.0.0.1")
            sock.unbind(f"tcp://127.0.0.1:{port}")
        code, out = run(["--endpoint", f"tcp://127.0.0.1:{port}", "--timeout-s", "0.3", *common(files)])
        assert code == EXIT_FAILED
        assert out.startswith("avalon-worker: no worker at") and "no connection within 0.3 s" in out


class TestVerifySavedSignup:
    def test_bad_policy_exits_two(self, files: dict[str, Path], tmp_path: Path) -> None:
        files["policy"].write_text(json.dumps({"sgx": {"enclave": {"mrenclave": ["zz"]}, "typo": 1}}))
        signup = tmp_path / "s.json"
        signup.write_text("{}")
        code, out = run(["--signup", str(signup), *common(files)])
        assert code == EXIT_ERROR
        assert "typo" in out and str(files["policy"]) in out

    def test_missing_signup_file_exits_two(self, files: dict[str, Path], tmp_path: Path) -> None:
        code, out = run(["--signup", str(tmp_path / "nope.json"), *common(files)])
        assert code == EXIT_ERROR and "cannot read" in out

    def test_not_a_signup_exits_two(self, files: dict[str, Path], tmp_path: Path) -> None:
        path = tmp_path / "s.json"
        path.write_text(json.dumps({"jsonrpc": "2.0", "error": {"code": 2, "message": "bad"}}))
        code, out = run(["--signup", str(path), *common(files)])
        assert code == EXIT_ERROR and "bad" in out

    def test_endpoint_signup_or_evidence_is_required(self) -> None:
        code, out = run(["--policy", "p.json"])
        assert code == EXIT_ERROR and "--endpoint URL, --signup FILE or --evidence FILE" in out

    def test_endpoint_signup_and_evidence_exclude_each_other(self, tmp_path: Path) -> None:
        with pytest.raises(SystemExit):
            parse(["--signup", "s.json", "--evidence", "q.bin"])


class TestPolicyGate:
    def namespace(self, files: dict[str, Path], **overrides: object) -> argparse.Namespace:
        parser = argparse.ArgumentParser()
        add_policy_arguments(parser)
        args = parser.parse_args(common(files))
        for key, value in overrides.items():
            setattr(args, key, value)
        return args

    def test_returns_the_verified_signup(self, server: SignupServer, files: dict[str, Path]) -> None:
        signup = require_attested_worker(self.namespace(files), server.endpoint)
        assert signup is not None
        assert signup["encryption_key"] == server.keys[1]

    def test_no_policy_means_no_check(self, files: dict[str, Path]) -> None:
        assert require_attested_worker(self.namespace(files, policy=None), "tcp://127.0.0.1:1") is None

    def test_refuses_a_worker_that_fails(self, server: SignupServer, files: dict[str, Path]) -> None:
        files["policy"].write_text(json.dumps({"sgx": {"enclave": {"mrenclave": ["00" * 32]}}}))
        with pytest.raises(AttestationFailed, match="refusing to send inputs") as info:
            require_attested_worker(self.namespace(files), server.endpoint)
        assert "[FAIL] MRENCLAVE/MRSIGNER allowed" in info.value.diagnostics()


def test_fetch_signup_accepts_a_jsonrpc_result_wrapper(provider: GramineAttestation) -> None:
    keys = (crypto.SigningKey.generate(), crypto.public_pem(crypto.generate_rsa_key(2048)))
    wrapped = {"jsonrpc": "2.0", "id": 1, "result": make_signup(provider, *keys, None)}
    srv = SignupServer(provider, replay=wrapped)
    try:
        assert fetch_signup(srv.endpoint, nonce=None)["verifying_key"] == keys[0].verifying_key_pem
        assert "params" not in srv.requests[-1]
    finally:
        srv.close()


def test_fetch_signup_error_reply(provider: GramineAttestation) -> None:
    srv = SignupServer(provider, replay={"jsonrpc": "2.0", "id": 1, "error": {"code": 2, "message": "no"}})
    try:
        with pytest.raises(SignupFetchError, match="answered with an error: no"):
            fetch_signup(srv.endpoint, nonce=b"n")
    finally:
        srv.close()


DATA = Path(__file__).parent / "data" / "attestation"
TDX_QUOTE = DATA / "dcap_qvl_tdx_quote.bin"
TDX_COLLATERAL = DATA / "dcap_qvl_tdx_quote_collateral.json"
TDX_AT = "2025-06-20T12:00:00Z"


def real_tdx_policy(tmp_path: Path, **extra: object) -> Path:
    from avalon_worker.attestation import TdxQuote, parse_quote

    quote = parse_quote(TDX_QUOTE.read_bytes())
    assert isinstance(quote, TdxQuote)
    path = tmp_path / "tdx-policy.json"
    path.write_text(json.dumps({"tdx": {"mrtd": quote.body.mr_td.hex(), "rtmr1": quote.body.rtmrs[1].hex(),
                                        "rtmr2": quote.body.rtmrs[2].hex(), **extra}}))
    return path


class TestVerifyEvidence:
    def test_a_real_tdx_quote_under_a_policy_is_verified(self, tmp_path: Path) -> None:
        code, out = run(["--evidence", str(TDX_QUOTE), "--collateral", str(TDX_COLLATERAL), "--at", TDX_AT,
                         "--policy", str(real_tdx_policy(tmp_path))])
        assert code == EXIT_VERIFIED, out
        assert "evidence: tdx" in out and "  mrtd: " in out
        assert "[PASS] TCB status: UpToDate" in out and "[PASS] TD measurements allowed" in out
        assert out.rstrip().endswith("VERIFIED")

    def test_without_a_policy_every_other_step_runs(self) -> None:
        code, out = run(["--evidence", str(TDX_QUOTE), "--collateral", str(TDX_COLLATERAL), "--at", TDX_AT])
        assert code == EXIT_FAILED
        assert out.startswith("policy: none given, so the measurements are not checked")
        assert "[PASS] QE identity: TD_QE ISVSVN 6: UpToDate" in out
        assert out.rstrip().endswith("FAILED: not checked: TD measurements allowed")

    def test_json_adds_tee_measurements_and_report_data(self, tmp_path: Path) -> None:
        code, out = run(["--evidence", str(TDX_QUOTE), "--collateral", str(TDX_COLLATERAL), "--at", TDX_AT,
                         "--policy", str(real_tdx_policy(tmp_path)), "--json"])
        data = json.loads(out)
        assert code == EXIT_VERIFIED and data["ok"] is True
        assert data["tee"] == "tdx" and data["tcb_status"] == "UpToDate" and data["advisory_ids"] == []
        assert len(data["measurements"]["mrtd"]) == 96 and len(data["report_data"]) == 128
        assert data["measurements"]["report_data"] == data["report_data"]

    def test_at_audits_old_evidence_and_now_finds_its_collateral_expired(self) -> None:
        code, out = run(["--evidence", str(TDX_QUOTE), "--collateral", str(TDX_COLLATERAL)])
        assert code == EXIT_FAILED and "[FAIL] PCK certificates not revoked: root CA CRL is not current" in out

    def test_hex_evidence(self) -> None:
        code, out = run(["--evidence", str(DATA / "dcap_qvl_tdx_quote.hex"), "--at", "2025-01-01"])
        assert code == EXIT_FAILED
        assert "[PASS] quote signed by attestation key" in out and "[PASS] PCK certificate chain" in out

    def test_an_sgx_quote_is_evidence_too(self) -> None:
        code, out = run(["--evidence", str(DATA / "dcap_qvl_sgx_quote.bin"), "--at", "2025-06-20",
                         "--collateral", str(DATA / "dcap_qvl_sgx_quote_collateral.json"), "--json"])
        data = json.loads(out)
        assert code == EXIT_FAILED and data["tee"] == "sgx"
        assert data["tcb_status"] == "ConfigurationAndSWHardeningNeeded"
        assert data["measurements"]["mrenclave"] == "33d8736db756ed4997e04ba358d27833188f1932ff7b1d156904d3f560452fbb"

    def test_a_policy_for_another_tee(self, files: dict[str, Path]) -> None:
        code, out = run(["--evidence", str(TDX_QUOTE), "--collateral", str(TDX_COLLATERAL), "--at", TDX_AT,
                         "--policy", str(files["policy"])])
        assert code == EXIT_FAILED and '[FAIL] policy trusts this TEE: the policy has no "tdx" section' in out

    def test_report_data(self, tmp_path: Path) -> None:
        args = ["--evidence", str(TDX_QUOTE), "--at", TDX_AT, "--policy", str(real_tdx_policy(tmp_path))]
        code, out = run([*args, "--report-data", "00" * 64])
        assert code == EXIT_FAILED and "[FAIL] report data binds verifying key: REPORT_DATA is " in out
        code, out = run([*args, "--report-data", "00" * 63])
        assert code == EXIT_ERROR and "--report-data must be 64 bytes" in out

    def test_an_event_log_is_replayed(self, factory: QuoteFactory, tmp_path: Path) -> None:
        from test_attestation_eventlog import BOOT, BOOT_RTMRS, ccel

        quote = tmp_path / "quote.bin"
        quote.write_bytes(factory.tdx_quote(rtmr0=BOOT_RTMRS[0], rtmr1=BOOT_RTMRS[1], rtmr2=BOOT_RTMRS[2]))
        log = tmp_path / "CCEL"
        log.write_bytes(ccel(BOOT, padding=b"\xff" * 100))
        code, out = run(["--evidence", str(quote), "--event-log", str(log)])
        assert "[PASS] event log replays to the RTMRs: RTMR0, RTMR1, RTMR2 replayed from 5 CCEL events" in out
        log.write_bytes(ccel(BOOT[:1]))
        code, out = run(["--evidence", str(quote), "--event-log", str(log)])
        assert code == EXIT_FAILED and "[FAIL] event log replays to the RTMRs: RTMR0 replays to" in out

    @pytest.mark.parametrize(
        ("content", "extra", "message"),
        [
            (None, [], "cannot read"),
            (b"", [], "is empty"),
            (b"0x040", [], "odd number of digits"),
            (TDX_QUOTE.read_bytes(), ["--collateral", "missing.json"], "cannot read missing.json"),
            (TDX_QUOTE.read_bytes(), ["--insecure-amd-root", "missing.pem"], "cannot read missing.pem"),
            (TDX_QUOTE.read_bytes(), ["--nonce", "00"], "--nonce goes with --signup"),
            (TDX_QUOTE.read_bytes(), ["--tee", "snp"], "--tee goes with --print-policy-template"),
        ],
    )
    def test_unusable_files_and_options_exit_two(
        self, tmp_path: Path, content: bytes | None, extra: list[str], message: str
    ) -> None:
        evidence = tmp_path / "evidence"
        if content is not None:
            evidence.write_bytes(content)
        code, out = run(["--evidence", str(evidence), *extra])
        assert code == EXIT_ERROR and message in out and "Traceback" not in out

    def test_collateral_of_the_wrong_shape_exits_two(self, tmp_path: Path) -> None:
        bad = tmp_path / "c.json"
        bad.write_text("-----BEGIN CERTIFICATE-----")
        code, out = run(["--evidence", str(TDX_QUOTE), "--collateral", str(bad)])
        assert code == EXIT_ERROR and "collateral is not JSON" in out

    def test_garbage_is_a_failed_check_not_a_crash(self, tmp_path: Path) -> None:
        junk = tmp_path / "junk"
        junk.write_bytes(b"\x04\x00\x02\x00\x81\x00\x00\x00" + b"\x17" * 700)
        code, out = run(["--evidence", str(junk)])
        assert code == EXIT_FAILED and "[FAIL] quote parsed: signature data length says" in out

    def test_a_bad_time(self) -> None:
        with pytest.raises(SystemExit):
            parse(["--evidence", str(TDX_QUOTE), "--at", "yesterday"])

    def test_print_policy_template_for_tdx(self) -> None:
        code, out = run(["--print-policy-template", "--tee", "tdx"])
        assert code == EXIT_VERIFIED and set(json.loads(out)) == {"tdx"}
        code, out = run(["--print-policy-template"])
        assert code == EXIT_VERIFIED and set(json.loads(out)) == {"sgx"}

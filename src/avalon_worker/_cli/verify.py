"""``avalon-worker verify``, and the ``--policy`` gate of ``submit`` and ``run-orders``.

``verify`` fetches a fresh signup (with a random nonce) over ZMQ, reads a saved one, or reads
evidence on its own (``--evidence``: an SGX or TDX quote or an SNP report, raw or hex), checks
it against a JSON policy and prints every step as pass/fail; it exits 0 only if the worker
is verified (or accepted under a policy's explicitly insecure relaxations), 1 if verification
failed or the worker could not be reached, 2 if the command or its files are wrong (bad
policy, unreadable evidence or signup file), as every ``avalon-worker`` command does. Without
``--policy`` every step runs but the measurements are "not checked", so nothing is VERIFIED.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from pathlib import Path
from typing import Any, TextIO

from cryptography import x509

from .. import defaults
from ..attestation.errors import AttestationError, AttestationFailed, QuoteParseError, SignupFetchError
from ..attestation.verifier.collateral import CERTIFICATE_CONTENT_ERRORS, MAX_COLLATERAL_SIZE, Collateral
from ..attestation.verifier.policy import Policy, load_policy
from ..attestation.verifier.policy_template import template_for
from ..attestation.verifier.report import VerificationReport
from ..attestation.verifier.snp import load_snp_collateral
from ..attestation.verifier.verify import SnpCollateral, decode_quote_field, detect_tee, verify_evidence, verify_signup
from ..client import BadEndpoint, WorkerClient, WorkerUnavailable
from ..errors import Error, SetupError
from .console import say

EXIT_VERIFIED = 0
EXIT_FAILED = 1
EXIT_ERROR = 2
NONCE_BYTES = 32
# Quotes are a few KiB, SNP evidence with its certificate table under 16 KiB, a CCEL log area
# up to a few MiB: anything larger is not evidence.
MAX_EVIDENCE_FILE = 1024 * 1024
MAX_EVENT_LOG_FILE = 16 * 1024 * 1024
_HEX_TEXT = re.compile(rb"\s*(0x)?([0-9a-fA-F\s]+)\s*")


def fetch_signup(endpoint: str, *, nonce: bytes | None, timeout: float = defaults.CLIENT_TIMEOUT_S) -> dict[str, Any]:
    """Ask a worker for its signup (`ProcessWorkerSignup`, with `{"nonce": hex}` if given)."""
    request: dict[str, Any] = {"jsonrpc": "2.0", "id": 1, "method": "ProcessWorkerSignup"}
    if nonce is not None:
        request["params"] = {"nonce": nonce.hex()}
    try:
        with WorkerClient(endpoint, timeout, on_wait=say) as client:
            reply = client.call(json.dumps(request).encode("utf-8"))
    except (WorkerUnavailable, BadEndpoint) as exc:
        raise SignupFetchError(str(exc)) from exc
    return _signup_from(reply, endpoint)


def parse_signup(raw: bytes | str, *, source: str = "signup") -> dict[str, Any]:
    """Decode a saved signup: the bare signup object (or a JSON-RPC `result` holding it)."""
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise SignupFetchError(f"{source}: the signup is not JSON") from exc
    return _signup_from(data, source)


def _signup_from(data: Any, source: str) -> dict[str, Any]:
    if isinstance(data, dict) and "error" in data and "verifying_key" not in data:
        error = data["error"]
        message = error.get("message") if isinstance(error, dict) else error
        raise SignupFetchError(f"{source}: the worker answered with an error: {message}")
    if isinstance(data, dict) and isinstance(data.get("result"), dict):
        data = data["result"]
    if not isinstance(data, dict) or "verifying_key" not in data:
        raise SignupFetchError(f"{source}: not a signup document (no verifying_key)")
    return data


def _read(path: str, what: str, limit: int) -> bytes:
    try:
        with open(path, "rb") as f:
            data = f.read(limit + 1)
    except OSError as exc:
        raise SetupError(f"cannot read {path}: {exc.strerror or exc}") from None
    if len(data) > limit:
        raise SetupError(f"{what} {path} is larger than {limit} bytes: not {what}")
    return data


def _load_root(path: str | None) -> x509.Certificate | None:
    if not path:
        return None
    data = _read(path, "root CA", MAX_COLLATERAL_SIZE)
    try:
        if b"-----BEGIN" in data:
            return x509.load_pem_x509_certificate(data)
        return x509.load_der_x509_certificate(data)
    except CERTIFICATE_CONTENT_ERRORS as exc:
        raise SetupError(f"cannot load root CA {path}: {exc}") from None


def _load_amd_roots(path: str | None) -> list[x509.Certificate] | None:
    """``--insecure-amd-root FILE``: one or more ARK certificates (PEM, or one DER)."""
    if not path:
        return None
    data = _read(path, "AMD root", MAX_COLLATERAL_SIZE)
    try:
        if b"-----BEGIN" in data:
            return list(x509.load_pem_x509_certificates(data))
        return [x509.load_der_x509_certificate(data)]
    except CERTIFICATE_CONTENT_ERRORS as exc:
        raise SetupError(f"cannot load AMD root {path}: {exc}") from None


def read_evidence(path: str) -> bytes:
    """An evidence file: raw bytes, or hex text (``0x`` prefix and white space allowed)."""
    data = _read(path, "evidence", MAX_EVIDENCE_FILE)
    if not data:
        raise SetupError(f"the evidence file {path} is empty")
    match = _HEX_TEXT.fullmatch(data)
    if match is None:
        return data
    digits = re.sub(rb"\s", b"", match.group(2))
    if len(digits) % 2:
        raise SetupError(f"the evidence file {path} looks like hex but has an odd number of digits")
    return bytes.fromhex(digits.decode("ascii"))


def load_collateral_for(path: str | None, tee: str) -> Collateral | SnpCollateral | None:
    """``--collateral FILE`` as the evidence's kind needs it: Intel's JSON, or an SNP PEM bundle."""
    if not path:
        return None
    data = _read(path, "collateral", MAX_COLLATERAL_SIZE)
    if tee == "snp":
        try:
            collateral: SnpCollateral = load_snp_collateral(data)
        except AttestationError as exc:
            raise SetupError(f"{path}: {exc.message}") from None
        return collateral
    try:
        return Collateral.from_json(data)
    except AttestationError as exc:
        raise SetupError(f"{path}: {exc.message}", hint=exc.hint or None) from None


def _evidence_kind(signup: dict[str, Any]) -> str:
    """The TEE of a signup's evidence, for loading collateral (sgx when it cannot be told)."""
    try:
        return detect_tee(decode_quote_field(signup.get("quote")))
    except QuoteParseError:
        return "sgx"


def _policy(args: argparse.Namespace) -> Policy | None:
    path = getattr(args, "policy", None)
    return load_policy(path) if path else None


def _saved_signup(path: str, nonce_hex: str | None) -> tuple[bytes | None, dict[str, Any]]:
    """`verify --signup FILE [--nonce HEX]`: the nonce and the signup; `SetupError` if either is bad."""
    try:
        nonce = bytes.fromhex(nonce_hex) if nonce_hex else None
    except ValueError:
        raise SetupError("--nonce must be hex") from None
    try:
        return nonce, parse_signup(_read(path, "signup", MAX_EVIDENCE_FILE), source=path)
    except SignupFetchError as exc:
        raise SetupError(exc.message) from None


def _report_data(text: str | None) -> bytes | None:
    if text is None:
        return None
    try:
        value = bytes.fromhex(text.removeprefix("0x"))
    except ValueError:
        raise SetupError("--report-data must be hex") from None
    if len(value) != 64:
        raise SetupError(f"--report-data must be 64 bytes (128 hex digits), got {len(value)}")
    return value


def _check_usage(args: argparse.Namespace) -> None:
    if not (args.endpoint or args.signup or getattr(args, "evidence", None)):
        raise SetupError(
            "verify needs what to check: --endpoint URL, --signup FILE or --evidence FILE",
            hint="or --print-policy-template [--tee sgx|tdx|snp] to start a policy",
        )
    if getattr(args, "report_data", None) and not getattr(args, "evidence", None):
        raise SetupError("--report-data goes with --evidence (a signup binds its own keys)")
    if args.nonce and not args.signup:
        raise SetupError("--nonce goes with --signup")
    if getattr(args, "tee", None):
        raise SetupError("--tee goes with --print-policy-template (the evidence says which TEE made it)")
    if getattr(args, "sigstruct", None):
        raise SetupError("--sigstruct goes with --print-policy-template")


def _warn_insecure_roots(args: argparse.Namespace) -> None:
    if getattr(args, "insecure_root_ca", None):
        print("WARNING: --insecure-root-ca replaces Intel's SGX Root CA: INSECURE", file=sys.stderr)
    if getattr(args, "insecure_amd_root", None):
        print("WARNING: --insecure-amd-root replaces AMD's pinned roots: INSECURE", file=sys.stderr)


def _verify_command(args: argparse.Namespace) -> tuple[Policy | None, VerificationReport]:
    """Everything ``verify`` does up to the report; `Error` for anything wrong with the command."""
    _check_usage(args)
    policy = _policy(args)
    root_ca = _load_root(getattr(args, "insecure_root_ca", None))
    amd_roots = _load_amd_roots(getattr(args, "insecure_amd_root", None))
    _warn_insecure_roots(args)
    event_log = _read(args.event_log, "event log", MAX_EVENT_LOG_FILE) if getattr(args, "event_log", None) else None
    now = getattr(args, "at", None)
    if getattr(args, "evidence", None):
        raw = read_evidence(args.evidence)
        try:
            tee = detect_tee(raw)
        except QuoteParseError:
            tee = "sgx"  # the report says why it is not evidence; collateral is then moot
        report = verify_evidence(
            raw, policy, collateral=load_collateral_for(args.collateral, tee), now=now,
            expected_report_data=_report_data(getattr(args, "report_data", None)),
            root_ca=root_ca, trusted_arks=amd_roots, event_log=event_log,
        )
        return policy, report
    if args.endpoint:
        nonce: bytes | None = os.urandom(NONCE_BYTES)
        signup = fetch_signup(args.endpoint, nonce=nonce, timeout=args.timeout_s)
        if args.save_signup:
            try:
                Path(args.save_signup).write_text(json.dumps(signup, indent=2), encoding="utf-8")
            except OSError as exc:
                raise SetupError(f"cannot write {args.save_signup}: {exc.strerror or exc}") from None
    else:
        nonce, signup = _saved_signup(args.signup, args.nonce)
    collateral = load_collateral_for(args.collateral, _evidence_kind(signup))
    report = verify_signup(
        signup, policy, nonce=nonce, collateral=collateral, root_ca=root_ca, trusted_arks=amd_roots,
        event_log=event_log, now=now,
    )
    return policy, report


def _print_text(policy: Policy | None, report: VerificationReport, out: TextIO) -> None:
    print(f"policy: {policy.describe()}" if policy else "policy: none given, so the measurements are not checked",
          file=out)
    if report.tee is not None:
        print(f"evidence: {report.tee}", file=out)
        for name, value in report.measurements.items():
            print(f"  {name}: {value}", file=out)
    print(report.render(), file=out)


def run(args: argparse.Namespace, *, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """Run ``verify``; print the steps to `out` (or why it could not run to `err`); return the exit code."""
    out = out or sys.stdout
    err = err or sys.stderr
    if getattr(args, "print_policy_template", False):
        try:
            print(json.dumps(template_for(args.tee, getattr(args, "sigstruct", None), err=err), indent=2), file=out)
        except Error as exc:
            print(f"avalon-worker: {exc.diagnostics()}", file=err)
            return exc.exit_status
        return EXIT_VERIFIED
    try:
        policy, report = _verify_command(args)
    except Error as exc:
        print(f"avalon-worker: {exc.diagnostics()}", file=err)
        return exc.exit_status
    if getattr(args, "json", False):
        print(json.dumps(report.to_dict(), indent=2), file=out)
    else:
        _print_text(policy, report, out)
    return EXIT_VERIFIED if report.ok else EXIT_FAILED


def require_attested_worker(
    args: argparse.Namespace, endpoint: str, *, timeout: float = defaults.CLIENT_TIMEOUT_S
) -> dict[str, Any] | None:
    """For submit/run-orders: if ``--policy`` was given, attest the worker first.

    Returns the verified signup (use its keys for the work order), or None when no policy was
    given. Raises `AttestationFailed` (its `diagnostics()` lists every step) if the worker
    fails the policy, and other `Error`s if the policy, collateral or roots cannot be loaded.
    """
    if not getattr(args, "policy", None):
        return None
    policy = load_policy(args.policy)
    root_ca = _load_root(getattr(args, "insecure_root_ca", None))
    amd_roots = _load_amd_roots(getattr(args, "insecure_amd_root", None))
    nonce = os.urandom(NONCE_BYTES)
    signup = fetch_signup(endpoint, nonce=nonce, timeout=timeout)
    collateral = load_collateral_for(getattr(args, "collateral", None), _evidence_kind(signup))
    report: VerificationReport = verify_signup(
        signup, policy, nonce=nonce, collateral=collateral, root_ca=root_ca, trusted_arks=amd_roots
    )
    if not report.ok:
        raise AttestationFailed(
            report, f"refusing to send inputs: the worker at {endpoint} failed attestation"
        )
    return signup


def attested_client(args: argparse.Namespace) -> WorkerClient:
    """A client for --endpoint; with --policy, only once the worker has passed attestation."""
    signup = require_attested_worker(args, args.endpoint, timeout=args.timeout_s)
    if signup is not None:
        print(f"worker at {args.endpoint} passed attestation policy {args.policy}", file=sys.stderr)
    return WorkerClient(args.endpoint, args.timeout_s, signup=signup, on_wait=say)

"""Requester command line: ``avalon-worker verify`` and the ``--policy`` gate for submitting.

``verify`` fetches a fresh signup (with a random nonce) over ZMQ, or reads a saved one, checks
it against a JSON policy and prints every step as pass/fail; it exits 0 only if the worker
is verified (or accepted under a policy's explicitly insecure relaxations), 1 if verification
failed, 2 if it could not be run (bad policy, unreachable worker, unreadable file).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any, TextIO

import zmq
from cryptography import x509

from .collateral import Collateral, load_collateral
from .errors import AttestationError, AttestationFailed, SignupFetchError
from .policy import load_policy
from .report import VerificationReport
from .verify import verify_signup

EXIT_VERIFIED = 0
EXIT_FAILED = 1
EXIT_ERROR = 2
NONCE_BYTES = 32


def fetch_signup(endpoint: str, *, nonce: bytes | None, timeout: float = 10.0) -> dict[str, Any]:
    """Ask a worker for its signup (`ProcessWorkerSignup`, with `{"nonce": hex}` if given)."""
    from ..client import WorkerClient, WorkerUnavailable

    request: dict[str, Any] = {"jsonrpc": "2.0", "id": 1, "method": "ProcessWorkerSignup"}
    if nonce is not None:
        request["params"] = {"nonce": nonce.hex()}
    try:
        with WorkerClient(endpoint, timeout) as client:
            reply = client.call(json.dumps(request).encode("utf-8"))
    except WorkerUnavailable as exc:
        raise SignupFetchError(str(exc), hint="is the worker running at that address?") from exc
    except zmq.ZMQError as exc:
        raise SignupFetchError(f"cannot talk to {endpoint}: {exc}") from exc
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


def _load_root(path: str | None) -> x509.Certificate | None:
    if not path:
        return None
    try:
        data = Path(path).read_bytes()
        if b"-----BEGIN" in data:
            return x509.load_pem_x509_certificate(data)
        return x509.load_der_x509_certificate(data)
    except (OSError, ValueError) as exc:
        raise AttestationError(f"cannot load root CA {path}: {exc}") from exc


def add_policy_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--policy``, ``--collateral`` and ``--insecure-root-ca`` (for submit/run-orders too)."""
    parser.add_argument("--policy", metavar="FILE", help="JSON attestation policy the worker must satisfy")
    parser.add_argument(
        "--collateral",
        metavar="FILE",
        help="JSON collateral (TCB info, QE identity, CRLs) to check revocation and TCB status offline",
    )
    parser.add_argument(
        "--insecure-root-ca",
        metavar="FILE",
        help="trust this root CA instead of Intel's pinned SGX Root CA (testing only: INSECURE)",
    )


def add_verify_arguments(parser: argparse.ArgumentParser) -> None:
    """Configure the ``verify`` subcommand's parser."""
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--endpoint", metavar="URL", help="worker ZMQ endpoint, e.g. tcp://host:7777")
    source.add_argument("--signup", metavar="FILE", help="a saved signup JSON document")
    add_policy_arguments(parser)
    parser.add_argument(
        "--nonce",
        metavar="HEX",
        help="with --signup: the nonce the signup was requested with "
        "(default: none, so REPORT_DATA must end in zeros)",
    )
    parser.add_argument(
        "--timeout", type=float, default=10.0, metavar="SECONDS", help="ZMQ timeout (default 10)"
    )
    parser.add_argument(
        "--save-signup", metavar="FILE", help="with --endpoint: write the fetched signup here"
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON")


def _collateral(args: argparse.Namespace) -> Collateral | None:
    path = getattr(args, "collateral", None)
    return load_collateral(path) if path else None


def run_verify(args: argparse.Namespace, *, out: TextIO | None = None) -> int:
    """Run ``verify``; print the steps; return the exit code."""
    out = out or sys.stdout
    try:
        if not args.policy:
            raise AttestationError("verify needs --policy FILE", hint="see the policy format in the docs")
        policy = load_policy(args.policy)
        collateral = _collateral(args)
        root_ca = _load_root(getattr(args, "insecure_root_ca", None))
        if root_ca is not None:
            print("WARNING: --insecure-root-ca replaces Intel's SGX Root CA: INSECURE", file=sys.stderr)
        if args.endpoint:
            nonce: bytes | None = os.urandom(NONCE_BYTES)
            signup = fetch_signup(args.endpoint, nonce=nonce, timeout=args.timeout)
            if args.save_signup:
                Path(args.save_signup).write_text(json.dumps(signup, indent=2), encoding="utf-8")
        else:
            try:
                nonce = bytes.fromhex(args.nonce) if args.nonce else None
            except ValueError as exc:
                raise AttestationError("--nonce must be hex") from exc
            try:
                raw = Path(args.signup).read_bytes()
            except OSError as exc:
                raise SignupFetchError(f"cannot read {args.signup}: {exc.strerror or exc}") from exc
            signup = parse_signup(raw, source=args.signup)
    except AttestationError as exc:
        print(f"error: {exc.diagnostics()}", file=out)
        return EXIT_ERROR
    report = verify_signup(signup, policy, nonce=nonce, collateral=collateral, root_ca=root_ca)
    if getattr(args, "json", False):
        print(json.dumps(report.to_dict(), indent=2), file=out)
    else:
        print(f"policy: {policy.describe()}", file=out)
        print(report.render(), file=out)
    return EXIT_VERIFIED if report.ok else EXIT_FAILED


def require_attested_worker(
    args: argparse.Namespace, endpoint: str, *, timeout: float = 10.0
) -> dict[str, Any] | None:
    """For submit/run-orders: if ``--policy`` was given, attest the worker first.

    Returns the verified signup (use its keys for the work order), or None when no policy was
    given. Raises `AttestationFailed` (its `diagnostics()` lists every step) if the worker
    fails the policy, and other `AttestationError`s if the policy or collateral cannot be loaded.
    """
    if not getattr(args, "policy", None):
        return None
    policy = load_policy(args.policy)
    collateral = _collateral(args)
    root_ca = _load_root(getattr(args, "insecure_root_ca", None))
    nonce = os.urandom(NONCE_BYTES)
    signup = fetch_signup(endpoint, nonce=nonce, timeout=timeout)
    report: VerificationReport = verify_signup(
        signup, policy, nonce=nonce, collateral=collateral, root_ca=root_ca
    )
    if not report.ok:
        raise AttestationFailed(
            report, f"refusing to send inputs: the worker at {endpoint} failed attestation"
        )
    return signup

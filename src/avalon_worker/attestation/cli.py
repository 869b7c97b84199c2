"""Requester command line: ``avalon-worker verify`` and the ``--policy`` gate for submitting.

``verify`` fetches a fresh signup (with a random nonce) over ZMQ, or reads a saved one, checks
it against a JSON policy and prints every step as pass/fail; it exits 0 only if the worker
is verified (or accepted under a policy's explicitly insecure relaxations), 1 if verification
failed or the worker could not be reached, 2 if the command or its files are wrong (bad
policy, unreadable signup file), as every ``avalon-worker`` command does.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any, TextIO

from cryptography import x509

from ..cli_options import SECONDS
from ..client import DEFAULT_TIMEOUT_S, BadEndpoint, WorkerClient, WorkerUnavailable, check_endpoint
from ..errors import Error, SetupError
from .collateral import Collateral, load_collateral
from .errors import AttestationFailed, SignupFetchError
from .policy import POLICY_TEMPLATE, load_policy
from .report import VerificationReport
from .verify import verify_signup

EXIT_VERIFIED = 0
EXIT_FAILED = 1
EXIT_ERROR = 2
NONCE_BYTES = 32


def say(message: str) -> None:
    """A one-line notice for the person at the command line (stderr)."""
    print(f"avalon-worker: {message}", file=sys.stderr, flush=True)


def endpoint_argument(text: str) -> str:
    """argparse type of --endpoint: a malformed endpoint is a usage error naming the option."""
    try:
        return check_endpoint(text)
    except BadEndpoint as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def fetch_signup(endpoint: str, *, nonce: bytes | None, timeout: float = DEFAULT_TIMEOUT_S) -> dict[str, Any]:
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


def _load_root(path: str | None) -> x509.Certificate | None:
    if not path:
        return None
    try:
        data = Path(path).read_bytes()
        if b"-----BEGIN" in data:
            return x509.load_pem_x509_certificate(data)
        return x509.load_der_x509_certificate(data)
    except (OSError, ValueError) as exc:
        raise SetupError(f"cannot load root CA {path}: {exc}") from exc


class _PrintPolicyTemplate(argparse.Action):
    """``--print-policy-template``: print a minimal policy and exit (like ``--version``)."""

    def __init__(self, option_strings: list[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, *args: Any) -> None:
        print(json.dumps(POLICY_TEMPLATE, indent=2))
        parser.exit()


def add_policy_arguments(parser: argparse.ArgumentParser, *, required: bool = False) -> None:
    """Add ``--policy``, ``--collateral`` and ``--insecure-root-ca`` (for submit/run-orders too)."""
    parser.add_argument("--policy", metavar="FILE", required=required,
                        help="JSON attestation policy the worker must satisfy "
                        "(`avalon-worker verify --print-policy-template` prints one to start from)")
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
    parser.add_argument("--print-policy-template", action=_PrintPolicyTemplate,
                        help="print a minimal policy to edit (allowed MRENCLAVE, current TCB only) and exit")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--endpoint", metavar="URL", type=endpoint_argument,
                        help="worker ZMQ endpoint, e.g. tcp://host:7777")
    source.add_argument("--signup", metavar="FILE", help="a saved signup JSON document")
    add_policy_arguments(parser, required=True)
    parser.add_argument(
        "--nonce",
        metavar="HEX",
        help="with --signup: the nonce the signup was requested with "
        "(default: none, so REPORT_DATA must end in zeros)",
    )
    parser.add_argument(
        "--timeout-s", type=SECONDS, default=DEFAULT_TIMEOUT_S,
        help="seconds to wait for the signup (default %(default)g)",
    )
    parser.add_argument(
        "--save-signup", metavar="FILE", help="with --endpoint: write the fetched signup here"
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON")


def _collateral(args: argparse.Namespace) -> Collateral | None:
    path = getattr(args, "collateral", None)
    return load_collateral(path) if path else None


def _saved_signup(path: str, nonce_hex: str | None) -> tuple[bytes | None, dict[str, Any]]:
    """`verify --signup FILE [--nonce HEX]`: the nonce and the signup; `SetupError` if either is bad."""
    try:
        nonce = bytes.fromhex(nonce_hex) if nonce_hex else None
    except ValueError:
        raise SetupError("--nonce must be hex") from None
    try:
        return nonce, parse_signup(Path(path).read_bytes(), source=path)
    except OSError as exc:
        raise SetupError(f"cannot read {path}: {exc.strerror or exc}") from None
    except SignupFetchError as exc:
        raise SetupError(exc.message) from None


def run_verify(args: argparse.Namespace, *, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """Run ``verify``; print the steps to `out` (or why it could not run to `err`); return the exit code."""
    out = out or sys.stdout
    try:
        policy = load_policy(args.policy)
        collateral = _collateral(args)
        root_ca = _load_root(getattr(args, "insecure_root_ca", None))
        if root_ca is not None:
            print("WARNING: --insecure-root-ca replaces Intel's SGX Root CA: INSECURE", file=sys.stderr)
        if args.endpoint:
            nonce: bytes | None = os.urandom(NONCE_BYTES)
            signup = fetch_signup(args.endpoint, nonce=nonce, timeout=args.timeout_s)
            if args.save_signup:
                Path(args.save_signup).write_text(json.dumps(signup, indent=2), encoding="utf-8")
        else:
            nonce, signup = _saved_signup(args.signup, args.nonce)
    except Error as exc:
        print(f"avalon-worker: {exc.diagnostics()}", file=err or sys.stderr)
        return exc.exit_status
    report = verify_signup(signup, policy, nonce=nonce, collateral=collateral, root_ca=root_ca)
    if getattr(args, "json", False):
        print(json.dumps(report.to_dict(), indent=2), file=out)
    else:
        print(f"policy: {policy.describe()}", file=out)
        print(report.render(), file=out)
    return EXIT_VERIFIED if report.ok else EXIT_FAILED


def require_attested_worker(
    args: argparse.Namespace, endpoint: str, *, timeout: float = DEFAULT_TIMEOUT_S
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

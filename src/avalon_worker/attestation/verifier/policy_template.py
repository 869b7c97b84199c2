"""``avalon-worker verify --print-policy-template [--tee TEE | --sigstruct FILE]``: the policy to start from.

Without ``--sigstruct`` the template for a TEE has placeholders where the measurements go. With
the ``.sig`` file that signing an SGX enclave wrote (`gramine-sgx-sign`,
scripts/measure-enclave.sh) it names that enclave: MRENCLAVE, MRSIGNER, ISVPRODID and ISVSVN,
nothing left to edit.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TextIO

from ...errors import SetupError
from ._sigstruct import Sigstruct, SigstructError, parse_sigstruct, policy_for
from .policy import policy_template


def read_sigstruct(path: str) -> Sigstruct:
    """Read and check a ``.sig`` file; `SetupError` names the file and what is wrong."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise SetupError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        return parse_sigstruct(data)
    except SigstructError as exc:
        raise SetupError(
            f"{path}: {exc.message}",
            hint="give the .sig file gramine-sgx-sign wrote next to the .manifest.sgx",
        ) from None


def template_for(tee: str | None, sigstruct: str | None, *, err: TextIO) -> dict[str, Any]:
    """The policy file to print: for the enclave signed in `sigstruct`, or `tee`'s template.

    A debug enclave gets the same (secure) policy, and a warning on `err` that its quotes fail it.
    """
    if sigstruct is None:
        return policy_template(tee or "sgx")
    if tee not in (None, "sgx"):
        raise SetupError(f"--sigstruct is an SGX enclave's signature: it does not go with --tee {tee}")
    sig = read_sigstruct(sigstruct)
    if sig.debug:
        print(f"avalon-worker: warning: {sigstruct} is a debug enclave; its quotes fail this policy "
              "(the host can read a debug enclave's memory)", file=err)
    return policy_for(sig)

"""Attestation policy: which enclaves a requester trusts, in the style of sigstore's policies.

Enclave identity policies (`MrEnclave`, `MrSigner`, `AnyOf`, `AllOf`) check a report body and
raise `PolicyViolation`. `AttestationPolicy` adds what else must hold: no debug enclave and an
accepted TCB status (default: ``UpToDate`` only). Every relaxation has ``insecure`` in its name
and warns (`InsecurePolicyWarning` and a log record) each time it is used, as Gramine's
``RA_TLS_ALLOW_*_INSECURE`` variables and sigstore's ``UnsafeNoOp`` do.

Policy file (JSON), exactly these keys; unknown keys are errors so that a typo cannot relax
a check::

    {
      "enclave": {"mrenclave": ["<64 hex>", ...]}
             | {"mrsigner": "<64 hex>", "isv_prod_id": 0, "min_isv_svn": 1}
             | {"any_of": [<enclave>, ...]} | {"all_of": [<enclave>, ...]}
             | {"insecure_any_enclave": true},
      "accepted_tcb_statuses": ["UpToDate"],
      "insecure_allow_debug": false,
      "insecure_accept_out_of_date_tcb": false,
      "insecure_accept_unchecked_tcb": false
    }
"""

from __future__ import annotations

import hmac
import json
import logging
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from .dcap import TCB_STATUSES
from .errors import AttestationError, InsecurePolicyWarning, PolicyError
from .quote import ReportBody

logger = logging.getLogger(__name__)

_SECURE_TCB_STATUSES = frozenset(
    {"UpToDate", "SWHardeningNeeded", "ConfigurationNeeded", "ConfigurationAndSWHardeningNeeded"}
)
_OUT_OF_DATE = frozenset({"OutOfDate", "OutOfDateConfigurationNeeded"})


MRENCLAVE_PLACEHOLDER = "REPLACE-with-the-64-hex-digit-MRENCLAVE-your-enclave-build-printed"
# The smallest useful policy: one allowed enclave, current TCB only (`verify --print-policy-template`).
POLICY_TEMPLATE: dict[str, Any] = {
    "enclave": {"mrenclave": [MRENCLAVE_PLACEHOLDER]},
    "accepted_tcb_statuses": ["UpToDate"],
}


class PolicyViolation(AttestationError):
    """The enclave does not satisfy the policy; the message says which value differed."""


def warn_insecure(what: str) -> None:
    """Warn (and log) that an insecure relaxation is in use."""
    message = f"INSECURE attestation policy in use: {what}"
    logger.warning(message)
    warnings.warn(message, InsecurePolicyWarning, stacklevel=3)


@runtime_checkable
class EnclavePolicy(Protocol):
    """Checks the identity in a report body."""

    def check(self, body: ReportBody) -> None:
        """Raise `PolicyViolation` unless `body` is allowed."""

    def describe(self) -> str:
        """A short human description of what is allowed."""


def _hex32(value: str | bytes, what: str) -> bytes:
    if isinstance(value, bytes):
        raw = value
    else:
        try:
            raw = bytes.fromhex(value)
        except (ValueError, TypeError) as exc:
            raise PolicyError(f"{what} {value!r} is not hex") from exc
    if len(raw) != 32:
        raise PolicyError(f"{what} must be 32 bytes (64 hex digits), got {len(raw)}")
    return raw


def _u16(value: Any, what: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 0xFFFF:
        raise PolicyError(f"{what} must be an integer from 0 to 65535, got {value!r}")
    return value


@dataclass(frozen=True)
class MrEnclave:
    """Allow enclaves whose MRENCLAVE (exact code measurement) is in the list."""

    allowed: frozenset[bytes]

    def __init__(self, *values: str | bytes) -> None:
        if not values:
            raise PolicyError("MrEnclave needs at least one MRENCLAVE")
        object.__setattr__(self, "allowed", frozenset(_hex32(v, "MRENCLAVE") for v in values))

    def check(self, body: ReportBody) -> None:
        if not any(hmac.compare_digest(body.mrenclave, v) for v in self.allowed):
            raise PolicyViolation(f"MRENCLAVE {body.mrenclave.hex()} is not allowed")

    def describe(self) -> str:
        return "MRENCLAVE in {" + ", ".join(sorted(v.hex() for v in self.allowed)) + "}"


@dataclass(frozen=True)
class MrSigner:
    """Allow any enclave signed by `mrsigner` as product `isv_prod_id` with ISVSVN ≥ `min_isv_svn`."""

    mrsigner: bytes
    isv_prod_id: int
    min_isv_svn: int

    def __init__(self, mrsigner: str | bytes, *, isv_prod_id: int, min_isv_svn: int) -> None:
        object.__setattr__(self, "mrsigner", _hex32(mrsigner, "MRSIGNER"))
        object.__setattr__(self, "isv_prod_id", _u16(isv_prod_id, "isv_prod_id"))
        object.__setattr__(self, "min_isv_svn", _u16(min_isv_svn, "min_isv_svn"))

    def check(self, body: ReportBody) -> None:
        if not hmac.compare_digest(body.mrsigner, self.mrsigner):
            raise PolicyViolation(f"MRSIGNER {body.mrsigner.hex()} is not {self.mrsigner.hex()}")
        if body.isv_prod_id != self.isv_prod_id:
            raise PolicyViolation(f"ISVPRODID {body.isv_prod_id} is not {self.isv_prod_id}")
        if body.isv_svn < self.min_isv_svn:
            raise PolicyViolation(f"ISVSVN {body.isv_svn} is below the minimum {self.min_isv_svn}")

    def describe(self) -> str:
        return f"MRSIGNER {self.mrsigner.hex()}, ISVPRODID {self.isv_prod_id}, ISVSVN ≥ {self.min_isv_svn}"


@dataclass(frozen=True)
class AnyOf:
    """Allow an enclave that satisfies at least one child policy."""

    children: tuple[EnclavePolicy, ...]

    def __init__(self, *children: EnclavePolicy) -> None:
        if not children:
            raise PolicyError("AnyOf needs at least one policy")
        object.__setattr__(self, "children", tuple(children))

    def check(self, body: ReportBody) -> None:
        reasons = []
        for child in self.children:
            try:
                child.check(body)
                return
            except PolicyViolation as exc:
                reasons.append(str(exc))
        raise PolicyViolation("none of the allowed identities matched: " + "; ".join(reasons))

    def describe(self) -> str:
        return "any of (" + " | ".join(c.describe() for c in self.children) + ")"


@dataclass(frozen=True)
class AllOf:
    """Allow an enclave that satisfies every child policy."""

    children: tuple[EnclavePolicy, ...]

    def __init__(self, *children: EnclavePolicy) -> None:
        if not children:
            raise PolicyError("AllOf needs at least one policy")
        object.__setattr__(self, "children", tuple(children))

    def check(self, body: ReportBody) -> None:
        for child in self.children:
            child.check(body)

    def describe(self) -> str:
        return "all of (" + " & ".join(c.describe() for c in self.children) + ")"


@dataclass(frozen=True)
class InsecureAnyEnclave:
    """Allow every enclave identity. For development only; warns on every use."""

    def check(self, body: ReportBody) -> None:
        warn_insecure("insecure_any_enclave accepts any MRENCLAVE and MRSIGNER")

    def describe(self) -> str:
        return "ANY enclave (INSECURE)"


@dataclass(frozen=True)
class AttestationPolicy:
    """What a worker's quote must show before a requester sends it inputs."""

    enclave: EnclavePolicy
    accepted_tcb_statuses: frozenset[str] = field(default_factory=lambda: frozenset({"UpToDate"}))
    insecure_allow_debug: bool = False
    insecure_accept_out_of_date_tcb: bool = False
    insecure_accept_unchecked_tcb: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.enclave, EnclavePolicy):
            raise PolicyError("enclave must be an enclave identity policy (MrEnclave, MrSigner, AnyOf, …)")
        statuses = frozenset(self.accepted_tcb_statuses)
        object.__setattr__(self, "accepted_tcb_statuses", statuses)
        unknown = statuses - TCB_STATUSES
        if unknown:
            raise PolicyError(f"unknown TCB status {sorted(unknown)}; known: {sorted(TCB_STATUSES)}")
        if "Revoked" in statuses:
            raise PolicyError("a Revoked TCB can never be accepted: its keys are compromised")
        if statuses & _OUT_OF_DATE:
            raise PolicyError(
                "out-of-date TCB statuses are not listed in accepted_tcb_statuses",
                hint="set insecure_accept_out_of_date_tcb to accept them, "
                "knowing the platform lacks security fixes",
            )
        if not statuses:
            raise PolicyError("accepted_tcb_statuses is empty: no quote could pass")

    def tcb_status_accepted(self, status: str) -> bool:
        """Whether a (checked) TCB status passes this policy."""
        if status in self.accepted_tcb_statuses:
            return True
        return self.insecure_accept_out_of_date_tcb and status in _OUT_OF_DATE

    def insecure_overrides(self) -> tuple[str, ...]:
        """Names of the insecure relaxations this policy uses."""
        names = []
        if isinstance(self.enclave, InsecureAnyEnclave):
            names.append("insecure_any_enclave")
        for name in (
            "insecure_allow_debug",
            "insecure_accept_out_of_date_tcb",
            "insecure_accept_unchecked_tcb",
        ):
            if getattr(self, name):
                names.append(name)
        return tuple(names)

    def describe(self) -> str:
        return f"enclave {self.enclave.describe()}; TCB in {sorted(self.accepted_tcb_statuses)}" + "".join(
            f"; {name}" for name in self.insecure_overrides()
        )

    @classmethod
    def from_dict(cls, data: Any) -> AttestationPolicy:
        """Build a policy from the JSON structure in the module docstring."""
        if not isinstance(data, dict):
            raise PolicyError("a policy must be a JSON object")
        known = {
            "enclave",
            "accepted_tcb_statuses",
            "insecure_allow_debug",
            "insecure_accept_out_of_date_tcb",
            "insecure_accept_unchecked_tcb",
        }
        _no_unknown(data, known, "policy")
        if "enclave" not in data:
            raise PolicyError(
                "policy lacks 'enclave'",
                hint='add e.g. "enclave": {"mrenclave": ["<hex from gramine-sgx-sigstruct-view>"]}',
            )
        statuses = data.get("accepted_tcb_statuses", ["UpToDate"])
        if not isinstance(statuses, list) or not all(isinstance(s, str) for s in statuses):
            raise PolicyError("accepted_tcb_statuses must be a list of strings")
        flags = {}
        for name in (
            "insecure_allow_debug",
            "insecure_accept_out_of_date_tcb",
            "insecure_accept_unchecked_tcb",
        ):
            value = data.get(name, False)
            if not isinstance(value, bool):
                raise PolicyError(f"{name} must be true or false")
            flags[name] = value
        return cls(
            enclave=_enclave_from(data["enclave"], "enclave"),
            accepted_tcb_statuses=frozenset(statuses),
            **flags,
        )

    @classmethod
    def from_json(cls, text: str | bytes) -> AttestationPolicy:
        """Parse a JSON policy document."""
        try:
            data = json.loads(text)
        except (ValueError, UnicodeDecodeError) as exc:
            raise PolicyError(f"policy is not JSON: {exc}") from exc
        return cls.from_dict(data)


def load_policy(path: str | Path) -> AttestationPolicy:
    """Read a JSON policy file."""
    try:
        text = Path(path).read_bytes()
    except OSError as exc:
        raise PolicyError(f"cannot read policy file {path}: {exc.strerror or exc}") from exc
    try:
        return AttestationPolicy.from_json(text)
    except PolicyError as exc:
        raise PolicyError(f"{path}: {exc.message}", hint=exc.hint or None) from exc


def _no_unknown(data: dict[str, Any], known: set[str], where: str) -> None:
    unknown = sorted(set(data) - known)
    if unknown:
        raise PolicyError(f"unknown key(s) {unknown} in {where}; allowed: {sorted(known)}")


def _enclave_from(data: Any, where: str) -> EnclavePolicy:
    if not isinstance(data, dict):
        raise PolicyError(f"{where} must be a JSON object")
    if "mrenclave" in data:
        _no_unknown(data, {"mrenclave"}, where)
        values = data["mrenclave"]
        values = [values] if isinstance(values, str) else values
        if not isinstance(values, list) or not values:
            raise PolicyError(f"{where}.mrenclave must be a hex string or a non-empty list of them")
        return MrEnclave(*values)
    if "mrsigner" in data:
        _no_unknown(data, {"mrsigner", "isv_prod_id", "min_isv_svn"}, where)
        for key in ("isv_prod_id", "min_isv_svn"):
            if key not in data:
                raise PolicyError(
                    f"{where} with mrsigner needs {key}",
                    hint="an MRSIGNER alone admits every enclave its key ever signed",
                )
        return MrSigner(data["mrsigner"], isv_prod_id=data["isv_prod_id"], min_isv_svn=data["min_isv_svn"])
    for key, combinator in (("any_of", AnyOf), ("all_of", AllOf)):
        if key in data:
            _no_unknown(data, {key}, where)
            items = data[key]
            if not isinstance(items, list) or not items:
                raise PolicyError(f"{where}.{key} must be a non-empty list")
            return combinator(*(_enclave_from(item, f"{where}.{key}[{i}]") for i, item in enumerate(items)))
    if "insecure_any_enclave" in data:
        _no_unknown(data, {"insecure_any_enclave"}, where)
        if data["insecure_any_enclave"] is not True:
            raise PolicyError(f"{where}.insecure_any_enclave must be true")
        return InsecureAnyEnclave()
    raise PolicyError(f"{where} must have one of mrenclave, mrsigner, any_of, all_of, insecure_any_enclave")

"""Attestation policy: which workers a requester trusts, in the style of sigstore's policies.

One policy file (JSON) has a section per TEE kind it trusts; a requester trusting workers on
several kinds names several. Unknown keys are errors everywhere, so that a typo cannot relax a
check::

    {
      "sgx": {
        "enclave": {"mrenclave": ["<64 hex>", ...]}
               | {"mrsigner": "<64 hex>", "isv_prod_id": 0, "min_isv_svn": 1}
               | {"any_of": [<enclave>, ...]} | {"all_of": [<enclave>, ...]}
               | {"insecure_any_enclave": true},
        "accepted_tcb_statuses": ["UpToDate"],
        "insecure_allow_debug": false,
        "insecure_accept_out_of_date_tcb": false,
        "insecure_accept_unchecked_tcb": false
      },
      "tdx": {
        "mrtd": ["<96 hex>", ...],
        "rtmr0": ["<96 hex>", ...], "rtmr1": [...], "rtmr2": [...],
        "rtmr3": {"allowed_event_digests": ["<96 hex>", ...], "start": "<96 hex>"},
        "mrconfigid": [...], "mrowner": [...], "mrownerconfig": [...], "mrservicetd": [...],
        "xfam": ["<16 hex>", ...],
        "min_tee_tcb_svn": "<32 hex>",
        "accepted_tcb_statuses": ["UpToDate"],
        "require_sept_ve_disable": true,
        "allow_migratable": false,
        "insecure_any_td": false,
        "insecure_allow_debug": false,
        "insecure_accept_out_of_date_tcb": false,
        "insecure_accept_unchecked_tcb": false
      },
      "snp": {"measurements": ["<96 hex>", ...], ...see attestation.snp.SnpPolicy...}
    }

SGX: enclave identity policies (`MrEnclave`, `MrSigner`, `AnyOf`, `AllOf`) check a report body
and raise `PolicyViolation`; `AttestationPolicy` (the "sgx" section) adds what else must hold:
no debug enclave and an accepted TCB status (default: ``UpToDate`` only).

TDX (`TdxPolicy`): MRTD names the TD's firmware, RTMR0-2 what it booted (an RTMR is either one of
the listed values, or the replay of an event log whose every event digest is allowed), RTMR3 the
worker's own code events; at least one of RTMR1-3 or MRCONFIGID must pin the code. MRSERVICETD
must be zero unless values are listed. SEPT_VE_DISABLE is required unless the guest kernel
disables #VE on pending pages itself; a migratable TD is refused unless allowed.

Every relaxation that weakens security has ``insecure`` in its name and warns
(`InsecurePolicyWarning` and a log record) each time it is used, as Gramine's
``RA_TLS_ALLOW_*_INSECURE`` variables and sigstore's ``UnsafeNoOp`` do.
"""

from __future__ import annotations

import hmac
import json
import logging
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from ...defaults import TEES
from ..errors import AttestationError, InsecurePolicyWarning, PolicyError
from ._dcap import TCB_STATUSES, TD_RELAUNCH_STATUSES
from ._quote import ReportBody
from .snp import SnpPolicy

logger = logging.getLogger(__name__)

_SECURE_TCB_STATUSES = frozenset(
    {"UpToDate", "SWHardeningNeeded", "ConfigurationNeeded", "ConfigurationAndSWHardeningNeeded"}
)
# A TD relaunch is advised when it launched on a TDX module that lacked fixes: out of date too.
_OUT_OF_DATE = frozenset({"OutOfDate", "OutOfDateConfigurationNeeded"}) | TD_RELAUNCH_STATUSES
_TCB_FLAGS = ("insecure_allow_debug", "insecure_accept_out_of_date_tcb", "insecure_accept_unchecked_tcb")

MRENCLAVE_PLACEHOLDER = "REPLACE-with-the-64-hex-digit-MRENCLAVE-your-enclave-build-printed"
MRTD_PLACEHOLDER = "REPLACE-with-the-96-hex-digit-MRTD-of-your-TD-firmware"
RTMR_PLACEHOLDER = "REPLACE-with-the-96-hex-digit-RTMR{n}-your-TD-boots-to"
# The smallest useful policy for SGX: one allowed enclave, current TCB only.
POLICY_TEMPLATE: dict[str, Any] = {
    "sgx": {
        "enclave": {"mrenclave": [MRENCLAVE_PLACEHOLDER]},
        "accepted_tcb_statuses": ["UpToDate"],
    }
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
        object.__setattr__(self, "accepted_tcb_statuses", checked_tcb_statuses(self.accepted_tcb_statuses))

    def tcb_status_accepted(self, status: str) -> bool:
        """Whether a (checked) TCB status passes this policy."""
        return tcb_status_accepted(self, status)

    def insecure_overrides(self) -> tuple[str, ...]:
        """Names of the insecure relaxations this policy uses."""
        names = ["insecure_any_enclave"] if isinstance(self.enclave, InsecureAnyEnclave) else []
        return tuple(names) + tuple(name for name in _TCB_FLAGS if getattr(self, name))

    def describe(self) -> str:
        return f"enclave {self.enclave.describe()}; TCB in {sorted(self.accepted_tcb_statuses)}" + "".join(
            f"; {name}" for name in self.insecure_overrides()
        )

    @classmethod
    def from_dict(cls, data: Any, where: str = "sgx") -> AttestationPolicy:
        """Build the policy from the "sgx" section's JSON (see the module docstring)."""
        if not isinstance(data, dict):
            raise PolicyError(f"the {where} section must be a JSON object")
        _no_unknown(data, {"enclave", "accepted_tcb_statuses", *_TCB_FLAGS}, where)
        if "enclave" not in data:
            raise PolicyError(
                f"{where} lacks 'enclave'",
                hint='add e.g. "enclave": {"mrenclave": ["<hex from gramine-sgx-sigstruct-view>"]}',
            )
        return cls(
            enclave=_enclave_from(data["enclave"], f"{where}.enclave"),
            accepted_tcb_statuses=_statuses_from(data, where),
            **_flags_from(data, _TCB_FLAGS, where),
        )

    @classmethod
    def from_json(cls, text: str | bytes) -> AttestationPolicy:
        """Parse the "sgx" section alone, as a JSON document."""
        return cls.from_dict(_json(text))


def checked_tcb_statuses(given: Any) -> frozenset[str]:
    """`accepted_tcb_statuses` as a set, refusing what no policy may accept without saying so."""
    statuses = frozenset(str(status) for status in given)
    unknown = statuses - TCB_STATUSES
    if unknown:
        raise PolicyError(f"unknown TCB status {sorted(unknown)}; known: {sorted(TCB_STATUSES)}")
    if "Revoked" in statuses:
        raise PolicyError("a Revoked TCB can never be accepted: its keys are compromised")
    if statuses & _OUT_OF_DATE:
        raise PolicyError(
            "out-of-date TCB statuses are not listed in accepted_tcb_statuses",
            hint="set insecure_accept_out_of_date_tcb to accept them, knowing the platform lacks security fixes",
        )
    if not statuses:
        raise PolicyError("accepted_tcb_statuses is empty: no quote could pass")
    return statuses


class TcbRules(Protocol):
    """What every DCAP policy section says about TCB status and debug (and the defaults do)."""

    @property
    def accepted_tcb_statuses(self) -> frozenset[str]: ...
    @property
    def insecure_allow_debug(self) -> bool: ...
    @property
    def insecure_accept_out_of_date_tcb(self) -> bool: ...
    @property
    def insecure_accept_unchecked_tcb(self) -> bool: ...


@dataclass(frozen=True)
class DefaultTcbRules:
    """The rules without a policy: current TCB only, no debug, nothing waived."""

    accepted_tcb_statuses: frozenset[str] = frozenset({"UpToDate"})
    insecure_allow_debug: bool = False
    insecure_accept_out_of_date_tcb: bool = False
    insecure_accept_unchecked_tcb: bool = False


def tcb_status_accepted(rules: TcbRules, status: str) -> bool:
    """Whether a (checked) TCB status passes `rules`."""
    if status in rules.accepted_tcb_statuses:
        return True
    return rules.insecure_accept_out_of_date_tcb and status in _OUT_OF_DATE


def _json(text: str | bytes) -> Any:
    try:
        return json.loads(text)
    except (ValueError, UnicodeDecodeError) as exc:
        raise PolicyError(f"policy is not JSON: {exc}") from exc


def _statuses_from(data: dict[str, Any], where: str) -> frozenset[str]:
    statuses = data.get("accepted_tcb_statuses", ["UpToDate"])
    if not isinstance(statuses, list) or not all(isinstance(s, str) for s in statuses):
        raise PolicyError(f"{where}.accepted_tcb_statuses must be a list of strings")
    return frozenset(statuses)


def _flags_from(data: dict[str, Any], names: Sequence[str], where: str, default: bool = False) -> dict[str, bool]:
    flags = {}
    for name in names:
        value = data.get(name, default)
        if not isinstance(value, bool):
            raise PolicyError(f"{where}.{name} must be true or false")
        flags[name] = value
    return flags


def _hex_values(value: Any, size: int, what: str) -> frozenset[bytes]:
    """One hex string or a non-empty list of them, each `size` bytes."""
    values = [value] if isinstance(value, str) else value
    if not isinstance(values, list) or not values:
        raise PolicyError(f"{what} must be a hex string or a non-empty list of them")
    out = set()
    for item in values:
        try:
            raw = bytes.fromhex(item)
        except (TypeError, ValueError):
            raise PolicyError(f"{what} {item!r} is not hex") from None
        if len(raw) != size:
            raise PolicyError(f"{what} must be {size} bytes ({2 * size} hex digits), got {len(raw)}")
        out.add(raw)
    return frozenset(out)


def _describe_values(values: frozenset[bytes]) -> str:
    return "{" + ", ".join(sorted(v.hex() for v in values)) + "}"


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


# -- TDX ------------------------------------------------------------------------------------------

_TDX_VALUE_KEYS = {"mrtd": 48, "mrconfigid": 48, "mrowner": 48, "mrownerconfig": 48, "mrservicetd": 48, "xfam": 8}
_RTMR_KEYS = ("rtmr0", "rtmr1", "rtmr2", "rtmr3")
_TDX_FLAGS = ("insecure_any_td", *_TCB_FLAGS)


@dataclass(frozen=True)
class RtmrRule:
    """What one RTMR must be: one of `values`, or the replay of an event log (CCEL, the worker's
    published events) from `start` (48 zero bytes if None) whose every event digest is allowed."""

    values: frozenset[bytes] = frozenset()
    allowed_event_digests: frozenset[bytes] | None = None
    start: bytes | None = None

    @classmethod
    def from_json(cls, value: Any, where: str) -> RtmrRule:
        if not isinstance(value, dict):
            return cls(values=_hex_values(value, 48, where))
        _no_unknown(value, {"allowed_event_digests", "start"}, where)
        if "allowed_event_digests" not in value:
            raise PolicyError(f"{where} needs allowed_event_digests (or be a list of expected values)")
        start = value.get("start")
        return cls(
            allowed_event_digests=_hex_values(value["allowed_event_digests"], 48, f"{where}.allowed_event_digests"),
            start=next(iter(_hex_values(start, 48, f"{where}.start"))) if start is not None else None,
        )

    def describe(self) -> str:
        if self.allowed_event_digests is None:
            return "in " + _describe_values(self.values)
        start = f" from {self.start.hex()}" if self.start else ""
        return f"replayed{start} from events with digests in {_describe_values(self.allowed_event_digests)}"


@dataclass(frozen=True)
class TdxPolicy:
    """The "tdx" section: which TDs a requester trusts (see the module docstring)."""

    mrtd: frozenset[bytes] | None = None  # None: any (only with insecure_any_td)
    rtmrs: tuple[RtmrRule | None, RtmrRule | None, RtmrRule | None, RtmrRule | None] = (None, None, None, None)
    mrconfigid: frozenset[bytes] | None = None
    mrowner: frozenset[bytes] | None = None
    mrownerconfig: frozenset[bytes] | None = None
    mrservicetd: frozenset[bytes] | None = None  # None: MRSERVICETD must be zero
    xfam: frozenset[bytes] | None = None
    min_tee_tcb_svn: bytes | None = None
    accepted_tcb_statuses: frozenset[str] = frozenset({"UpToDate"})
    require_sept_ve_disable: bool = True
    allow_migratable: bool = False
    insecure_any_td: bool = False
    insecure_allow_debug: bool = False
    insecure_accept_out_of_date_tcb: bool = False
    insecure_accept_unchecked_tcb: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "accepted_tcb_statuses", checked_tcb_statuses(self.accepted_tcb_statuses))
        if self.insecure_any_td:
            return
        if not self.mrtd:
            raise PolicyError(
                "the tdx section lacks 'mrtd'",
                hint="MRTD measures the TD's firmware; list the values your TD boots with "
                "(or set insecure_any_td: true for development)",
            )
        if not (self.mrconfigid or any(self.rtmrs[1:])):
            raise PolicyError(
                "the tdx section pins no code: MRTD alone admits any kernel and any program on that firmware",
                hint="add rtmr1/rtmr2 (kernel, initrd, command line), rtmr3 (the worker's code events) "
                "or mrconfigid (or set insecure_any_td: true for development)",
            )

    def tcb_status_accepted(self, status: str) -> bool:
        """Whether a (checked) TCB status passes this policy."""
        return tcb_status_accepted(self, status)

    def insecure_overrides(self) -> tuple[str, ...]:
        """Names of the insecure relaxations this policy uses."""
        return tuple(name for name in _TDX_FLAGS if getattr(self, name))

    def describe(self) -> str:
        parts = ["any TD (INSECURE)"] if self.insecure_any_td else []
        for name in ("mrtd", "mrconfigid", "mrowner", "mrownerconfig", "mrservicetd", "xfam"):
            values = getattr(self, name)
            if values:
                parts.append(f"{name.upper()} in {_describe_values(values)}")
        parts += [f"RTMR{i} {rule.describe()}" for i, rule in enumerate(self.rtmrs) if rule is not None]
        if self.min_tee_tcb_svn is not None:
            parts.append(f"TEE_TCB_SVN ≥ {self.min_tee_tcb_svn.hex()}")
        parts.append(f"TCB in {sorted(self.accepted_tcb_statuses)}")
        if not self.require_sept_ve_disable:
            parts.append("SEPT_VE_DISABLE not required")
        if self.allow_migratable:
            parts.append("migratable TDs allowed")
        return "; ".join(parts + [name for name in self.insecure_overrides() if name != "insecure_any_td"])

    @classmethod
    def from_dict(cls, data: Any, where: str = "tdx") -> TdxPolicy:
        """Build the policy from the "tdx" section's JSON (see the module docstring)."""
        if not isinstance(data, dict):
            raise PolicyError(f"the {where} section must be a JSON object")
        known = {*_TDX_VALUE_KEYS, *_RTMR_KEYS, "min_tee_tcb_svn", "accepted_tcb_statuses",
                 "require_sept_ve_disable", "allow_migratable", *_TDX_FLAGS}
        _no_unknown(data, known, where)
        fields: dict[str, Any] = {
            key: _hex_values(data[key], size, f"{where}.{key}") for key, size in _TDX_VALUE_KEYS.items() if key in data
        }
        fields["rtmrs"] = tuple(
            RtmrRule.from_json(data[key], f"{where}.{key}") if key in data else None for key in _RTMR_KEYS
        )
        if "min_tee_tcb_svn" in data:
            fields["min_tee_tcb_svn"] = next(iter(_hex_values(data["min_tee_tcb_svn"], 16, f"{where}.min_tee_tcb_svn")))
        fields.update(_flags_from(data, ("require_sept_ve_disable",), where, default=True))
        fields.update(_flags_from(data, ("allow_migratable", *_TDX_FLAGS), where))
        return cls(accepted_tcb_statuses=_statuses_from(data, where), **fields)

    @staticmethod
    def template() -> dict[str, Any]:
        """The smallest useful "tdx" section, for `verify --print-policy-template --tee tdx`."""
        return {
            "mrtd": [MRTD_PLACEHOLDER],
            "rtmr1": [RTMR_PLACEHOLDER.format(n=1)],
            "rtmr2": [RTMR_PLACEHOLDER.format(n=2)],
            "accepted_tcb_statuses": ["UpToDate"],
            "require_sept_ve_disable": True,
        }


# -- the policy file --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Policy:
    """A policy file: a section per TEE kind the requester trusts (None: that kind is not trusted)."""

    sgx: AttestationPolicy | None = None
    tdx: TdxPolicy | None = None
    snp: SnpPolicy | None = None

    def __post_init__(self) -> None:
        if self.sgx is None and self.tdx is None and self.snp is None:
            raise PolicyError('a policy needs at least one section: "sgx", "tdx" or "snp"')

    def insecure_overrides(self) -> tuple[str, ...]:
        """Names of the insecure relaxations any section uses, prefixed by the section."""
        out: list[str] = []
        for tee in TEES:
            section = getattr(self, tee)
            if section is not None:
                out += [f"{tee}.{name}" for name in section.insecure_overrides()]
        return tuple(out)

    def describe(self) -> str:
        return " | ".join(f"{tee}: {getattr(self, tee).describe()}" for tee in TEES if getattr(self, tee) is not None)

    @classmethod
    def from_dict(cls, data: Any) -> Policy:
        """Build a policy from the file's JSON (see the module docstring)."""
        if not isinstance(data, dict):
            raise PolicyError("a policy must be a JSON object")
        if "enclave" in data:
            raise PolicyError(
                'this policy has the old SGX-only shape (top-level "enclave"): move its keys under "sgx", '
                'as in {"sgx": {"enclave": …, "accepted_tcb_statuses": …}}'
            )
        _no_unknown(data, set(TEES), "policy")
        return cls(
            sgx=AttestationPolicy.from_dict(data["sgx"]) if "sgx" in data else None,
            tdx=TdxPolicy.from_dict(data["tdx"]) if "tdx" in data else None,
            snp=SnpPolicy.from_dict(data["snp"]) if "snp" in data else None,
        )

    @classmethod
    def from_json(cls, text: str | bytes) -> Policy:
        """Parse a JSON policy document."""
        return cls.from_dict(_json(text))


def as_policy(policy: Policy | AttestationPolicy | None) -> Policy | None:
    """A `Policy`, accepting an SGX section alone (what `verify_signup` took before TDX and SNP)."""
    return Policy(sgx=policy) if isinstance(policy, AttestationPolicy) else policy


def policy_template(tee: str) -> dict[str, Any]:
    """A minimal policy file with one section, `tee`'s, to edit (`verify --print-policy-template`)."""
    if tee == "sgx":
        return json.loads(json.dumps(POLICY_TEMPLATE))  # type: ignore[no-any-return]
    if tee == "tdx":
        return {"tdx": TdxPolicy.template()}
    if tee == "snp":
        return {"snp": SnpPolicy.template()}
    raise PolicyError(f"no policy template for {tee!r}; choose one of {', '.join(TEES)}")


def load_policy(path: str | Path) -> Policy:
    """Read a JSON policy file."""
    try:
        text = Path(path).read_bytes()
    except OSError as exc:
        raise PolicyError(f"cannot read policy file {path}: {exc.strerror or exc}") from exc
    try:
        return Policy.from_json(text)
    except PolicyError as exc:
        raise PolicyError(f"{path}: {exc.message}", hint=exc.hint or None) from exc

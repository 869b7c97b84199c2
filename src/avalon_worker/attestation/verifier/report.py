"""The outcome of verifying a worker: one line per step, pass, fail or not checked.

One report for every TEE: `tee` says which (``sgx``, ``tdx`` or ``snp``), `measurements` holds
what the evidence measured (lower-case hex, or decimal strings for numbers) and `report_data`
the 64 bytes the evidence binds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Literal

from ._quote import Quote

Tee = Literal["sgx", "tdx", "snp"]

STEP_PARSED = "quote parsed"
STEP_CHAIN = "PCK certificate chain to Intel SGX Root CA"
STEP_REVOCATION = "PCK certificates not revoked"
STEP_QE_SIGNATURE = "QE report signed by PCK key"
STEP_QE_BINDING = "QE report binds attestation key"
STEP_QUOTE_SIGNATURE = "quote signed by attestation key"
STEP_QE_IDENTITY = "QE identity"
STEP_TCB = "TCB status"
STEP_ENCLAVE = "MRENCLAVE/MRSIGNER allowed"
STEP_DEBUG = "not a debug enclave"
STEP_REPORT_DATA = "report data binds verifying key"
STEP_SIGNUP_MRENCLAVE = "signup mrenclave matches quote"
STEP_ENCRYPTION_KEY = "encryption-key signature"
STEP_POLICY_TEE = "policy trusts this TEE"
STEP_TD_MEASUREMENTS = "TD measurements allowed"
STEP_TD_ATTRIBUTES = "TD attributes (no debug, no unlisted service TD)"
STEP_EVENT_LOG = "event log replays to the RTMRs"
STEP_SIGNUP_ATTESTATION_TYPE = "signup attestation type matches evidence"

SIGNATURE_CHAIN_STEPS = (
    STEP_CHAIN,
    STEP_REVOCATION,
    STEP_QE_SIGNATURE,
    STEP_QE_BINDING,
    STEP_QUOTE_SIGNATURE,
)


class StepStatus(str, Enum):
    """How one verification step ended."""

    PASS = "pass"
    FAIL = "fail"
    NOT_CHECKED = "not checked"


@dataclass(frozen=True)
class Step:
    """One verification step; `waived_by` names the insecure policy setting that excused it."""

    name: str
    status: StepStatus
    detail: str = ""
    waived_by: str | None = None

    @property
    def ok(self) -> bool:
        """Passed, or explicitly waived by an insecure policy setting."""
        return self.status is StepStatus.PASS or self.waived_by is not None

    def render(self) -> str:
        label = {StepStatus.PASS: "PASS", StepStatus.FAIL: "FAIL", StepStatus.NOT_CHECKED: "NOT CHECKED"}
        line = f"[{label[self.status]}] {self.name}"
        if self.detail:
            line += f": {self.detail}"
        if self.waived_by:
            line += f" (waived by {self.waived_by}: INSECURE)"
        return line


def passed(name: str, detail: str = "") -> Step:
    return Step(name, StepStatus.PASS, detail)


def failed(name: str, detail: str) -> Step:
    return Step(name, StepStatus.FAIL, detail)


def not_checked(name: str, detail: str) -> Step:
    return Step(name, StepStatus.NOT_CHECKED, detail)


@dataclass(frozen=True)
class VerificationReport:
    """Every step of a verification; `ok` only if none failed and none went unchecked unwaived."""

    steps: tuple[Step, ...]
    quote: Quote | None = field(default=None, repr=False)
    tcb_status: str | None = None
    advisory_ids: tuple[str, ...] = ()
    insecure_overrides: tuple[str, ...] = ()
    tee: Tee | None = None  # None when the evidence's kind could not be told
    measurements: dict[str, str] = field(default_factory=dict)
    report_data: bytes = b""

    @property
    def ok(self) -> bool:
        return bool(self.steps) and all(step.ok for step in self.steps)

    @property
    def failures(self) -> tuple[Step, ...]:
        """Steps that failed or were not checked without a waiver."""
        return tuple(step for step in self.steps if not step.ok)

    def step(self, name: str) -> Step:
        """The step called `name` (KeyError if there is none)."""
        for step in self.steps:
            if step.name == name:
                return step
        raise KeyError(name)

    def verdict(self) -> str:
        """One line: VERIFIED, ACCEPTED WITH INSECURE OVERRIDES …, or FAILED …, leading with the
        steps that failed (the cause) before those that could not be checked because of them."""
        if not self.ok:
            failed = [step for step in self.failures if step.status is StepStatus.FAIL]
            unchecked = [step.name for step in self.failures if step.status is not StepStatus.FAIL]
            if not failed:
                return f"FAILED: not checked: {', '.join(unchecked)}"
            causes = "; ".join(f"{step.name}: {step.detail}" if step.detail else step.name for step in failed)
            if unchecked:
                causes += f" ({len(unchecked)} further check{'s' if len(unchecked) > 1 else ''} could not run)"
            return f"FAILED: {causes}"
        if self.insecure_overrides:
            what = ", ".join(self.insecure_overrides)
            return f"ACCEPTED WITH INSECURE OVERRIDES ({what}): do not rely on this worker"
        return "VERIFIED"

    def render(self) -> str:
        """Human-readable report: one line per step, then the verdict."""
        lines = [step.render() for step in self.steps]
        if self.advisory_ids:
            vendor = "AMD" if self.tee == "snp" else "Intel"
            lines.append(f"{vendor} security advisories for this platform: {', '.join(self.advisory_ids)}")
        lines.append(self.verdict())
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly form for machine consumers."""
        return {
            "ok": self.ok,
            "verdict": self.verdict(),
            "tee": self.tee,
            "measurements": dict(self.measurements),
            "report_data": self.report_data.hex(),
            "tcb_status": self.tcb_status,
            "advisory_ids": list(self.advisory_ids),
            "insecure_overrides": list(self.insecure_overrides),
            "steps": [
                {"name": s.name, "status": s.status.value, "detail": s.detail, "waived_by": s.waived_by}
                for s in self.steps
            ],
        }

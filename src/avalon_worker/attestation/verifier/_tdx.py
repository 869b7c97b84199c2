"""TDX: what a TD report measures and whether a `TdxPolicy` accepts it. Pure functions, no I/O.

The DCAP core (`_dcap`) proves that Intel's TD quoting enclave signed the TD report on a
platform with a known TCB. This module judges the report itself:

- **TD attributes** (Intel TDX module ABI, TDATTRIBUTES): DEBUG and the other "TD under debug"
  bits let the host read the TD, so they are refused unless `insecure_allow_debug`; reserved bits
  are refused; SEPT_VE_DISABLE is required unless the policy says the guest kernel disables #VE
  on pending pages itself; a migratable TD, or one bound to a service TD (SERVTD_EXT), is refused
  unless the policy allows it.
- **Event logs**: the firmware's CCEL and the worker's published RTMR events are replayed and
  must give the quote's RTMRs; only then do their events say what the TD measured.
- **Measurements**: MRTD, RTMR0-3, MRCONFIGID, MROWNER, MROWNERCONFIG, XFAM and TEE_TCB_SVN
  against the policy (MRSERVICETD, who else can reach the TD, is judged with the attributes).
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass, field

from ._eventlog import EventLog, WorkerEvent, replay
from ._quote import TdReport
from .policy import RtmrRule, TdxPolicy, warn_insecure
from .report import (
    STEP_EVENT_LOG,
    STEP_TD_ATTRIBUTES,
    STEP_TD_MEASUREMENTS,
    Step,
    StepStatus,
    failed,
    not_checked,
    passed,
)

ATTR_DEBUG = 1 << 0
ATTR_TUD_OTHER = 0x70  # bits 4-6 of the "TD under debug" group (profiling): the host can observe the TD
ATTR_SERVTD_EXT = 1 << 17
ATTR_SEPT_VE_DISABLE = 1 << 28
ATTR_MIGRATABLE = 1 << 29
# Bits the TDX 1.5 module ABI (348551-008US, table 3.23) defines as reserved, must be zero.
ATTR_RESERVED = 0x0E | 0xFF80 | (0xF << 23) | (((1 << 30) - 1) << 32)
_NAMED_ATTRIBUTES = {
    ATTR_DEBUG: "DEBUG",
    1 << 16: "ICSSD",
    ATTR_SERVTD_EXT: "SERVTD_EXT",
    1 << 27: "LASS",
    ATTR_SEPT_VE_DISABLE: "SEPT_VE_DISABLE",
    ATTR_MIGRATABLE: "MIGRATABLE",
    1 << 30: "PKS",
    1 << 31: "KL",
    1 << 62: "TPA",
    1 << 63: "PERFMON",
}


def td_measurements(report: TdReport) -> dict[str, str]:
    """What the TD report measures, as lower-case hex (the `measurements` of a TDX report)."""
    out = {
        "mrtd": report.mr_td.hex(),
        "rtmr0": report.rtmrs[0].hex(),
        "rtmr1": report.rtmrs[1].hex(),
        "rtmr2": report.rtmrs[2].hex(),
        "rtmr3": report.rtmrs[3].hex(),
        "mrconfigid": report.mr_config_id.hex(),
        "mrowner": report.mr_owner.hex(),
        "mrownerconfig": report.mr_owner_config.hex(),
        "mrseam": report.mr_seam.hex(),
        "mrsignerseam": report.mr_signer_seam.hex(),
        "seam_attributes": report.seam_attributes.hex(),
        "td_attributes": report.td_attributes.hex(),
        "xfam": report.xfam.hex(),
        "tee_tcb_svn": report.tee_tcb_svn.hex(),
        "report_data": report.report_data.hex(),
    }
    if report.tee_tcb_svn2 is not None and report.mr_service_td is not None:
        out["tee_tcb_svn2"] = report.tee_tcb_svn2.hex()
        out["mrservicetd"] = report.mr_service_td.hex()
    if report.extension is not None:
        ext = report.extension
        out["td_id"] = ext.td_id.hex()
        out["vm_id"] = str(ext.vm_id)
        out["cur_service_td_hash"] = ext.cur_service_td_hash.hex()
    return out


def attribute_names(attributes: int) -> str:
    """TDATTRIBUTES as hex with the names of the bits set, e.g. `0x10000000 (SEPT_VE_DISABLE)`."""
    names = [name for bit, name in _NAMED_ATTRIBUTES.items() if attributes & bit]
    return f"{attributes:#018x}" + (f" ({', '.join(names)})" if names else "")


def td_attributes_step(report: TdReport, policy: TdxPolicy | None) -> Step:
    """TDATTRIBUTES and MRSERVICETD: who besides the TD can reach it. Debug is refused (waivable
    only by `insecure_allow_debug`); the other rules are not waivable."""
    attributes = report.attributes
    require_sept = policy.require_sept_ve_disable if policy is not None else True
    problems = []
    if attributes & ATTR_RESERVED:
        problems.append(f"reserved bits {attributes & ATTR_RESERVED:#x} are set")
    if not attributes & ATTR_SEPT_VE_DISABLE and require_sept:
        problems.append(
            "SEPT_VE_DISABLE is clear: the host can inject #VE on pending pages "
            "(set require_sept_ve_disable false only if the guest kernel disables it itself)"
        )
    if attributes & ATTR_MIGRATABLE and not (policy is not None and policy.allow_migratable):
        problems.append("MIGRATABLE is set: a migration TD can move this TD (allow_migratable)")
    allowed_services = (policy.mrservicetd if policy is not None else None) or frozenset()
    if attributes & ATTR_SERVTD_EXT and not allowed_services:
        problems.append("SERVTD_EXT is set: the TD is bound to service TDs the policy does not list (mrservicetd)")
    service = report.mr_service_td
    if service is not None and any(service) and service not in allowed_services:
        problems.append(f"MRSERVICETD {service.hex()} is not listed: a service TD the policy does not name can reach it")
    detail = attribute_names(attributes)
    if problems:
        return failed(STEP_TD_ATTRIBUTES, f"TDATTRIBUTES {detail}: " + "; ".join(problems))
    if attributes & (ATTR_DEBUG | ATTR_TUD_OTHER):
        waiver = "insecure_allow_debug" if policy is not None and policy.insecure_allow_debug else None
        return Step(
            STEP_TD_ATTRIBUTES, StepStatus.FAIL, f"TDATTRIBUTES {detail}: a debug TD: the host can read it", waiver
        )
    return passed(STEP_TD_ATTRIBUTES, f"TDATTRIBUTES {detail}")


@dataclass(frozen=True)
class RtmrLogs:
    """What explains the RTMRs: the CCEL, the worker's published events, and what went wrong."""

    ccel: EventLog | None = None
    worker_events: tuple[WorkerEvent, ...] = ()
    worker_not_extended: str | None = None  # the worker's note when it could not extend RTMR3
    error: str | None = None  # a log given but unusable (malformed, digest not hashing its data)

    @property
    def given(self) -> bool:
        return self.ccel is not None or bool(self.worker_events) or self.error is not None


@dataclass
class _Replay:
    """Per RTMR: the event digests that replay to the quote's value (absent: none, or a mismatch)."""

    matched: dict[int, list[bytes]] = field(default_factory=dict)


def event_log_step(report: TdReport, logs: RtmrLogs, policy: TdxPolicy | None) -> tuple[Step | None, _Replay]:
    """Replay the logs (from the policy's `start` values) and compare with the quote's RTMRs."""
    result = _Replay()
    if not logs.given:
        return None, result
    if logs.error is not None:
        return failed(STEP_EVENT_LOG, logs.error), result
    events = (logs.ccel.rtmr_events() if logs.ccel is not None else []) + [
        (e.rtmr, e.digest) for e in logs.worker_events
    ]
    rules = policy.rtmrs if policy is not None else (None,) * 4
    start = {i: rule.start for i, rule in enumerate(rules) if rule is not None and rule.start is not None}
    values = replay(events, start=start)
    mismatches = []
    for rtmr, value in sorted(values.items()):
        if hmac.compare_digest(value, report.rtmrs[rtmr]):
            result.matched[rtmr] = [digest for i, digest in events if i == rtmr]
        else:
            mismatches.append(f"RTMR{rtmr} replays to {value.hex()}, the quote says {report.rtmrs[rtmr].hex()}")
    if mismatches:
        return failed(STEP_EVENT_LOG, "; ".join(mismatches)), result
    sources = []
    if logs.ccel is not None:
        sources.append(f"{len(logs.ccel.events)} CCEL events")
    if logs.worker_events:
        names = sorted({e.event for e in logs.worker_events})
        sources.append(f"{len(logs.worker_events)} worker events ({', '.join(names)})")
    replayed = ", ".join(f"RTMR{i}" for i in sorted(values)) or "no RTMR"
    return passed(STEP_EVENT_LOG, f"{replayed} replayed from {' and '.join(sources) or 'no events'}"), result


def _rtmr_problem(index: int, rule: RtmrRule, report: TdReport, replayed: _Replay, logs: RtmrLogs) -> str | None:
    value = report.rtmrs[index]
    if rule.allowed_event_digests is None:
        if any(hmac.compare_digest(value, v) for v in rule.values):
            return None
        return f"RTMR{index} {value.hex()} is not allowed"
    digests = replayed.matched.get(index)
    if digests is None:
        why = f"; the worker says: {logs.worker_not_extended}" if index == 3 and logs.worker_not_extended else ""
        return f"RTMR{index}: no event log replays to the quote's value{why}"
    unknown = [d.hex() for d in digests if d not in rule.allowed_event_digests]
    if unknown:
        return f"RTMR{index} holds events the policy does not allow: {', '.join(unknown)}"
    return None


def _register_problems(report: TdReport, policy: TdxPolicy, checked: list[str]) -> list[str]:
    """The fixed registers, XFAM and TEE_TCB_SVN against the policy; appends what it compared to `checked`."""
    problems = []
    fields = {
        "MRTD": (report.mr_td, policy.mrtd),
        "MRCONFIGID": (report.mr_config_id, policy.mrconfigid),
        "MROWNER": (report.mr_owner, policy.mrowner),
        "MROWNERCONFIG": (report.mr_owner_config, policy.mrownerconfig),
        "XFAM": (report.xfam, policy.xfam),
    }
    for name, (value, allowed) in fields.items():
        if allowed is None:
            continue
        checked.append(name)
        if not any(hmac.compare_digest(value, v) for v in allowed):
            problems.append(f"{name} {value.hex()} is not allowed")
    if policy.min_tee_tcb_svn is not None:
        checked.append("TEE_TCB_SVN")
        if any(a < b for a, b in zip(report.tee_tcb_svn, policy.min_tee_tcb_svn, strict=True)):
            problems.append(f"TEE_TCB_SVN {report.tee_tcb_svn.hex()} is below {policy.min_tee_tcb_svn.hex()}")
    return problems


def td_measurements_step(report: TdReport, policy: TdxPolicy | None, replayed: _Replay, logs: RtmrLogs) -> Step:
    """MRTD, RTMRs, MRCONFIGID, MROWNER, MROWNERCONFIG, XFAM and TEE_TCB_SVN against the policy."""
    if policy is None:
        return not_checked(STEP_TD_MEASUREMENTS, "no policy: MRTD and the RTMRs were not compared with anything")
    if policy.insecure_any_td:
        warn_insecure("tdx.insecure_any_td accepts any MRTD and any code")
    checked: list[str] = []
    problems = _register_problems(report, policy, checked)
    for index, rule in enumerate(policy.rtmrs):
        if rule is not None:
            checked.append(f"RTMR{index}")
            problem = _rtmr_problem(index, rule, report, replayed, logs)
            if problem:
                problems.append(problem)
    if problems:
        return failed(STEP_TD_MEASUREMENTS, "; ".join(problems))
    detail = (", ".join(checked) + " allowed") if checked else "nothing pinned (insecure_any_td)"
    if logs.worker_not_extended and policy.rtmrs[3] is None:
        detail += f"; RTMR3 does not bind the worker's code: {logs.worker_not_extended}"
    return passed(STEP_TD_MEASUREMENTS, detail)

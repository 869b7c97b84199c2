"""Attestation: evidence bound to the worker's keys, verified offline down to the vendor's root.

Two sides that never import each other:

- **Worker side** (`providers`, `tsm`, `measure`): `select_provider` gives an
  `AttestationProvider` (`none`, `gramine` over /dev/attestation, or `tdx` / `snp` over a
  confidential VM's configfs-tsm) whose `quote(report_data(verifying_key_pem, nonce))` goes
  into the signup; on TDX, `measure` extends RTMR3 with the worker's code.
- **Requester side** (`quote`, `dcap`, `pck`, `collateral`, `roots`, `tdx`, `eventlog`, `policy`,
  `verify`, `report`, `cli`): `verify_evidence` (an SGX or TDX quote or an SNP report, the kind
  told from the bytes) and `verify_signup` against a `Policy` with a section per TEE (optionally
  with collateral for revocation, QE identity and TCB status) → a `VerificationReport` listing
  every step as pass, fail or not checked. Pure, no I/O. AMD SEV-SNP reports (`snp`,
  `snp_report`, `snp_certs`, `amd_roots`): `verify_snp_evidence` checks a report down to AMD's
  pinned roots and against an `SnpPolicy`; `verify_evidence` hands SNP evidence to it.
  `parse_sigstruct` (`sigstruct`, pure) reads what a signed SGX enclave's quotes will show, and
  `policy_template` makes the policy for it (`verify --print-policy-template --sigstruct`).

Both use `binding.report_data` and `errors`. The names below load their module on first use,
so importing one side does not load the other.
"""

from __future__ import annotations

from .._lazy import lazy_exports

_EXPORTS = {
    "AllOf": "policy",
    "AMD_ARK_SPKI_SHA256": "amd_roots",
    "AnyOf": "policy",
    "AttestationError": "errors",
    "AttestationFailed": "errors",
    "AttestationPolicy": "policy",
    "AttestationProvider": "providers",
    "AttestationUnavailable": "errors",
    "Collateral": "collateral",
    "CollateralError": "errors",
    "DcapQuote": "quote",
    "detect_tee": "verify",
    "EnclavePolicy": "policy",
    "EpidQuote": "quote",
    "EventLogError": "errors",
    "GramineAttestation": "providers",
    "InsecureAnyEnclave": "policy",
    "InsecurePolicyWarning": "errors",
    "intel_sgx_root_ca": "roots",
    "INTEL_SGX_ROOT_CA_SHA256": "roots",
    "load_collateral": "collateral",
    "load_policy": "policy",
    "load_snp_collateral": "snp",
    "MrEnclave": "policy",
    "MrSigner": "policy",
    "NoAttestation": "providers",
    "parse_ccel": "eventlog",
    "parse_quote": "quote",
    "parse_sigstruct": "sigstruct",
    "parse_snp_report": "snp_report",
    "Policy": "policy",
    "PolicyError": "errors",
    "PolicyViolation": "policy",
    "Quote": "quote",
    "QuoteGenerationError": "errors",
    "QuoteParseError": "errors",
    "report_data": "binding",
    "ReportBody": "quote",
    "RtmrRule": "policy",
    "select_provider": "providers",
    "Sigstruct": "sigstruct",
    "SigstructError": "sigstruct",
    "SignupFetchError": "errors",
    "SnpParseError": "snp_report",
    "SnpPolicy": "snp",
    "SnpReport": "snp_report",
    "SnpVerification": "snp",
    "split_snp_evidence": "snp",
    "TsmAttestation": "providers",
    "Step": "report",
    "StepStatus": "report",
    "TdReport": "quote",
    "TdxPolicy": "policy",
    "TdxQuote": "quote",
    "UnsupportedQuoteError": "errors",
    "VerificationReport": "report",
    "verify_evidence": "verify",
    "verify_quote_bytes": "verify",
    "verify_signup": "verify",
    "verify_snp_evidence": "snp",
}

__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

"""Attestation: evidence bound to the worker's keys, verified offline down to the vendor's root.

Two sides that never import each other:

- **Worker side** (`providers`, `tsm`, `measure`): `select_provider` gives an
  `AttestationProvider` (`none`, `gramine` over /dev/attestation, or `tdx` / `snp` over a
  confidential VM's configfs-tsm) whose `quote(report_data(verifying_key_pem, nonce))` goes
  into the signup; on TDX, `measure` extends RTMR3 with the worker's code. `serve` and every
  worker process load this side only.
- **Requester side** (`verifier/`): `verify_evidence` (an SGX or TDX quote or an SNP report, the
  kind told from the bytes) and `verify_signup` (`verifier.verify`) against a `Policy` with a
  section per TEE (`verifier.policy`; optionally with collateral, `verifier.collateral`, for
  revocation, QE identity and TCB status) → a `VerificationReport` (`verifier.report`) listing
  every step as pass, fail or not checked. Pure, no I/O. AMD SEV-SNP (`verifier.snp`):
  `verify_snp_evidence` checks a report down to AMD's pinned roots and against an `SnpPolicy`.
  `verifier.policy_template` makes a policy to start from, for a signed enclave too. What it
  parses and checks step by step is private to `verifier/` (`_quote`, `_dcap`, `_pck`, `_roots`,
  `_tdx`, `_eventlog`, `_snp_report`, `_snp_certs`, `_amd_roots`, `_sigstruct`): the few of
  their names a caller needs (`parse_quote`, `DcapQuote`, `parse_snp_report`, `parse_sigstruct`,
  the pinned roots …) are listed below.

Both use `binding.report_data` and `errors`. This module's names are the public surface; each
loads its module on first use, so importing one side does not load the other.
"""

from __future__ import annotations

from .._lazy import lazy_exports

_EXPORTS = {
    # the worker side: evidence for the signup
    "AttestationProvider": "providers",
    "GramineAttestation": "providers",
    "NoAttestation": "providers",
    "select_provider": "providers",
    "TsmAttestation": "providers",
    # shared by both sides
    "AttestationError": "errors",
    "AttestationFailed": "errors",
    "AttestationUnavailable": "errors",
    "CollateralError": "errors",
    "EventLogError": "errors",
    "InsecurePolicyWarning": "errors",
    "PolicyError": "errors",
    "QuoteGenerationError": "errors",
    "QuoteParseError": "errors",
    "report_data": "binding",
    "SignupFetchError": "errors",
    "UnsupportedQuoteError": "errors",
    # the requester's verifier: evidence and signups against a policy, and the report
    "AllOf": "verifier.policy",
    "AnyOf": "verifier.policy",
    "AttestationPolicy": "verifier.policy",
    "Collateral": "verifier.collateral",
    "detect_tee": "verifier.verify",
    "EnclavePolicy": "verifier.policy",
    "InsecureAnyEnclave": "verifier.policy",
    "load_collateral": "verifier.collateral",
    "load_policy": "verifier.policy",
    "load_snp_collateral": "verifier.snp",
    "MrEnclave": "verifier.policy",
    "MrSigner": "verifier.policy",
    "Policy": "verifier.policy",
    "PolicyViolation": "verifier.policy",
    "RtmrRule": "verifier.policy",
    "SnpPolicy": "verifier.snp",
    "SnpVerification": "verifier.snp",
    "split_snp_evidence": "verifier.snp",
    "Step": "verifier.report",
    "StepStatus": "verifier.report",
    "TdxPolicy": "verifier.policy",
    "VerificationReport": "verifier.report",
    "verify_evidence": "verifier.verify",
    "verify_quote_bytes": "verifier.verify",
    "verify_signup": "verifier.verify",
    "verify_snp_evidence": "verifier.snp",
    # what the verifier parses (its internals' public names)
    "AMD_ARK_SPKI_SHA256": "verifier._amd_roots",
    "DcapQuote": "verifier._quote",
    "EpidQuote": "verifier._quote",
    "intel_sgx_root_ca": "verifier._roots",
    "INTEL_SGX_ROOT_CA_SHA256": "verifier._roots",
    "parse_ccel": "verifier._eventlog",
    "parse_quote": "verifier._quote",
    "parse_sigstruct": "verifier._sigstruct",
    "parse_snp_report": "verifier._snp_report",
    "Quote": "verifier._quote",
    "ReportBody": "verifier._quote",
    "Sigstruct": "verifier._sigstruct",
    "SigstructError": "verifier._sigstruct",
    "SnpParseError": "verifier._snp_report",
    "SnpReport": "verifier._snp_report",
    "TdReport": "verifier._quote",
    "TdxQuote": "verifier._quote",
}

__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

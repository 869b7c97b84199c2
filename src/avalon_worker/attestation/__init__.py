"""Attestation: quotes bound to the worker's keys, verified offline down to Intel's root.

Two sides that never import each other:

- **Worker side** (`providers`): `select_provider` gives an `AttestationProvider` (`none`, or
  `gramine` over /dev/attestation) whose `quote(report_data(verifying_key_pem, nonce))` goes
  into the signup.
- **Requester side** (`quote`, `dcap`, `pck`, `collateral`, `roots`, `policy`, `verify`,
  `report`, `cli`): `parse_quote` (pure, no I/O), `verify_signup` against an
  `AttestationPolicy` (optionally with `Collateral` for revocation, QE identity and TCB
  status) → a `VerificationReport` listing every step as pass, fail or not checked.
  AMD SEV-SNP reports (`snp`, `snp_report`, `snp_certs`, `amd_roots`): `verify_snp_evidence`
  checks a report down to AMD's pinned roots and against an `SnpPolicy`.

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
    "EnclavePolicy": "policy",
    "EpidQuote": "quote",
    "GramineAttestation": "providers",
    "InsecureAnyEnclave": "policy",
    "InsecurePolicyWarning": "errors",
    "intel_sgx_root_ca": "roots",
    "INTEL_SGX_ROOT_CA_SHA256": "roots",
    "load_collateral": "collateral",
    "load_policy": "policy",
    "MrEnclave": "policy",
    "MrSigner": "policy",
    "NoAttestation": "providers",
    "parse_quote": "quote",
    "PolicyError": "errors",
    "PolicyViolation": "policy",
    "Quote": "quote",
    "QuoteGenerationError": "errors",
    "QuoteParseError": "errors",
    "report_data": "binding",
    "ReportBody": "quote",
    "select_provider": "providers",
    "SignupFetchError": "errors",
    "load_snp_collateral": "snp",
    "parse_snp_report": "snp_report",
    "SnpParseError": "snp_report",
    "SnpPolicy": "snp",
    "SnpReport": "snp_report",
    "SnpVerification": "snp",
    "split_snp_evidence": "snp",
    "verify_snp_evidence": "snp",
    "Step": "report",
    "StepStatus": "report",
    "UnsupportedQuoteError": "errors",
    "VerificationReport": "report",
    "verify_quote_bytes": "verify",
    "verify_signup": "verify",
}

__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

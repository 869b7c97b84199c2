"""Attestation: quotes bound to the worker's keys, verified offline down to Intel's root.

Worker side: `select_provider` gives an `AttestationProvider` (`none`, or `gramine` over
/dev/attestation) whose `quote(report_data(verifying_key_pem, nonce))` goes into the signup.

Requester side: `parse_quote` (pure, no I/O), `verify_signup` against an `AttestationPolicy`
(optionally with `Collateral` for revocation, QE identity and TCB status) → a
`VerificationReport` listing every step as pass, fail or not checked.
"""

from .collateral import Collateral, load_collateral
from .errors import (
    AttestationError,
    AttestationFailed,
    AttestationUnavailable,
    CollateralError,
    InsecurePolicyWarning,
    PolicyError,
    QuoteGenerationError,
    QuoteParseError,
    SignupFetchError,
    UnsupportedQuoteError,
)
from .policy import (
    AllOf,
    AnyOf,
    AttestationPolicy,
    EnclavePolicy,
    InsecureAnyEnclave,
    MrEnclave,
    MrSigner,
    PolicyViolation,
    load_policy,
)
from .providers import (
    AttestationProvider,
    GramineAttestation,
    NoAttestation,
    report_data,
    select_provider,
)
from .quote import DcapQuote, EpidQuote, Quote, ReportBody, parse_quote
from .report import Step, StepStatus, VerificationReport
from .roots import INTEL_SGX_ROOT_CA_SHA256, intel_sgx_root_ca
from .verify import verify_quote_bytes, verify_signup

__all__ = [
    "AllOf",
    "AnyOf",
    "AttestationError",
    "AttestationFailed",
    "AttestationPolicy",
    "AttestationProvider",
    "AttestationUnavailable",
    "Collateral",
    "CollateralError",
    "DcapQuote",
    "EnclavePolicy",
    "EpidQuote",
    "GramineAttestation",
    "INTEL_SGX_ROOT_CA_SHA256",
    "InsecureAnyEnclave",
    "InsecurePolicyWarning",
    "MrEnclave",
    "MrSigner",
    "NoAttestation",
    "PolicyError",
    "PolicyViolation",
    "Quote",
    "QuoteGenerationError",
    "QuoteParseError",
    "ReportBody",
    "SignupFetchError",
    "Step",
    "StepStatus",
    "UnsupportedQuoteError",
    "VerificationReport",
    "intel_sgx_root_ca",
    "load_collateral",
    "load_policy",
    "parse_quote",
    "report_data",
    "select_provider",
    "verify_quote_bytes",
    "verify_signup",
]

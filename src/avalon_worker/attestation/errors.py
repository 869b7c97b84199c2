"""Errors of the attestation package, each with `diagnostics()` a person can act on."""

from __future__ import annotations

from ..errors import Error


class AttestationError(Error):
    """Base class for every error the attestation package raises."""


class AttestationUnavailable(AttestationError):
    """The requested attestation provider cannot work on this host (e.g. no SGX)."""

    exit_status = 2


class QuoteGenerationError(AttestationError):
    """The platform failed to produce a quote (after bounded retries)."""


class QuoteParseError(AttestationError):
    """The bytes are not a well-formed SGX quote; no partial result is returned."""


class UnsupportedQuoteError(QuoteParseError):
    """A well-formed quote of a kind this package does not handle (TDX, ECDSA-P384, …)."""


class CollateralError(AttestationError):
    """TCB info, QE identity or CRL collateral is malformed or cannot be loaded."""


class PolicyError(AttestationError):
    """An attestation policy (object or JSON file) is invalid."""

    exit_status = 2


class SignupFetchError(AttestationError):
    """The worker's signup could not be fetched or is not a signup document."""


class AttestationFailed(AttestationError):
    """A worker failed attestation; `report` holds every step's outcome."""

    def __init__(self, report: object, message: str = "the worker failed attestation") -> None:
        super().__init__(message)
        self.report = report

    def diagnostics(self) -> str:
        render = getattr(self.report, "render", None)
        return f"{self.message}\n{render()}" if callable(render) else self.message


class InsecurePolicyWarning(UserWarning):
    """Emitted whenever a policy with an `insecure_*` relaxation is used."""


class EventLogError(AttestationError):
    """An event log (CCEL or the worker's published RTMR events) is malformed."""

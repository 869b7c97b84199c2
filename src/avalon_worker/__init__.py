"""A confidential-compute worker for EEA Off-Chain Trusted Compute v1.1 work orders.

The public API is what `__all__` lists here, plus the `client`, `workload` and `attestation`
modules (each with its own `__all__`). Everything else may change without notice; what lives
under `_internal/` is internal by name.

The protocol core (`hashing`, `crypto`, `models`, `core`, `requester`, `processor`) does no I/O:
it turns bytes and plain data into bytes and plain data. Transport (`pool`, `client`), the
command line (`cli`) and deployment are thin shells around it.

Names load their module on first use, so `import avalon_worker.client` does not load the
worker side, nor a worker the requester side.
"""

from __future__ import annotations

from ._lazy import lazy_exports

__version__ = "0.1.0"

_EXPORTS = {
    # requester side
    "WorkerClient": "client",
    "WorkerUnavailable": "client",
    "WorkerInfo": "requester",
    "InputSpec": "requester",
    "Session": "requester",
    "PendingWorkOrder": "requester",
    "build_work_order": "requester",
    "open_result": "requester",
    "VerificationError": "requester",
    "WorkOrderFailed": "requester",
    "SigningKey": "crypto",
    # worker side
    "Processor": "processor",
    "Identity": "identity",
    "load_or_create": "identity",
    "signup_function": "signup",
    "seal_result": "core",
    "open_work_order": "core",
    "Workload": "workload",
    "WorkloadFailure": "workload",
    "WorkloadRegistry": "workload",
    # errors
    "Error": "errors",
    "ErrorCode": "errors",
    "WorkOrderError": "errors",
    "InvalidParameterError": "errors",
    "IntegrityError": "errors",
    "UnsupportedModeError": "errors",
    "WorkloadError": "errors",
    "BusyError": "errors",
}

__all__ = ["__version__", *sorted(_EXPORTS)]

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

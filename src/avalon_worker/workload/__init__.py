"""Workloads: the code a work order runs, and the registry that names them."""

from .registry import RegistryError, WorkloadRegistry
from .workload import WorkLoad, Workload, WorkloadFailure

__all__ = ["RegistryError", "WorkLoad", "Workload", "WorkloadFailure", "WorkloadRegistry"]

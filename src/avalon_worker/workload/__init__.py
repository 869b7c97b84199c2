"""Workloads: the code a work order runs (`base`: `Workload`, and `LegacyWorkload`, the original
worker's API), the registry that names them (`registry`), and the workloads every worker ships
(`builtin`). `workload.WorkLoad` is the original worker's spelling, kept for its workloads."""

from .base import LegacyWorkload, Workload, WorkloadFailure
from .registry import RegistryError, WorkloadRegistry

__all__ = ["LegacyWorkload", "RegistryError", "Workload", "WorkloadFailure", "WorkloadRegistry"]

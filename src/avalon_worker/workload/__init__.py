"""Workloads: the code a work order runs, and the registry that names them."""

from .workload import Workload, WorkLoad, WorkloadFailure

__all__ = ["Workload", "WorkLoad", "WorkloadFailure"]

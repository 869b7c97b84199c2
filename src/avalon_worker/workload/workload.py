"""The original Avalon worker's spelling and import path of its workload base class:
`from avalon_worker.workload.workload import WorkLoad`, so that its workloads run unchanged.

The only alias the package keeps; the class is `avalon_worker.workload.LegacyWorkload`.
"""

from .base import LegacyWorkload as WorkLoad

__all__ = ["WorkLoad"]

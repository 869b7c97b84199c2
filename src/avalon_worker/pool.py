"""The worker's serving side: one ZMQ endpoint in front of worker processes, or of this process.

The supervisor (this process) owns the endpoint, a ZMQ ROUTER over plain sockets that REQ
clients and Avalon's enclave manager talk to unchanged. With `workers` ≥ 1 it forks worker
processes after the identity is loaded, so all share it, and hands each order to one of them;
it queues a bounded number, answers BUSY (8) beyond that, enforces each order's time limit, and
answers for an order whose process hangs, exits or crashes (the process is replaced by a warm
spare). With `workers=0` the orders run in the supervisor itself, through the same endpoint,
queue and loop. The decisions are `_internal.scheduler`'s; `_internal.loop` carries them out.
"""

from __future__ import annotations

from collections.abc import Callable

from ._internal.loop import Helper, Loop, StopFlag
from ._internal.scheduler import Metrics as PoolMetrics
from ._internal.scheduler import PoolConfig
from .processor import Processor

__all__ = ["Helper", "Pool", "PoolConfig", "PoolMetrics", "StopFlag"]

class Pool:
    """Serves `processor` on one endpoint as `config` says."""

    def __init__(self, processor: Processor, config: PoolConfig, metrics: PoolMetrics | None = None) -> None:
        order_log = processor.order_log
        self.loop = Loop(processor.process, config, metrics, order_log.flush if order_log is not None else lambda: None,
                         order_log)

    def serve(self, bind: str, *, stop: StopFlag, on_ready: Callable[[str], None] | None = None,
              helper: Helper | None = None) -> None:
        """Serve until `stop` is set, then answer everything in flight and stop the processes.
        `helper` (the HTTP front door) is looked after from the pool's loop meanwhile."""
        self.loop.serve(bind, stop=stop, on_ready=on_ready, helper=helper)

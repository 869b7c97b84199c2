"""`avalon-worker pump`: a worker's orders pulled from a shared store by a process of their own.

`serve --store` starts its pump itself. `pump` is for a worker whose command line is fixed, as
under Gramine-SGX, where it is measured into the enclave: the pump runs beside it (a sidecar
container), reaches its ZMQ endpoint as any client does, and keeps the database credentials out
of the enclave.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from ..front.door import FrontConfig
from ..front.service import serve_front_door
from ..store import StoreError
from .console import configure_logging


def run(args: argparse.Namespace) -> int:
    """Pump until SIGTERM or SIGINT."""
    configure_logging(args.log_level)
    config = FrontConfig(
        endpoint=args.endpoint, listen="", store=args.store, max_request_bytes=args.max_request_bytes,
        result_ttl_s=args.result_ttl, lease_s=args.lease_s, max_in_flight=args.max_in_flight,
        log_level=args.log_level, heartbeat_s=args.heartbeat_s, pending_ttl_s=args.pending_ttl,
    )
    try:
        asyncio.run(serve_front_door(config))
    except StoreError as exc:
        print(f"avalon-worker: the pump cannot run: {exc.diagnostics()}", file=sys.stderr)
        return exc.exit_status
    except (OSError, TimeoutError, ValueError) as exc:
        print(f"avalon-worker: the pump cannot run: {exc}", file=sys.stderr)
        return 2
    return 0

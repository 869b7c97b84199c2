"""`avalon-worker listener`: a stateless HTTP listener for every worker in a shared store.

Any number of these run side by side in front of one PostgreSQL database; worker hosts
(`avalon-worker serve --store postgresql://…`) register there and pull their orders from it, so
a listener needs no connection to any worker (`front.service.serve_listener`).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys

from ..errors import SetupError
from ..front import http_guard
from ..front.door import bind_listen
from ..front.listener import ListenerConfig
from ..front.service import serve_listener
from ..store import POSTGRES_SCHEMES, StoreError, describe_store, open_store
from .console import configure_logging, report

logger = logging.getLogger(__name__)


def run(args: argparse.Namespace) -> int:
    """Serve the listener API until SIGTERM or SIGINT."""
    configure_logging(args.log_level)
    if not str(args.store).startswith(POSTGRES_SCHEMES):
        print("avalon-worker: a listener of its own needs a store that worker hosts share: --store postgresql://…; "
              "on one host, use `avalon-worker serve --listen-http` instead", file=sys.stderr)
        return 2
    limits = http_guard.limits_from(args)
    http_guard.map_large_buffers()
    try:
        sock = bind_listen(args.listen_http)  # before the store: a port in use is said at once
    except SetupError as exc:
        print(f"avalon-worker: {exc}", file=sys.stderr)
        return 2
    try:
        store = open_store(args.store, max_pending=args.max_pending, max_pending_bytes=64 * args.max_request_bytes)
    except StoreError as exc:
        sock.close()
        return report(exc)
    logger.info("store %s", describe_store(args.store))
    config = ListenerConfig(max_body_bytes=args.max_request_bytes, stale_after_s=args.stale_after_s,
                            body_budget_bytes=limits.body_budget_bytes)
    try:
        asyncio.run(serve_listener(store, sock, config, limits, args.pending_ttl))
    except (OSError, ValueError) as exc:
        print(f"avalon-worker: the listener cannot serve: {exc}", file=sys.stderr)
        return 2
    finally:
        sock.close()
        store.close()
    return 0

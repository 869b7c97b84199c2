"""The front-door process that `serve` starts (`front.door.FrontDoor`): pump + store (+ HTTP
listener), run as `python -m avalon_worker._cli.front_door`, reporting to `serve` over a pipe."""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import sys
from collections.abc import Sequence

from .. import defaults
from ..errors import SetupError
from ..front import http_guard
from ..front.door import FrontConfig, status_writer
from ..front.service import serve_front_door
from ..store import StoreError
from .console import configure_logging
from .parser import add_http_arguments


def main(argv: Sequence[str] | None = None) -> int:
    """Run the front door as `serve` configured it; the exit status."""
    parser = argparse.ArgumentParser(prog="python -m avalon_worker._cli.front_door", description=__doc__)
    parser.add_argument("--endpoint", required=True)
    parser.add_argument("--listen-http", default="")
    parser.add_argument("--listen-fd", type=int, default=-1, help="the bound HTTP port, inherited from `serve`")
    parser.add_argument("--status-fd", type=int, default=-1, help="where to say ready or failed (a pipe to `serve`)")
    parser.add_argument("--store", default=os.environ.get(defaults.STORE_ENV), required=not os.environ.get(defaults.STORE_ENV))
    parser.add_argument("--max-request-bytes", type=int, required=True)
    parser.add_argument("--result-ttl", type=float, default=defaults.RESULT_TTL_S)
    parser.add_argument("--lease-s", type=float, default=10.0)
    parser.add_argument("--max-in-flight", type=int, default=16)
    parser.add_argument("--max-pending", type=int, default=defaults.MAX_PENDING)
    parser.add_argument("--log-level", default="INFO")
    parser.add_argument("--heartbeat-s", type=float, default=5.0)
    parser.add_argument("--stale-after-s", type=float, default=30.0)
    add_http_arguments(parser)
    parser.add_argument("--pending-ttl", type=float, default=defaults.PENDING_TTL_S)
    args = parser.parse_args(argv)
    configure_logging(args.log_level)
    config = FrontConfig(args.endpoint, args.listen_http, args.store, args.max_request_bytes, args.result_ttl,
                         args.lease_s, args.max_in_flight, args.max_pending, args.log_level, args.heartbeat_s,
                         args.stale_after_s, http_guard.limits_from(args), args.pending_ttl)
    say = status_writer(args.status_fd)
    sock = socket.socket(fileno=args.listen_fd) if args.listen_fd >= 0 else None
    if config.listen:
        http_guard.map_large_buffers()
    try:
        asyncio.run(serve_front_door(config, os.getppid(), sock, lambda line: say("ready", line)))
    except (StoreError, SetupError, OSError, TimeoutError, ValueError) as exc:
        if args.status_fd < 0:
            print(f"avalon-worker: the HTTP front door cannot serve: {exc}", file=sys.stderr)
        say("failed", str(exc))
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The front-door process that `serve` starts (`front.door.FrontDoor`): pump + store (+ HTTP
listener), run as `python -m avalon_worker._cli.front_door`, reporting to `serve` over a pipe.

Its settings come whole from `serve` (`FrontConfig.to_json`), the store in its environment: no
option is parsed, and no default written, a second time.
"""

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


def main(argv: Sequence[str] | None = None) -> int:
    """Run the front door as `serve` configured it; the exit status."""
    parser = argparse.ArgumentParser(prog="python -m avalon_worker._cli.front_door", description=__doc__)
    parser.add_argument("--settings", required=True, help="the front door's settings, from `serve` (JSON)")
    parser.add_argument("--listen-fd", type=int, default=-1, help="the bound HTTP port, inherited from `serve`")
    parser.add_argument("--status-fd", type=int, default=-1, help="where to say ready or failed (a pipe to `serve`)")
    args = parser.parse_args(argv)
    say = status_writer(args.status_fd)
    store = os.environ.get(defaults.STORE_ENV)
    try:
        if not store:
            raise ValueError(f"no store: ${defaults.STORE_ENV} is not set")
        config = FrontConfig.from_json(args.settings, store)
    except (ValueError, TypeError, KeyError) as exc:
        if args.status_fd < 0:
            print(f"avalon-worker: the HTTP front door cannot start: bad settings ({exc})", file=sys.stderr)
        say("failed", f"bad settings ({exc})")
        return 2
    configure_logging(config.log_level)
    sock = socket.socket(fileno=args.listen_fd) if args.listen_fd >= 0 else None
    if config.listen:
        http_guard.map_large_buffers()
    try:
        asyncio.run(serve_front_door(config, os.getppid(), sock, lambda line: say("ready", line)))
    except (StoreError, SetupError, OSError, TimeoutError, ValueError) as exc:
        if args.status_fd < 0:
            print(f"avalon-worker: the HTTP front door cannot serve: {exc}", file=sys.stderr)
        say("failed", str(exc))
        # A store that could not be reached is 1, as for every command; anything else is set-up.
        return exc.exit_status if isinstance(exc, StoreError) else 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""`avalon-worker config` (`--print` optional): the configuration `serve` would run with, as TOML."""

from __future__ import annotations

import argparse
import urllib.parse

from .console import say
from .options import config_toml
from .parser import add_server_arguments


def run(args: argparse.Namespace) -> int:
    """Print `serve`'s options in `args` as a file `--config` reads back (never a password)."""
    server = argparse.ArgumentParser()
    add_server_arguments(server)
    if args.store:
        store = urllib.parse.urlsplit(args.store)
        if store.password is not None:  # never on the screen: it would end up in files and logs
            user = store.netloc.rpartition("@")[0].partition(":")[0]
            args.store = urllib.parse.urlunsplit(store._replace(netloc=f"{user}@{store.netloc.rpartition('@')[2]}"))
            say("the store's password is not shown: give it in PGPASSWORD or ~/.pgpass")
    print(config_toml(args, server), end="")
    return 0

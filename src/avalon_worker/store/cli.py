"""`avalon-worker store migrate`: create or upgrade a work-order store's schema.

Workers and listeners migrate the store they open at start; this command lets an operator do it
first (for instance as a deployment's init step), with its own credentials. Exit status 0 when
the schema is current, 2 when the store cannot be opened or is newer than this program.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from . import POSTGRES_SCHEMES, open_store
from .base import StoreError

STORE_ENV = "AVALON_WORKER_STORE"


def add_store_argument(parser: argparse.ArgumentParser, *, required: bool) -> None:
    """`--store LOCATION`, defaulting to `$AVALON_WORKER_STORE` (where a URL with a password
    is better kept than on a command line, which every user of the host can read)."""
    default = os.environ.get(STORE_ENV) or None
    parser.add_argument(
        "--store", default=default, required=required and default is None,
        help=f"the work-order store: a SQLite file or postgresql://user@host:port/database "
        f"(default ${STORE_ENV}; the password may come from PGPASSWORD or ~/.pgpass)",
    )


def add_store_commands(commands: Any) -> None:
    """Add `store migrate` to the `avalon-worker` subcommands."""
    parser = commands.add_parser("store", help="manage the durable work-order store")
    actions = parser.add_subparsers(dest="store_action", required=True, metavar="ACTION")
    migrate = actions.add_parser(
        "migrate", help="create or upgrade the store's schema (workers and listeners also do this when they start)"
    )
    add_store_argument(migrate, required=True)
    migrate.set_defaults(func=run_migrate)


def run_migrate(args: argparse.Namespace) -> int:
    location = str(args.store)
    try:
        if location.startswith(POSTGRES_SCHEMES):
            from .postgres import SCHEMA_VERSION, PostgresStore

            store = PostgresStore(location, migrate=False)
            try:
                before = store.migrate()
            finally:
                store.close()
            where = store.where
        else:
            from .sqlite import SCHEMA_VERSION

            open_store(location).close()  # opening a SQLite store migrates it
            before, where = SCHEMA_VERSION, location
    except StoreError as exc:
        print(f"avalon-worker: {exc}", file=sys.stderr)
        return 2
    if before == SCHEMA_VERSION:
        print(f"the work-order store {where} is at schema version {SCHEMA_VERSION}; nothing to do")
    else:
        print(f"the work-order store {where} was migrated from schema version {before} to {SCHEMA_VERSION}")
    return 0

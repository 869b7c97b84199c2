"""`avalon-worker store migrate`: create or upgrade a work-order store's schema.

Workers and listeners migrate the store they open at start; this command lets an operator do it
first (for instance as a deployment's init step), with its own credentials. Exit status 0 when
the schema is current, 1 when the store cannot be reached, 2 when no retry can make it usable
(a database that does not exist, credentials refused, a schema newer than this program).
"""

from __future__ import annotations

import argparse

from ..store import POSTGRES_SCHEMES, StoreError
from .console import report


def run(args: argparse.Namespace) -> int:
    """`store migrate`: bring the store's schema up to this program's."""
    location = str(args.store)
    try:
        if location.startswith(POSTGRES_SCHEMES):
            from ..store.postgres import SCHEMA_VERSION, PostgresStore

            store = PostgresStore(location, migrate=False)
            try:
                before = store.migrate()
            finally:
                store.close()
            where = store.where
        else:
            from ..store.sqlite import SCHEMA_VERSION, SQLiteStore

            opened = SQLiteStore(location.removeprefix("sqlite://"))  # opening a SQLite store migrates it
            opened.close()
            before, where = opened.found_version, location
    except StoreError as exc:
        return report(exc)
    if before == SCHEMA_VERSION:
        print(f"the work-order store {where} is at schema version {SCHEMA_VERSION}; nothing to do")
    else:
        print(f"the work-order store {where} was migrated from schema version {before} to {SCHEMA_VERSION}")
    return 0

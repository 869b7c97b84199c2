"""Durable work-order stores behind one interface (`Store`); `open_store` picks the backend."""

from __future__ import annotations

from pathlib import Path

from .. import defaults
from .base import (
    Completion,
    Handoff,
    LeasedOrder,
    NewOrder,
    NewReceipt,
    OrderState,
    OrderStatus,
    Receipt,
    ReceiptOutcome,
    ReceiptPage,
    ReceiptQuery,
    ReceiptUpdate,
    Store,
    StoreError,
    StoreRefused,
    StoreSetupError,
    SubmitOutcome,
    WorkerRecord,
    canonical_id,
    expired_outcome,
)

__all__ = [
    "Completion",
    "Handoff",
    "LeasedOrder",
    "NewOrder",
    "NewReceipt",
    "OrderState",
    "OrderStatus",
    "Receipt",
    "ReceiptOutcome",
    "ReceiptPage",
    "ReceiptQuery",
    "ReceiptUpdate",
    "Store",
    "StoreError",
    "StoreSetupError",
    "StoreRefused",
    "SubmitOutcome",
    "WorkerRecord",
    "canonical_id",
    "describe_store",
    "expired_outcome",
    "open_store",
]

POSTGRES_SCHEMES = ("postgresql://", "postgres://")


def describe_store(location: str | Path) -> str:
    """The store's location for messages and logs: a database URL without its password."""
    text = str(location)
    if text.startswith(POSTGRES_SCHEMES):
        from .postgres import describe

        return "postgresql://" + describe(text)
    return text


def open_store(
    location: str | Path,
    *,
    max_pending: int = defaults.MAX_PENDING,
    max_pending_bytes: int = defaults.MAX_PENDING_BYTES,
) -> Store:
    """The store at `location`: a SQLite file (or a directory to keep one in), `sqlite:///path`,
    or a PostgreSQL database, `postgresql://user@host:port/database` (libpq's URL; the password
    is best kept in `PGPASSWORD` or `~/.pgpass`). Opening a PostgreSQL store creates or migrates
    its schema. Raises `StoreError` with a message a person can act on."""
    text = str(location)
    if text.startswith(POSTGRES_SCHEMES):
        from .postgres import PostgresStore

        return PostgresStore(text, max_pending=max_pending, max_pending_bytes=max_pending_bytes)
    if text.startswith("sqlite://"):
        text = text[len("sqlite://"):]
    elif "://" in text:
        scheme = text.split("://", 1)[0]
        raise StoreSetupError(f"unsupported store {scheme}://…; use a SQLite file path or a postgresql:// URL")
    from .sqlite import SQLiteStore

    return SQLiteStore(text, max_pending=max_pending, max_pending_bytes=max_pending_bytes)

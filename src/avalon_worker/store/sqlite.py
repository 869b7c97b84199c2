"""The store in one SQLite file (WAL): the embedded backend for one host.

One connection, used under a lock by whichever thread calls: SQLite allows one writer at a time
anyway, and the listener batches submits so that one commit (one fsync of the WAL) covers many
orders. Accepted orders and outcomes are committed with `synchronous=FULL`: durable across a
power cut, not only a crash of the process. Leases, heartbeats and purges skip the fsync (see
`_write`): losing one to a power cut only means a lease is taken again. The pending-queue limits are counted in memory, which is exact because this
connection is the only writer of the file (a second process opening the same file would still be
safe for leases and outcomes, but could let the queue run past its limit).

What SQLite refuses for the data itself (a constraint, a value too big) is raised as
`StoreRefused`; any other failure (a full disk, an I/O error, a busy file) as `StoreError`, after
which the store serves again once the cause has passed.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .. import defaults
from ..receipt import APPLICATION_TYPES
from .admission import Admission, admit
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
    StoreError,
    StoreRefused,
    StoreSetupError,
    SubmitOutcome,
    WorkerRecord,
    expired_outcome,
)

FILE_NAME = "work-orders.sqlite3"

PENDING, LEASED, DONE = 0, 1, 2

# Each entry takes the schema from the version before it to its own number (its index + 1).
# Never edit a released entry: add one.
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE orders (
        work_order_id TEXT PRIMARY KEY,
        worker_id TEXT NOT NULL,
        state INTEGER NOT NULL,
        request BLOB NOT NULL,          -- emptied once the order is done
        request_bytes INTEGER NOT NULL,
        submitted REAL NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        lease_owner TEXT,
        lease_expires REAL,
        outcome BLOB,
        is_error INTEGER,
        completed REAL
    );
    CREATE INDEX orders_queue ON orders (worker_id, state, submitted) WHERE state < 2;
    CREATE INDEX orders_done ON orders (completed) WHERE state = 2;
    CREATE TABLE workers (
        worker_id TEXT PRIMARY KEY,
        signup TEXT NOT NULL,
        registered REAL NOT NULL,
        heartbeat REAL NOT NULL
    );
    """,
    """
    ALTER TABLE orders ADD COLUMN requester_id TEXT NOT NULL DEFAULT '';
    ALTER TABLE orders ADD COLUMN request_hash BLOB;       -- for receipts, kept when the request is emptied
    ALTER TABLE orders ADD COLUMN receipt_update BLOB;     -- the worker's signed update, with the outcome
    CREATE TABLE receipts (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,             -- lookup order, never reused
        work_order_id TEXT NOT NULL UNIQUE REFERENCES orders (work_order_id) ON DELETE CASCADE,
        shown_id TEXT NOT NULL,                            -- workOrderId as sent
        worker_service_id TEXT NOT NULL,
        worker_id TEXT NOT NULL,
        requester_id TEXT NOT NULL,
        status INTEGER NOT NULL,
        update_count INTEGER NOT NULL DEFAULT 0,
        params BLOB NOT NULL,
        created REAL NOT NULL
    );
    CREATE INDEX receipts_requester ON receipts (requester_id, seq);
    CREATE INDEX receipts_worker ON receipts (worker_id, seq);
    CREATE TABLE receipt_updates (
        work_order_id TEXT NOT NULL REFERENCES receipts (work_order_id) ON DELETE CASCADE,
        idx INTEGER NOT NULL,
        updater_id TEXT NOT NULL,
        update_type INTEGER NOT NULL,
        params BLOB NOT NULL,
        PRIMARY KEY (work_order_id, idx)
    ) WITHOUT ROWID;
    """,
)
SCHEMA_VERSION = len(MIGRATIONS)


_MAX_PARAMETERS = 500  # ids per statement in batched reads (SQLite allows 32,766 parameters)


def _placeholders(count: int) -> str:
    return ",".join("?" * count)


def _append_update(db: sqlite3.Connection, work_order_id: str, update: ReceiptUpdate, seen: int | None) -> bool:
    """Append `update` to the order's receipt, if it has one (and `seen` updates, unless None)."""
    row = db.execute(
        "UPDATE receipts SET update_count = update_count + 1, status = CASE WHEN ? < ? THEN ? ELSE status END "
        "WHERE work_order_id = ? AND (? IS NULL OR update_count = ?) RETURNING update_count",
        (update.update_type, APPLICATION_TYPES, update.update_type, work_order_id, seen, seen),
    ).fetchone()
    if row is None:
        return False
    db.execute(
        "INSERT INTO receipt_updates (work_order_id, idx, updater_id, update_type, params) VALUES (?, ?, ?, ?, ?)",
        (work_order_id, row[0], update.updater_id, update.update_type, update.params),
    )
    return True


class SQLiteStore:
    """`Store` in a SQLite file; `path` is the file, or a directory to put `FILE_NAME` in."""

    in_process = True

    def __init__(
        self,
        path: str | Path,
        *,
        max_pending: int = defaults.MAX_PENDING,
        max_pending_bytes: int = defaults.MAX_PENDING_BYTES,
    ) -> None:
        target = Path(path)
        if target.is_dir():
            target = target / FILE_NAME
        self.path = target
        self.max_pending = max_pending
        self.max_pending_bytes = max_pending_bytes
        self._lock = threading.Lock()
        try:
            self._db = sqlite3.connect(str(target), isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("PRAGMA busy_timeout=10000")
            self._db.execute("PRAGMA foreign_keys=ON")  # a receipt goes with its order
            self.found_version = self._migrate()
            self._pending: dict[str, list[int]] = {}  # worker id → [orders, bytes] not yet done
            for worker_id, count, size in self._db.execute(
                "SELECT worker_id, count(*), coalesce(sum(request_bytes), 0) FROM orders WHERE state < 2 GROUP BY worker_id"
            ):
                self._pending[worker_id] = [count, size]
        except sqlite3.Error as exc:
            raise StoreSetupError(f"cannot open the work-order store {target}: {exc}") from None

    def _migrate(self) -> int:
        """Bring the schema to `SCHEMA_VERSION`, in one transaction; return the version found."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            self._db.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
            row = self._db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
            found = int(row[0]) if row is not None else 0
            if found > SCHEMA_VERSION:
                raise StoreSetupError(
                    f"the work-order store {self.path} has schema version {found}, newer than this "
                    f"avalon-worker understands ({SCHEMA_VERSION}); upgrade avalon-worker"
                )
            for version in range(found + 1, SCHEMA_VERSION + 1):
                for statement in MIGRATIONS[version - 1].split(";"):
                    if statement.strip():
                        self._db.execute(statement)
            self._db.execute(
                "INSERT INTO meta VALUES ('schema_version', ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (str(SCHEMA_VERSION),),
            )
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        return found

    @contextmanager
    def _errors(self) -> Iterator[None]:
        """SQLite's errors as the store's: what it refuses for the data (IntegrityError,
        DataError) as `StoreRefused`, the rest (a full disk, an I/O error) as `StoreError`."""
        try:
            yield
        except (sqlite3.IntegrityError, sqlite3.DataError) as exc:
            raise StoreRefused(f"the work-order store {self.path} refused an operation: {exc}") from None
        except sqlite3.Error as exc:
            raise StoreError(f"the work-order store {self.path} failed: {exc}") from None

    def _write(self, sql_work: Any, *, durable: bool = True) -> Any:
        """Run `sql_work(db)` in one IMMEDIATE transaction, under the lock.

        A durable commit is on disk when it returns (the WAL is fsynced: synchronous=FULL). The
        others (leases, renewals, heartbeats, purges) survive a crash of the process but may be
        lost with the machine's power, which costs nothing worse than a lease taken again: they
        skip the fsync, and the next durable commit, which fsyncs the WAL, persists them too.
        """
        with self._lock, self._errors():
            if not durable:
                self._db.execute("PRAGMA synchronous=NORMAL")
            try:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    value = sql_work(self._db)
                    self._db.execute("COMMIT")
                except BaseException:
                    if self._db.in_transaction:  # SQLite rolls back by itself after some errors (a full disk)
                        self._db.execute("ROLLBACK")
                    raise
            finally:
                if not durable:
                    self._db.execute("PRAGMA synchronous=FULL")
            return value

    # orders --------------------------------------------------------------------------------------

    def submit(self, orders: Sequence[NewOrder], now: float, handoff: Handoff | None = None) -> list[SubmitOutcome]:
        if not orders:
            return []
        ids = [order.work_order_id for order in orders]

        def work(db: sqlite3.Connection) -> Admission:
            existing = dict.fromkeys(self._present(db, ids), False)
            admission = admit(orders, existing=existing, queued=self._pending, max_pending=self.max_pending,
                              max_pending_bytes=self.max_pending_bytes, handoff=handoff, now=now)
            owner, expires = (handoff.owner, now + handoff.lease_s) if handoff else (None, None)
            db.executemany(
                "INSERT INTO orders (work_order_id, worker_id, state, request, request_bytes, submitted, "
                "lease_owner, lease_expires, attempts, requester_id, request_hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [(o.work_order_id, o.worker_id, PENDING, o.request, len(o.request), now, None, None, 0, o.requester_id,
                  o.request_hash)
                 if o.work_order_id not in admission.handed else
                 (o.work_order_id, o.worker_id, LEASED, o.request, len(o.request), now, owner, expires, 1, o.requester_id,
                  o.request_hash)
                 for o in admission.chosen],
            )
            return admission

        admission: Admission = self._write(work)
        for worker_id, (count, size) in admission.added.items():  # only once the commit succeeded
            totals = self._pending.setdefault(worker_id, [0, 0])
            totals[0] += count
            totals[1] += size
        return admission.outcomes

    @staticmethod
    def _present(db: sqlite3.Connection, ids: Sequence[str]) -> list[str]:
        """Which of `ids` the store holds (in any state)."""
        found: list[str] = []
        unique = list(dict.fromkeys(ids))
        for first in range(0, len(unique), _MAX_PARAMETERS):
            chunk = unique[first : first + _MAX_PARAMETERS]
            found += [row[0] for row in db.execute(
                f"SELECT work_order_id FROM orders WHERE work_order_id IN ({_placeholders(len(chunk))})", chunk)]
        return found

    def lease(self, worker_id: str, owner: str, limit: int, lease_s: float, now: float) -> list[LeasedOrder]:
        if limit <= 0:
            return []
        expires = now + lease_s

        def work(db: sqlite3.Connection) -> list[LeasedOrder]:
            rows = db.execute(
                "UPDATE orders SET state = ?, lease_owner = ?, lease_expires = ?, attempts = attempts + 1 "
                "WHERE work_order_id IN (SELECT work_order_id FROM orders WHERE worker_id = ? AND state < 2 "  # the queue's index
                "AND (state = ? OR lease_expires <= ?) ORDER BY submitted LIMIT ?) "
                "RETURNING work_order_id, request, attempts, submitted",
                (LEASED, owner, expires, worker_id, PENDING, now, limit),
            ).fetchall()
            rows.sort(key=lambda row: row[3])
            return [LeasedOrder(row[0], bytes(row[1]), row[2], expires) for row in rows]

        leased: list[LeasedOrder] = self._write(work, durable=False)
        return leased

    def renew(self, owner: str, work_order_ids: Sequence[str], lease_s: float, now: float) -> int:
        return self._update_leases("lease_expires = ?", (now + lease_s,), owner, work_order_ids)

    def release(self, owner: str, work_order_ids: Sequence[str]) -> int:
        return self._update_leases(
            "state = ?, lease_owner = NULL, lease_expires = NULL", (PENDING,), owner, work_order_ids
        )

    def _update_leases(self, assignments: str, values: tuple[Any, ...], owner: str, work_order_ids: Sequence[str]) -> int:
        """Apply `assignments` to the orders `owner` holds leased; return how many there were."""
        if not work_order_ids:
            return 0
        ids = list(work_order_ids)
        count: int = self._write(
            lambda db: db.execute(
                f"UPDATE orders SET {assignments} WHERE state = ? AND lease_owner = ? "
                f"AND work_order_id IN ({_placeholders(len(ids))})",
                (*values, LEASED, owner, *ids),
            ).rowcount,
            durable=False,
        )
        return count

    def complete(self, completions: Sequence[Completion], now: float) -> list[bool]:
        finished: list[tuple[str, int]] = []  # (worker id, request bytes) of each order finished here

        def work(db: sqlite3.Connection) -> list[bool]:
            stored = []
            for item in completions:
                update = item.receipt_update
                row = db.execute(
                    "UPDATE orders SET state = ?, outcome = ?, is_error = ?, completed = ?, request = x'', "
                    "lease_owner = NULL, lease_expires = NULL, receipt_update = ? WHERE work_order_id = ? AND state < ? "
                    "RETURNING worker_id, request_bytes",
                    (DONE, item.outcome, int(item.is_error), now, update.params if update else None,
                     item.work_order_id, DONE),
                ).fetchone()
                stored.append(row is not None)
                if row is not None:
                    finished.append((row[0], row[1]))
                    if update is not None:
                        _append_update(db, item.work_order_id, update, None)
            return stored

        stored: list[bool] = self._write(work)
        for worker_id, size in finished:
            totals = self._pending.get(worker_id)
            if totals is not None:
                totals[0] -= 1
                totals[1] -= size
        return stored

    def status(self, work_order_id: str) -> OrderStatus | None:
        with self._lock, self._errors():
            row = self._db.execute(
                "SELECT state, outcome, is_error FROM orders WHERE work_order_id = ?", (work_order_id,)
            ).fetchone()
        if row is None:
            return None
        if row[0] != DONE:
            return OrderStatus(OrderState.PENDING)
        return OrderStatus(OrderState.DONE, bytes(row[1]), bool(row[2]))

    def finished(self, work_order_ids: Sequence[str]) -> list[Completion]:
        ids = list(dict.fromkeys(work_order_ids))
        found: list[Completion] = []
        with self._lock, self._errors():
            for first in range(0, len(ids), _MAX_PARAMETERS):
                chunk = ids[first : first + _MAX_PARAMETERS]
                found += [
                    Completion(row[0], bytes(row[1]), bool(row[2]))
                    for row in self._db.execute(
                        f"SELECT work_order_id, outcome, is_error FROM orders WHERE state = ? "
                        f"AND work_order_id IN ({_placeholders(len(chunk))})",
                        (DONE, *chunk),
                    )
                ]
        return found

    def purge(self, result_ttl_s: float, now: float, limit: int) -> int:
        count: int = self._write(
            lambda db: db.execute(
                "DELETE FROM orders WHERE rowid IN (SELECT rowid FROM orders WHERE state = 2 AND completed < ? "
                "ORDER BY completed LIMIT ?)", (now - result_ttl_s, limit)
            ).rowcount,
            durable=False,
        )
        return count

    def expire(self, pending_ttl_s: float, now: float) -> int:
        before, after = expired_outcome(pending_ttl_s)
        cutoff = now - pending_ttl_s
        rows: list[tuple[str, int]] = self._write(
            lambda db: db.execute(
                "UPDATE orders SET state = ?, outcome = CAST(? || work_order_id || ? AS BLOB), is_error = 1, "
                "completed = ?, request = x'', lease_owner = NULL, lease_expires = NULL "
                "WHERE state < ? AND submitted < ? AND (state = ? OR lease_expires <= ?) AND NOT EXISTS "
                "(SELECT 1 FROM workers w WHERE w.worker_id = orders.worker_id AND w.heartbeat >= ?) "
                "RETURNING worker_id, request_bytes",
                (DONE, before, after, now, DONE, cutoff, PENDING, now, cutoff),
            ).fetchall()
        )
        for worker_id, size in rows:
            totals = self._pending.get(worker_id)
            if totals is not None:
                totals[0] -= 1
                totals[1] -= size
        return len(rows)

    # workers -------------------------------------------------------------------------------------

    def register_worker(self, worker_id: str, signup: dict[str, Any], now: float) -> None:
        self._write(
            lambda db: db.execute(
                "INSERT INTO workers (worker_id, signup, registered, heartbeat) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (worker_id) DO UPDATE SET signup = excluded.signup, heartbeat = excluded.heartbeat",
                (worker_id, WorkerRecord.signup_text(signup), now, now),
            )
        )

    def heartbeat(self, worker_id: str, now: float) -> None:
        self._write(lambda db: db.execute("UPDATE workers SET heartbeat = ? WHERE worker_id = ?", (now, worker_id)), durable=False)

    def worker(self, worker_id: str) -> WorkerRecord | None:
        with self._lock, self._errors():
            row = self._db.execute(
                "SELECT worker_id, signup, registered, heartbeat FROM workers WHERE worker_id = ?", (worker_id,)
            ).fetchone()
        return None if row is None else WorkerRecord(row[0], json.loads(row[1]), row[2], row[3])

    def workers(self) -> list[WorkerRecord]:
        with self._lock, self._errors():
            rows = self._db.execute(
                "SELECT worker_id, signup, registered, heartbeat FROM workers ORDER BY registered, worker_id"
            ).fetchall()
        return [WorkerRecord(row[0], json.loads(row[1]), row[2], row[3]) for row in rows]

    # receipts ------------------------------------------------------------------------------------

    def create_receipt(self, receipt: NewReceipt, now: float) -> ReceiptOutcome:
        def work(db: sqlite3.Connection) -> ReceiptOutcome:
            order = db.execute(
                "SELECT state, request_hash, worker_id, requester_id, receipt_update FROM orders WHERE work_order_id = ?",
                (receipt.work_order_id,),
            ).fetchone()
            if order is None:
                return ReceiptOutcome.UNKNOWN_ORDER
            if db.execute("SELECT 1 FROM receipts WHERE work_order_id = ?", (receipt.work_order_id,)).fetchone():
                return ReceiptOutcome.DUPLICATE
            if order[1] is None or bytes(order[1]) != receipt.request_hash or (order[2], order[3]) != (
                receipt.worker_id, receipt.requester_id
            ):
                return ReceiptOutcome.NOT_THE_ORDER
            db.execute(
                "INSERT INTO receipts (work_order_id, shown_id, worker_service_id, worker_id, requester_id, status, "
                "params, created) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (receipt.work_order_id, receipt.shown_id, receipt.worker_service_id, receipt.worker_id,
                 receipt.requester_id, receipt.status, receipt.params, now),
            )
            if order[0] == DONE and order[4] is not None:
                _append_update(db, receipt.work_order_id, ReceiptUpdate.from_params(bytes(order[4])), None)
            return ReceiptOutcome.CREATED

        outcome: ReceiptOutcome = self._write(work)
        return outcome

    def add_receipt_update(self, work_order_id: str, update: ReceiptUpdate, seen: int) -> bool:
        added: bool = self._write(lambda db: _append_update(db, work_order_id, update, seen))
        return added

    def receipt(self, work_order_id: str) -> Receipt | None:
        with self._lock, self._errors():
            row = self._db.execute(
                "SELECT requester_id, params, status FROM receipts WHERE work_order_id = ?", (work_order_id,)
            ).fetchone()
            if row is None:
                return None
            updates = self._db.execute(
                "SELECT updater_id, update_type, params FROM receipt_updates WHERE work_order_id = ? ORDER BY idx",
                (work_order_id,),
            ).fetchall()
        return Receipt(work_order_id, row[0], bytes(row[1]), row[2],
                       tuple(ReceiptUpdate(u[0], u[1], bytes(u[2])) for u in updates))

    def lookup_receipts(self, query: ReceiptQuery, after: int, limit: int) -> ReceiptPage:
        conditions, values = [], []
        for column, wanted in (("worker_service_id", query.worker_service_id), ("worker_id", query.worker_id),
                               ("requester_id", query.requester_id), ("status", query.status)):
            if wanted is not None:
                conditions.append(f"{column} = ?")
                values.append(wanted)
        where = " AND ".join(conditions) or "1"
        with self._lock, self._errors():
            [total] = self._db.execute(f"SELECT count(*) FROM receipts WHERE {where}", values).fetchone()
            rows = self._db.execute(
                f"SELECT seq, shown_id FROM receipts WHERE {where} AND seq > ? ORDER BY seq LIMIT ?",
                (*values, after, limit + 1),
            ).fetchall()
        return ReceiptPage(total, tuple(row[1] for row in rows[:limit]), rows[limit - 1][0] if len(rows) > limit else None)

    def close(self) -> None:
        with self._lock:
            self._db.close()

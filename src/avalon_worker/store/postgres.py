"""The store in PostgreSQL: one database shared by any number of worker hosts and listeners.

Listeners write orders and read outcomes; each worker host's pump leases the orders addressed to
its worker id with `SELECT … FOR UPDATE SKIP LOCKED` (so pumps never wait on each other's rows)
and writes outcomes back. Each notification names a worker id, never an order: `submit` sends
`NOTIFY avalon_work_orders, '<worker id>'` in its transaction (delivered at commit), and
`complete`, once its transaction has committed, `NOTIFY avalon_results, '<worker id>'` for the
workers whose outcomes it stored; a notification that cannot be sent never undoes an outcome.
`subscribe` turns them into callbacks, so pumps and waiting submits wake without polling.
Notifications sent while a subscriber was disconnected are lost; it is told everything may have
changed when it reconnects, and callers keep a slow poll as well.

Connections come from a pool (psycopg 3). When the server goes away (a restart, a fail-over),
every call retries on a new connection for up to `reconnect_s` and then raises `StoreError`;
so do serialization failures, deadlocks and a server short of resources. What the server
refuses for the data itself (a constraint, a value too large for an index, bad data) is raised
at once as `StoreRefused`: trying again cannot help. A
commit whose acknowledgement was lost is recognised on the retry by what it wrote (the exact
submit time, lease expiry or completion time it stored), so an accepted order is never reported
as a duplicate of itself and a lease is never taken twice by the same call.

Times are the callers' (`now`): hosts sharing a database need synchronised clocks (NTP), as lease
expiry and heartbeats compare times written by different hosts.

The pending-queue limits are per worker id and exact across listeners: a submit takes a
transaction-scoped advisory lock per worker id it adds to, then counts what is not done yet.

The schema is versioned (`schema_version`) and migrated on open under an advisory lock, so many
processes may start at once; a database written by a newer version is refused.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Sequence
from collections.abc import Set as AbstractSet
from typing import Any, TypeVar

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

try:
    import psycopg
    from psycopg.conninfo import conninfo_to_dict
    from psycopg_pool import ConnectionPool, PoolTimeout
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise StoreSetupError(
        "the PostgreSQL store needs psycopg 3 and psycopg-pool: pip install 'avalon-worker[postgres]'"
    ) from exc

logger = logging.getLogger(__name__)

T = TypeVar("T")

PENDING, LEASED, DONE = 0, 1, 2
ORDERS_CHANNEL = "avalon_work_orders"
RESULTS_CHANNEL = "avalon_results"
# SQLSTATE classes and codes worth another try: connection exceptions, insufficient resources,
# operator intervention (a shutdown), system errors; serialization failures and deadlocks; a lock
# not available. Everything else the server answers is about the call itself.
_TRANSIENT_CLASSES = ("08", "53", "57", "58")
_TRANSIENT_STATES = frozenset({"40001", "40P01", "55P03"})
# Advisory locks are keyed (class, key); these classes are ours ("AVW0", "AVW1").
_MIGRATION_LOCK_CLASS = 0x41565730
_QUEUE_LOCK_CLASS = 0x41565731
# Joined into a statement that is its own transaction (autocommit): that transaction's commit does
# not wait for the WAL's flush, as `SET LOCAL synchronous_commit TO off` in a transaction block
# would, without the block's three extra round trips.
NOT_DURABLE = "(SELECT set_config('synchronous_commit', 'off', true)) AS not_durable"

# Each entry takes the schema from the version before it to its own number (its index + 1).
# Never edit a released entry: add one.
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE work_orders (
        work_order_id text PRIMARY KEY,
        worker_id text NOT NULL,
        state smallint NOT NULL,
        request bytea NOT NULL,              -- emptied once the order is done
        request_bytes integer NOT NULL,
        submitted double precision NOT NULL,
        attempts integer NOT NULL DEFAULT 0,
        lease_owner text,
        lease_expires double precision,
        outcome bytea,
        is_error boolean,
        completed double precision
    );
    CREATE INDEX work_orders_queue ON work_orders (worker_id, submitted) INCLUDE (request_bytes)
        WHERE state < 2;
    CREATE INDEX work_orders_done ON work_orders (completed) WHERE state = 2;
    CREATE TABLE workers (
        worker_id text PRIMARY KEY,
        signup text NOT NULL,
        registered double precision NOT NULL,
        heartbeat double precision NOT NULL
    );
    """,
    """
    ALTER TABLE work_orders ADD COLUMN requester_id text NOT NULL DEFAULT '',
        ADD COLUMN request_hash bytea,                 -- for receipts, kept when the request is emptied
        ADD COLUMN receipt_update bytea;               -- the worker's signed update, with the outcome
    CREATE TABLE receipts (
        seq bigint GENERATED ALWAYS AS IDENTITY UNIQUE,  -- lookup order
        work_order_id text PRIMARY KEY REFERENCES work_orders (work_order_id) ON DELETE CASCADE,
        shown_id text NOT NULL,                        -- workOrderId as sent
        worker_service_id text NOT NULL,
        worker_id text NOT NULL,
        requester_id text NOT NULL,
        status integer NOT NULL,
        update_count integer NOT NULL DEFAULT 0,
        params bytea NOT NULL,
        created double precision NOT NULL
    );
    CREATE INDEX receipts_requester ON receipts (requester_id, seq);
    CREATE INDEX receipts_worker ON receipts (worker_id, seq);
    CREATE TABLE receipt_updates (
        work_order_id text NOT NULL REFERENCES receipts (work_order_id) ON DELETE CASCADE,
        idx integer NOT NULL,
        updater_id text NOT NULL,
        update_type integer NOT NULL,
        params bytea NOT NULL,
        PRIMARY KEY (work_order_id, idx)
    );
    """,
    # One call stores a batch of outcomes and appends the worker's updates to their receipts: one
    # round trip where a transaction took four. The receipts' statement must see a receipt created
    # while the outcomes' statement waited for that order's row (`create_receipt` holds it FOR
    # SHARE): a VOLATILE function's every statement takes a fresh snapshot, where one statement
    # of two CTEs would share the first's and miss it (a test in tests/test_store_receipts.py holds
    # that case). The functions' statements keep one generic plan each (planned anew when ANALYZE
    # changes the tables' statistics): planned for every call, they cost the server more than the
    # round trips saved.
    """
    -- Append each update to its order's receipt, for the orders that have one (and, with `seen`,
    -- only if it has that many updates; with `only_ids`, only for those); how many were appended.
    -- The receipt's row lock orders concurrent updates to one receipt.
    CREATE FUNCTION append_receipt_updates(
        ids text[], updaters text[], kinds integer[], updates bytea[], seen integer, only_ids text[],
        first_application_type integer)
    RETURNS integer LANGUAGE plpgsql VOLATILE SET plan_cache_mode = force_generic_plan AS $$
    DECLARE
        appended integer;
    BEGIN
        WITH r AS (
            UPDATE receipts r SET update_count = r.update_count + 1,
                status = CASE WHEN v.kind < first_application_type THEN v.kind ELSE r.status END
            FROM unnest(ids, kinds) AS v(id, kind)
            WHERE r.work_order_id = v.id AND v.kind IS NOT NULL AND (seen IS NULL OR r.update_count = seen)
                AND (only_ids IS NULL OR v.id = ANY(only_ids))
            RETURNING r.work_order_id, r.update_count),
        added AS (
            INSERT INTO receipt_updates (work_order_id, idx, updater_id, update_type, params)
            SELECT r.work_order_id, r.update_count, v.updater, v.kind, v.params
            FROM r JOIN unnest(ids, updaters, kinds, updates) AS v(id, updater, kind, params) ON v.id = r.work_order_id
            RETURNING 1)
        SELECT count(*) INTO appended FROM added;
        RETURN appended;
    END $$;
    CREATE FUNCTION complete_work_orders(
        ids text[], outcomes bytea[], errors boolean[], updaters text[], kinds integer[], updates bytea[],
        done_state smallint, completed_at double precision, first_application_type integer)
    RETURNS TABLE (stored_id text, stored_worker text) LANGUAGE plpgsql VOLATILE
    SET plan_cache_mode = force_generic_plan AS $$
    DECLARE
        stored text[];
        owners text[];
    BEGIN
        WITH s AS (
            UPDATE work_orders o SET state = done_state, outcome = v.outcome, is_error = v.is_error,
                completed = completed_at, request = '', lease_owner = NULL, lease_expires = NULL,
                receipt_update = v.params
            FROM unnest(ids, outcomes, errors, updates) AS v(id, outcome, is_error, params)
            WHERE o.work_order_id = v.id AND o.state < done_state
            RETURNING o.work_order_id, o.worker_id)
        SELECT array_agg(s.work_order_id), array_agg(s.worker_id) INTO stored, owners FROM s;
        IF stored IS NOT NULL THEN
            PERFORM append_receipt_updates(ids, updaters, kinds, updates, NULL, stored, first_application_type);
        END IF;
        RETURN QUERY SELECT * FROM unnest(stored, owners);
    END $$;
    -- What a submit's admission reads, after taking its queues' locks, in one round trip: each
    -- worker's queue (count and bytes), then the orders whose ids are taken (worker, time, size).
    -- The read is a statement after the locks', so its snapshot sees what the submits that held
    -- them committed: the queue limits stay exact across listeners.
    CREATE FUNCTION lock_and_read_queues(lock_class integer, workers text[], ids text[])
    RETURNS TABLE (worker text, taken_id text, queued bigint, submitted_at double precision, queued_bytes bigint)
    LANGUAGE plpgsql VOLATILE SET plan_cache_mode = force_generic_plan AS $$
    BEGIN
        PERFORM pg_advisory_xact_lock(lock_class, hashtext(w)) FROM unnest(workers) AS w;
        RETURN QUERY
            SELECT o.worker_id, NULL::text, count(*), NULL::double precision, coalesce(sum(o.request_bytes), 0)::bigint
            FROM work_orders o WHERE o.worker_id = ANY(workers) AND o.state < 2 GROUP BY o.worker_id
            UNION ALL SELECT o.worker_id, o.work_order_id, NULL::bigint, o.submitted, o.request_bytes::bigint
            FROM work_orders o WHERE o.work_order_id = ANY(ids);
    END $$;
    """,
)
SCHEMA_VERSION = len(MIGRATIONS)


def describe(url: str) -> str:
    """`host:port/database` of a connection URL, for messages: never its password."""
    try:
        parts = conninfo_to_dict(url)
    except psycopg.Error:
        return "(an unreadable PostgreSQL URL)"
    return f"{parts.get('host', 'localhost')}:{parts.get('port', 5432)}/{parts.get('dbname', '')}"


def is_transient(exc: BaseException) -> bool:
    """Whether an error from psycopg may pass if the call is made again: a lost connection (no
    SQLSTATE), or one of the SQLSTATEs above. The rest (`DataError`, `IntegrityError`, a program
    limit such as an index entry too large, which psycopg files under `OperationalError` too)
    is the server refusing this call."""
    if isinstance(exc, PoolTimeout):
        return True
    if not isinstance(exc, psycopg.OperationalError):
        return False
    state = getattr(exc, "sqlstate", None)
    return state is None or state[:2] in _TRANSIENT_CLASSES or state in _TRANSIENT_STATES


# What the server says at connection time when no retry can help (libpq gives no SQLSTATE there).
_FOR_GOOD = ("does not exist", "authentication failed", "no pg_hba.conf entry", "no password supplied",
             "password is required")


def _refused_for_good(reason: str) -> bool:
    """Whether a failed connection's message says the server answered and refused (a missing
    database or role, a wrong password), not that it could not be reached."""
    return "FATAL:" in reason and any(fragment in reason for fragment in _FOR_GOOD)


def _server_says(reason: str) -> str:
    """The server's own words in a libpq connection error ("database "x" does not exist")."""
    return reason.split("FATAL:", 1)[1].strip()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__


class _Subscriber:
    def __init__(self, on_orders: Callable[[str | None], None] | None, on_results: Callable[[str | None], None] | None) -> None:
        self.on_orders = on_orders
        self.on_results = on_results

    @property
    def channels(self) -> set[str]:
        """The channels this subscriber hears."""
        return {channel for channel, callback in ((ORDERS_CHANNEL, self.on_orders), (RESULTS_CHANNEL, self.on_results))
                if callback is not None}


class _Notifications:
    """One connection that LISTENs, in a thread, on the channels its subscribers hear, and calls
    them: a process that only pumps is not woken by every stored outcome, nor a listener by
    every submit.

    After every (re)connect each subscriber is called with None: notifications sent while no one
    listened are gone, so anything may have changed. So is a subscriber whose channel the
    connection then starts to LISTEN on."""

    def __init__(self, url: str, retry_s: float = 1.0) -> None:
        self._url = url
        self._retry_s = retry_s
        self._subscribers: list[_Subscriber] = []
        self._listening: set[str] = set()  # on the current connection; read and written in the thread
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.connected = threading.Event()
        self._thread = threading.Thread(target=self._run, name="store-notifications", daemon=True)

    def add(self, subscriber: _Subscriber) -> None:
        """Add a subscriber; the first starts the thread, so that it hears the first connect
        (started earlier, the thread could connect and tell no one)."""
        with self._lock:
            self._subscribers.append(subscriber)
            if not self._thread.is_alive() and not self._stop.is_set():
                self._thread.start()

    def remove(self, subscriber: _Subscriber) -> None:
        with self._lock:
            if subscriber in self._subscribers:
                self._subscribers.remove(subscriber)

    def _each(self) -> list[_Subscriber]:
        with self._lock:
            return list(self._subscribers)

    def _run(self) -> None:
        lost = False
        while not self._stop.is_set():
            try:
                # TCP keepalives: a connection that died without a word (a cut network) is
                # noticed within about 25 s, not never.
                with psycopg.connect(
                    self._url, autocommit=True, connect_timeout=5, keepalives=1, keepalives_idle=10,
                    keepalives_interval=5, keepalives_count=3,
                ) as connection:
                    self._listening = set()
                    self._listen(connection)
                    self.connected.set()
                    if lost:
                        logger.info("store notifications: connected again")
                        lost = False
                    self._deliver_all_changed()
                    while not self._stop.is_set():
                        for note in connection.notifies(timeout=0.5):
                            self._deliver(note.channel, note.payload)
                        if self._listen(connection):  # a subscriber added since hears a new channel
                            self._deliver_all_changed()
            except psycopg.Error as exc:
                if not self._stop.is_set() and not lost:
                    logger.warning("store notifications lost their connection (%s); reconnecting", type(exc).__name__)
                    lost = True
            finally:
                self.connected.clear()
            self._stop.wait(self._retry_s)

    def _listen(self, connection: psycopg.Connection[Any]) -> bool:
        """LISTEN on the channels the subscribers hear that the connection does not yet; whether
        there were any."""
        new = set().union(*(subscriber.channels for subscriber in self._each())) - self._listening
        for channel in sorted(new):
            connection.execute(f"LISTEN {channel}")
            self._listening.add(channel)
        return bool(new)

    def _deliver_all_changed(self) -> None:
        for subscriber in self._each():
            if subscriber.on_orders is not None:
                subscriber.on_orders(None)
            if subscriber.on_results is not None:
                subscriber.on_results(None)

    def _deliver(self, channel: str, payload: str) -> None:
        for subscriber in self._each():
            if channel == ORDERS_CHANNEL and subscriber.on_orders is not None:
                subscriber.on_orders(payload)
            elif channel == RESULTS_CHANNEL and subscriber.on_results is not None:
                subscriber.on_results(payload)

    def close(self) -> None:
        with self._lock:
            self._stop.set()
        if self._thread.ident is not None:  # started
            self._thread.join(timeout=5)


def _append_updates(connection: psycopg.Connection[Any], updates: dict[str, ReceiptUpdate], seen: int | None = None) -> bool:
    """Append each update to its order's receipt, for the orders that have one (and, with
    `seen`, only if it has that many updates): `append_receipt_updates`; whether any was."""
    ids = list(updates)
    chosen = [updates[key] for key in ids]
    row = connection.execute(
        "SELECT append_receipt_updates(%b::text[], %b::text[], %b::integer[], %b::bytea[], %s::integer, NULL, %s::integer)",
        (ids, [u.updater_id for u in chosen], [u.update_type for u in chosen], [u.params for u in chosen], seen,
         APPLICATION_TYPES),
    ).fetchone()
    return bool(row and row[0])


class PostgresStore:
    """`Store` in a PostgreSQL database given by a `postgresql://` URL (libpq's form)."""

    in_process = False

    def __init__(
        self,
        url: str,
        *,
        max_pending: int = defaults.MAX_PENDING,
        max_pending_bytes: int = defaults.MAX_PENDING_BYTES,
        pool_size: int = 4,
        reconnect_s: float = 30.0,
        migrate: bool = True,
    ) -> None:
        self.url = url
        self.where = describe(url)
        self.max_pending = max_pending
        self.max_pending_bytes = max_pending_bytes
        self.reconnect_s = reconnect_s
        self._notifications: _Notifications | None = None
        self._notifications_lock = threading.Lock()
        self._wait_for_server()
        try:
            self._pool: ConnectionPool[psycopg.Connection[Any]] = ConnectionPool(
                url,
                min_size=1,
                max_size=max(2, pool_size),
                kwargs={"autocommit": True, "connect_timeout": 10},
                open=False,
                name="avalon-store",
                timeout=reconnect_s,
                reconnect_timeout=max(reconnect_s, 60.0),
            )
            self._pool.open(wait=True, timeout=reconnect_s)
        except (psycopg.Error, PoolTimeout) as exc:
            raise StoreError(f"cannot use the PostgreSQL store {self.where}: {exc}") from None
        if migrate:
            try:
                self.migrate()
            except BaseException:
                self._pool.close()
                raise

    # plumbing ------------------------------------------------------------------------------------

    def _wait_for_server(self) -> None:
        """Connect once, retrying for up to `reconnect_s` (a database may start after its
        clients); raise `StoreError` with the server's last answer if it never accepts us."""
        deadline = time.monotonic() + self.reconnect_s
        delay = 0.1
        while True:
            try:
                psycopg.connect(self.url, connect_timeout=max(1, int(deadline - time.monotonic()))).close()
                return
            except psycopg.OperationalError as exc:
                reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                if _refused_for_good(reason):
                    raise StoreSetupError(f"the PostgreSQL store {self.where} refused this client: {_server_says(reason)}",
                                          hint="check the URL's database and user, pg_hba.conf, and the password "
                                          "(PGPASSWORD or ~/.pgpass)") from None
                if time.monotonic() + delay >= deadline:
                    raise StoreError(
                        f"cannot connect to the PostgreSQL store {self.where} within {self.reconnect_s:g} s ({reason}); "
                        "check the URL, that the server runs and accepts this client (pg_hba.conf), and the password"
                    ) from None
                if delay == 0.1:
                    logger.warning("the PostgreSQL store %s is not reachable yet (%s); retrying", self.where, reason)
                time.sleep(delay)
                delay = min(delay * 2, 2.0)
            except psycopg.Error as exc:
                raise StoreError(f"cannot use the PostgreSQL store {self.where}: {exc}") from None

    def _run(self, work: Callable[[psycopg.Connection[Any], bool], T], *, transaction: bool = True) -> T:
        """Run `work(connection, retrying)` in one transaction; on a lost connection, again on a
        new one until `reconnect_s` has passed. `retrying` tells `work` that an earlier attempt may
        have committed without our knowing.

        `transaction=False`: `work` makes one statement, which is its own transaction (the
        connections are in autocommit), so no BEGIN and COMMIT round trips (each about 100 µs of
        CPU, ours and the server's, measured). Orders and outcomes are durable: the commit returns
        once the WAL is flushed. Leases, renewals, releases, heartbeats and purges are not: their
        statements join `NOT_DURABLE`, and a crash of the database server may forget the last of
        them, which costs no more than a lease taken again; they skip the wait for the flush, as
        in the SQLite store."""
        deadline = time.monotonic() + self.reconnect_s
        delay = 0.05
        retrying = False
        while True:
            try:
                with self._pool.connection(timeout=max(0.1, deadline - time.monotonic())) as connection:
                    if not transaction:
                        done = work(connection, retrying)
                    else:
                        with connection.transaction():
                            done = work(connection, retrying)
                if retrying:
                    logger.info("the PostgreSQL store %s is back", self.where)
                return done
            except (psycopg.Error, PoolTimeout) as exc:
                if not is_transient(exc):
                    raise StoreRefused(f"the PostgreSQL store {self.where} refused an operation: {_first_line(exc)}") from None
                if time.monotonic() + delay >= deadline:
                    raise StoreError(
                        f"the PostgreSQL store {self.where} did not answer for {self.reconnect_s:g} s: "
                        f"{type(exc).__name__}: {str(exc).strip()[:200]}"
                    ) from None
                if not retrying:
                    logger.warning("the PostgreSQL store %s went away (%s); retrying", self.where, type(exc).__name__)
                time.sleep(delay)
                delay = min(delay * 2, 1.0)
                retrying = True

    def migrate(self) -> int:
        """Create or upgrade the schema to `SCHEMA_VERSION`; return the version found before."""

        def work(connection: psycopg.Connection[Any], retrying: bool) -> int:
            connection.execute("SELECT pg_advisory_xact_lock(%s::int, 0)", (_MIGRATION_LOCK_CLASS,))
            connection.execute("CREATE TABLE IF NOT EXISTS schema_version (version integer NOT NULL)")
            row = connection.execute("SELECT max(version) FROM schema_version").fetchone()
            found = int(row[0]) if row and row[0] is not None else 0
            if found > SCHEMA_VERSION:
                raise StoreSetupError(
                    f"the PostgreSQL store {self.where} has schema version {found}, newer than this avalon-worker "
                    f"understands ({SCHEMA_VERSION}); upgrade avalon-worker"
                )
            for version in range(found + 1, SCHEMA_VERSION + 1):
                connection.execute(MIGRATIONS[version - 1])
                connection.execute("INSERT INTO schema_version (version) VALUES (%s)", (version,))
                logger.info("PostgreSQL store %s: schema migrated to version %d", self.where, version)
            return found

        found: int = self._run(work)
        return found

    def schema_version(self) -> int:
        row = self._run(lambda c, _: c.execute("SELECT max(version) FROM schema_version").fetchone(), transaction=False)
        return int(row[0]) if row and row[0] is not None else 0

    # orders --------------------------------------------------------------------------------------

    def submit(self, orders: Sequence[NewOrder], now: float, handoff: Handoff | None = None) -> list[SubmitOutcome]:
        if not orders:
            return []

        def work(connection: psycopg.Connection[Any], retrying: bool) -> list[SubmitOutcome]:
            # Locked in sorted order, so that two submits never wait on each other's locks in a cycle.
            workers = sorted({order.worker_id for order in orders})
            ids = [order.work_order_id for order in orders]
            queued: dict[str, tuple[int, int]] = {}
            found: dict[str, tuple[str, float, int]] = {}
            for worker, wo_id, count, submitted, size in connection.execute(
                "SELECT * FROM lock_and_read_queues(%s::integer, %b::text[], %b::text[])", (_QUEUE_LOCK_CLASS, workers, ids)
            ):
                if wo_id is None:
                    queued[worker] = (count, size)
                else:
                    found[wo_id] = (worker, submitted, size)
            # An order an earlier attempt of this very call committed has our worker, time and size.
            existing = {
                order.work_order_id: retrying and found[order.work_order_id] == (order.worker_id, now, len(order.request))
                for order in reversed(orders) if order.work_order_id in found
            }
            admission = admit(orders, existing=existing, queued=queued, max_pending=self.max_pending,
                              max_pending_bytes=self.max_pending_bytes, handoff=handoff, now=now)
            outcomes = admission.outcomes
            inserted = self._insert(connection, admission, handoff, now)
            lost = {o.work_order_id for o in admission.chosen} - inserted
            if lost:  # another listener's submit of the same id, for another worker, committed first
                for index, order in enumerate(orders):
                    if order.work_order_id in lost and outcomes[index] is SubmitOutcome.ACCEPTED:
                        outcomes[index] = SubmitOutcome.DUPLICATE
                if handoff:  # the caller takes what `taken` says of these outcomes: lease exactly that
                    self._lease_also(connection, handoff, orders, outcomes, admission.handed & inserted, now)
            return outcomes

        outcomes: list[SubmitOutcome] = self._run(work)
        return outcomes

    @staticmethod
    def _insert(connection: psycopg.Connection[Any], admission: Admission, handoff: Handoff | None, now: float) -> set[str]:
        """Write the orders `admission` chose, those it hands off leased to the hand-off's owner;
        return the ids written. The notification (one per worker id: PostgreSQL folds equal
        ones in a transaction) is delivered at commit, so no pump looks before the orders are
        there; orders handed off need none."""
        chosen = admission.chosen
        if not chosen:
            return set()
        return {
            row[0]
            for row in connection.execute(
                "WITH added AS (INSERT INTO work_orders "
                "(work_order_id, worker_id, state, request, request_bytes, submitted, lease_owner, "
                "lease_expires, attempts, requester_id, request_hash) "
                "SELECT id, worker, CASE WHEN handed THEN %(leased)s ELSE %(pending)s END, request, "
                "octet_length(request), %(now)s, CASE WHEN handed THEN %(owner)s END, "
                "CASE WHEN handed THEN %(expires)s::double precision END, CASE WHEN handed THEN 1 ELSE 0 END, "
                "requester, hash FROM unnest(%(ids)b::text[], %(workers)b::text[], %(requests)b::bytea[], "
                "%(handed)b::boolean[], %(requesters)b::text[], %(hashes)b::bytea[]) "
                "AS v(id, worker, request, handed, requester, hash) "
                "ON CONFLICT (work_order_id) DO NOTHING RETURNING work_order_id, worker_id, state) "
                "SELECT work_order_id, CASE WHEN state = %(pending)s THEN pg_notify(%(channel)s, worker_id) END "
                "FROM added",
                {
                    "leased": LEASED, "pending": PENDING, "now": now,
                    "owner": handoff.owner if handoff else None,
                    "expires": now + handoff.lease_s if handoff else None,
                    "ids": [o.work_order_id for o in chosen], "workers": [o.worker_id for o in chosen],
                    "requests": [o.request for o in chosen],
                    "handed": [o.work_order_id in admission.handed for o in chosen], "channel": ORDERS_CHANNEL,
                    "requesters": [o.requester_id for o in chosen], "hashes": [o.request_hash for o in chosen],
                },
            )
        }

    @staticmethod
    def _lease_also(connection: psycopg.Connection[Any], handoff: Handoff, orders: Sequence[NewOrder],
                    outcomes: Sequence[SubmitOutcome], leased: AbstractSet[str], now: float) -> None:
        """Lease to the hand-off's owner the orders `taken` now names that the insert left pending
        (orders of this transaction, not yet visible to any other pump)."""
        missing = [o.work_order_id for o in handoff.taken(orders, outcomes, now) if o.work_order_id not in leased]
        if missing:
            connection.execute(
                "UPDATE work_orders SET state = %s, lease_owner = %s, lease_expires = %s, attempts = 1 "
                "WHERE work_order_id = ANY(%b::text[])",
                (LEASED, handoff.owner, now + handoff.lease_s, missing),
            )

    def lease(self, worker_id: str, owner: str, limit: int, lease_s: float, now: float) -> list[LeasedOrder]:
        if limit <= 0:
            return []
        expires = now + lease_s

        def work(connection: psycopg.Connection[Any], retrying: bool) -> list[LeasedOrder]:
            rows = connection.execute(
                "WITH picked AS (SELECT work_order_id FROM work_orders WHERE worker_id = %(worker)s AND state < 2 "
                "AND (state = %(pending)s OR lease_expires <= %(now)s) ORDER BY submitted LIMIT %(limit)s "
                "FOR UPDATE SKIP LOCKED) "
                "UPDATE work_orders o SET state = %(leased)s, lease_owner = %(owner)s, lease_expires = %(expires)s, "
                f"attempts = o.attempts + 1 FROM picked, {NOT_DURABLE} WHERE o.work_order_id = picked.work_order_id "
                "RETURNING o.work_order_id, o.request, o.attempts, o.submitted",
                {"worker": worker_id, "pending": PENDING, "now": now, "limit": limit, "leased": LEASED,
                 "owner": owner, "expires": expires},
            ).fetchall()
            if retrying:  # what an earlier attempt of this call leased and never heard back about
                rows += connection.execute(
                    "SELECT work_order_id, request, attempts, submitted FROM work_orders WHERE worker_id = %s "
                    "AND state = %s AND lease_owner = %s AND lease_expires = %s",
                    (worker_id, LEASED, owner, expires),
                ).fetchall()
            rows.sort(key=lambda row: row[3])
            return [LeasedOrder(row[0], bytes(row[1]), row[2], expires) for row in rows]

        leased: list[LeasedOrder] = self._run(work, transaction=False)
        return leased

    def renew(self, owner: str, work_order_ids: Sequence[str], lease_s: float, now: float) -> int:
        return self._update_leases("lease_expires = %s", (now + lease_s,), owner, work_order_ids)

    def release(self, owner: str, work_order_ids: Sequence[str]) -> int:
        return self._update_leases(
            "state = %s, lease_owner = NULL, lease_expires = NULL", (PENDING,), owner, work_order_ids, wake=True
        )

    def _update_leases(
        self, assignments: str, values: tuple[Any, ...], owner: str, work_order_ids: Sequence[str], *, wake: bool = False
    ) -> int:
        """Apply `assignments` to the orders `owner` holds leased; return how many there were.
        `wake`: tell the pumps of those orders' workers to look again."""
        if not work_order_ids:
            return 0
        ids = list(work_order_ids)

        def work(connection: psycopg.Connection[Any], retrying: bool) -> int:
            rows = connection.execute(
                f"UPDATE work_orders SET {assignments} FROM {NOT_DURABLE} WHERE state = %s AND lease_owner = %s "
                "AND work_order_id = ANY(%b::text[]) RETURNING worker_id",
                (*values, LEASED, owner, ids),
            ).fetchall()
            if wake and rows:
                connection.execute(
                    "SELECT pg_notify(%s, worker) FROM unnest(%b::text[]) AS w(worker)",
                    (ORDERS_CHANNEL, sorted({row[0] for row in rows})),
                )
            return len(rows)

        count: int = self._run(work, transaction=wake)  # a release's notification goes with its commit
        return count

    def complete(self, completions: Sequence[Completion], now: float) -> list[bool]:
        if not completions:
            return []
        first: dict[str, Completion] = {}
        for item in completions:
            first.setdefault(item.work_order_id, item)

        def work(connection: psycopg.Connection[Any], retrying: bool) -> dict[str, str]:
            items = list(first.values())
            updates = [item.receipt_update for item in items]
            stored = {
                row[0]: row[1]
                for row in connection.execute(
                    "SELECT * FROM complete_work_orders(%b::text[], %b::bytea[], %b::boolean[], %b::text[], "
                    "%b::integer[], %b::bytea[], %s::smallint, %s::double precision, %s::integer)",
                    ([i.work_order_id for i in items], [i.outcome for i in items], [i.is_error for i in items],
                     [u.updater_id if u else None for u in updates], [u.update_type if u else None for u in updates],
                     [u.params if u else None for u in updates], DONE, now, APPLICATION_TYPES),
                )
            }
            if retrying:  # an earlier attempt of this call stored them
                stored |= {
                    row[0]: row[1]
                    for row in connection.execute(
                        "SELECT work_order_id, worker_id FROM work_orders WHERE work_order_id = ANY(%b::text[]) AND state = %s "
                        "AND completed = %s",
                        ([i.work_order_id for i in items if i.work_order_id not in stored], DONE, now),
                    )
                }
            return stored

        stored: dict[str, str] = self._run(work, transaction=False)
        if stored:
            self._announce(RESULTS_CHANNEL, set(stored.values()))
        answered: list[bool] = []
        for item in completions:
            answered.append(first.get(item.work_order_id) is item and item.work_order_id in stored)
        return answered

    def _announce(self, channel: str, worker_ids: set[str]) -> None:
        """Notify `channel` once per worker id, after the commit that it announces, in a
        statement of its own: once, without the retries of `_run`. A notice that cannot be sent
        costs a waiting submit its early answer ("pending"; the requester polls), never an
        outcome."""
        try:
            with self._pool.connection(timeout=1.0) as connection:
                connection.execute("SELECT pg_notify(%s, w) FROM unnest(%b::text[]) AS t(w)", (channel, sorted(worker_ids)))
        except (psycopg.Error, PoolTimeout) as exc:
            logger.warning("outcomes were stored but not announced on the PostgreSQL store %s (%s); waiting "
                           "submits answer pending and their requesters poll", self.where, _first_line(exc))

    def status(self, work_order_id: str) -> OrderStatus | None:
        row = self._run(
            lambda c, _: c.execute(
                "SELECT state, outcome, is_error FROM work_orders WHERE work_order_id = %s", (work_order_id,)
            ).fetchone(),
            transaction=False,
        )
        if row is None:
            return None
        if row[0] != DONE:
            return OrderStatus(OrderState.PENDING)
        return OrderStatus(OrderState.DONE, bytes(row[1]), bool(row[2]))

    def finished(self, work_order_ids: Sequence[str]) -> list[Completion]:
        ids = list(dict.fromkeys(work_order_ids))
        if not ids:
            return []
        rows = self._run(
            lambda c, _: c.execute(
                "SELECT work_order_id, outcome, is_error FROM work_orders WHERE work_order_id = ANY(%b::text[]) AND state = %s",
                (ids, DONE),
            ).fetchall(),
            transaction=False,
        )
        return [Completion(row[0], bytes(row[1]), bool(row[2])) for row in rows]

    def purge(self, result_ttl_s: float, now: float, limit: int) -> int:
        count: int = self._run(
            lambda c, _: c.execute(
                f"DELETE FROM work_orders USING {NOT_DURABLE} WHERE work_order_id IN (SELECT work_order_id "
                "FROM work_orders WHERE state = 2 AND completed < %s ORDER BY completed LIMIT %s)", (now - result_ttl_s, limit)
            ).rowcount,
            transaction=False,
        )
        return count

    def expire(self, pending_ttl_s: float, now: float) -> int:
        before, after = expired_outcome(pending_ttl_s)
        cutoff = now - pending_ttl_s
        count: int = self._run(
            lambda c, _: c.execute(
                "WITH picked AS (SELECT work_order_id FROM work_orders o WHERE state < %(done)s AND submitted < %(cutoff)s "
                "AND (state = %(pending)s OR lease_expires <= %(now)s) AND NOT EXISTS (SELECT 1 FROM workers w "
                "WHERE w.worker_id = o.worker_id AND w.heartbeat >= %(cutoff)s) FOR UPDATE SKIP LOCKED) "
                "UPDATE work_orders o SET state = %(done)s, outcome = convert_to(%(before)s || o.work_order_id || %(after)s, "
                "'UTF8'), is_error = true, completed = %(now)s, request = '', lease_owner = NULL, lease_expires = NULL "
                "FROM picked WHERE o.work_order_id = picked.work_order_id",
                {"done": DONE, "cutoff": cutoff, "pending": PENDING, "now": now, "before": before, "after": after},
            ).rowcount,
            transaction=False,
        )
        return count

    # receipts ------------------------------------------------------------------------------------

    def create_receipt(self, receipt: NewReceipt, now: float) -> ReceiptOutcome:
        def work(connection: psycopg.Connection[Any], retrying: bool) -> ReceiptOutcome:
            # FOR SHARE: an outcome being stored for this order waits for this transaction, or
            # this one for it; either way the worker's update reaches the receipt.
            order = connection.execute(
                "SELECT state, request_hash, worker_id, requester_id, receipt_update FROM work_orders "
                "WHERE work_order_id = %s FOR SHARE",
                (receipt.work_order_id,),
            ).fetchone()
            if order is None:
                return ReceiptOutcome.UNKNOWN_ORDER
            existing = connection.execute(
                "SELECT params, created FROM receipts WHERE work_order_id = %s", (receipt.work_order_id,)
            ).fetchone()
            if existing is not None:  # an earlier attempt of this very call may have created it
                mine = retrying and (bytes(existing[0]), existing[1]) == (receipt.params, now)
                return ReceiptOutcome.CREATED if mine else ReceiptOutcome.DUPLICATE
            if order[1] is None or bytes(order[1]) != receipt.request_hash or (order[2], order[3]) != (
                receipt.worker_id, receipt.requester_id
            ):
                return ReceiptOutcome.NOT_THE_ORDER
            added = connection.execute(
                "INSERT INTO receipts (work_order_id, shown_id, worker_service_id, worker_id, requester_id, status, "
                "params, created) VALUES (%s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (work_order_id) DO NOTHING",
                (receipt.work_order_id, receipt.shown_id, receipt.worker_service_id, receipt.worker_id,
                 receipt.requester_id, receipt.status, receipt.params, now),
            ).rowcount
            if not added:  # another listener's create committed first
                return ReceiptOutcome.DUPLICATE
            if order[0] == DONE and order[4] is not None:
                _append_updates(connection, {receipt.work_order_id: ReceiptUpdate.from_params(bytes(order[4]))})
            return ReceiptOutcome.CREATED

        outcome: ReceiptOutcome = self._run(work)
        return outcome

    def add_receipt_update(self, work_order_id: str, update: ReceiptUpdate, seen: int) -> bool:
        def work(connection: psycopg.Connection[Any], retrying: bool) -> bool:
            if _append_updates(connection, {work_order_id: update}, seen):
                return True
            return bool(retrying and connection.execute(  # an earlier attempt of this call added it
                "SELECT 1 FROM receipt_updates WHERE work_order_id = %s AND idx = %s AND params = %s",
                (work_order_id, seen + 1, update.params),
            ).fetchone())

        added: bool = self._run(work)
        return added

    def receipt(self, work_order_id: str) -> Receipt | None:
        def work(connection: psycopg.Connection[Any], retrying: bool) -> Receipt | None:
            row = connection.execute(
                "SELECT requester_id, params, status FROM receipts WHERE work_order_id = %s", (work_order_id,)
            ).fetchone()
            if row is None:
                return None
            updates = connection.execute(
                "SELECT updater_id, update_type, params FROM receipt_updates WHERE work_order_id = %s ORDER BY idx",
                (work_order_id,),
            ).fetchall()
            return Receipt(work_order_id, row[0], bytes(row[1]), row[2],
                           tuple(ReceiptUpdate(u[0], u[1], bytes(u[2])) for u in updates))

        found: Receipt | None = self._run(work)
        return found

    def lookup_receipts(self, query: ReceiptQuery, after: int, limit: int) -> ReceiptPage:
        conditions: list[str] = []
        values: list[Any] = []
        for column, wanted in (("worker_service_id", query.worker_service_id), ("worker_id", query.worker_id),
                               ("requester_id", query.requester_id), ("status", query.status)):
            if wanted is not None:
                conditions.append(f"{column} = %s")
                values.append(wanted)
        where = " AND ".join(conditions) or "true"

        def work(connection: psycopg.Connection[Any], retrying: bool) -> ReceiptPage:
            row = connection.execute(f"SELECT count(*) FROM receipts WHERE {where}", values).fetchone()
            rows = connection.execute(
                f"SELECT seq, shown_id FROM receipts WHERE {where} AND seq > %s ORDER BY seq LIMIT %s",
                (*values, after, limit + 1),
            ).fetchall()
            last = rows[limit - 1][0] if len(rows) > limit else None
            return ReceiptPage(int(row[0]) if row else 0, tuple(r[1] for r in rows[:limit]), last)

        page: ReceiptPage = self._run(work)
        return page

    # workers -------------------------------------------------------------------------------------

    def register_worker(self, worker_id: str, signup: dict[str, Any], now: float) -> None:
        self._run(
            lambda c, _: c.execute(
                "INSERT INTO workers (worker_id, signup, registered, heartbeat) VALUES (%s, %s, %s, %s) "
                "ON CONFLICT (worker_id) DO UPDATE SET signup = excluded.signup, heartbeat = excluded.heartbeat",
                (worker_id, WorkerRecord.signup_text(signup), now, now),
            ),
            transaction=False,
        )

    def heartbeat(self, worker_id: str, now: float) -> None:
        self._run(
            lambda c, _: c.execute(
                f"UPDATE workers SET heartbeat = greatest(heartbeat, %s) FROM {NOT_DURABLE} WHERE worker_id = %s",
                (now, worker_id),
            ),
            transaction=False,
        )

    def worker(self, worker_id: str) -> WorkerRecord | None:
        row = self._run(
            lambda c, _: c.execute(
                "SELECT worker_id, signup, registered, heartbeat FROM workers WHERE worker_id = %s", (worker_id,)
            ).fetchone(),
            transaction=False,
        )
        return None if row is None else WorkerRecord(row[0], json.loads(row[1]), row[2], row[3])

    def workers(self) -> list[WorkerRecord]:
        rows = self._run(
            lambda c, _: c.execute(
                "SELECT worker_id, signup, registered, heartbeat FROM workers ORDER BY registered, worker_id"
            ).fetchall(),
            transaction=False,
        )
        return [WorkerRecord(row[0], json.loads(row[1]), row[2], row[3]) for row in rows]

    # notifications -------------------------------------------------------------------------------

    def subscribe(
        self,
        on_orders: Callable[[str | None], None] | None = None,
        on_results: Callable[[str | None], None] | None = None,
    ) -> Callable[[], None]:
        """Call `on_orders(worker_id)` when orders for a worker become runnable and
        `on_results(worker_id)` when outcomes of a worker's orders are stored, from a thread of
        the store's; both get None when notifications may have been missed. Returns the function
        that unsubscribes."""
        subscriber = _Subscriber(on_orders, on_results)
        with self._notifications_lock:
            if self._notifications is None:
                self._notifications = _Notifications(self.url)
            notifications = self._notifications
        notifications.add(subscriber)
        return lambda: notifications.remove(subscriber)

    def close(self) -> None:
        with self._notifications_lock:
            if self._notifications is not None:
                self._notifications.close()
                self._notifications = None
        self._pool.close()

"""The event store: behaviour events, idempotency keys and added items, in SQLite or PostgreSQL.

SQLite (the embedded default, one file) runs in WAL mode with `synchronous=FULL`: every commit fsyncs
the write-ahead log, so an acknowledged batch survives a power cut or kernel crash, not only a killed
process (`NORMAL` would survive only the latter, and the service promises more with every 2xx). Batches
of events amortise that fsync. Write transactions start with BEGIN IMMEDIATE so that concurrent writers
(threads or worker processes) queue on the busy timeout instead of failing. PostgreSQL commits are
durable with its default `synchronous_commit=on`. Every statement is parameterised (SQLAlchemy Core).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    Double,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    create_engine,
    delete,
    event,
    func,
    insert,
    select,
    text,
)
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import ArgumentError, IntegrityError

from lmrec.errors import LmrecError
from lmrec.serve.migrations import migrate
from lmrec.serve.schemas import CleanEvent

log = logging.getLogger(__name__)

_metadata = MetaData()
events_table = Table(
    "lmrec_events",
    _metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("user_id", String(256)),
    Column("item_id", String(256)),
    Column("type", String(64)),
    Column("ts", Double),
    Column("value", Double),
    Column("received_at", Double),
)
batches_table = Table(
    "lmrec_batches",
    _metadata,
    Column("idempotency_key", String(255), primary_key=True),
    Column("body_hash", String(64)),
    Column("response", Text),
    Column("created_at", Double),
)
items_table = Table(
    "lmrec_items",
    _metadata,
    Column("item_id", String(256), primary_key=True),
    Column("text", Text),
    Column("title", Text),
    Column("revision", BigInteger),
    Column("updated_at", Double),
)


class StoreError(LmrecError):
    """The store URL cannot be used."""


class IdempotencyConflict(LmrecError):
    """An idempotency key was reused with a different request body."""


@dataclass(frozen=True)
class StoredEvent:
    """An event as committed, with its store id (ids grow with commit order within one writer)."""

    id: int
    user_id: str
    item_id: str
    type: str
    timestamp: float
    value: float | None


@dataclass(frozen=True)
class StoredItem:
    """An item added through the service."""

    item_id: str
    text: str
    title: str | None


@dataclass(frozen=True)
class Appended:
    """The outcome of `EventStore.append`: the committed events, or the reply stored with a reused key."""

    events: list[StoredEvent]
    response: dict[str, Any]
    replayed: bool


def engine_url(url: str) -> str:
    """The SQLAlchemy URL for a store URL: `postgresql://` uses psycopg 3; only files for SQLite."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise StoreError(f"cannot parse store URL {url!r}; use sqlite:///FILE or postgresql://USER@HOST/DB.") from None
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    backend = parsed.get_backend_name()
    if backend == "sqlite" and parsed.database in (None, "", ":memory:"):
        raise StoreError("the SQLite store must be a file (sqlite:///path/events.sqlite), not in memory.")
    if backend not in ("sqlite", "postgresql"):
        raise StoreError(f"unsupported store {backend!r}; use sqlite:///path/events.sqlite or postgresql://…")
    return parsed.render_as_string(hide_password=False)


def _sqlite_engine(url: str) -> Engine:
    engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

    @event.listens_for(engine, "connect")
    def _configure(dbapi_connection, _record) -> None:
        dbapi_connection.isolation_level = None  # the driver must not open transactions; "begin" below does
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(conn: Connection) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get("write") else "BEGIN")

    return engine


class EventStore:
    """Events, idempotency keys and items behind one SQLAlchemy engine; schema migrated on open."""

    def __init__(self, url: str) -> None:
        self.url = engine_url(url)
        if make_url(self.url).get_backend_name() == "sqlite":
            self.engine = _sqlite_engine(self.url)
        else:
            self.engine = create_engine(self.url, pool_pre_ping=True, pool_size=8, max_overflow=16)
        self._writer = self.engine.execution_options(write=True)
        self.schema_version = migrate(self._writer)

    @property
    def display_url(self) -> str:
        """The URL without its password, for logs and replies."""
        return make_url(self.url).render_as_string(hide_password=True)

    @property
    def backend(self) -> str:
        """'sqlite' or 'postgresql'."""
        return self.engine.dialect.name

    def close(self) -> None:
        """Close every pooled connection."""
        self.engine.dispose()

    def ping(self) -> None:
        """Raise if the store cannot answer a query."""
        with self.engine.connect() as conn:
            conn.execute(text("SELECT 1"))

    def batch_reply(self, key: str, body_hash: str) -> dict[str, Any] | None:
        """The stored reply of an earlier batch with this key; IdempotencyConflict if its body differed."""
        with self.engine.connect() as conn:
            row = conn.execute(
                select(batches_table.c.body_hash, batches_table.c.response).where(
                    batches_table.c.idempotency_key == key
                )
            ).first()
        if row is None:
            return None
        if row.body_hash != body_hash:
            raise IdempotencyConflict(
                "this Idempotency-Key was already used with a different batch; use a new key for new events."
            )
        return json.loads(row.response)

    def append(
        self, events: Sequence[CleanEvent], response: dict[str, Any], key: str | None = None, body_hash: str = ""
    ) -> Appended:
        """Commit the events (and the key with its reply) in one transaction, or replay an earlier batch."""
        if key is not None:
            earlier = self.batch_reply(key, body_hash)
            if earlier is not None:
                return Appended([], earlier, True)
        now = time.time()
        rows = [
            {"user_id": e.user_id, "item_id": e.item_id, "type": e.type, "ts": e.timestamp, "value": e.value,
             "received_at": now}
            for e in events
        ]  # fmt: skip
        try:
            with self._writer.begin() as conn:
                if key is not None:
                    conn.execute(
                        insert(batches_table),
                        {"idempotency_key": key, "body_hash": body_hash, "response": json.dumps(response),
                         "created_at": now},
                    )  # fmt: skip
                returning = insert(events_table).returning(events_table.c.id, sort_by_parameter_order=True)
                ids = [row.id for row in conn.execute(returning, rows)]
        except IntegrityError:
            if key is None:
                raise
            earlier = self.batch_reply(key, body_hash)  # a concurrent request with the same key committed first
            if earlier is None:
                raise
            return Appended([], earlier, True)
        stored = [
            StoredEvent(i, e.user_id, e.item_id, e.type, e.timestamp, e.value) for i, e in zip(ids, events, strict=True)
        ]
        return Appended(stored, response, False)

    def user_events(self, user_id: str, limit: int | None = None) -> list[StoredEvent]:
        """A user's stored events in time order (ties by arrival), the most recent `limit` of them."""
        query = (
            select(events_table)
            .where(events_table.c.user_id == user_id)
            .order_by(events_table.c.ts.desc(), events_table.c.id.desc())
        )
        if limit is not None:
            query = query.limit(limit)
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
        return [StoredEvent(r.id, r.user_id, r.item_id, r.type, r.ts, r.value) for r in reversed(rows)]

    def count_user_events(self, user_id: str) -> int:
        """How many events of a user are stored."""
        query = select(func.count()).select_from(events_table).where(events_table.c.user_id == user_id)
        with self.engine.connect() as conn:
            return int(conn.execute(query).scalar_one())

    def user_ids(self, prefix: str, limit: int) -> list[str]:
        """The first `limit` distinct user ids with stored events that start with `prefix`, in code-point order
        (SQLite compares text by its bytes; PostgreSQL is told to, by the "C" collation)."""
        column = events_table.c.user_id
        ordered = (column.collate("C") if self.backend == "postgresql" else column).label("user_id")
        query = select(ordered).distinct().order_by(ordered).limit(limit)
        if prefix:
            query = query.where(func.substr(column, 1, len(prefix)) == prefix)
        with self.engine.connect() as conn:
            return [row.user_id for row in conn.execute(query)]

    def delete_user(self, user_id: str) -> int:
        """Erase every stored event of a user; returns how many were deleted."""
        with self._writer.begin() as conn:
            return int(conn.execute(delete(events_table).where(events_table.c.user_id == user_id)).rowcount)

    def all_events(self) -> list[StoredEvent]:
        """Every stored event in commit order (for tests, exports and audits)."""
        with self.engine.connect() as conn:
            rows = conn.execute(select(events_table).order_by(events_table.c.id)).all()
        return [StoredEvent(r.id, r.user_id, r.item_id, r.type, r.ts, r.value) for r in rows]

    def events_after(self, after_id: int) -> list[StoredEvent]:
        """The stored events with an id above `after_id`, in commit order (what a retrain has not seen yet)."""
        query = select(events_table).where(events_table.c.id > after_id).order_by(events_table.c.id)
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
        return [StoredEvent(r.id, r.user_id, r.item_id, r.type, r.ts, r.value) for r in rows]

    def upsert_items(self, items: Sequence[StoredItem]) -> None:
        """Add or replace items; their revision is one above the store's latest (writers are serialised)."""
        now = time.time()
        with self._writer.begin() as conn:
            if self.backend == "postgresql":
                conn.execute(text("LOCK TABLE lmrec_items IN SHARE ROW EXCLUSIVE MODE"))
            revision = int(conn.execute(select(func.coalesce(func.max(items_table.c.revision), 0))).scalar_one()) + 1
            ids = [item.item_id for item in items]
            conn.execute(delete(items_table).where(items_table.c.item_id.in_(ids)))
            conn.execute(
                insert(items_table),
                [{"item_id": i.item_id, "text": i.text, "title": i.title, "revision": revision, "updated_at": now}
                 for i in items],
            )  # fmt: skip

    def items(self) -> list[StoredItem]:
        """Every added item, by id."""
        with self.engine.connect() as conn:
            rows = conn.execute(select(items_table).order_by(items_table.c.item_id)).all()
        return [StoredItem(r.item_id, r.text, r.title) for r in rows]

    def items_revision(self) -> tuple[int, int]:
        """(count, latest revision) of the added items: it changes whenever any replica adds items."""
        query = select(func.count(), func.coalesce(func.max(items_table.c.revision), 0))
        with self.engine.connect() as conn:
            count, revision = conn.execute(query).one()
        return int(count), int(revision)

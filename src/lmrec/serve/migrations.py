"""Versioned schema migrations of the event store: ordered steps, each applied once and recorded.

Every step declares the tables of its own version (never the current ones), so that an old store is
brought up to date by exactly the DDL that a new one got. All steps run in one transaction under a
lock (SQLite: BEGIN IMMEDIATE; PostgreSQL: an advisory lock), so replicas starting at once are safe.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from sqlalchemy import (
    BigInteger,
    Column,
    Double,
    Engine,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    select,
    text,
)
from sqlalchemy.engine import Connection

from lmrec.errors import LmrecError

VERSION_TABLE = "lmrec_schema_version"
_ADVISORY_LOCK = 0x6C6D726563  # "lmrec"


def _version_table(metadata: MetaData) -> Table:
    return Table(
        VERSION_TABLE,
        metadata,
        Column("version", Integer, primary_key=True, autoincrement=False),
        Column("applied_at", Double, nullable=False),
    )


def _v1_events(conn: Connection) -> None:
    """Events in original ids, and idempotency keys stored with the reply of their batch."""
    metadata = MetaData()
    Table(
        "lmrec_events",
        metadata,
        Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
        Column("user_id", String(256), nullable=False),
        Column("item_id", String(256), nullable=False),
        Column("type", String(64), nullable=False),
        Column("ts", Double, nullable=False),
        Column("value", Double, nullable=True),
        Column("received_at", Double, nullable=False),
        Index("ix_lmrec_events_user_ts", "user_id", "ts", "id"),
        sqlite_autoincrement=True,
    )
    Table(
        "lmrec_batches",
        metadata,
        Column("idempotency_key", String(255), primary_key=True),
        Column("body_hash", String(64), nullable=False),
        Column("response", Text, nullable=False),
        Column("created_at", Double, nullable=False),
    )
    metadata.create_all(conn)


def _v2_items(conn: Connection) -> None:
    """Items added through the service, with their text and a revision that replicas watch."""
    metadata = MetaData()
    Table(
        "lmrec_items",
        metadata,
        Column("item_id", String(256), primary_key=True),
        Column("text", Text, nullable=False),
        Column("title", Text, nullable=True),
        Column("revision", BigInteger, nullable=False),
        Column("updated_at", Double, nullable=False),
    )
    metadata.create_all(conn)


MIGRATIONS: list[Callable[[Connection], None]] = [_v1_events, _v2_items]
"""Step i (0-based) brings the schema to version i + 1; append new steps, never edit old ones."""


def migrate(engine: Engine) -> int:
    """Apply every missing step in order; return the schema version. Refuses a store newer than this code."""
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _ADVISORY_LOCK})
        versions = _version_table(MetaData())
        versions.create(conn, checkfirst=True)
        current = conn.execute(select(versions.c.version).order_by(versions.c.version.desc()).limit(1)).scalar()
        current = int(current or 0)
        if current > len(MIGRATIONS):
            raise LmrecError(
                f"the event store has schema version {current}, newer than this lmrec knows ({len(MIGRATIONS)}); "
                "upgrade lmrec."
            )
        for version in range(current + 1, len(MIGRATIONS) + 1):
            MIGRATIONS[version - 1](conn)
            conn.execute(versions.insert(), {"version": version, "applied_at": time.time()})
        return len(MIGRATIONS)

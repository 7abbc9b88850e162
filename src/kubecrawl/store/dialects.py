"""What differs between the SQL databases the stores run on, decided once per engine.

- ``dialect_insert``: PostgreSQL's and SQLite's ``INSERT … ON CONFLICT`` constructs (SQLAlchemy has no common one),
  imported for the engine's own dialect only: PostgreSQL's dialect package took some 50 ms to import, which a
  SQLite process (the embedded crawl) need not pay (docs/crawls.md, "Start-up").
- ``as_utc``: SQLite hands back naive datetimes; everything stored is UTC.
- ``Transactions``: how a store opens a transaction, or a connection for single statements. PostgreSQL serialises
  the frontier's transactions with row locks (``SELECT … FOR UPDATE``) and runs single statements in autocommit
  (no BEGIN/COMMIT round trips); SQLite has no row locks, so an in-process lock serialises the same
  transactions, and a single statement keeps that serialised transaction (in process there are no round trips
  to spare).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

from kubecrawl.store.engines import SqlConnection, SqlEngine


def as_utc(value: datetime | None) -> datetime | None:
    """SQLite hands back naive datetimes; everything we store is UTC."""
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)


def dialect_insert(engine: SqlEngine) -> Any:
    if engine.dialect.name == "postgresql":
        from sqlalchemy.dialects import postgresql

        return postgresql.insert
    from sqlalchemy.dialects import sqlite

    return sqlite.insert


def is_sqlite(engine: SqlEngine) -> bool:
    return engine.dialect.name == "sqlite"


class Transactions:
    """PostgreSQL: a pooled connection per transaction; row locks serialise what must be serialised."""

    def __init__(self, engine: SqlEngine) -> None:
        self._engine = engine
        self._autocommit = engine.execution_options(isolation_level="AUTOCOMMIT")

    @contextlib.asynccontextmanager
    async def begin(self) -> AsyncIterator[SqlConnection]:
        async with self._engine.begin() as conn:
            yield conn

    @contextlib.asynccontextmanager
    async def single(self) -> AsyncIterator[SqlConnection]:
        """For statements that need no transaction around them: on PostgreSQL each commits on its own, which
        spares the BEGIN and COMMIT round trips (a third of a worker's socket writes per page)."""
        async with self._autocommit.connect() as conn:
            yield conn


class SerialTransactions(Transactions):
    """SQLite: no row locks, so one in-process lock serialises the transactions ``FOR UPDATE`` would have."""

    def __init__(self, engine: SqlEngine) -> None:
        super().__init__(engine)
        self._lock = asyncio.Lock()

    @contextlib.asynccontextmanager
    async def begin(self) -> AsyncIterator[SqlConnection]:
        async with self._lock, self._engine.begin() as conn:
            yield conn

    @contextlib.asynccontextmanager
    async def single(self) -> AsyncIterator[SqlConnection]:
        """In process there are no round trips to spare: keep the serialised transaction."""
        async with self.begin() as conn:
            yield conn


def transactions(engine: SqlEngine) -> Transactions:
    """The engine's way of serialising transactions; one per store (the SQLite lock is per store object)."""
    return SerialTransactions(engine) if is_sqlite(engine) else Transactions(engine)

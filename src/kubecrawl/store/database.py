"""Engine creation, the SQL database errors and what they mean, and the ping (``store/opening.py`` hands it to
``store/connection.py``, which keeps the connection state it tells)."""

from __future__ import annotations

import asyncio
import sys
from typing import TYPE_CHECKING

from sqlalchemy import text
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from kubecrawl.core.errors import InvalidValue, StoreUnavailable
from kubecrawl.core.logging import get_logger
from kubecrawl.store.sqlite_engine import create_sqlite_engine

if TYPE_CHECKING:
    from kubecrawl.store.engines import SqlEngine

log = get_logger(__name__)
# Readiness must answer quickly: a DB that takes 2 s for SELECT 1 is not ready for traffic.
PING_TIMEOUT_SECONDS = 2.0
# What "the database did not answer" looks like through SQLAlchemy: a broken or refused connection, a statement the
# server or the driver refused, every pooled connection busy for pool_timeout.
_SQLALCHEMY_ERRORS: tuple[type[BaseException], ...] = (
    TimeoutError,
    OSError,
    DBAPIError,
    OperationalError,
    PoolTimeout,
)


def database_errors() -> tuple[type[BaseException], ...]:
    """What "the database did not answer" looks like, through SQLAlchemy or straight from asyncpg (the raw
    statements of ``store/request_writing.py`` and ``store/page_metadata.py``): for ``except database_errors() as
    exc``, which calls it only once an exception is raised.

    asyncpg's two error bases are added once asyncpg is loaded, and only then: no asyncpg error can exist before it
    is, and a PostgreSQL engine loads it when it is created (SQLAlchemy's dialect imports its driver). Importing it
    here would cost every SQLite process (``kubecrawl crawl``, ``standalone``) some 30 ms at start-up for classes it
    can never meet (docs/crawls.md, "Start-up")."""
    asyncpg = sys.modules.get("asyncpg")
    if asyncpg is None:
        return _SQLALCHEMY_ERRORS
    return (*_SQLALCHEMY_ERRORS, asyncpg.PostgresError, asyncpg.InterfaceError)


# SQLSTATE classes that blame the statement's values, not the server: 22 data exception (a NUL byte, a number out
# of range), 23 integrity constraint violation, 54 program limit exceeded (an index entry too large).
_VALUE_SQLSTATE_CLASSES = ("22", "23", "54")
_DEADLOCK_DETECTED = "40P01"  # SQLSTATE of a transaction PostgreSQL aborted to break a deadlock


def refused_value(exc: BaseException) -> bool:
    """True when the database refused a value of the statement rather than failing: retrying cannot help."""
    if isinstance(exc, DataError | IntegrityError):
        return True
    return any(sqlstate.startswith(_VALUE_SQLSTATE_CLASSES) for sqlstate in _sqlstates(exc))


def broke_a_deadlock(exc: BaseException) -> bool:
    """True when PostgreSQL aborted the transaction to break a deadlock: the same writes may succeed again."""
    return _DEADLOCK_DETECTED in _sqlstates(exc)


def _sqlstates(exc: BaseException) -> list[str]:
    """The SQLSTATEs an error carries, through SQLAlchemy's wrapper or straight from asyncpg."""
    candidates = (exc, getattr(exc, "orig", None), exc.__cause__)
    codes = (getattr(candidate, "sqlstate", None) or getattr(candidate, "pgcode", None) for candidate in candidates)
    return [code for code in codes if isinstance(code, str)]


def store_error(exc: BaseException, doing: str) -> InvalidValue | StoreUnavailable:
    """The kubecrawl error a database error while ``doing`` something means."""
    detail = f"{doing} failed: {type(exc).__name__}: {exc}"[:2000]
    return InvalidValue(detail) if refused_value(exc) else StoreUnavailable(detail)


def create_engine(url: str, *, pool_size: int = 10) -> SqlEngine:
    """The engine for ``url``: SQLAlchemy's ``AsyncEngine`` on PostgreSQL (asyncpg); on SQLite its synchronous
    engine behind coroutines that never suspend (``store/sqlite_engine.py`` says why). ``sqlalchemy.ext.asyncio``
    is imported here, for PostgreSQL only: a SQLite process never loads it, nor the ORM it imports."""
    if url.startswith("sqlite"):
        return create_sqlite_engine(url, pool_size=pool_size)
    from sqlalchemy.ext.asyncio import create_async_engine

    return create_async_engine(
        url,
        pool_size=pool_size,
        # No overflow: QueuePool closes an overflow connection as soon as it is returned, so under steady load
        # above pool_size every few requests opened a new connection (TCP, auth, asyncpg type set-up, a
        # PostgreSQL backend fork) - most of a millisecond of API CPU per request, averaged (bench/publish.py).
        # A request holds a connection for one round trip, so pool_size connections serve many more requests
        # in flight than that; the rest wait for one (pool_timeout, 30 s).
        max_overflow=0,
        # No pool_pre_ping: with asyncpg it is BEGIN; ; ROLLBACK on every checkout, three round trips that
        # cost about as much API CPU as the write they guard (bench/publish.py). The trade-off: a connection
        # that died while idle (PostgreSQL restarted, a proxy's idle timeout) is found by the statement that
        # uses it. That statement fails with a disconnect error, SQLAlchemy invalidates the pool (every
        # connection older than the failure is replaced at its next checkout), the API answers 503
        # database_unavailable with Retry-After (api/errors.py) and the worker retries the message later. A
        # restart costs the requests in flight on stale connections, once, instead of three round trips always.
        # asyncpg: fail a connect after 10 s instead of hanging readiness and start-up.
        connect_args={"timeout": 10},
    )


async def ping(engine: SqlEngine) -> None:
    """Raise ``StoreUnavailable`` unless ``SELECT 1`` answers within the ping timeout."""
    try:
        async with asyncio.timeout(PING_TIMEOUT_SECONDS), engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
    except database_errors() as exc:
        raise StoreUnavailable(f"database ping failed: {type(exc).__name__}: {exc}") from exc

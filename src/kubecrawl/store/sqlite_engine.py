"""SQLite for the embedded default: SQLAlchemy's synchronous Core engine over the standard library's ``sqlite3``,
run on the event loop's own thread behind the async interface the stores use (``store/engines.py``).

``SqliteEngine`` and ``SqliteConnection`` have the shape of ``AsyncEngine`` and ``AsyncConnection`` that the stores
use; their coroutines make the synchronous call at once and never suspend. Why, in the order it was learnt
(bench/crawl_vs_scrapy.py, bench/startup.py, docs/crawls.md):

- Not on a thread. SQLAlchemy's ``sqlite+aiosqlite`` dialect drives aiosqlite, which runs every statement on a
  thread of its own and hands the result back through a queue and ``call_soon_threadsafe``: two thread switches
  and a GIL hand-off per statement, for statements that take SQLite microseconds. In the embedded crawl that
  hand-off cost more CPU than the SQL (the frontier's CPU per page fell from 0.84 to 0.40 ms without it), and the
  GIL ping-pong slowed the fetching and parsing on the loop thread.
- Not through ``sqlalchemy.ext.asyncio`` either. A connection with aiosqlite's interface that ran ``sqlite3`` at
  once (``store/inline_sqlite.py``, replaced by this module) still went through SQLAlchemy's async adaptation:
  greenlet switches and awaitable adapters around every statement (77 µs of CPU per small statement, against 25
  µs now and 3.8 for bare ``sqlite3``: bench/sqlite_statements.py), and at start-up ``sqlalchemy.ext.asyncio``,
  whose package imports its session and with it the ORM (some 45 ms of ``kubecrawl crawl``'s start-up). A SQLite
  process imports neither that package nor the ORM (tests/integration/test_startup.py checks it), and runs no
  statement through greenlet (which structlog still imports when it is installed).

What running SQLite on the loop's thread relies on, and why it holds for the embedded default:
- A statement blocks the loop while it runs. The frontier's statements touch a few rows through indexes.
- Nothing else in the process can be holding the write lock while the loop waits for it: a transaction's
  statements run without yielding to the loop, so no other task's transaction interleaves with it (the stores
  never await network I/O inside a transaction). ``busy_timeout`` is kept for another process opening the same
  file (the CLI on a standalone's database), at the price of blocking the loop that long.

The pool: SQLAlchemy's ``QueuePool`` with unbounded overflow. A synchronous pool at its limit waits for a
connection on a condition variable, on the loop's thread, while the tasks holding the connections wait for that
same thread to run: a deadlock, not a wait. Unbounded, a checkout never waits; the pool keeps ``pool_size``
connections and closes the rest as they come back. Connections are held across a suspension only by a few
callers (the API's request writer on ``standalone`` keeps one between batches; the stores' reads and the API's
writes run outside ``SerialTransactions``' lock), so a process opens few beyond the first. One connection shared
by every checkout (``StaticPool``) would make each transaction safe only while no other is open across a
suspension, which nothing enforces outside that lock: a rollback on one would undo what another had written.
Separate connections keep transactions apart; WAL lets them read while one writes.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Generator
from typing import TYPE_CHECKING, Any, Self, TypeVar

from sqlalchemy import create_engine, event, make_url
from sqlalchemy.pool import QueuePool, StaticPool

if TYPE_CHECKING:
    from types import TracebackType

    from sqlalchemy.engine import Connection, CursorResult, Dialect, Engine, RootTransaction
    from sqlalchemy.pool import PoolProxiedConnection
    from sqlalchemy.sql import Executable

    from kubecrawl.store.engines import Parameters

T = TypeVar("T")


class SqliteConnection:
    """``AsyncConnection``'s interface (the part ``SqlConnection`` names) over a synchronous ``Connection``, checked
    out of the pool when awaited or entered."""

    __slots__ = ("_engine", "sync_connection")
    sync_connection: Connection

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def open(self) -> Self:
        self.sync_connection = self._engine.connect()
        return self

    def __await__(self) -> Generator[Any, Any, Self]:
        return self._start().__await__()

    async def _start(self) -> Self:
        return self.open()

    async def __aenter__(self) -> Self:
        return self.open()

    async def __aexit__(
        self, type_: type[BaseException] | None, value: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.sync_connection.close()

    async def execute(self, statement: Executable, parameters: Parameters | None = None) -> CursorResult[Any]:
        return self.sync_connection.execute(statement, parameters)

    def begin(self) -> SqliteTransaction:
        return SqliteTransaction(self.sync_connection)

    async def commit(self) -> None:
        self.sync_connection.commit()

    async def rollback(self) -> None:
        self.sync_connection.rollback()

    async def run_sync(self, fn: Callable[[Connection], T]) -> T:
        return fn(self.sync_connection)

    async def get_raw_connection(self) -> PoolProxiedConnection:
        return self.sync_connection.connection

    async def invalidate(self) -> None:
        self.sync_connection.invalidate()

    async def close(self) -> None:
        self.sync_connection.close()


class SqliteTransaction:
    """``async with conn.begin()``: SQLAlchemy's own transaction block (commit at the end, rollback on an
    exception, whatever the exception), entered and left from coroutines."""

    __slots__ = ("_connection", "_transaction")
    _transaction: RootTransaction

    def __init__(self, connection: Connection) -> None:
        self._connection = connection

    async def __aenter__(self) -> RootTransaction:
        self._transaction = self._connection.begin()
        return self._transaction

    async def __aexit__(
        self, type_: type[BaseException] | None, value: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self._transaction.__exit__(type_, value, traceback)


class SqliteBegin:
    """``async with engine.begin() as conn``: a pooled connection in a transaction, committed at the end, rolled
    back on an exception, given back to the pool either way."""

    __slots__ = ("_connection", "_engine", "_transaction")
    _connection: SqliteConnection
    _transaction: SqliteTransaction

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    async def __aenter__(self) -> SqliteConnection:
        connection = SqliteConnection(self._engine).open()
        transaction = SqliteTransaction(connection.sync_connection)
        try:
            await transaction.__aenter__()
        except BaseException:
            connection.sync_connection.close()
            raise
        self._connection, self._transaction = connection, transaction
        return connection

    async def __aexit__(
        self, type_: type[BaseException] | None, value: BaseException | None, traceback: TracebackType | None
    ) -> None:
        try:
            await self._transaction.__aexit__(type_, value, traceback)
        finally:
            self._connection.sync_connection.close()


class SqliteEngine:
    """``AsyncEngine``'s interface (the part ``SqlEngine`` names) over a synchronous ``Engine``."""

    __slots__ = ("sync_engine",)

    def __init__(self, sync_engine: Engine) -> None:
        self.sync_engine = sync_engine

    @property
    def dialect(self) -> Dialect:
        return self.sync_engine.dialect

    def connect(self) -> SqliteConnection:
        return SqliteConnection(self.sync_engine)

    def begin(self) -> SqliteBegin:
        return SqliteBegin(self.sync_engine)

    def execution_options(self, **options: Any) -> SqliteEngine:
        return SqliteEngine(self.sync_engine.execution_options(**options))

    async def dispose(self) -> None:
        self.sync_engine.dispose()


def _pragmas(dbapi_connection: sqlite3.Connection, _record: object) -> None:
    cursor = dbapi_connection.cursor()
    # WAL lets readers (API) and the writer (worker) of the embedded default proceed together; busy_timeout waits
    # for the write lock instead of failing at once.
    cursor.execute("PRAGMA journal_mode=WAL")
    # In WAL mode NORMAL syncs at checkpoints, not at every commit: a power cut may lose the last commits but never
    # corrupts the file. FULL cost an fsync per frontier transaction: a fifth of an embedded crawl's time before
    # group commit (bench/crawl_vs_scrapy.py).
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def create_sqlite_engine(url: str, *, pool_size: int) -> SqliteEngine:
    """The engine for a ``sqlite://`` URL, whatever driver it names (``core/settings.py`` still accepts the
    ``sqlite+aiosqlite://`` of earlier releases): the standard library's ``sqlite3`` runs it."""
    sync_url = make_url(url).set(drivername="sqlite+pysqlite")
    if sync_url.database in (None, "", ":memory:"):
        # Each connection to :memory: is a database of its own: one connection, shared, as aiosqlite's dialect had.
        pool: dict[str, Any] = {"poolclass": StaticPool}
    else:
        pool = {"poolclass": QueuePool, "pool_size": pool_size, "max_overflow": -1}  # never waits: module docstring
    # The pool may close a connection from the garbage collector's thread; every statement runs on the loop's.
    engine = create_engine(sync_url, connect_args={"check_same_thread": False}, **pool)
    event.listen(engine, "connect", _pragmas)
    return SqliteEngine(engine)

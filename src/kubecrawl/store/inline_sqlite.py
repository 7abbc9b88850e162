"""SQLite for the embedded default, run on the event loop's own thread instead of aiosqlite's worker thread.

SQLAlchemy's ``sqlite+aiosqlite`` dialect drives aiosqlite, which runs every statement on a thread of its own
and hands the result back through a queue and ``call_soon_threadsafe``: two thread switches and a GIL hand-off
per statement, for statements that take SQLite microseconds. In the embedded crawl that hand-off cost more CPU
than the SQL, and the GIL ping-pong slowed the fetching and parsing on the loop thread
(bench/crawl_vs_scrapy.py). This module gives the dialect (through ``create_async_engine(async_creator=…)``)
a connection with aiosqlite's interface whose coroutines run the ``sqlite3`` call at once and never suspend.

What that relies on, and why it holds for the embedded default:
- A statement blocks the loop while it runs. The frontier's statements touch a few rows through indexes.
- Nothing else in the process can be holding the write lock while the loop waits for it: a transaction's
  statements run without yielding to the loop, so no other task's transaction interleaves with it (the
  stores never await network I/O inside a transaction). ``busy_timeout`` is kept for another process
  opening the same file (the CLI on a standalone's database), at the price of blocking the loop that long.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Self


class InlineCursor:
    """aiosqlite's ``Cursor`` interface over a ``sqlite3.Cursor``, without a thread."""

    def __init__(self, cursor: sqlite3.Cursor) -> None:
        self._cursor = cursor

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        self._cursor.close()

    async def execute(self, sql: str, parameters: Sequence[Any] | dict[str, Any] = ()) -> Self:
        self._cursor.execute(sql, parameters)
        return self

    async def executemany(self, sql: str, parameters: Iterable[Sequence[Any] | dict[str, Any]]) -> Self:
        self._cursor.executemany(sql, parameters)
        return self

    async def fetchone(self) -> Any:
        return self._cursor.fetchone()

    async def fetchmany(self, size: int | None = None) -> list[Any]:
        return self._cursor.fetchmany(self._cursor.arraysize if size is None else size)

    async def fetchall(self) -> list[Any]:
        return self._cursor.fetchall()

    async def close(self) -> None:
        self._cursor.close()

    @property
    def description(self) -> Any:
        return self._cursor.description

    @property
    def rowcount(self) -> int:
        return self._cursor.rowcount

    @property
    def lastrowid(self) -> int | None:
        return self._cursor.lastrowid

    @property
    def arraysize(self) -> int:
        return self._cursor.arraysize

    @arraysize.setter
    def arraysize(self, value: int) -> None:
        self._cursor.arraysize = value


class _RunNow:
    """Stands in for aiosqlite's request queue, which SQLAlchemy's dialect uses to set the isolation level."""

    def put_nowait(self, item: tuple[asyncio.Future[Any], Callable[[], Any]]) -> None:
        future, function = item
        try:
            future.set_result(function())
        except Exception as exc:  # handed to the awaiting caller, as aiosqlite's thread would
            future.set_exception(exc)


class InlineConnection:
    """The part of aiosqlite's ``Connection`` interface SQLAlchemy's dialect uses, over a ``sqlite3.Connection``
    used on the loop's thread."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn
        # aiosqlite's name for the open sqlite3 connection (None once closed): the dialect checks it.
        self._connection: sqlite3.Connection | None = conn
        self._tx = _RunNow()

    def cursor(self) -> InlineCursor:
        return InlineCursor(self._conn.cursor())

    async def commit(self) -> None:
        self._conn.commit()

    async def rollback(self) -> None:
        self._conn.rollback()

    async def close(self) -> None:
        self.stop()

    def stop(self) -> None:
        """Terminate (SQLAlchemy's ``do_terminate``): there is no thread to stop, only the file to close."""
        self._connection = None
        self._conn.close()

    async def create_function(self, *args: Any, **kwargs: Any) -> None:
        self._conn.create_function(*args, **kwargs)

    @property
    def isolation_level(self) -> str | None:
        return self._conn.isolation_level


def inline_connector(args: Sequence[Any], kwargs: dict[str, Any]) -> Callable[[], Any]:
    """An ``async_creator`` opening ``sqlite3.connect(*args, **kwargs)`` (the dialect's connect arguments)."""

    async def connect() -> InlineConnection:
        # The pool may close a connection from the garbage collector's thread; every statement runs on the loop's.
        return InlineConnection(sqlite3.connect(*args, **{**kwargs, "check_same_thread": False}))

    return connect

"""What the SQL stores use of an engine and of its connections: ``SqlEngine`` and ``SqlConnection``.

Two engines implement them, chosen by ``store/database.py::create_engine``: on PostgreSQL SQLAlchemy's
``AsyncEngine`` (asyncpg), which satisfies them as it is; on SQLite ``store/sqlite_engine.py``'s ``SqliteEngine``,
SQLAlchemy's synchronous Core engine behind coroutines that never suspend. The stores are typed against these
Protocols, so a SQLite process never imports ``sqlalchemy.ext.asyncio`` (whose package imports the ORM: some
45 ms of start-up, docs/crawls.md "Start-up"). Only the calls the stores, ``store/migrating.py``,
the migrations' ``env.py`` and the tests make are here; add one when a store needs it.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any, Protocol, Self, TypeVar

if TYPE_CHECKING:
    from types import TracebackType

    from sqlalchemy.engine import Connection, CursorResult, Dialect
    from sqlalchemy.pool import PoolProxiedConnection
    from sqlalchemy.sql import Executable

# A statement's parameters: one row (a mapping) or many (executemany).
Parameters = Mapping[str, Any] | Sequence[Mapping[str, Any]]
T = TypeVar("T")


class SqlConnection(Protocol):
    """A connection (``AsyncConnection`` or ``SqliteConnection``): ``async with`` or ``await`` it once, then use
    it; leaving the ``async with`` (or ``close``) gives it back to the pool, rolling back what was not
    committed."""

    def __await__(self) -> Generator[Any, Any, Self]: ...

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self, type_: type[BaseException] | None, value: BaseException | None, traceback: TracebackType | None
    ) -> None: ...

    async def execute(self, statement: Executable, parameters: Parameters | None = None) -> CursorResult[Any]: ...

    def begin(self) -> AbstractAsyncContextManager[Any]:
        """A transaction on this connection: committed when the block ends, rolled back if it raises."""
        ...

    async def commit(self) -> None: ...

    async def rollback(self) -> None: ...

    async def run_sync(self, fn: Callable[[Connection], T]) -> T:
        """``fn(connection)`` on the synchronous ``Connection`` underneath (Alembic, the inspector)."""
        ...

    async def get_raw_connection(self) -> PoolProxiedConnection: ...

    async def invalidate(self) -> None:
        """Discard the DBAPI connection underneath (it may be broken) instead of pooling it again."""
        ...

    async def close(self) -> None: ...


class SqlEngine(Protocol):
    """An engine (``AsyncEngine`` or ``SqliteEngine``): connections, transactions, options, disposal."""

    @property
    def dialect(self) -> Dialect: ...

    def connect(self) -> SqlConnection: ...

    def begin(self) -> AbstractAsyncContextManager[SqlConnection]:
        """A connection in a transaction: committed when the block ends, rolled back if it raises."""
        ...

    def execution_options(self, **options: Any) -> SqlEngine:
        """The same engine (the same pool) with ``options`` on each connection (``isolation_level=…``)."""
        ...

    async def dispose(self) -> None:
        """Close the pooled connections."""
        ...

"""SQLite's engine (store/sqlite_engine.py): AsyncEngine's interface over SQLAlchemy's synchronous engine, on an
in-memory database (one shared connection, no file)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Coroutine
from typing import Any

import pytest
from sqlalchemy import Column, Integer, MetaData, String, Table, insert, select, text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError, OperationalError

from kubecrawl.core.errors import InvalidValue, StoreUnavailable
from kubecrawl.store.database import create_engine, database_errors, store_error
from kubecrawl.store.engines import SqlConnection
from kubecrawl.store.sqlite_engine import SqliteEngine

metadata = MetaData()
things = Table("things", metadata, Column("id", Integer, primary_key=True), Column("name", String, nullable=False))


@pytest.fixture
async def engine() -> AsyncIterator[SqliteEngine]:
    engine = create_engine("sqlite:///:memory:")
    assert isinstance(engine, SqliteEngine)
    async with engine.begin() as conn:
        await conn.run_sync(metadata.create_all)
    yield engine
    await engine.dispose()


async def names(engine: SqliteEngine) -> list[str]:
    async with engine.connect() as conn:
        return list((await conn.execute(select(things.c.name).order_by(things.c.id))).scalars())


def completed_at_once(coroutine: Coroutine[Any, Any, Any]) -> Any:
    """The coroutine's result, which it must return without ever suspending."""
    try:
        coroutine.send(None)
    except StopIteration as done:
        return done.value
    coroutine.close()
    raise AssertionError("the coroutine suspended")


async def test_a_transaction_commits_when_its_block_ends(engine: SqliteEngine) -> None:
    async with engine.begin() as conn:
        await conn.execute(insert(things), [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}])
    assert await names(engine) == ["a", "b"]


async def test_a_transaction_rolls_back_when_its_block_raises_and_the_error_goes_on(engine: SqliteEngine) -> None:
    async def insert_then_fail() -> None:
        async with engine.begin() as conn:
            await conn.execute(insert(things), {"id": 1, "name": "a"})
            raise RuntimeError("late")

    with pytest.raises(RuntimeError, match="late"):
        await insert_then_fail()
    assert await names(engine) == []


async def test_a_connections_own_transaction_commits_or_rolls_back_likewise(engine: SqliteEngine) -> None:
    async def insert_then_fail(conn: SqlConnection) -> None:
        async with conn.begin():
            await conn.execute(insert(things), {"id": 2, "name": "dropped"})
            raise RuntimeError("late")

    async with engine.connect() as conn:
        async with conn.begin():
            await conn.execute(insert(things), {"id": 1, "name": "kept"})
        with pytest.raises(RuntimeError, match="late"):
            await insert_then_fail(conn)
    assert await names(engine) == ["kept"]


async def test_an_awaited_connection_is_given_back_by_close_and_what_it_did_not_commit_is_undone(
    engine: SqliteEngine,
) -> None:
    conn = await engine.connect()
    await conn.execute(insert(things), {"id": 1, "name": "uncommitted"})
    await conn.close()
    assert await names(engine) == []
    conn = await engine.connect()
    await conn.execute(insert(things), {"id": 1, "name": "committed"})
    await conn.commit()
    await conn.close()
    assert await names(engine) == ["committed"]


async def test_autocommit_execution_options_keep_each_statement_without_a_commit(engine: SqliteEngine) -> None:
    autocommit = engine.execution_options(isolation_level="AUTOCOMMIT")
    async with autocommit.connect() as conn:
        await conn.execute(insert(things), {"id": 1, "name": "autocommitted"})
    assert await names(engine) == ["autocommitted"]
    assert autocommit.dialect is engine.dialect  # the same engine and pool, other options


async def test_run_sync_hands_the_synchronous_connection_to_the_function(engine: SqliteEngine) -> None:
    async with engine.connect() as conn:
        assert await conn.run_sync(lambda sync: isinstance(sync, Connection))


async def test_its_coroutines_never_suspend(engine: SqliteEngine) -> None:
    """A statement runs at once on the loop's thread: no task runs between a transaction's statements."""
    conn = completed_at_once(engine.begin().__aenter__())
    result = completed_at_once(conn.execute(text("SELECT 41 + 1")))
    assert result.scalar() == 42
    completed_at_once(conn.close())


async def test_a_refused_value_raises_integrity_error_and_is_blamed_on_the_value(engine: SqliteEngine) -> None:
    async with engine.begin() as conn:
        await conn.execute(insert(things), {"id": 1, "name": "a"})
    with pytest.raises(IntegrityError) as raised:
        async with engine.begin() as conn:
            await conn.execute(insert(things), {"id": 1, "name": "again"})
    assert isinstance(raised.value, database_errors())
    assert isinstance(store_error(raised.value, "inserting"), InvalidValue)


async def test_a_failing_statement_raises_a_database_error_that_means_unavailable(engine: SqliteEngine) -> None:
    with pytest.raises(OperationalError) as raised:
        async with engine.connect() as conn:
            await conn.execute(text("SELECT * FROM no_such_table"))
    assert isinstance(raised.value, database_errors())
    assert isinstance(store_error(raised.value, "reading"), StoreUnavailable)

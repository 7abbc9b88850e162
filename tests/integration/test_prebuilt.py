"""Prebuilt statements on SQLite (store/prebuilt.py): the same rows and writes as SQLAlchemy's execution of the
same Core statement, in SQLAlchemy's transaction, with SQLAlchemy's errors."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import (
    Boolean,
    Column,
    DateTime,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    bindparam,
    func,
    insert,
    select,
    tuple_,
    update,
)
from sqlalchemy.exc import IntegrityError, InvalidRequestError

from kubecrawl.embedded import sqlite_url
from kubecrawl.store.database import create_engine
from kubecrawl.store.engines import SqlEngine
from kubecrawl.store.prebuilt import Prebuilt
from kubecrawl.store.schema import BigId, Json

metadata = MetaData()
pages = Table(
    "pages",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("crawl", String(36), nullable=False),
    Column("url", Text, nullable=False),
    Column("state", String(16), nullable=False),
    Column("seen_at", DateTime(timezone=True)),
    Column("links", Json),
    Column("changed", Boolean),
    UniqueConstraint("crawl", "url"),
)
T0 = datetime(2026, 12, 6, 12, 0, 0, 123456, tzinfo=UTC)

INSERT = insert(pages)
BY_IDS = select(pages.c.id, pages.c.url, pages.c.seen_at, pages.c.links, pages.c.changed).where(
    pages.c.id.in_(bindparam("ids", expanding=True)), pages.c.state.in_(("QUEUED", "FETCHING"))
)
BY_PAIRS = select(pages.c.url).where(
    tuple_(pages.c.crawl.concat(""), pages.c.id).in_(bindparam("pairs", expanding=True))
)
TAKE = (
    update(pages)
    .where(pages.c.crawl == bindparam("p_crawl"), pages.c.seen_at < bindparam("before"))
    .values(state="FETCHING", seen_at=bindparam("now"))
    .returning(pages.c.id, pages.c.seen_at)
)
COUNT = select(func.count()).select_from(pages)


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[SqlEngine]:
    engine = create_engine(sqlite_url(tmp_path / "p.db"))
    async with engine.begin() as conn:
        await conn.run_sync(metadata.create_all)
    rows = [
        {"crawl": "a", "url": "/1", "state": "QUEUED", "seen_at": T0, "links": ["/2", "/3"], "changed": True},
        {"crawl": "a", "url": "/2", "state": "FETCHING", "seen_at": T0 + timedelta(1), "links": [], "changed": False},
        {"crawl": "b", "url": "/1", "state": "DONE", "seen_at": None, "links": None, "changed": None},
    ]
    async with engine.begin() as conn:
        await Prebuilt(INSERT).execute(conn, rows)  # an executemany, with every type's bind processor
    yield engine
    await engine.dispose()


async def test_reads_give_the_rows_sqlalchemy_gives(engine: SqlEngine) -> None:
    cases = [
        (BY_IDS, {"ids": [1, 2, 3, 99]}),  # an expanding list, and a literal one (the states)
        (BY_IDS, {"ids": [2]}),  # another length: the same compiled text
        (BY_IDS, {"ids": []}),
        (BY_PAIRS, {"pairs": [("a", 1), ("b", 3), ("a", 3)]}),  # a list of tuples, a literal bind (the '')
        (COUNT, {}),
    ]
    async with engine.connect() as conn:
        for statement, parameters in cases:
            expected = [tuple(row) for row in await conn.execute(statement, parameters)]
            got = [tuple(row) for row in await Prebuilt(statement).execute(conn, parameters)]
            assert got == expected, statement
    async with engine.connect() as conn:
        row = (await Prebuilt(BY_IDS).execute(conn, {"ids": [1]})).first()
    # result processors ran: a datetime, a JSON document, a boolean; and the row has the columns' names
    assert (row.url, row.seen_at, row.links, row.changed) == ("/1", T0.replace(tzinfo=None), ["/2", "/3"], True)


async def test_a_write_returns_its_rows_and_is_committed_with_the_transaction(engine: SqlEngine) -> None:
    now = T0 + timedelta(days=3)
    async with engine.begin() as conn:
        taken = (await Prebuilt(TAKE).execute(conn, {"p_crawl": "a", "before": T0 + timedelta(2), "now": now})).all()
    assert sorted(taken) == [(1, now.replace(tzinfo=None)), (2, now.replace(tzinfo=None))]
    async with engine.connect() as conn:
        query = select(pages.c.state, pages.c.seen_at, pages.c.attempts).where(pages.c.crawl == "a")
        states = (await conn.execute(query)).all()
    # attempts: its server default, as the INSERT named only the columns it was given (as SQLAlchemy's does)
    assert states == [("FETCHING", now.replace(tzinfo=None), 0)] * 2


async def test_a_write_outside_a_transaction_is_kept_by_commit_and_rolled_back_without_it(engine: SqlEngine) -> None:
    """As SQLAlchemy's autobegin: the connection knows it is in a transaction, so giving it back to the pool
    without a commit rolls the write back, and a commit keeps it (it was once silently rolled back)."""
    row = {"crawl": "c", "url": "/x", "state": "QUEUED", "seen_at": T0, "links": [], "changed": None}
    async with engine.connect() as conn:
        await Prebuilt(INSERT).execute(conn, [row])
    async with engine.connect() as conn:
        assert (await conn.execute(COUNT)).scalar_one() == 3
        await Prebuilt(INSERT).execute(conn, [row])
        await conn.commit()
    async with engine.connect() as conn:
        assert (await conn.execute(COUNT)).scalar_one() == 4


async def test_a_refused_value_raises_sqlalchemys_error(engine: SqlEngine) -> None:
    duplicate = {"crawl": "a", "url": "/1", "state": "QUEUED", "seen_at": None, "links": None, "changed": None}
    async with engine.connect() as conn:
        with pytest.raises(IntegrityError, match="UNIQUE constraint failed"):
            await Prebuilt(INSERT).execute(conn, [duplicate])


async def test_a_row_without_a_value_for_a_parameter_is_refused_not_written_as_null(engine: SqlEngine) -> None:
    rows = [
        {"crawl": "d", "url": "/1", "state": "QUEUED", "seen_at": None, "links": None, "changed": None},
        {"crawl": "d", "url": "/2", "state": "QUEUED", "seen_at": None, "links": None},  # no "changed"
    ]
    async with engine.connect() as conn:
        with pytest.raises(InvalidRequestError, match="'changed'"):
            await Prebuilt(INSERT).execute(conn, rows)
        with pytest.raises(InvalidRequestError, match="'ids'"):
            await Prebuilt(BY_IDS).execute(conn, {})


async def test_a_parameter_rendered_at_execution_otherwise_than_a_list_is_refused(engine: SqlEngine) -> None:
    statement = select(pages.c.url).limit(bindparam("n", literal_execute=True))
    async with engine.connect() as conn:
        with pytest.raises(ValueError, match="does not render"):
            await Prebuilt(statement).execute(conn, {"n": 1})

"""The store backends the contract tests run on (tests/integration/test_store_contract.py).

Each backend opens a fresh, migrated database of its kind and yields its ``Stores`` (store/contract.py); the
contract tests see nothing else. MongoDB runs on the session's FerretDB (tests/support/ferretdb.py), a fresh
database per test with its indexes made by ``ensure_indexes`` (what ``kubecrawl migrate`` runs).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from kubecrawl.embedded import sqlite_url
from kubecrawl.store.contract import Stores
from kubecrawl.store.database import create_engine
from kubecrawl.store.migrating import upgrade_async
from kubecrawl.store.mongo.database import connect, database, ensure_indexes
from kubecrawl.store.opening import database_kind, mongo_stores, sql_stores
from kubecrawl.store.schema import crawl_pages, page_metadata

# Runs an integration test on PostgreSQL and on MongoDB (FerretDB): tests/support/fixtures.py's
# ``database_url`` takes the parameter.
ON_EVERY_DATABASE = pytest.mark.parametrize("database_url", ["postgresql", "mongodb"], indirect=True)


@dataclass(frozen=True, slots=True)
class Place:
    """Where a backend puts its database: the values of the pytest fixtures it asked for, and a private folder."""

    fixtures: dict[str, Any]
    folder: Path


@contextlib.asynccontextmanager
async def _sql(url: str) -> AsyncIterator[Stores]:
    engine = create_engine(url, pool_size=20)
    try:
        yield sql_stores(engine)
    finally:
        await engine.dispose()


@contextlib.asynccontextmanager
async def postgresql(place: Place) -> AsyncIterator[Stores]:
    async with _sql(place.fixtures["database_url"]) as stores:
        yield stores


@contextlib.asynccontextmanager
async def sqlite(place: Place) -> AsyncIterator[Stores]:
    url = sqlite_url(place.folder / "store.db")
    await upgrade_async(url)
    async with _sql(url) as stores:
        yield stores


@contextlib.asynccontextmanager
async def mongodb(place: Place) -> AsyncIterator[Stores]:
    client = connect(place.fixtures["ferretdb"].database(), pool_size=20)
    try:
        await ensure_indexes(database(client))
        yield mongo_stores(database(client))
    finally:
        await client.close()


@dataclass(frozen=True, slots=True)
class Backend:
    open: Callable[[Place], AbstractAsyncContextManager[Stores]]
    fixtures: tuple[str, ...] = ()  # pytest fixtures it needs (a fresh migrated PostgreSQL database: database_url)


BACKENDS = {
    "postgresql": Backend(postgresql, fixtures=("database_url",)),
    "sqlite": Backend(sqlite),
    "mongodb": Backend(mongodb, fixtures=("ferretdb",)),
}


async def stored_copies(url: str, *, page_url: str, crawl_id: str | None = None) -> int:
    """How many records the database at ``url`` holds for ``page_url`` (of ``crawl_id``'s pages, if given; else
    of the page metadata): what "stored once" means, read past the stores."""
    if database_kind(url) == "mongodb":
        client = connect(url)
        try:
            db = database(client)
            if crawl_id is None:
                return await db.page_metadata.count_documents({"url": page_url})
            return await db.crawl_pages.count_documents({"crawl_id": crawl_id, "url": page_url})
        finally:
            await client.close()
    engine = create_engine(url)
    try:
        async with engine.connect() as conn:
            if crawl_id is None:
                where = page_metadata.c.url == page_url
                stmt = select(func.count()).select_from(page_metadata).where(where)
            else:
                where = (crawl_pages.c.crawl_id == crawl_id) & (crawl_pages.c.url == page_url)
                stmt = select(func.count()).select_from(crawl_pages).where(where)
            return int((await conn.execute(stmt)).scalar_one())
    finally:
        await engine.dispose()

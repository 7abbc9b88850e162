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

from kubecrawl.embedded import sqlite_url
from kubecrawl.store.contract import Stores
from kubecrawl.store.database import create_engine
from kubecrawl.store.migrating import upgrade_async
from kubecrawl.store.mongo.database import connect, database, ensure_indexes
from kubecrawl.store.opening import mongo_stores, sql_stores


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

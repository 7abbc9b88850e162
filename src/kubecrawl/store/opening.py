"""Opening a database: the one place a database URL becomes a connection and the contract's ``Stores``.

Callers (API, worker, embedded runtime, CLI) hold a ``Database`` and the Protocols of ``store/contract.py`` only:
``open_database`` picks the implementation from the URL's scheme, once, at construction (``database_kind``), and
nothing else anywhere branches on the database. ``postgresql+asyncpg://`` and ``sqlite://`` open the
SQL stores (``store/crawls.py`` and its neighbours); ``mongodb://`` and ``mongodb+srv://`` the MongoDB stores
(``store/mongo/``).
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import TYPE_CHECKING, Literal, Protocol

from kubecrawl.core.errors import StoreUnavailable
from kubecrawl.core.settings import DEFAULT_LEASE
from kubecrawl.store.apikeys import ApiKeyStore
from kubecrawl.store.contract import Stores

if TYPE_CHECKING:
    from pymongo import AsyncMongoClient

    from kubecrawl.store.engines import SqlEngine
    from kubecrawl.store.mongo import database as mongo

DatabaseKind = Literal["sql", "mongodb"]


def database_kind(url: str) -> DatabaseKind:
    """Which implementation serves ``url``: the scheme decides (``core/settings.py`` accepts only these)."""
    return "mongodb" if url.startswith(("mongodb://", "mongodb+srv://")) else "sql"


class Database(Protocol):
    """One database: its stores, its API keys, the ping (``store/connection.py`` calls it) and the close."""

    @property
    def stores(self) -> Stores: ...

    @property
    def keys(self) -> ApiKeyStore: ...

    async def ping(self) -> None:
        """``StoreUnavailable`` unless the database answers within the ping timeout."""
        ...

    async def close(self) -> None: ...


def sql_stores(engine: SqlEngine, *, lease: timedelta = DEFAULT_LEASE) -> Stores:
    """The SQL stores (PostgreSQL, or SQLite for the embedded default) over one engine; ``lease``: how long a
    worker's claim holds (``Settings.lease()``)."""
    from kubecrawl.store.crawls import SqlCrawlStore
    from kubecrawl.store.page_metadata import SqlPageMetadataStore
    from kubecrawl.store.sites import SqlSiteStore

    return Stores(
        pages=SqlPageMetadataStore(engine, lease=lease),
        sites=SqlSiteStore(engine),
        crawls=SqlCrawlStore(engine, lease=lease),
    )


def mongo_stores(db: mongo.Database, *, lease: timedelta = DEFAULT_LEASE) -> Stores:
    """The MongoDB stores over one database of an ``AsyncMongoClient``; ``lease`` as for ``sql_stores``."""
    from kubecrawl.store.mongo.crawls import MongoCrawlStore
    from kubecrawl.store.mongo.page_metadata import MongoPageMetadataStore
    from kubecrawl.store.mongo.sites import MongoSiteStore

    return Stores(
        pages=MongoPageMetadataStore(db, lease=lease),
        sites=MongoSiteStore(db),
        crawls=MongoCrawlStore(db, lease=lease),
    )


class SqlDatabase:
    def __init__(self, engine: SqlEngine, *, lease: timedelta = DEFAULT_LEASE) -> None:
        self.engine = engine
        self.stores = sql_stores(engine, lease=lease)

    @property
    def keys(self) -> ApiKeyStore:
        from kubecrawl.store.keys import KeyStore

        return KeyStore(self.engine)

    async def ping(self) -> None:
        from kubecrawl.store.database import ping

        await ping(self.engine)

    async def close(self) -> None:
        await self.engine.dispose()


class MongoDatabase:
    def __init__(self, client: AsyncMongoClient[mongo.Document], *, lease: timedelta = DEFAULT_LEASE) -> None:
        from kubecrawl.store.mongo.database import database

        self.client = client
        self.db = database(client)
        self.stores = mongo_stores(self.db, lease=lease)

    @property
    def keys(self) -> ApiKeyStore:
        from kubecrawl.store.mongo.keys import MongoKeyStore

        return MongoKeyStore(self.db)

    async def ping(self) -> None:
        from kubecrawl.store.mongo.database import ping

        await ping(self.db)

    async def close(self) -> None:
        await self.client.close()


def open_database(url: str, *, pool_size: int = 10, lease: timedelta = DEFAULT_LEASE) -> SqlDatabase | MongoDatabase:
    """The database ``url`` names; nothing is sent until it is used (``store/connection.py`` pings it at start-up
    and then watches it). ``lease``: how long a worker's claim holds (``Settings.lease()``).

    Only the one implementation's modules are imported (PyMongo or SQLAlchemy, not both): a process pays the
    start-up of the database it uses (docs/crawls.md, "Start-up")."""
    if database_kind(url) == "mongodb":
        from kubecrawl.store.mongo.database import connect

        return MongoDatabase(connect(url, pool_size=pool_size), lease=lease)
    from kubecrawl.store.database import create_engine

    return SqlDatabase(create_engine(url, pool_size=pool_size), lease=lease)


def migrate(url: str, revision: str = "head") -> str:
    """``kubecrawl migrate``: SQL runs the Alembic migrations up to ``revision``; MongoDB creates the
    collections' indexes (idempotent) and records its schema version. Returns what the database is at now."""
    if database_kind(url) == "sql":
        from kubecrawl.store.migrating import upgrade

        upgrade(url, revision)
        return revision
    if revision != "head":
        raise StoreUnavailable(f"MongoDB has no revisions to go to: migrate it to head, not {revision!r}")

    from kubecrawl.store.mongo import database as mongo

    async def indexes() -> int:
        client = mongo.connect(url)
        try:
            return await mongo.ensure_indexes(mongo.database(client))
        finally:
            await client.close()

    return f"mongodb schema {asyncio.run(indexes())}"

"""Opening a database: the one place a database URL becomes a connection and the contract's ``Stores``.

Callers (API, worker, embedded runtime, CLI) hold a ``Database`` and the Protocols of ``store/contract.py`` only:
``open_database`` picks the implementation from the URL's scheme, once, at construction (``database_kind``), and
nothing else anywhere branches on the database. ``postgresql+asyncpg://`` and ``sqlite+aiosqlite://`` open the
SQL stores (``store/crawls.py`` and its neighbours); ``mongodb://`` and ``mongodb+srv://`` the MongoDB stores
(``store/mongo/``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Literal, Protocol

from pymongo import AsyncMongoClient
from sqlalchemy.ext.asyncio import AsyncEngine

from kubecrawl.core.backoff import Backoff, retry_with_backoff
from kubecrawl.core.errors import StoreUnavailable
from kubecrawl.core.logging import get_logger
from kubecrawl.store import database as sql
from kubecrawl.store.apikeys import ApiKeyStore
from kubecrawl.store.contract import Stores
from kubecrawl.store.crawls import SqlCrawlStore
from kubecrawl.store.keys import KeyStore
from kubecrawl.store.migrating import upgrade
from kubecrawl.store.mongo import database as mongo
from kubecrawl.store.mongo.crawls import MongoCrawlStore
from kubecrawl.store.mongo.keys import MongoKeyStore
from kubecrawl.store.mongo.page_metadata import MongoPageMetadataStore
from kubecrawl.store.mongo.sites import MongoSiteStore
from kubecrawl.store.page_metadata import SqlPageMetadataStore
from kubecrawl.store.sites import SqlSiteStore

log = get_logger(__name__)
DatabaseKind = Literal["sql", "mongodb"]


def database_kind(url: str) -> DatabaseKind:
    """Which implementation serves ``url``: the scheme decides (``core/settings.py`` accepts only these)."""
    return "mongodb" if mongo.is_mongodb_url(url) else "sql"


class Database(Protocol):
    """One database: its stores, its API keys, the readiness ping, the start-up wait and the close."""

    @property
    def stores(self) -> Stores: ...

    @property
    def keys(self) -> ApiKeyStore: ...

    async def ping(self) -> None:
        """``StoreUnavailable`` unless the database answers within the ping timeout."""
        ...

    async def wait_until_ready(self, *, attempts: int) -> None:
        """Ping with backoff at start-up (1 s ×2 up to 30 s), then fail fast (``StoreUnavailable``)."""
        ...

    async def close(self) -> None: ...


async def wait_until_ready(
    ping: Callable[[], Awaitable[None]], *, attempts: int, initial: float = 1.0, maximum: float = 30.0
) -> None:
    """Ping the database at start-up with backoff (1 s ×2 up to 30 s, with jitter), then fail fast
    (``StoreUnavailable``)."""

    def failed(attempt: int, exc: BaseException, delay: float) -> None:
        detail = exc.detail if isinstance(exc, StoreUnavailable) else repr(exc)
        log.warning("db_connect_failed", attempt=attempt, error=detail, next_delay_s=delay)

    backoff = Backoff(initial=initial, multiplier=2.0, maximum=maximum, attempts=attempts)
    connected = await retry_with_backoff(ping, backoff, retry_on=StoreUnavailable, on_failure=failed)
    if connected is not None:
        log.info("db_connected", attempt=connected[1])


def sql_stores(engine: AsyncEngine) -> Stores:
    """The SQL stores (PostgreSQL, or SQLite for the embedded default) over one engine."""
    return Stores(pages=SqlPageMetadataStore(engine), sites=SqlSiteStore(engine), crawls=SqlCrawlStore(engine))


def mongo_stores(db: mongo.Database) -> Stores:
    """The MongoDB stores over one database of an ``AsyncMongoClient``."""
    return Stores(pages=MongoPageMetadataStore(db), sites=MongoSiteStore(db), crawls=MongoCrawlStore(db))


class SqlDatabase:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.stores = sql_stores(engine)

    @property
    def keys(self) -> ApiKeyStore:
        return KeyStore(self.engine)

    async def ping(self) -> None:
        await sql.ping(self.engine)

    async def wait_until_ready(self, *, attempts: int) -> None:
        await wait_until_ready(self.ping, attempts=attempts)

    async def close(self) -> None:
        await self.engine.dispose()


class MongoDatabase:
    def __init__(self, client: AsyncMongoClient[mongo.Document]) -> None:
        self.client = client
        self.db = mongo.database(client)
        self.stores = mongo_stores(self.db)

    @property
    def keys(self) -> ApiKeyStore:
        return MongoKeyStore(self.db)

    async def ping(self) -> None:
        await mongo.ping(self.db)

    async def wait_until_ready(self, *, attempts: int) -> None:
        await wait_until_ready(self.ping, attempts=attempts)

    async def close(self) -> None:
        await self.client.close()


def open_database(url: str, *, pool_size: int = 10) -> SqlDatabase | MongoDatabase:
    """The database ``url`` names; nothing is sent until it is used (or ``wait_until_ready``)."""
    if database_kind(url) == "mongodb":
        return MongoDatabase(mongo.connect(url, pool_size=pool_size))
    return SqlDatabase(sql.create_engine(url, pool_size=pool_size))


def migrate(url: str, revision: str = "head") -> str:
    """``kubecrawl migrate``: SQL runs the Alembic migrations up to ``revision``; MongoDB creates the
    collections' indexes (idempotent) and records its schema version. Returns what the database is at now."""
    if database_kind(url) == "sql":
        upgrade(url, revision)
        return revision
    if revision != "head":
        raise StoreUnavailable(f"MongoDB has no revisions to go to: migrate it to head, not {revision!r}")

    async def indexes() -> int:
        client = mongo.connect(url)
        try:
            return await mongo.ensure_indexes(mongo.database(client))
        finally:
            await client.close()

    return f"mongodb schema {asyncio.run(indexes())}"

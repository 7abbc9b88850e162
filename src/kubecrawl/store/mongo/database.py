"""The MongoDB client, its errors, the readiness ping and the collections' indexes (``kubecrawl migrate``).

``connect`` builds an ``AsyncMongoClient`` for a ``mongodb://``/``mongodb+srv://`` URL naming its database. The
client connects lazily and reconnects by itself; a PyMongo error is wrapped at this edge as ``StoreUnavailable``
(the server did not answer) or ``InvalidValue`` (it refused a value: a document too large, a key it cannot
store), as the SQL stores do. ``ensure_indexes`` creates every index (idempotent: an existing index with the same
name is left alone) and records ``SCHEMA_VERSION`` in ``kubecrawl_meta``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from pymongo import ASCENDING, DESCENDING, AsyncMongoClient, IndexModel
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import (
    BulkWriteError,
    ConfigurationError,
    DocumentTooLarge,
    DuplicateKeyError,
    InvalidURI,
    OperationFailure,
    PyMongoError,
    WriteError,
)

from kubecrawl.core.errors import InvalidValue, StoreUnavailable

Document = dict[str, Any]
Database = AsyncDatabase[Document]

# Readiness must answer quickly, as for SQL (store/database.py).
PING_TIMEOUT_SECONDS = 2.0
# The collections' layout version, recorded by ``ensure_indexes``; bump it with every change of the indexes.
SCHEMA_VERSION = 2  # 2: crawls.started_by_state (crawl quotas)
# MongoDB's server error codes that blame a value, not the server: 2 BadValue, 10334 BSONObjectTooLarge,
# 17280 KeyTooLong, 11000 DuplicateKey (a unique index, where the store did not expect one).
_VALUE_CODES = frozenset({2, 10334, 17280, 11000})
DUPLICATE_KEY = 11000

INDEXES: dict[str, list[IndexModel]] = {
    # The seed's page metadata: one document per normalised URL.
    "page_metadata": [
        IndexModel([("url", ASCENDING)], unique=True, name="url_unique"),
        IndexModel([("created_at", ASCENDING)], name="created_at"),
        IndexModel([("status", ASCENDING)], name="status"),
        IndexModel([("attempts", ASCENDING)], name="attempts"),
        IndexModel([("last_error", ASCENDING)], name="last_error"),
        IndexModel([("processing.last_request_id", ASCENDING)], name="processing_last_request_id"),
        # Every worker's sweep: claims past their lease, and waiting records whose message may be lost.
        IndexModel([("lease_until", ASCENDING)], name="lease_until"),
        IndexModel([("status", ASCENDING), ("updated_at", ASCENDING)], name="status_updated"),
    ],
    "sites": [IndexModel([("namespace", ASCENDING), ("name", ASCENDING)], unique=True, name="namespace_name")],
    # The key is left out of a crawl without one: sparse, so those never collide (FerretDB has no partial index).
    "crawls": [
        IndexModel([("idempotency_key", ASCENDING)], unique=True, sparse=True, name="idempotency_key_unique"),
        IndexModel(
            [("site_namespace", ASCENDING), ("site_name", ASCENDING), ("created_at", DESCENDING)], name="site_created"
        ),
        IndexModel([("state", ASCENDING), ("in_flight", ASCENDING)], name="state_in_flight"),
        # An identity's active crawls (the per-identity limit of concurrent crawls, docs/security.md).
        IndexModel([("started_by", ASCENDING), ("state", ASCENDING)], name="started_by_state"),
    ],
    "crawl_pages": [
        IndexModel([("crawl_id", ASCENDING), ("url", ASCENDING)], unique=True, name="crawl_url_unique"),
        # The refill's order: shallowest PENDING first.
        IndexModel(
            [("crawl_id", ASCENDING), ("state", ASCENDING), ("depth", ASCENDING), ("_id", ASCENDING)],
            name="crawl_state_depth",
        ),
        IndexModel([("crawl_id", ASCENDING), ("seq", ASCENDING)], name="crawl_seq"),
        IndexModel([("state", ASCENDING), ("updated_at", ASCENDING)], name="state_updated"),
        IndexModel([("state", ASCENDING), ("lease_until", ASCENDING)], name="state_lease_until"),
    ],
    "crawl_hosts": [IndexModel([("crawl_id", ASCENDING), ("host", ASCENDING)], unique=True, name="crawl_host_unique")],
    "api_keys": [IndexModel([("key_hash", ASCENDING)], unique=True, name="key_hash_unique")],
}


def connect(url: str, *, pool_size: int = 10) -> AsyncMongoClient[Document]:
    """A client for ``url`` (it must name the database: ``mongodb://host/kubecrawl``); nothing is sent yet."""
    try:
        client: AsyncMongoClient[Document] = AsyncMongoClient(
            url,
            tz_aware=True,  # datetimes come back aware (UTC), as the SQL stores return them
            maxPoolSize=pool_size,
            # Fail a request after 10 s without a server instead of PyMongo's 30 s (as asyncpg's connect timeout).
            serverSelectionTimeoutMS=10_000,
            connectTimeoutMS=10_000,
        )
        client.get_default_database()
    except (ConfigurationError, InvalidURI) as exc:
        raise StoreUnavailable(f"bad MongoDB URL (it must name the database): {exc}") from exc
    return client


def database(client: AsyncMongoClient[Document]) -> Database:
    return client.get_default_database()


def refused_value(exc: BaseException) -> bool:
    if isinstance(exc, DocumentTooLarge | DuplicateKeyError):
        return True
    if isinstance(exc, WriteError | OperationFailure | BulkWriteError):
        return getattr(exc, "code", None) in _VALUE_CODES
    return isinstance(exc, ValueError | TypeError)  # bson's InvalidDocument is a ValueError


def store_error(exc: BaseException, doing: str) -> InvalidValue | StoreUnavailable:
    detail = f"{doing} failed: {type(exc).__name__}: {exc}"[:2000]
    return InvalidValue(detail) if refused_value(exc) else StoreUnavailable(detail)


@asynccontextmanager
async def wrapped(doing: str) -> AsyncIterator[None]:
    """PyMongo errors as kubecrawl's (``StoreUnavailable``/``InvalidValue``), the way the SQL stores raise them."""
    try:
        yield
    except PyMongoError as exc:
        raise store_error(exc, doing) from exc


def duplicates(exc: BulkWriteError) -> set[int]:
    """The indexes of a bulk write's operations that hit a unique index; any other error is raised."""
    errors = exc.details.get("writeErrors", [])
    if any(error.get("code") != DUPLICATE_KEY for error in errors):
        raise exc
    return {int(error["index"]) for error in errors}


async def ping(db: Database) -> None:
    """Raise ``StoreUnavailable`` unless the server answers ``ping`` within the ping timeout."""
    try:
        async with asyncio.timeout(PING_TIMEOUT_SECONDS):
            await db.command("ping")
    except (TimeoutError, PyMongoError) as exc:
        raise StoreUnavailable(f"database ping failed: {type(exc).__name__}: {exc}") from exc


async def ensure_indexes(db: Database) -> int:
    """Create every collection's indexes (idempotent) and record the schema version; return it."""
    async with wrapped("creating indexes"):
        for collection, indexes in INDEXES.items():
            existing = {index["name"] async for index in await db[collection].list_indexes()}
            # Only the missing ones: FerretDB 1.24 drops the connection (a panic) when asked to create an index
            # that exists, where MongoDB does nothing.
            missing = [index for index in indexes if index.document["name"] not in existing]
            if missing:
                await db[collection].create_indexes(missing)
        await db.kubecrawl_meta.update_one({"_id": "schema"}, {"$max": {"version": SCHEMA_VERSION}}, upsert=True)
    return SCHEMA_VERSION


async def schema_version(db: Database) -> int | None:
    async with wrapped("reading the schema version"):
        doc = await db.kubecrawl_meta.find_one({"_id": "schema"})
    return None if doc is None else int(doc["version"])

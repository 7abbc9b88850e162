"""Building a database's stores: the one place a caller's engine becomes the contract's ``Stores``.

Callers (API, worker, embedded runtime, CLI) hold ``Stores`` and the Protocols of ``store/contract.py`` only:
each database plugs in here with its own implementations and no branch in any caller.
"""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncEngine

from kubecrawl.store.contract import Stores
from kubecrawl.store.crawls import SqlCrawlStore
from kubecrawl.store.mongo.crawls import MongoCrawlStore
from kubecrawl.store.mongo.database import Database as MongoDatabase
from kubecrawl.store.mongo.page_metadata import MongoPageMetadataStore
from kubecrawl.store.mongo.sites import MongoSiteStore
from kubecrawl.store.page_metadata import SqlPageMetadataStore
from kubecrawl.store.sites import SqlSiteStore


def sql_stores(engine: AsyncEngine) -> Stores:
    """The SQL stores (PostgreSQL, or SQLite for the embedded default) over one engine."""
    return Stores(pages=SqlPageMetadataStore(engine), sites=SqlSiteStore(engine), crawls=SqlCrawlStore(engine))


def mongo_stores(db: MongoDatabase) -> Stores:
    """The MongoDB stores over one database of an ``AsyncMongoClient``."""
    return Stores(pages=MongoPageMetadataStore(db), sites=MongoSiteStore(db), crawls=MongoCrawlStore(db))

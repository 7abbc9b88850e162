"""Building a database's stores: the one place a caller's engine becomes the contract's ``Stores``.

Callers (API, worker, embedded runtime, CLI) hold ``Stores`` and the Protocols of ``store/contract.py`` only, so
another database (MongoDB, issue #15) plugs in here with its own implementations and no branch in any caller.
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy.ext.asyncio import AsyncEngine

from kubecrawl.core.settings import DEFAULT_LEASE
from kubecrawl.store.contract import Stores
from kubecrawl.store.crawls import SqlCrawlStore
from kubecrawl.store.page_metadata import SqlPageMetadataStore
from kubecrawl.store.sites import SqlSiteStore


def sql_stores(engine: AsyncEngine, *, lease: timedelta = DEFAULT_LEASE) -> Stores:
    """The SQL stores (PostgreSQL, or SQLite for the embedded default) over one engine; ``lease``: how long a
    worker's claim holds (``Settings.lease()``)."""
    return Stores(
        pages=SqlPageMetadataStore(engine, lease=lease),
        sites=SqlSiteStore(engine),
        crawls=SqlCrawlStore(engine, lease=lease),
    )

"""The embedded default: API + worker in one process on SQLite and the in-process broker.

The same app factory, pipeline and store serve production; only the broker and the database differ.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncEngine

from kubecrawl.broker.memory import MemoryBroker
from kubecrawl.broker.topology import METADATA_QUEUE, PAGES_QUEUE
from kubecrawl.core.settings import Settings
from kubecrawl.fetch.fetching import Fetcher
from kubecrawl.store.crawls import CrawlStore
from kubecrawl.store.database import create_engine
from kubecrawl.store.migrating import upgrade_async
from kubecrawl.store.pages import PageStore
from kubecrawl.worker.crawling import PagePipeline
from kubecrawl.worker.processing import MetadataPipeline


@dataclass(slots=True)
class Embedded:
    settings: Settings
    engine: AsyncEngine
    broker: MemoryBroker


def sqlite_url(path: Path) -> str:
    return f"sqlite+aiosqlite:///{path.expanduser().resolve()}"


@contextlib.asynccontextmanager
async def embedded_runtime(settings: Settings) -> AsyncIterator[Embedded]:
    """Migrate the SQLite file, start the in-process broker and the metadata workers; stop them on exit."""
    url = settings.database_url.get_secret_value()
    await upgrade_async(url)
    engine = create_engine(url)
    broker = MemoryBroker(
        max_lengths={
            METADATA_QUEUE: settings.metadata_queue_max_length,
            PAGES_QUEUE: settings.pages_queue_max_length,
        },
        concurrency=settings.prefetch_count,
    )
    await broker.start()
    try:
        async with Fetcher(settings.fetch, settings.target_policy()) as fetcher:
            pipeline = MetadataPipeline(
                pages=PageStore(engine), fetcher=fetcher, publisher=broker, retry=settings.retry
            )
            pages = PagePipeline(
                crawls=CrawlStore(engine),
                fetcher=fetcher,
                publisher=broker,
                retry=settings.retry,
                fetch=settings.fetch,
            )
            await broker.start_consuming({METADATA_QUEUE: pipeline.handle, PAGES_QUEUE: pages.handle})
            yield Embedded(settings=settings, engine=engine, broker=broker)
    finally:
        await broker.close()
        await engine.dispose()

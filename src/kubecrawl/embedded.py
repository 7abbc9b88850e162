"""The embedded default: API + worker in one process on SQLite and the in-process broker.

The same app factory, pipeline and store serve production; only the broker and the database differ.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

from kubecrawl.broker.memory import MemoryBroker
from kubecrawl.broker.topology import METADATA_QUEUE, PAGES_QUEUE
from kubecrawl.core.errors import KubecrawlError
from kubecrawl.core.logging import get_logger
from kubecrawl.core.models import FINAL_CRAWL_STATES, Crawl, PageReport
from kubecrawl.core.settings import Settings
from kubecrawl.core.sites import CrawlSiteSpec
from kubecrawl.core.urls import normalise_url, url_host
from kubecrawl.fetch.fetching import Fetcher
from kubecrawl.store.contract import Stores
from kubecrawl.store.database import create_engine
from kubecrawl.store.migrating import upgrade_if_behind
from kubecrawl.store.opening import SqlDatabase
from kubecrawl.triggers import start_crawl
from kubecrawl.worker.pipelines import queue_handlers

log = get_logger(__name__)
# The CLI's crawls are stored as sites of this namespace, named after the host.
CLI_NAMESPACE = "cli"
# How often `kubecrawl crawl` reads the crawl's counters to redraw its progress.
_PROGRESS_SECONDS = 0.2


@dataclass(slots=True)
class Embedded:
    settings: Settings
    database: SqlDatabase
    stores: Stores
    broker: MemoryBroker


def sqlite_url(path: Path) -> str:
    return f"sqlite:///{path.expanduser().resolve()}"


@contextlib.asynccontextmanager
async def embedded_runtime(
    settings: Settings,
    *,
    on_page: Callable[[PageReport], None] | None = None,
    on_crawl_completed: Callable[[str], None] | None = None,
) -> AsyncIterator[Embedded]:
    """Migrate the SQLite file if it is behind, start the in-process broker and the workers; stop them on exit.

    ``on_page`` sees every settled crawl page (``kubecrawl crawl -o``), ``on_crawl_completed`` the id of each crawl
    whose last page settled."""
    url = settings.database_url.get_secret_value()
    database = SqlDatabase(create_engine(url), lease=settings.lease())
    stores = database.stores
    broker = MemoryBroker(
        max_lengths={
            METADATA_QUEUE: settings.metadata_queue_max_length,
            PAGES_QUEUE: settings.pages_queue_max_length,
        },
        concurrency=settings.prefetch_count,
    )
    try:
        await upgrade_if_behind(database.engine, url)
        await broker.start()
        async with Fetcher(settings.fetch, settings.target_policy()) as fetcher:
            handlers = queue_handlers(
                settings, stores, fetcher, broker, on_page=on_page, on_crawl_completed=on_crawl_completed
            )
            await broker.start_consuming(handlers)
            yield Embedded(settings=settings, database=database, stores=stores, broker=broker)
    finally:
        await broker.close()
        await database.close()


def cli_site_name(url: str) -> str:
    """A DNS-1123 name for the host, so a CLI crawl is a site like any other (and the next crawl compares)."""
    name = re.sub(r"[^a-z0-9-]+", "-", url_host(url)).strip("-")
    return name[:63].strip("-") or "site"


async def crawl_once(
    settings: Settings,
    spec: CrawlSiteSpec,
    *,
    on_progress: Callable[[Crawl], None] | None = None,
    on_page: Callable[[PageReport], None] | None = None,
) -> Crawl:
    """Crawl one site in-process (``kubecrawl crawl URL``) and return the finished crawl."""
    normalise_url(spec.url)
    # Set by the page pipeline when the crawl's last page settles: the command returns then, not up to a progress
    # tick later (the tick still shows progress, and ends a crawl that finished another way, e.g. cancelled).
    completed = asyncio.Event()
    async with embedded_runtime(settings, on_page=on_page, on_crawl_completed=lambda _: completed.set()) as runtime:
        sites, crawls = runtime.stores.sites, runtime.stores.crawls
        name = cli_site_name(spec.url)
        await sites.put(CLI_NAMESPACE, name, spec.model_dump(mode="json", by_alias=True))
        crawl = (
            await start_crawl(
                sites, crawls, runtime.broker, CLI_NAMESPACE, name, trigger="manual", idempotency_key=None
            )
        ).crawl
        while crawl.state not in FINAL_CRAWL_STATES:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(completed.wait(), _PROGRESS_SECONDS)
            current = await crawls.get(crawl.id)
            if current is None:
                raise KubecrawlError(f"crawl {crawl.id} vanished from the store", code="crawl_not_found")
            crawl = current
            if on_progress is not None:
                on_progress(crawl)
        return crawl

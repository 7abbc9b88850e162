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
    return f"sqlite+aiosqlite:///{path.expanduser().resolve()}"


@contextlib.asynccontextmanager
async def embedded_runtime(
    settings: Settings, *, on_page: Callable[[PageReport], None] | None = None
) -> AsyncIterator[Embedded]:
    """Migrate the SQLite file if it is behind, start the in-process broker and the workers; stop them on exit.

    ``on_page`` sees every settled crawl page (``kubecrawl crawl -o``)."""
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
            await broker.start_consuming(queue_handlers(settings, stores, fetcher, broker, on_page=on_page))
            yield Embedded(settings=settings, database=database, stores=stores, broker=broker)
    finally:
        await broker.close()
        await database.close()


def cli_site_name(url: str) -> str:
    """A DNS-1123 name for the host, so a CLI crawl is a site like any other (and the next crawl compares)."""
    name = re.sub(r"[^a-z0-9-]+", "-", url_host(url)).strip("-")
    return name[:63].strip("-") or "site"


class _SettledPages:
    """Counts the settled pages of ``kubecrawl crawl`` so that the command ends with its last page: once as many
    pages have settled since a progress read as that read found unsettled, the crawl is probably complete, and it is
    read at once instead of at the next progress tick (up to ``_PROGRESS_SECONDS`` of idling at the end of every
    crawl). A wake-up that finds more work (links found meanwhile) costs one read; a missed one, the tick."""

    def __init__(self, on_page: Callable[[PageReport], None] | None) -> None:
        self._on_page = on_page
        self.count = 0  # pages settled so far (each page once: its ``on_page`` report)
        self._mark = 0  # ``count`` when the last read began
        self._unsettled = 1  # the start page, until the first read
        self.all_settled = asyncio.Event()

    def __call__(self, report: PageReport) -> None:
        if self._on_page is not None:
            self._on_page(report)
        self.count += 1
        if self.count - self._mark >= self._unsettled:
            self.all_settled.set()

    def read(self, crawl: Crawl, *, mark: int) -> None:
        """``crawl`` as read from the store by a read begun when ``count`` was ``mark``."""
        counters = crawl.counters
        self._mark = mark
        self._unsettled = counters.discovered - (counters.fetched + counters.failed + counters.skipped_robots)
        self.all_settled.clear()
        if self._unsettled > 0 and self.count - mark >= self._unsettled:
            self.all_settled.set()


async def crawl_once(
    settings: Settings,
    spec: CrawlSiteSpec,
    *,
    on_progress: Callable[[Crawl], None] | None = None,
    on_page: Callable[[PageReport], None] | None = None,
) -> Crawl:
    """Crawl one site in-process (``kubecrawl crawl URL``) and return the finished crawl."""
    normalise_url(spec.url)
    settled = _SettledPages(on_page)
    async with embedded_runtime(settings, on_page=settled) as runtime:
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
                await asyncio.wait_for(settled.all_settled.wait(), _PROGRESS_SECONDS)
            mark = settled.count
            current = await crawls.get(crawl.id)
            if current is None:
                raise KubecrawlError(f"crawl {crawl.id} vanished from the store", code="crawl_not_found")
            crawl = current
            settled.read(crawl, mark=mark)
            if on_progress is not None:
                on_progress(crawl)
        return crawl

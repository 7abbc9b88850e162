"""The pipeline for each work queue, the same for ``kubecrawl worker`` (on RabbitMQ, ``worker/runtime.py``) and
the embedded default (on the in-process broker, ``embedded.py``).

Apart from the runtime so that the embedded default builds its pipelines without importing RabbitMQ's client.
"""

from __future__ import annotations

from collections.abc import Callable

from kubecrawl.broker.base import Handler, Publisher
from kubecrawl.broker.topology import METADATA_QUEUE, PAGES_QUEUE
from kubecrawl.core.models import PageReport
from kubecrawl.core.settings import Settings
from kubecrawl.fetch.fetching import Fetcher
from kubecrawl.store.contract import Stores
from kubecrawl.worker.crawling import PagePipeline
from kubecrawl.worker.processing import MetadataPipeline


def queue_handlers(
    settings: Settings,
    stores: Stores,
    fetcher: Fetcher,
    publisher: Publisher,
    *,
    on_page: Callable[[PageReport], None] | None = None,
    on_crawl_completed: Callable[[str], None] | None = None,
) -> dict[str, Handler]:
    """The handler of each work queue; ``on_page`` sees every settled crawl page (``kubecrawl crawl -o``),
    ``on_crawl_completed`` the id of each crawl whose last page this process settled."""
    metadata = MetadataPipeline(pages=stores.pages, fetcher=fetcher, publisher=publisher, retry=settings.retry)
    pages = PagePipeline(
        crawls=stores.crawls,
        fetcher=fetcher,
        publisher=publisher,
        retry=settings.retry,
        fetch=settings.fetch,
        on_page=on_page,
        on_crawl_completed=on_crawl_completed,
    )
    return {METADATA_QUEUE: metadata.handle, PAGES_QUEUE: pages.handle}

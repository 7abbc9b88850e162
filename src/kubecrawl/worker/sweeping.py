"""The lost-page sweeper: a safety net for page messages that were never published or were lost.

A page enters a crawl's window (QUEUED) in one transaction and is published after it commits. If the process
dies in between, or a broker loses a non-replicated queue, that page has no message and its crawl would wait
forever. Every worker sweeps periodically: pages QUEUED and untouched for ``lost_after`` are re-published.
``UPDATE … RETURNING`` hands each such page to exactly one sweeper, and a duplicate message is harmless
(``begin_page``/``finish_page`` settle a page once). ``lost_after`` must exceed the longest retry tier, since a
page waiting in a delay queue is QUEUED too.

A publish that fails (broker down) gives its pages back (PENDING, out of the window). A crawl left with nothing in
flight that way, at its start or at a refill, has no message to move it on: the sweep reopens its window.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from kubecrawl.broker.base import Publisher
from kubecrawl.broker.tasks import publish_pages
from kubecrawl.core.logging import get_logger
from kubecrawl.store.contract import CrawlStore, PageRef

log = get_logger(__name__)


async def sweep_once(crawls: CrawlStore, publisher: Publisher, *, lost_after: timedelta) -> int:
    """Re-publish every lost page once and reopen stalled crawls; returns how many pages were published."""
    lost = await crawls.requeue_lost(lost_after)
    by_crawl: dict[str, list[PageRef]] = {}
    for crawl_id, ref in lost:
        by_crawl.setdefault(crawl_id, []).append(ref)
    for crawl_id, refs in by_crawl.items():
        await publish_pages(publisher, crawl_id, refs, release=crawls.release)
        log.warning("lost_pages_republished", crawl_id=crawl_id, pages=len(refs))
    published = len(lost)
    for crawl_id in await crawls.stalled():
        refs = await crawls.reopen_window(crawl_id)
        await publish_pages(publisher, crawl_id, refs, release=crawls.release)
        if refs:
            log.warning("stalled_crawl_resumed", crawl_id=crawl_id, pages=len(refs))
        published += len(refs)
    return published


async def sweep_forever(
    crawls: CrawlStore, publisher: Publisher, *, lost_after: timedelta, interval_seconds: float
) -> None:
    while True:
        await asyncio.sleep(interval_seconds)
        try:
            await sweep_once(crawls, publisher, lost_after=lost_after)
        except Exception:
            # The sweeper is a safety net: a broker or database hiccup must not end it; the next round retries.
            log.exception("lost_page_sweep_failed")

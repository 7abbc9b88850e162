"""The sweeper: every worker gives expired claims back to the queue and re-publishes lost page messages.

**Leases.** A worker's claim of a crawl page (FETCHING, ``begin_page``) or a metadata record (``begin_attempt``)
holds until its lease ends (``KUBECRAWL_LEASE_SECONDS``, docs/crawls.md "Leases"). A worker that is hung but
connected (SIGSTOP, a blocked loop, a stuck socket) keeps its unacked message until RabbitMQ's consumer timeout,
much later; the sweep does not wait for that: ``expire_leases`` returns each expired claim to QUEUED with
``lease_expired`` recorded (its attempt was counted when it started) and the sweep publishes it again, so
another worker fetches it. The late worker, if it ever finishes, finds its page no longer FETCHING and its
outcome is not written (a page's outcome is written once).

**Lost messages.** A metadata record waiting for a fetch (QUEUED, or FAILED_RETRYABLE between its retries) whose
message is gone — a retry tier expiring into a full classic work queue is dropped by RabbitMQ, which dead-letters
classic queues at most once — is published again once untouched for ``lost_after``. A page enters a crawl's
window (QUEUED) in one transaction and is published after it commits.
If the process dies in between, or a broker loses a non-replicated queue, that page has no message and its crawl
would wait forever: pages QUEUED and untouched for ``lost_after`` are re-published. ``lost_after`` must exceed the
longest retry tier, since a page waiting in a delay queue is QUEUED too.

Every step is one conditional ``UPDATE … RETURNING``, which hands each row to exactly one sweeper, so every
worker sweeps and none coordinates; a duplicate message is harmless (``begin_page``/``finish_page`` settle a page
once, ``begin_attempt`` sees a written result).

A publish that fails (broker down) gives its pages back (PENDING, out of the window). A crawl left with nothing in
flight that way, at its start or at a refill, has no message to move it on: the sweep reopens its window.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from kubecrawl.broker.base import Publisher
from kubecrawl.broker.tasks import publish_metadata_tasks, publish_pages
from kubecrawl.core.clock import utcnow
from kubecrawl.core.contracts import MetadataTask
from kubecrawl.core.logging import get_logger
from kubecrawl.store.contract import CrawlStore, PageMetadataStore, PageRef

log = get_logger(__name__)


async def _publish_by_crawl(
    crawls: CrawlStore, publisher: Publisher, found: list[tuple[str, PageRef]], event: str
) -> None:
    by_crawl: dict[str, list[PageRef]] = {}
    for crawl_id, ref in found:
        by_crawl.setdefault(crawl_id, []).append(ref)
    for crawl_id, refs in by_crawl.items():
        await publish_pages(publisher, crawl_id, refs, release=crawls.release)
        log.warning(event, crawl_id=crawl_id, pages=len(refs))


async def _publish_records(publisher: Publisher, records: list[tuple[str, str]], event: str) -> None:
    if not records:
        return
    tasks = [MetadataTask(url=url, request_id=request_id) for url, request_id in records]
    outcomes = await publish_metadata_tasks(publisher, tasks)
    for (url, request_id), failed in zip(records, outcomes, strict=True):
        # A failed publish leaves the record waiting: a later sweep (or GET /metadata) publishes it again.
        log.warning(event, url=url, request_id=request_id, republished=failed is None)


async def expire_leases(pages: PageMetadataStore, crawls: CrawlStore, publisher: Publisher) -> int:
    """Give every expired claim back to the queue; returns how many messages were published."""
    now = utcnow()
    expired_pages = await crawls.expire_leases(now)
    await _publish_by_crawl(crawls, publisher, expired_pages, "page_lease_expired")
    records = await pages.expire_leases(now)
    await _publish_records(publisher, records, "record_lease_expired")
    return len(expired_pages) + len(records)


async def sweep_once(
    crawls: CrawlStore, publisher: Publisher, *, lost_after: timedelta, pages: PageMetadataStore | None = None
) -> int:
    """Expire leases (when given the records' store too), re-publish every lost page once and reopen stalled
    crawls; returns how many messages were published."""
    published = 0
    if pages is not None:
        published += await expire_leases(pages, crawls, publisher)
        # A retry whose tier expired into a full classic work queue was dropped by the broker (at-most-once
        # dead-lettering): its record still waits (FAILED_RETRYABLE), with nothing to move it on.
        records = await pages.requeue_lost(lost_after)
        await _publish_records(publisher, records, "lost_records_republished")
        published += len(records)
    lost = await crawls.requeue_lost(lost_after)
    await _publish_by_crawl(crawls, publisher, lost, "lost_pages_republished")
    published += len(lost)
    for crawl_id in await crawls.stalled():
        refs = await crawls.reopen_window(crawl_id)
        await publish_pages(publisher, crawl_id, refs, release=crawls.release)
        if refs:
            log.warning("stalled_crawl_resumed", crawl_id=crawl_id, pages=len(refs))
        published += len(refs)
    return published


async def sweep_forever(
    crawls: CrawlStore,
    pages: PageMetadataStore,
    publisher: Publisher,
    *,
    lost_after: timedelta,
    interval_seconds: float,
) -> None:
    while True:
        await asyncio.sleep(interval_seconds)
        try:
            await sweep_once(crawls, publisher, lost_after=lost_after, pages=pages)
        except Exception:
            # The sweeper is a safety net: a broker or database hiccup must not end it; the next round retries.
            log.exception("sweep_failed")

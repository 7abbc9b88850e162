"""Starting a batch of a crawl's pages in SQL (``begin_page``, group-committed per crawl): mark them FETCHING
(one more attempt each) and read what fetching them needs.

A batch is one ``UPDATE … RETURNING`` and one read of the crawl's state; the previous crawl's validators (for
conditional requests and change detection) and the hosts a ``Retry-After`` has paused are read only when there
are some. None of it needs a transaction around it: the pages are FETCHING once their update commits, and what
is read after it may change at any moment anyway, so on PostgreSQL the statements run in autocommit (no
BEGIN/COMMIT round trips). Each start is a claim with a lease (``lease_until``, docs/crawls.md "Leases"). Only
pages QUEUED or FETCHING start (a redelivered message of a FETCHING page after a worker died is fetched again); a
settled page never does.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, func, select, update

from kubecrawl.core.clock import utcnow
from kubecrawl.core.models import CrawlPageState, CrawlState
from kubecrawl.store.contract import PageStart
from kubecrawl.store.dialects import Transactions, as_utc
from kubecrawl.store.frontier import Frontier
from kubecrawl.store.schema import crawl_hosts, crawl_pages, crawls

P = CrawlPageState

# Built once: building a Core statement per call cost more CPU than SQLite spent executing it.
_BEGIN_PAGES = (
    update(crawl_pages)
    .where(
        crawl_pages.c.id.in_(bindparam("p_ids", expanding=True)),
        # The pages are found by primary key; the crawl is only checked. Written as ``crawl_id || ''`` so that no
        # index on crawl_id applies: with statistics from before the crawl (a first crawl), PostgreSQL took
        # ``crawl_id = $1`` for a few rows and walked all of the crawl's pages for each batch (auto_explain).
        crawl_pages.c.crawl_id.concat("") == bindparam("p_crawl_id"),
        crawl_pages.c.state.in_((P.QUEUED.value, P.FETCHING.value)),
    )
    .values(
        state=P.FETCHING.value,
        attempts=crawl_pages.c.attempts + 1,
        updated_at=bindparam("p_now"),
        lease_until=bindparam("p_lease_until"),
    )
    .returning(crawl_pages.c.id, crawl_pages.c.url, crawl_pages.c.depth, crawl_pages.c.attempts)
)
_MARK_RUNNING = (
    update(crawls)
    .where(crawls.c.id == bindparam("p_crawl_id"), crawls.c.state == CrawlState.QUEUED.value)
    .values(state=CrawlState.RUNNING.value, started_at=bindparam("p_now"))
)
# The crawl's state, its previous crawl, and whether any of its hosts is held (Retry-After, Crawl-delay): one
# read per batch; which hosts and until when is read only when some are (rarely). The spec (``config``) cannot
# change during a crawl and is read once per process (the frontier's memo).
_CRAWL_FOR_PAGES = select(
    crawls.c.state,
    crawls.c.previous_crawl_id,
    select(func.count())
    .where(crawl_hosts.c.crawl_id == crawls.c.id, crawl_hosts.c.next_fetch_at > bindparam("p_now"))
    .scalar_subquery()
    .label("held_hosts"),
).where(crawls.c.id == bindparam("p_crawl_id"))
_PREVIOUS_PAGES = select(
    crawl_pages.c.url,
    crawl_pages.c.content_hash,
    crawl_pages.c.etag,
    crawl_pages.c.last_modified,
    crawl_pages.c.outlinks,
).where(
    crawl_pages.c.crawl_id == bindparam("p_previous_id"),
    crawl_pages.c.url.in_(bindparam("p_urls", expanding=True)),
    crawl_pages.c.state == P.DONE.value,
)
_HELD_HOSTS = select(crawl_hosts.c.host, crawl_hosts.c.next_fetch_at).where(
    crawl_hosts.c.crawl_id == bindparam("p_crawl_id"), crawl_hosts.c.next_fetch_at > bindparam("p_now")
)


class PageStarts:
    def __init__(self, transactions: Transactions, frontier: Frontier, *, lease: timedelta) -> None:
        self._transactions = transactions
        self._frontier = frontier
        self._lease = lease

    async def start(self, crawl_id: str, page_ids: Sequence[int]) -> list[PageStart | None]:
        """One result per page id, in order: what fetching it needs, or None if it is settled (or a second
        delivery of a page in the same batch: the first is fetching it)."""
        now = utcnow()
        async with self._transactions.single() as conn:
            ids = sorted(set(page_ids))
            pages = {
                row.id: row
                for row in await conn.execute(
                    _BEGIN_PAGES,
                    {"p_ids": ids, "p_crawl_id": crawl_id, "p_now": now, "p_lease_until": now + self._lease},
                )
            }
            if not pages:
                return [None] * len(page_ids)
            crawl = (await conn.execute(_CRAWL_FOR_PAGES, {"p_crawl_id": crawl_id, "p_now": now})).one()
            state = CrawlState(crawl.state)
            if state is CrawlState.QUEUED:  # its first pages: the crawl starts running
                await conn.execute(_MARK_RUNNING, {"p_crawl_id": crawl_id, "p_now": now})
                state = CrawlState.RUNNING
            config = await self._frontier.config(conn, crawl_id)
            previous: dict[str, dict[str, Any]] = {}
            if crawl.previous_crawl_id is not None:
                rows = await conn.execute(
                    _PREVIOUS_PAGES,
                    {"p_previous_id": crawl.previous_crawl_id, "p_urls": [page.url for page in pages.values()]},
                )
                previous = {
                    row.url: {
                        "content_hash": row.content_hash,
                        "etag": row.etag,
                        "last_modified": row.last_modified,
                        "outlinks": row.outlinks or [],
                    }
                    for row in rows
                }
            held_until: dict[str, datetime] = {}
            if crawl.held_hosts:
                held = await conn.execute(_HELD_HOSTS, {"p_crawl_id": crawl_id, "p_now": now})
                held_until = {row.host: until for row in held if (until := as_utc(row.next_fetch_at)) is not None}
        results: list[PageStart | None] = []
        for page_id in page_ids:
            page = pages.pop(page_id, None)
            results.append(
                None
                if page is None
                else PageStart(
                    page.url,
                    page.depth,
                    page.attempts,
                    state,
                    config,
                    crawl.previous_crawl_id is not None,
                    previous.get(page.url),
                    held_until,
                )
            )
        return results

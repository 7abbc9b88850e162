"""Starting a batch of pages in SQL (``begin_page``, group-committed across crawls): mark them FETCHING (one more
attempt each) and read what fetching them needs.

A batch, whatever its crawls, is one ``UPDATE … RETURNING`` and one read of its crawls' states (one more
``UPDATE`` when some of them start running); the previous crawl's validators (for conditional requests and change
detection) and the hosts a ``Retry-After`` has paused are read only for the crawls that have some. None of it
needs a transaction around it: the pages are FETCHING once their update commits, and what is read after it may
change at any moment anyway, so on PostgreSQL the statements run in autocommit (no BEGIN/COMMIT round trips).
Each start is a claim with a lease (``lease_until``, docs/crawls.md "Leases"). Only pages QUEUED or FETCHING
start (a redelivered message of a FETCHING page after a worker died is fetched again), and only in the crawl the
message names; a settled page never does.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, func, select, tuple_, update

from kubecrawl.core.clock import utcnow
from kubecrawl.core.models import CrawlPageState, CrawlState
from kubecrawl.store.contract import PageStart
from kubecrawl.store.dialects import Transactions, as_utc
from kubecrawl.store.engines import SqlConnection
from kubecrawl.store.frontier import Frontier
from kubecrawl.store.prebuilt import Prebuilt
from kubecrawl.store.schema import crawl_hosts, crawl_pages, crawls

P = CrawlPageState

# Built once: building a Core statement per call cost more CPU than SQLite spent executing it; on SQLite compiled
# once and run on sqlite3 (store/prebuilt.py).
_BEGIN_PAGES = Prebuilt(
    update(crawl_pages)
    .where(
        crawl_pages.c.id.in_(bindparam("p_ids", expanding=True)),
        # The pages are found by primary key; their crawl is only checked. Written as ``crawl_id || ''`` so that no
        # index on crawl_id applies: with statistics from before the crawl (a first crawl), PostgreSQL took
        # ``crawl_id = $1`` for a few rows and walked all of the crawl's pages for each batch (auto_explain).
        tuple_(crawl_pages.c.crawl_id.concat(""), crawl_pages.c.id).in_(bindparam("p_pages", expanding=True)),
        crawl_pages.c.state.in_((P.QUEUED.value, P.FETCHING.value)),
    )
    .values(
        state=P.FETCHING.value,
        attempts=crawl_pages.c.attempts + 1,
        updated_at=bindparam("p_now"),
        lease_until=bindparam("p_lease_until"),
    )
    .returning(crawl_pages.c.crawl_id, crawl_pages.c.id, crawl_pages.c.url, crawl_pages.c.depth, crawl_pages.c.attempts)
)
_MARK_RUNNING = Prebuilt(
    update(crawls)
    .where(crawls.c.id.in_(bindparam("p_crawl_ids", expanding=True)), crawls.c.state == CrawlState.QUEUED.value)
    .values(state=CrawlState.RUNNING.value, started_at=bindparam("p_now"))
)
# Each crawl's state, its previous crawl, and whether any of its hosts is held (Retry-After, Crawl-delay): one
# read per batch; which hosts and until when is read only when some are (rarely). The spec (``config``) cannot
# change during a crawl and is read once per process (the frontier's memo).
_CRAWLS_FOR_PAGES = Prebuilt(
    select(
        crawls.c.id,
        crawls.c.state,
        crawls.c.previous_crawl_id,
        select(func.count())
        .where(crawl_hosts.c.crawl_id == crawls.c.id, crawl_hosts.c.next_fetch_at > bindparam("p_now"))
        .scalar_subquery()
        .label("held_hosts"),
    ).where(crawls.c.id.in_(bindparam("p_crawl_ids", expanding=True)))
)
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

    async def start(self, _group: object, pages: Sequence[tuple[str, int]]) -> list[PageStart | None]:
        """One result per (crawl id, page id), in order: what fetching it needs, or None if it is settled, not of
        that crawl, or a second delivery of a page in the same batch (the first is fetching it)."""
        now = utcnow()
        async with self._transactions.single() as conn:
            started = {
                (row.crawl_id, row.id): row
                for row in await _BEGIN_PAGES.execute(
                    conn,
                    {
                        "p_ids": sorted({page_id for _, page_id in pages}),
                        "p_pages": sorted(set(pages)),
                        "p_now": now,
                        "p_lease_until": now + self._lease,
                    },
                )
            }
            if not started:
                return [None] * len(pages)
            crawl_ids = sorted({crawl_id for crawl_id, _ in started})
            crawls_read = {
                row.id: row for row in await _CRAWLS_FOR_PAGES.execute(conn, {"p_crawl_ids": crawl_ids, "p_now": now})
            }
            starting = [crawl_id for crawl_id, crawl in crawls_read.items() if crawl.state == CrawlState.QUEUED.value]
            if starting:  # their first pages: these crawls start running
                await _MARK_RUNNING.execute(conn, {"p_crawl_ids": starting, "p_now": now})
            urls: dict[str, list[str]] = {}
            for (crawl_id, _), row in started.items():
                urls.setdefault(crawl_id, []).append(row.url)
            needs = {
                crawl_id: await self._needs(conn, crawl, urls[crawl_id], now) for crawl_id, crawl in crawls_read.items()
            }
        results: list[PageStart | None] = []
        for key in pages:
            page = started.pop(key, None)
            owner = None if page is None else crawls_read.get(page.crawl_id)
            if page is None or owner is None:
                results.append(None)
                continue
            config, previous, held_until = needs[page.crawl_id]
            results.append(
                PageStart(
                    page.url,
                    page.depth,
                    page.attempts,
                    CrawlState.RUNNING if owner.state == CrawlState.QUEUED.value else CrawlState(owner.state),
                    config,
                    owner.previous_crawl_id is not None,
                    previous.get(page.url),
                    held_until,
                )
            )
        return results

    async def _needs(
        self, conn: SqlConnection, crawl: Any, urls: Sequence[str], now: datetime
    ) -> tuple[dict[str, Any], dict[str, dict[str, Any]], dict[str, datetime]]:
        """What a crawl's started pages need: its spec, the previous crawl's validators of these URLs (if there
        is a previous crawl), the hosts paused until when (if some are)."""
        config = await self._frontier.config(conn, crawl.id)
        previous: dict[str, dict[str, Any]] = {}
        if crawl.previous_crawl_id is not None:
            rows = await conn.execute(_PREVIOUS_PAGES, {"p_previous_id": crawl.previous_crawl_id, "p_urls": urls})
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
            held = await conn.execute(_HELD_HOSTS, {"p_crawl_id": crawl.id, "p_now": now})
            held_until = {row.host: until for row in held if (until := as_utc(row.next_fetch_at)) is not None}
        return config, previous, held_until

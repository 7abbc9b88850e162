"""A crawl's frontier in SQL: new pages in (deduplicated, capped by ``scope.maxPages``), and the window refill
(PENDING → QUEUED for the shallowest pages, up to ``politeness.maxConcurrency`` in flight).

Every method runs inside a transaction whose caller holds the crawl's row lock (``SELECT … FOR UPDATE``, or the
SQLite store's in-process lock): the window and ``discovered`` hang on it. The same steps run inside
PostgreSQL's ``kubecrawl_finish_pages`` (migration 0003) when a batch of outcomes is settled there
(``store/finishing.py``).

The frontier also keeps what this process remembers of recent crawls (``CrawlMemo``): URLs known to be in the
frontier, so that the 25 links of a typical page cost no index probe each, and the crawl's spec, frozen at its
start, so that it is not read and decoded per batch.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import bindparam, select, update

from kubecrawl.core.clock import utcnow
from kubecrawl.core.models import CrawlPageState
from kubecrawl.store.contract import PageRef
from kubecrawl.store.dialects import dialect_insert
from kubecrawl.store.engines import SqlConnection, SqlEngine
from kubecrawl.store.outcomes import window_room
from kubecrawl.store.prebuilt import Prebuilt
from kubecrawl.store.schema import crawl_pages, crawls

P = CrawlPageState
# What a process remembers of recent crawls (``CrawlMemo``): at least this many crawls, and more while their known
# URLs number no more than _MEMO_URLS (~100 bytes each: ~20 MB). A fixed 8 crawls made a worker serving 200
# small crawls at once (bench/many_hosts.py) read each crawl's spec and send every link to the database again
# on every batch; a few crawls of 100,000 pages still stay within the URL bound.
_KNOWN_CRAWLS = 8
_MEMO_URLS = 200_000

# Built once: building a Core statement per call cost more CPU than SQLite spent executing it; on SQLite compiled
# once and run on sqlite3 (store/prebuilt.py).
_CRAWL_CONFIG = Prebuilt(select(crawls.c.config).where(crawls.c.id == bindparam("p_crawl_id")))
_KNOWN_URLS = Prebuilt(
    select(crawl_pages.c.url).where(
        crawl_pages.c.crawl_id == bindparam("p_crawl_id"),
        crawl_pages.c.url.in_(bindparam("p_urls", expanding=True)),
    )
)
# PENDING → QUEUED for the shallowest pages, as many as the window has room for: one statement.
_TAKE_PENDING = Prebuilt(
    update(crawl_pages)
    .where(
        crawl_pages.c.id.in_(
            select(crawl_pages.c.id)
            .where(crawl_pages.c.crawl_id == bindparam("p_crawl_id"), crawl_pages.c.state == P.PENDING.value)
            .order_by(crawl_pages.c.depth, crawl_pages.c.id)
            .limit(bindparam("p_room"))
        )
    )
    .values(state=P.QUEUED.value, updated_at=bindparam("p_now"))
    .returning(crawl_pages.c.id, crawl_pages.c.url, crawl_pages.c.depth)
)


@dataclass(slots=True)
class CrawlMemo:
    """What this process remembers of a recent crawl, so that page batches skip the database for it."""

    # URLs known to be in the frontier (inserted here or found there): never deleted, so safe to skip.
    known: set[str] = field(default_factory=set)
    # The crawl's spec: frozen when the crawl starts.
    config: dict[str, Any] | None = None


class Frontier:
    def __init__(self, engine: SqlEngine) -> None:
        self._insert_pages = Prebuilt(
            dialect_insert(engine)(crawl_pages).on_conflict_do_nothing(index_elements=["crawl_id", "url"])
        )
        self._memos: OrderedDict[str, CrawlMemo] = OrderedDict()

    def memo(self, crawl_id: str) -> CrawlMemo:
        memo = self._memos.get(crawl_id)
        if memo is None:
            memo = self._memos[crawl_id] = CrawlMemo()
            while len(self._memos) > _KNOWN_CRAWLS and (
                len(self._memos) > _MEMO_URLS  # a bound on crawls too, however few URLs each knows
                or sum(len(known.known) for known in self._memos.values()) > _MEMO_URLS
            ):
                self._memos.popitem(last=False)
        else:
            self._memos.move_to_end(crawl_id)
        return memo

    def forget(self, crawl_id: str) -> None:
        """The crawl has finished: nothing more to remember of it."""
        self._memos.pop(crawl_id, None)

    async def config(self, conn: SqlConnection, crawl_id: str) -> dict[str, Any]:
        """The crawl's spec, read once per process (it cannot change while the crawl runs)."""
        memo = self.memo(crawl_id)
        if memo.config is None:
            memo.config = (await _CRAWL_CONFIG.execute(conn, {"p_crawl_id": crawl_id})).scalar_one()
        return memo.config

    async def add_pages(
        self, conn: SqlConnection, crawl_id: str, candidates: Sequence[tuple[str, int]], *, limit: int
    ) -> list[str]:
        """Insert new frontier pages (deduplicated) up to ``limit``; the caller holds the crawl lock.

        Returns the inserted URLs; the caller adds them to the crawl's known URLs once the transaction has committed
        (a rolled-back insert must not be skipped by the next attempt).
        """
        if limit <= 0 or not candidates:
            return []
        known = self.memo(crawl_id).known
        unique: dict[str, int] = {}
        for url, depth in candidates:
            if url not in known:
                unique.setdefault(url, depth)
        if not unique:
            return []
        existing = set((await _KNOWN_URLS.execute(conn, {"p_crawl_id": crawl_id, "p_urls": list(unique)})).scalars())
        known.update(existing)
        fresh = [(url, depth) for url, depth in unique.items() if url not in existing][:limit]
        if not fresh:
            return []
        now = utcnow()
        # executemany of one prebuilt statement: compiled once (a multi-row VALUES would compile per row count).
        await self._insert_pages.execute(
            conn,
            [
                {
                    "crawl_id": crawl_id,
                    "url": url,
                    "depth": depth,
                    "state": P.PENDING.value,
                    "attempts": 0,
                    "created_at": now,
                    "updated_at": now,
                }
                for url, depth in fresh
            ],
        )
        return [url for url, _ in fresh]

    async def refill(self, conn: SqlConnection, crawl_id: str, config: dict[str, Any], in_flight: int) -> list[PageRef]:
        """Move PENDING pages (shallowest first) into the window, as many as it has room for; the caller holds the
        crawl lock and adds them to the crawl's ``in_flight`` and ``queued``."""
        room = window_room(config, in_flight)
        if room <= 0:
            return []
        rows = (await _TAKE_PENDING.execute(conn, {"p_crawl_id": crawl_id, "p_room": room, "p_now": utcnow()})).all()
        return [PageRef(row.id, row.url, row.depth) for row in sorted(rows, key=lambda row: (row.depth, row.id))]

"""A crawl's frontier on MongoDB: page ids, new pages in (deduplicated, capped by ``scope.maxPages``), the window
(``politeness.maxConcurrency`` pages in flight), and completion, each rule kept without a transaction.

The SQL frontier holds the crawl's row lock around these steps; here every step is one conditional
single-document update, ordered so that the rules hold however workers interleave on MongoDB. Callers hold the
crawl's lease (``store/mongo/locking.py``) around them all the same, because FerretDB's updates are not atomic:
- Page ids are integers, as the contract's (``PageRef.page_id``, ``pages(after_id=…)``): a block is taken from a
  counter document with one ``$inc`` (under a lease of its own); ids grow in insertion order.
- ``scope.maxPages``: ``discovered`` is reserved with a compare-and-set on the crawl before the pages go in; a
  page a concurrent finisher inserted first (unique (crawl_id, url)) gives its reservation back.
- The window: a slot is taken by ``$inc in_flight`` conditional on ``in_flight < maxConcurrency``, then the
  shallowest PENDING page is claimed (PENDING → QUEUED, one ``find_one_and_update``); without one, the slot is
  given back. So ``in_flight`` never exceeds the limit.
- Completion: a page's new links go in BEFORE its slot is given back, and a released page is PENDING before its
  slot is, so when ``in_flight`` is 0 nobody can add a PENDING page any more; whoever then finds none completes
  the crawl with an update conditional on ``in_flight == 0`` and an active state: exactly one caller does.
What a transaction gave SQL and this does not: a worker killed between two steps of one page (its outcome
written, its slot not yet given back) leaves the crawl's ``in_flight`` one too high, until the next caller takes
its lapsed lease over and recounts (``CrawlLocks.repair``, store/mongo/crawl_locks.py; docs/store.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pymongo import ASCENDING, ReturnDocument
from pymongo.errors import BulkWriteError

from kubecrawl.core.clock import utcnow
from kubecrawl.core.models import CrawlPageState, CrawlState
from kubecrawl.store.contract import PageRef
from kubecrawl.store.mongo.database import Database, duplicates
from kubecrawl.store.mongo.locking import Leases
from kubecrawl.store.outcomes import pages_left, window_room

P = CrawlPageState
ACTIVE = [CrawlState.QUEUED.value, CrawlState.RUNNING.value]
_SHALLOWEST = [("depth", ASCENDING), ("_id", ASCENDING)]


class MongoFrontier:
    def __init__(self, db: Database, leases: Leases) -> None:
        self._db = db
        self._leases = leases
        self._crawls = db.crawls
        self._pages = db.crawl_pages

    async def page_ids(self, count: int) -> range:
        """``count`` new page ids, increasing (under a lease: FerretDB's ``$inc`` is not atomic)."""
        async with self._leases.hold("page_ids"):
            counter = await self._db.kubecrawl_counters.find_one_and_update(
                {"_id": "crawl_pages"}, {"$inc": {"next": count}}, upsert=True, return_document=ReturnDocument.AFTER
            )
        last = int(counter["next"]) if counter else count
        return range(last - count + 1, last + 1)

    async def insert_pages(self, crawl_id: str, pages: Sequence[tuple[str, int]]) -> list[str]:
        """Insert PENDING pages; → the URLs inserted (a URL the crawl already has is skipped)."""
        if not pages:
            return []
        now = utcnow()
        ids = await self.page_ids(len(pages))
        docs = [
            {
                "_id": page_id,
                "crawl_id": crawl_id,
                "url": url,
                "depth": depth,
                "state": P.PENDING.value,
                "attempts": 0,
                "created_at": now,
                "updated_at": now,
            }
            for page_id, (url, depth) in zip(ids, pages, strict=True)
        ]
        try:
            await self._pages.insert_many(docs, ordered=False)
        except BulkWriteError as exc:
            skipped = duplicates(exc)
            return [url for index, (url, _) in enumerate(pages) if index not in skipped]
        return [url for url, _ in pages]

    async def add_pages(
        self, crawl_id: str, config: dict[str, Any], candidates: Sequence[tuple[str, int]]
    ) -> list[str]:
        """New frontier pages (deduplicated), as many as ``scope.maxPages`` still admits; → the URLs added."""
        fresh: dict[str, int] = {}
        for url, depth in candidates:
            fresh.setdefault(url, depth)
        # No lookup of the known URLs first (a ``$in`` FerretDB answers by scanning the collection): the unique
        # (crawl_id, url) index refuses them, and their reservation goes back.
        pending = list(fresh.items())
        added: list[str] = []
        while pending:
            reserved = await self._reserve(crawl_id, config, len(pending))
            if reserved == 0:
                break
            batch, pending = pending[:reserved], pending[reserved:]
            inserted = await self.insert_pages(crawl_id, batch)
            if len(inserted) < reserved:
                await self._crawls.update_one({"_id": crawl_id}, {"$inc": {"discovered": len(inserted) - reserved}})
            added.extend(inserted)
        return added

    async def _reserve(self, crawl_id: str, config: dict[str, Any], wanted: int) -> int:
        """Reserve up to ``wanted`` of the crawl's ``scope.maxPages`` (compare-and-set on ``discovered``)."""
        while True:
            crawl = await self._crawls.find_one({"_id": crawl_id}, {"discovered": 1})
            if crawl is None:
                return 0
            discovered = int(crawl["discovered"])
            take = min(wanted, pages_left(config, discovered))
            if take <= 0:
                return 0
            moved = await self._crawls.update_one(
                {"_id": crawl_id, "discovered": discovered}, {"$inc": {"discovered": take}}
            )
            if moved.modified_count:
                return take

    async def refill(self, crawl_id: str, config: dict[str, Any]) -> list[PageRef]:
        """Move PENDING pages (shallowest first) into the window while it has room; count them in."""
        limit = window_room(config, 0)
        refs: list[PageRef] = []
        while True:
            slot = await self._crawls.find_one_and_update(
                {"_id": crawl_id, "state": {"$in": ACTIVE}, "in_flight": {"$lt": limit}},
                {"$inc": {"in_flight": 1}},
            )
            if slot is None:
                break
            page = await self._pages.find_one_and_update(
                {"crawl_id": crawl_id, "state": P.PENDING.value},
                {"$set": {"state": P.QUEUED.value, "updated_at": utcnow()}},
                sort=_SHALLOWEST,
                return_document=ReturnDocument.AFTER,
            )
            if page is None:
                await self._crawls.update_one({"_id": crawl_id}, {"$inc": {"in_flight": -1}})
                break
            refs.append(PageRef(int(page["_id"]), page["url"], int(page["depth"])))
        if refs:
            await self._crawls.update_one({"_id": crawl_id}, {"$inc": {"queued": len(refs)}})
        return refs

    async def complete_if_done(self, crawl_id: str) -> bool:
        """Complete the crawl if nothing is in flight and nothing PENDING; True for the one caller that did."""
        crawl = await self._crawls.find_one({"_id": crawl_id}, {"state": 1, "in_flight": 1})
        if crawl is None or crawl["state"] not in ACTIVE or crawl["in_flight"] != 0:
            return False
        if await self._pages.find_one({"crawl_id": crawl_id, "state": P.PENDING.value}, {"_id": 1}) is not None:
            return False
        done = await self._crawls.update_one(
            {"_id": crawl_id, "state": {"$in": ACTIVE}, "in_flight": 0},
            {"$set": {"state": CrawlState.COMPLETED.value, "finished_at": utcnow()}},
        )
        return bool(done.modified_count)

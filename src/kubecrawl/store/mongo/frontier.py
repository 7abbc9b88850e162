"""A crawl's frontier on MongoDB: page ids, new pages in (deduplicated, capped by ``scope.maxPages``), the window
(``politeness.maxConcurrency`` pages in flight), and completion, each rule kept without a transaction.

The SQL frontier holds the crawl's row lock around these steps; here every step is one conditional
single-document update, ordered so that the rules hold however workers interleave on MongoDB. Callers hold the
crawl's lease (``store/mongo/locking.py``) around them all the same, because FerretDB's updates are not atomic:
- Page ids are integers, as the contract's (``PageRef.page_id``, ``pages(after_id=…)``): a block is taken from a
  counter document with one ``$inc`` (under a lease of its own); ids grow in insertion order.
- ``scope.maxPages``: ``discovered`` is reserved with a compare-and-set on the crawl before the pages go in; a
  page a concurrent finisher inserted first (unique (crawl_id, url)) gives its reservation back.
- The window: under the crawl's lease, the caller knows ``in_flight``; the shallowest PENDING pages that fit
  (``maxConcurrency - in_flight``) move PENDING → QUEUED (one ``bulk_write`` of conditional updates by id) and
  are counted in with one ``$inc``. So ``in_flight`` never exceeds the limit.
- Which pages are the shallowest PENDING: FerretDB 1.24 pushes only equalities down to PostgreSQL and sorts in
  Go, so a sorted query reads every PENDING page of the crawl (on the bench's 1,000-page crawl a third of
  FerretDB's CPU, once per batch). So a process keeps its own copy of a crawl's PENDING pages, in refill order,
  read once and then kept up to date by its own inserts and claims; it is valid while the crawl's
  ``frontier_version`` is what it was after this process's last change. Everyone who changes a crawl's PENDING
  set, under the crawl's lease, moves ``frontier_version`` (the reservation before an insert, a refill, a
  release, a repair), so a copy is read again after any other process (or a dead holder) changed the set. A copy
  that still proves stale (a claim that matched fewer pages than asked, e.g. from a worker of an older version)
  is dropped: only the pages this refill moved are counted, and the rest of the window is filled from a fresh
  read. With several workers on one crawl, each refill after another worker's reads the PENDING pages again.
- Links this process has seen inserted into (or refused by) a crawl's frontier are remembered (``known``, for
  the most recent crawls, as the SQL frontier's ``CrawlMemo``): a page's 25 links, mostly known, cost a set
  lookup instead of an id block, a reservation and an insert FerretDB refuses one document at a time.
- Completion: a page's new links go in BEFORE its slot is given back, and a released page is PENDING before its
  slot is, so when ``in_flight`` is 0 nobody can add a PENDING page any more; whoever then finds none completes
  the crawl with an update conditional on ``in_flight == 0`` and an active state: exactly one caller does.
What a transaction gave SQL and this does not: a worker killed between two steps of one page (its outcome
written, its slot not yet given back) leaves the crawl's ``in_flight`` one too high, until the next caller takes
its lapsed lease over and recounts (``CrawlLocks.repair``, store/mongo/crawl_locks.py; docs/store.md).
"""

from __future__ import annotations

import heapq
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pymongo import ReturnDocument, UpdateOne
from pymongo.errors import BulkWriteError

from kubecrawl.core.clock import utcnow
from kubecrawl.core.models import CrawlPageState, CrawlState
from kubecrawl.store.contract import PageRef
from kubecrawl.store.mongo.database import Database, duplicates
from kubecrawl.store.mongo.locking import Leases
from kubecrawl.store.outcomes import pages_left, window_room

P = CrawlPageState
ACTIVE = [CrawlState.QUEUED.value, CrawlState.RUNNING.value]
# The known links of this many recent crawls, while they number at most _KNOWN_URLS (the SQL frontier's bounds).
_KNOWN_CRAWLS, _KNOWN_URLS = 8, 200_000


@dataclass(slots=True)
class _Pending:
    """This process's copy of a crawl's PENDING pages, valid while the crawl's ``frontier_version`` is
    ``version``: a heap of (depth, page id, URL), the refill's order."""

    version: int
    heap: list[tuple[int, int, str]]


def _to_ms(moment: datetime) -> datetime:
    """BSON keeps milliseconds: a time written and read back compares equal only at that precision."""
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)


class MongoFrontier:
    def __init__(self, db: Database, leases: Leases) -> None:
        self._db = db
        self._leases = leases
        self._crawls = db.crawls
        self._pages = db.crawl_pages
        self._known: OrderedDict[str, set[str]] = OrderedDict()
        self._pending: OrderedDict[str, _Pending] = OrderedDict()

    def known(self, crawl_id: str) -> set[str]:
        """URLs known to be in the crawl's frontier (pages are never deleted from it): safe to skip."""
        known = self._known.get(crawl_id)
        if known is None:
            known = self._known[crawl_id] = set()
            while len(self._known) > _KNOWN_CRAWLS and sum(map(len, self._known.values())) > _KNOWN_URLS:
                self._known.popitem(last=False)
        else:
            self._known.move_to_end(crawl_id)
        return known

    def forget(self, crawl_id: str) -> None:
        """The crawl has finished: nothing more to remember of it."""
        self._known.pop(crawl_id, None)
        self._pending.pop(crawl_id, None)

    def pending_changed(self, crawl_id: str) -> None:
        """This process changed the crawl's PENDING set without keeping its copy (a release): drop the copy."""
        self._pending.pop(crawl_id, None)

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
        return [url for _, url, _ in await self._insert(crawl_id, pages)]

    async def _insert(self, crawl_id: str, pages: Sequence[tuple[str, int]]) -> list[tuple[int, str, int]]:
        """Insert PENDING pages; → (page id, URL, depth) of those inserted."""
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
        skipped: set[int] = set()
        try:
            await self._pages.insert_many(docs, ordered=False)
        except BulkWriteError as exc:
            skipped = duplicates(exc)
        return [
            (page_id, url, depth)
            for index, (page_id, (url, depth)) in enumerate(zip(ids, pages, strict=True))
            if index not in skipped
        ]

    async def add_pages(
        self, crawl_id: str, config: dict[str, Any], candidates: Sequence[tuple[str, int]]
    ) -> list[str]:
        """New frontier pages (deduplicated), as many as ``scope.maxPages`` still admits; → the URLs added."""
        known = self.known(crawl_id)
        fresh: dict[str, int] = {}
        for url, depth in candidates:
            if url not in known:
                fresh.setdefault(url, depth)
        # No lookup of the known URLs first (a ``$in`` FerretDB answers by scanning the collection): the unique
        # (crawl_id, url) index refuses them, and their reservation goes back.
        pending = list(fresh.items())
        added: list[str] = []
        while pending:
            reserved, version = await self._reserve(crawl_id, config, len(pending))
            if reserved == 0:
                break
            batch, pending = pending[:reserved], pending[reserved:]
            inserted = await self._insert(crawl_id, batch)
            if len(inserted) < reserved:
                await self._crawls.update_one({"_id": crawl_id}, {"$inc": {"discovered": len(inserted) - reserved}})
            known.update(url for url, _ in batch)  # inserted now, or by someone before: in the frontier either way
            copy = self._pending.get(crawl_id)
            if copy is not None and copy.version == version:  # the reservation moved the version past our change
                for page_id, url, depth in inserted:
                    heapq.heappush(copy.heap, (depth, page_id, url))
                copy.version = version + 1
            else:
                self._pending.pop(crawl_id, None)
            added.extend(url for _, url, _ in inserted)
        return added

    async def _reserve(self, crawl_id: str, config: dict[str, Any], wanted: int) -> tuple[int, int]:
        """Reserve up to ``wanted`` of the crawl's ``scope.maxPages`` (compare-and-set on ``discovered``), moving
        ``frontier_version`` for the pages about to go in; → how many, and the version before."""
        while True:
            crawl = await self._crawls.find_one({"_id": crawl_id}, {"discovered": 1, "frontier_version": 1})
            if crawl is None:
                return 0, 0
            discovered = int(crawl["discovered"])
            take = min(wanted, pages_left(config, discovered))
            if take <= 0:
                return 0, 0
            moved = await self._crawls.update_one(
                {"_id": crawl_id, "discovered": discovered}, {"$inc": {"discovered": take, "frontier_version": 1}}
            )
            if moved.modified_count:
                return take, int(crawl.get("frontier_version", 0))

    async def refill(self, crawl_id: str, config: dict[str, Any], in_flight: int, version: int) -> list[PageRef]:
        """Move the shallowest PENDING pages into the window while it has room and count them in (the caller holds
        the crawl's lease and read ``in_flight`` and ``frontier_version`` under it, with the crawl active)."""
        room = window_room(config, in_flight)
        if room <= 0:
            return []
        copy = self._pending.get(crawl_id)
        if copy is None or copy.version != version or len(copy.heap) < room:
            copy = await self._read_pending(crawl_id, version)
        else:
            self._pending.move_to_end(crawl_id)
        picked = [heapq.heappop(copy.heap) for _ in range(min(room, len(copy.heap)))]
        if not picked:
            return []
        now = _to_ms(utcnow())
        moved = await self._pages.bulk_write(
            [
                UpdateOne(
                    {"_id": page_id, "state": P.PENDING.value}, {"$set": {"state": P.QUEUED.value, "updated_at": now}}
                )
                for _, page_id, _ in picked
            ],
            ordered=False,
        )
        stale = moved.modified_count != len(picked)
        if stale:  # count only the pages this refill moved, and read the PENDING pages again for the rest
            self._pending.pop(crawl_id, None)
            ours = await self._pages.find(
                {"crawl_id": crawl_id, "state": P.QUEUED.value, "_id": {"$in": [page_id for _, page_id, _ in picked]}},
                {"updated_at": 1},
            ).to_list(None)
            mine = {doc["_id"] for doc in ours if doc["updated_at"] == now}
            picked = [page for page in picked if page[1] in mine]
        copy.version = version + 1
        await self._crawls.update_one(
            {"_id": crawl_id}, {"$inc": {"in_flight": len(picked), "queued": len(picked), "frontier_version": 1}}
        )
        refs = [PageRef(page_id, url, depth) for depth, page_id, url in picked]
        if stale:
            refs += await self.refill(crawl_id, config, in_flight + len(refs), version + 1)
        return refs

    async def _read_pending(self, crawl_id: str, version: int) -> _Pending:
        """Read the crawl's PENDING pages into this process's copy (at most _KNOWN_CRAWLS copies are kept)."""
        docs = await self._pages.find({"crawl_id": crawl_id, "state": P.PENDING.value}, {"url": 1, "depth": 1}).to_list(
            None
        )
        heap = [(int(doc["depth"]), int(doc["_id"]), doc["url"]) for doc in docs]
        heapq.heapify(heap)
        copy = self._pending[crawl_id] = _Pending(version, heap)
        self._pending.move_to_end(crawl_id)
        while len(self._pending) > _KNOWN_CRAWLS:
            self._pending.popitem(last=False)
        return copy

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

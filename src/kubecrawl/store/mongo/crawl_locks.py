"""A crawl's lease on MongoDB (``store/mongo/locking.py``) held for a step of several documents, and the repair
of a crawl whose last holder died with it: what the SQL store's row lock and transaction give for free.

MongoDB has no multi-document transactions here (FerretDB), so a step that moves a page and its crawl runs under
the crawl's lease; a holder killed between two writes leaves counters, ``in_flight`` or ``version`` behind, and
the next holder finds the lease broken and recounts them from the pages before it goes on.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from pymongo import ASCENDING, DESCENDING

from kubecrawl.core.logging import get_logger
from kubecrawl.core.models import CrawlPageState
from kubecrawl.store.mongo.database import Database, Document, wrapped
from kubecrawl.store.mongo.locking import Leases

P = CrawlPageState
log = get_logger(__name__)


class CrawlLocks:
    """Each crawl's lease, repaired on the way in when its last holder died with it."""

    def __init__(self, db: Database, leases: Leases) -> None:
        self._crawls = db.crawls
        self._pages = db.crawl_pages
        self._leases = leases

    @asynccontextmanager
    async def held(self, crawl_id: str, doing: str) -> AsyncIterator[None]:
        """Hold the crawl's lease (``store/mongo/locking.py``) for a step of several documents; repair the crawl
        first if its last holder died with the lease."""
        async with wrapped(doing), self._leases.hold(f"crawl:{crawl_id}") as lease:
            if lease.broken:
                await self.repair(crawl_id)
            yield

    async def repair(self, crawl_id: str) -> None:
        """Recount what a holder killed between two steps may have left behind: ``in_flight``, the counters
        pages carry, ``version`` (up to the last page's event number; numbers for settled pages without one)."""
        pages = self._pages
        counts: dict[str, Document] = {
            "in_flight": {"state": {"$in": [P.QUEUED.value, P.FETCHING.value]}},
            "discovered": {},
            "fetched": {"state": P.DONE.value},
            "failed": {"state": P.FAILED.value},
            "changed": {"state": P.DONE.value, "changed": True},
            "unchanged": {"state": P.DONE.value, "changed": False},
        }
        values = {name: await pages.count_documents({"crawl_id": crawl_id, **where}) for name, where in counts.items()}
        crawl = await self._crawls.find_one({"_id": crawl_id}, {"version": 1})
        version = 0 if crawl is None else int(crawl["version"])
        settled = [P.DONE.value, P.FAILED.value, P.SKIPPED.value]
        # A page settled (numbered) by the dead holder before it moved ``version``: count it in.
        last = await pages.find_one({"crawl_id": crawl_id, "seq": {"$ne": None}}, sort=[("seq", DESCENDING)])
        if last is not None:
            version = max(version, int(last["seq"]))
        unnumbered = pages.find({"crawl_id": crawl_id, "state": {"$in": settled}, "seq": None}).sort("_id", ASCENDING)
        async for page in unnumbered:
            version += 1
            await pages.update_one({"_id": page["_id"]}, {"$set": {"seq": version}})
        values["version"] = version
        values["queued"] = values["in_flight"] + await pages.count_documents(
            {"crawl_id": crawl_id, "state": {"$in": settled}}
        )
        # The dead holder may have changed the PENDING set without moving frontier_version: every copy of it is
        # read again (store/mongo/frontier.py).
        await self._crawls.update_one({"_id": crawl_id}, {"$set": values, "$inc": {"frontier_version": 1}})
        log.warning("crawl_repaired", crawl_id=crawl_id, **values)

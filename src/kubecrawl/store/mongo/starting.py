"""Starting a batch of pages on MongoDB (``begin_page``, group-committed across crawls by ``store/batching.py``):
mark them FETCHING (one more attempt each) and read what fetching them needs.

Each crawl's part of a batch is one hold of the crawl's lease (``store/mongo/locking.py``) and four round trips
whatever its size: the crawl's state, two ``update_many`` (pages already FETCHING, a redelivery after a worker
died, then pages QUEUED: in that order, so no page moves twice) and one read of the pages started. Every query
names the crawl and the page state by equality, the only filters FerretDB 1.24 hands to PostgreSQL, so
PostgreSQL returns the crawl's window (at most ``maxConcurrency`` pages), never all its pages. What is read after
the lease (the previous crawl's validators, the hosts a ``Retry-After`` paused) may change at any moment anyway.

Crawls are started in crawl-id order, each on its own: an error in one crawl's part is handed to that crawl's
callers only (the result is the exception, raised by ``MongoCrawlStore.begin_page``), so a crawl whose database
step fails never fails another crawl's pages.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timedelta
from typing import Any

from kubecrawl.core.clock import utcnow
from kubecrawl.core.models import CrawlPageState, CrawlState
from kubecrawl.store.contract import PageStart
from kubecrawl.store.mongo.crawl_locks import CrawlLocks
from kubecrawl.store.mongo.database import Database, wrapped

P = CrawlPageState
_PREVIOUS_FIELDS = ("content_hash", "etag", "last_modified", "outlinks")
Started = PageStart | None | Exception


class MongoPageStarts:
    def __init__(
        self,
        db: Database,
        locks: CrawlLocks,
        config: Callable[[str], Awaitable[dict[str, Any] | None]],
        *,
        lease: timedelta,
    ) -> None:
        self._crawls = db.crawls
        self._pages = db.crawl_pages
        self._hosts = db.crawl_hosts
        self._locks = locks
        self._config = config
        self._lease = lease

    async def start(self, _group: object, pages: Sequence[tuple[str, int]]) -> list[Started]:
        """One result per (crawl id, page id), in order: what fetching it needs; None if it is settled, not of
        that crawl, or a second delivery of a page in the same batch (the first is fetching it); or the error
        that failed its crawl's part."""
        by_crawl: dict[str, list[int]] = {}
        for crawl_id, page_id in pages:
            by_crawl.setdefault(crawl_id, []).append(page_id)
        started: dict[tuple[str, int], PageStart | Exception] = {}
        for crawl_id in sorted(by_crawl):
            try:
                for page_id, start in (await self._start_crawl(crawl_id, by_crawl[crawl_id])).items():
                    started[crawl_id, page_id] = start
            except Exception as exc:  # handed to this crawl's callers, which re-raise it
                started.update(((crawl_id, page_id), exc) for page_id in by_crawl[crawl_id])
        return [started.pop(key, None) for key in pages]

    async def _start_crawl(self, crawl_id: str, page_ids: Sequence[int]) -> dict[int, PageStart]:
        now = utcnow()
        ids = sorted(set(page_ids))
        async with self._locks.held(crawl_id, "starting pages"):
            crawl = await self._crawls.find_one({"_id": crawl_id}, {"state": 1, "previous_crawl_id": 1})
            if crawl is None:
                return {}
            start = {
                "$set": {"state": P.FETCHING.value, "updated_at": now, "lease_until": now + self._lease},
                "$inc": {"attempts": 1},
            }
            for moving in (P.FETCHING, P.QUEUED):  # FETCHING first: a page the second moves is not moved again
                await self._pages.update_many({"crawl_id": crawl_id, "state": moving.value, "_id": {"$in": ids}}, start)
            docs = await self._pages.find(
                {"crawl_id": crawl_id, "state": P.FETCHING.value, "_id": {"$in": ids}},
                {"url": 1, "depth": 1, "attempts": 1},
            ).to_list(None)  # each of them was moved by one of the two updates (the lease keeps others out)
            if not docs:
                return {}
            state = CrawlState(crawl["state"])
            if state is CrawlState.QUEUED:  # its first pages: the crawl starts running
                await self._crawls.update_one(
                    {"_id": crawl_id, "state": CrawlState.QUEUED.value},
                    {"$set": {"state": CrawlState.RUNNING.value, "started_at": now}},
                )
                state = CrawlState.RUNNING
        async with wrapped("starting pages"):
            config = await self._config(crawl_id) or {}
            previous_id = crawl.get("previous_crawl_id")
            previous = {} if previous_id is None else await self._previous(previous_id, [doc["url"] for doc in docs])
            held = await self._hosts.find({"crawl_id": crawl_id, "next_fetch_at": {"$gt": now}}).to_list(None)
        held_until: dict[str, datetime] = {doc["host"]: doc["next_fetch_at"] for doc in held}
        return {
            int(doc["_id"]): PageStart(
                doc["url"],
                int(doc["depth"]),
                int(doc["attempts"]),
                state,
                config,
                previous_id is not None,
                previous.get(doc["url"]),
                held_until,
            )
            for doc in docs
        }

    async def _previous(self, previous_id: str, urls: Sequence[str]) -> dict[str, dict[str, Any]]:
        """The previous crawl's validators of these URLs: one query per URL, by equality (pushed down to
        PostgreSQL by FerretDB; a ``$in`` on URLs would make it read all of the previous crawl's pages)."""
        found: dict[str, dict[str, Any]] = {}
        for url in urls:
            doc = await self._pages.find_one({"crawl_id": previous_id, "url": url, "state": P.DONE.value})
            if doc is not None:
                values = {name: doc.get(name) for name in _PREVIOUS_FIELDS}
                values["outlinks"] = values["outlinks"] or []
                found[url] = values
        return found

"""Crawls on MongoDB: the lifecycle (create once per idempotency key, cancel, release and reopen a window, find
lost and stalled work) and the worker's two per-page steps, ``begin_page`` and ``finish_page``.

A crawl is one document (``_id`` its UUID; counters, ``in_flight``, ``version``), a page one document of
``crawl_pages`` (an integer ``_id``). The rules the SQL store keeps under the crawl's row lock hold here through
the order of single-document conditional updates (``store/mongo/frontier.py`` explains the window and
completion):
- Idempotent triggers: the crawl's pages go in first, under a fresh crawl id, then the crawl with the key
  (unique, sparse); the triggers that lose on the key remove their pages and return the winner's crawl.
- A page's outcome is written once: PENDING/QUEUED/FETCHING moves are updates conditional on the page's state,
  so a redelivered or late message finds it settled and changes nothing (``None``).
- The SSE sequence: a settling page takes ``version + 1`` as its ``seq`` (the crawl's lease keeps ``version``
  still meanwhile), then ``version`` moves to it with ``$inc``: a reader that sees ``version`` finds every page
  up to it, as SSE's resume needs.
The two per-page steps are group-committed across crawls as in the SQL store (``store/batching.py``): the page
starts (``store/mongo/starting.py``) and the outcomes (``store/mongo/finishing.py``) that arrive while the
previous batch is written go together into the next, each crawl's part under one hold of its lease, a few round
trips whatever the part's size. Until 2026-12-06 each page was its own dozen round trips under its own hold of
the lease, and a worker's 16 pages in flight polled the lease document for their turns: 14 pages/s on the
bench's 1,000-page crawl on FerretDB (docs/crawls.md, "On MongoDB"). A batch item's result is either its
result or the error that failed its crawl's part (or its own outcome): ``begin_page`` and ``finish_page`` raise
it, so a failure stays with its crawl. ``find_one_and_update`` never takes a projection here: FerretDB has none
for findAndModify.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from pymongo import ASCENDING, DESCENDING, ReturnDocument
from pymongo.errors import DuplicateKeyError

from kubecrawl.core.clock import utcnow
from kubecrawl.core.logging import get_logger
from kubecrawl.core.models import Crawl, CrawlCounters, CrawlPage, CrawlPageState, CrawlState
from kubecrawl.core.settings import DEFAULT_LEASE
from kubecrawl.store.batching import GroupCommit
from kubecrawl.store.contract import LEASE_EXPIRED, LEASE_EXPIRED_PAGE, FinishResult, PageOutcome, PageRef, PageStart
from kubecrawl.store.mongo.crawl_locks import CrawlLocks
from kubecrawl.store.mongo.database import Database, Document, wrapped
from kubecrawl.store.mongo.finishing import Finished, MongoPageFinishes
from kubecrawl.store.mongo.frontier import ACTIVE, MongoFrontier
from kubecrawl.store.mongo.hosts import MongoHostStore
from kubecrawl.store.mongo.locking import Leases
from kubecrawl.store.mongo.starting import MongoPageStarts, Started
from kubecrawl.store.outcomes import COUNTERS, ERROR_CHARS, max_pages_of

P = CrawlPageState
log = get_logger(__name__)
_ALL_CRAWLS = ""  # the one group of the per-page batches: every crawl


def _all_crawls(_crawl_id: str) -> str:
    return _ALL_CRAWLS


def _crawl(doc: Document) -> Crawl:
    return Crawl(
        id=doc["_id"],
        site=f"{doc['site_namespace']}/{doc['site_name']}",
        state=CrawlState(doc["state"]),
        trigger=doc["trigger"],
        idempotency_key=doc.get("idempotency_key"),
        counters=CrawlCounters(**{name: doc.get(name, 0) for name in COUNTERS}),
        in_flight=doc["in_flight"],
        version=doc["version"],
        error=doc.get("error"),
        created_at=doc["created_at"],
        started_at=doc.get("started_at"),
        finished_at=doc.get("finished_at"),
        max_pages=max_pages_of(doc.get("config")),
    )


def _page(doc: Document) -> CrawlPage:
    data = {name: doc.get(name) for name in CrawlPage.model_fields}
    data["id"] = doc["_id"]
    return CrawlPage.model_validate(data)


class MongoCrawlStore:
    """``CrawlStore`` (store/contract.py) on MongoDB."""

    def __init__(self, db: Database, *, lease: timedelta = DEFAULT_LEASE) -> None:
        self._claim = lease  # how long a worker's ``begin_page`` holds the page (``lease_until``)
        self._crawls = db.crawls
        self._pages = db.crawl_pages
        self._hosts_coll = db.crawl_hosts
        leases = Leases(db)
        self._locks = CrawlLocks(db, leases)
        self._frontier = MongoFrontier(db, leases)
        self._hosts = MongoHostStore(db, leases)
        # The crawl's spec, frozen at its start: read once per process (the SQL frontier's memo does the same).
        self._configs: dict[str, dict[str, Any]] = {}
        starts = MongoPageStarts(db, self._locks, self._config, lease=lease)
        finishes = MongoPageFinishes(db, self._locks, self._frontier, self._config, on_completed=self._forget)
        # Group commit across crawls (store/batching.py). No ``split_on``: each crawl's part is written on its own
        # already (there is no transaction to roll back), and its errors come back as its items' results.
        self._beginning = GroupCommit[str, tuple[str, int], Started](starts.start, part_of=_all_crawls)
        self._finishing = GroupCommit[str, tuple[str, int, PageOutcome], Finished](finishes.finish, part_of=_all_crawls)

    def _forget(self, crawl_id: str) -> None:
        """The crawl has completed: nothing more to remember of it."""
        self._configs.pop(crawl_id, None)
        self._frontier.forget(crawl_id)

    @property
    def hosts(self) -> MongoHostStore:
        return self._hosts

    async def _config(self, crawl_id: str) -> dict[str, Any] | None:
        config = self._configs.get(crawl_id)
        if config is None:
            doc = await self._crawls.find_one({"_id": crawl_id}, {"config": 1})
            if doc is None:
                return None
            if len(self._configs) >= 64:
                self._configs.pop(next(iter(self._configs)))
            config = self._configs[crawl_id] = doc["config"]
        return config

    # -- crawls -------------------------------------------------------------------------------------------

    async def create(
        self,
        namespace: str,
        name: str,
        *,
        trigger: str,
        idempotency_key: str | None,
        config: dict[str, Any],
        seeds: Sequence[str],
        started_by: str | None = None,
    ) -> tuple[Crawl, bool, list[PageRef]]:
        now = utcnow()
        crawl_id = str(uuid.uuid4())
        async with wrapped("creating a crawl"):
            if idempotency_key is not None:
                existing = await self._crawls.find_one({"idempotency_key": idempotency_key})
                if existing is not None:
                    return _crawl(existing), False, []
            previous = await self._crawls.find_one(
                {"site_namespace": namespace, "site_name": name, "state": CrawlState.COMPLETED.value},
                {"_id": 1},
                sort=[("created_at", DESCENDING)],
            )
        # Held from before the crawl exists until its window is open: a sweeper that finds it meanwhile waits.
        async with self._locks.held(crawl_id, "creating a crawl"):
            unique = list(dict.fromkeys(seeds))[: int(config["scope"]["maxPages"])]
            added = await self._frontier.insert_pages(crawl_id, [(url, 0) for url in unique])
            doc: Document = {
                "_id": crawl_id,
                "site_namespace": namespace,
                "site_name": name,
                "trigger": trigger,
                "state": CrawlState.QUEUED.value,
                "config": config,
                "previous_crawl_id": None if previous is None else previous["_id"],
                **dict.fromkeys(COUNTERS, 0),
                "discovered": len(added),
                "in_flight": 0,
                "version": 0,
                "frontier_version": 0,
                "error": None,
                "created_at": now,
                "started_at": None,
                "finished_at": None,
                "started_by": started_by,
            }
            if idempotency_key is not None:  # absent, not null: the sparse unique index skips it
                doc["idempotency_key"] = idempotency_key
            try:
                await self._crawls.insert_one(doc)
            except DuplicateKeyError:
                await self._pages.delete_many({"crawl_id": crawl_id})
                existing = await self._crawls.find_one({"idempotency_key": idempotency_key})
                if existing is None:
                    raise
                return _crawl(existing), False, []
            to_publish = await self._frontier.refill(crawl_id, config, 0, 0)
            created = await self._crawls.find_one({"_id": crawl_id})
        assert created is not None
        return _crawl(created), True, to_publish

    async def get(self, crawl_id: str) -> Crawl | None:
        async with wrapped("reading a crawl"):
            doc = await self._crawls.find_one({"_id": crawl_id})
        return None if doc is None else _crawl(doc)

    async def list_for_site(self, namespace: str, name: str, *, limit: int) -> list[Crawl]:
        async with wrapped("listing crawls"):
            docs = (
                await self._crawls.find({"site_namespace": namespace, "site_name": name})
                .sort([("created_at", DESCENDING), ("_id", DESCENDING)])
                .limit(limit)
                .to_list(None)
            )
        return [_crawl(doc) for doc in docs]

    async def active_started_by(self, started_by: str, *, limit: int) -> list[Crawl]:
        async with wrapped("counting active crawls"):
            active = {"started_by": started_by, "state": {"$in": ACTIVE}}
            docs = await self._crawls.find(active).limit(limit).to_list(None)
        return [_crawl(doc) for doc in docs]

    async def pages(
        self,
        crawl_id: str,
        *,
        limit: int,
        after_id: int = 0,
        state: CrawlPageState | None = None,
        changed: bool | None = None,
    ) -> list[CrawlPage]:
        where: Document = {"crawl_id": crawl_id, "_id": {"$gt": after_id}}
        if state is not None:
            where["state"] = state.value
        if changed is not None:
            where["changed"] = changed
        async with wrapped("listing pages"):
            docs = await self._pages.find(where).sort("_id", ASCENDING).limit(limit).to_list(None)
        return [_page(doc) for doc in docs]

    async def outcomes_since(self, crawl_id: str, seq: int, *, limit: int = 500) -> list[CrawlPage]:
        async with wrapped("reading outcomes"):
            docs = (
                await self._pages.find({"crawl_id": crawl_id, "seq": {"$gt": seq}})
                .sort("seq", ASCENDING)
                .limit(limit)
                .to_list(None)
            )
        return [_page(doc) for doc in docs]

    async def count_pages(self, crawl_id: str) -> int:
        async with wrapped("counting pages"):
            return await self._pages.count_documents({"crawl_id": crawl_id})

    async def cancel(self, crawl_id: str) -> Crawl | None:
        async with self._locks.held(crawl_id, "cancelling a crawl"):
            doc = await self._crawls.find_one_and_update(
                {"_id": crawl_id, "state": {"$in": ACTIVE}},
                {"$set": {"state": CrawlState.CANCELLED.value, "finished_at": utcnow()}, "$inc": {"version": 1}},
                return_document=ReturnDocument.AFTER,
            )
            if doc is None:
                doc = await self._crawls.find_one({"_id": crawl_id})
        return None if doc is None else _crawl(doc)

    async def release(self, crawl_id: str, refs: Sequence[PageRef]) -> None:
        """Undo a refill whose publish failed: each page back to PENDING, then its slot out of the window."""
        if not refs:
            return
        async with self._locks.held(crawl_id, "releasing pages"):
            released = 0
            for ref in refs:
                moved = await self._pages.update_one(
                    {"_id": ref.page_id, "state": P.QUEUED.value},
                    {"$set": {"state": P.PENDING.value, "updated_at": utcnow()}},
                )
                released += moved.modified_count
            if released:  # the PENDING set changed: frontier_version moves (store/mongo/frontier.py)
                self._frontier.pending_changed(crawl_id)
                await self._crawls.update_one(
                    {"_id": crawl_id}, {"$inc": {"in_flight": -released, "queued": -released, "frontier_version": 1}}
                )

    async def reopen_window(self, crawl_id: str) -> list[PageRef]:
        async with self._locks.held(crawl_id, "reopening a window"):
            crawl = await self._crawls.find_one(
                {"_id": crawl_id}, {"state": 1, "in_flight": 1, "config": 1, "frontier_version": 1}
            )
            if crawl is None or crawl["state"] not in ACTIVE or crawl["in_flight"] > 0:
                return []
            version = int(crawl.get("frontier_version", 0))
            refs = await self._frontier.refill(crawl_id, crawl["config"], int(crawl["in_flight"]), version)
            if not refs:  # nothing was PENDING either: the crawl is done
                await self._frontier.complete_if_done(crawl_id)
            return refs

    async def stalled(self) -> list[str]:
        async with wrapped("finding stalled crawls"):
            docs = await self._crawls.find({"state": {"$in": ACTIVE}, "in_flight": 0}, {"_id": 1}).to_list(None)
        return [doc["_id"] for doc in docs]

    async def queued_pages(self, crawl_id: str) -> list[PageRef]:
        async with wrapped("listing queued pages"):
            crawl = await self._crawls.find_one({"_id": crawl_id, "state": {"$in": ACTIVE}}, {"_id": 1})
            if crawl is None:
                return []
            docs = (
                await self._pages.find({"crawl_id": crawl_id, "state": P.QUEUED.value})
                .sort([("depth", ASCENDING), ("_id", ASCENDING)])
                .to_list(None)
            )
        return [PageRef(int(doc["_id"]), doc["url"], int(doc["depth"])) for doc in docs]

    async def requeue_lost(self, older_than: timedelta) -> list[tuple[str, PageRef]]:
        """QUEUED pages untouched for ``older_than``, each handed to one caller: under the crawl's lease, the
        hand-out touches them (``updated_at``)."""
        cutoff = utcnow() - older_than
        found: list[tuple[str, PageRef]] = []
        async with wrapped("finding lost pages"):
            active = await self._crawls.distinct("_id", {"state": {"$in": ACTIVE}})
            if not active:
                return []
            crawl_ids = await self._pages.distinct(
                "crawl_id", {"crawl_id": {"$in": active}, "state": P.QUEUED.value, "updated_at": {"$lt": cutoff}}
            )
        for crawl_id in crawl_ids:
            async with self._locks.held(crawl_id, "handing out lost pages"):
                lost = {"crawl_id": crawl_id, "state": P.QUEUED.value, "updated_at": {"$lt": cutoff}}
                docs = await self._pages.find(lost).to_list(None)
                await self._pages.update_many(
                    {"_id": {"$in": [doc["_id"] for doc in docs]}}, {"$set": {"updated_at": utcnow()}}
                )
            found.extend((crawl_id, PageRef(int(doc["_id"]), doc["url"], int(doc["depth"]))) for doc in docs)
        return found

    async def expire_leases(self, now: datetime) -> list[tuple[str, PageRef]]:
        """FETCHING pages whose lease ended before ``now``: QUEUED again (still in the window, the attempt counted)
        with ``lease_expired`` recorded. Under the crawl's lease, as ``finish_page``: whichever comes second finds
        the page no longer FETCHING (or its lease renewed), so each page goes to exactly one caller."""
        detail = LEASE_EXPIRED_PAGE
        expired = {"state": P.FETCHING.value, "lease_until": {"$lt": now}}
        found: list[tuple[str, PageRef]] = []
        async with wrapped("finding expired leases"):
            crawl_ids = await self._pages.distinct("crawl_id", expired)
        for crawl_id in crawl_ids:
            async with self._locks.held(crawl_id, "expiring leases"):
                docs = await self._pages.find({**expired, "crawl_id": crawl_id}).to_list(None)
                await self._pages.update_many(
                    {**expired, "_id": {"$in": [doc["_id"] for doc in docs]}},
                    {
                        "$set": {
                            "state": P.QUEUED.value,
                            "lease_until": None,
                            "error_code": LEASE_EXPIRED,
                            "error": detail,
                            "last_failure_code": LEASE_EXPIRED,
                            "last_failure": detail,
                            "updated_at": now,
                        }
                    },
                )
            found.extend((crawl_id, PageRef(int(doc["_id"]), doc["url"], int(doc["depth"]))) for doc in docs)
        return found

    # -- pages (worker side) ------------------------------------------------------------------------------

    async def begin_page(self, crawl_id: str, page_id: int) -> PageStart | None:
        """Mark the page FETCHING (one more attempt) and return what fetching it needs; ``None`` if settled.
        Group-committed across crawls (``store/mongo/starting.py``)."""
        started = await self._beginning.submit(crawl_id, (crawl_id, page_id))
        if isinstance(started, Exception):
            raise started
        return started

    async def retry_page(self, page_id: int, *, code: str, error: str) -> None:
        async with wrapped("retrying a page"):
            page = await self._pages.find_one({"_id": page_id}, {"crawl_id": 1})
        if page is None:
            return
        async with self._locks.held(page["crawl_id"], "retrying a page"):
            await self._pages.update_one(
                {"_id": page_id, "state": P.FETCHING.value},
                {
                    "$set": {
                        "state": P.QUEUED.value,
                        "error_code": code,
                        "error": error[:ERROR_CHARS],
                        "last_failure_code": code,
                        "last_failure": error[:ERROR_CHARS],
                        "lease_until": None,
                        "updated_at": utcnow(),
                    }
                },
            )

    async def finish_page(self, crawl_id: str, page_id: int, outcome: PageOutcome) -> FinishResult | None:
        """Settle the FETCHING page with the next event number, add its links, give its slot back (counting the
        outcome and moving ``version`` to that number), refill the window, and complete the crawl when that was the
        last page: in that order, for the whole batch of the crawl's outcomes at once (``store/mongo/finishing.py``).
        ``None`` means the page was already settled (a duplicate delivery)."""
        finished = await self._finishing.submit(crawl_id, (crawl_id, page_id, outcome))
        if isinstance(finished, Exception):
            raise finished
        return finished

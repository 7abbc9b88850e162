"""Settling a batch of page outcomes on MongoDB (``finish_page``, group-committed across crawls by
``store/batching.py``): the steps of the SQL store's ``kubecrawl_finish_pages``, per crawl under one hold of the
crawl's lease (``store/mongo/locking.py``) instead of a row lock and a transaction.

For each crawl of a batch, in crawl-id order: read its state and ``version``; read which of the batch's pages
are still FETCHING (one query naming the crawl and the state by equality, the filters FerretDB 1.24 pushes down
to PostgreSQL); write their outcomes (the first per page, numbered ``version + 1 …`` in arrival order for the SSE
sequence) in one ``bulk_write``; add the new links to the frontier (``store/mongo/frontier.py``); give the
slots back and count the outcomes with one ``$inc`` that also moves ``version``; refill the window; complete
the crawl when nothing is in flight and nothing PENDING. The order is the one ``store/mongo/crawls.py`` states:
pages carry their numbers before ``version`` shows them, and links go in before the slots are given back.

Failures stay with their pages: a crawl whose part fails hands the error to its own callers only (others settle);
and an outcome the database refuses (a value it cannot store) fails only its page: the batch's outcomes are then
written one at a time, numbered without gaps, and the refused page stays FETCHING for its message's retry.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import Any

from bson.errors import InvalidDocument
from pymongo import ReturnDocument, UpdateOne
from pymongo.errors import OperationFailure, WriteError

from kubecrawl.core.clock import utcnow
from kubecrawl.core.models import CrawlPageState, CrawlState
from kubecrawl.store.contract import FinishResult, PageOutcome, PageRef
from kubecrawl.store.mongo.crawl_locks import CrawlLocks
from kubecrawl.store.mongo.database import Database, store_error
from kubecrawl.store.mongo.frontier import ACTIVE, MongoFrontier
from kubecrawl.store.outcomes import SettledBatch, outcome_values, shared_out, tally

P = CrawlPageState
Items = Sequence[tuple[int, PageOutcome]]
Finished = FinishResult | None | Exception
# What the server (or bson, encoding it) says of one document (BulkWriteError is an OperationFailure): refused, not
# unreachable. A connection error is none of these and fails the crawl's part (every page of it is retried).
_ONE_DOCUMENT = (WriteError, OperationFailure, InvalidDocument, ValueError, TypeError)


class MongoPageFinishes:
    def __init__(
        self,
        db: Database,
        locks: CrawlLocks,
        frontier: MongoFrontier,
        config: Callable[[str], Awaitable[dict[str, Any] | None]],
        *,
        on_completed: Callable[[str], None],
    ) -> None:
        self._crawls = db.crawls
        self._pages = db.crawl_pages
        self._locks = locks
        self._frontier = frontier
        self._config = config
        self._on_completed = on_completed

    async def finish(self, _group: object, items: Sequence[tuple[str, int, PageOutcome]]) -> list[Finished]:
        """One result per submitted outcome, in order: None for a page not FETCHING (a duplicate), the error for
        a page whose outcome or crawl failed, else its share of the crawl's refill and completion."""
        by_crawl: dict[str, list[tuple[int, PageOutcome]]] = {}
        for crawl_id, page_id, outcome in items:
            by_crawl.setdefault(crawl_id, []).append((page_id, outcome))
        shares: dict[str, list[Finished]] = {}
        for crawl_id in sorted(by_crawl):
            crawl_items = by_crawl[crawl_id]
            try:
                batch, refused = await self._settle_crawl(crawl_id, crawl_items, utcnow())
            except Exception as exc:  # handed to this crawl's callers, which re-raise it
                shares[crawl_id] = [exc] * len(crawl_items)
                continue
            if batch is not None and batch.state is CrawlState.COMPLETED:
                self._on_completed(crawl_id)
            results: list[Finished] = list(shared_out(batch, crawl_items))
            for index, (page_id, _) in enumerate(crawl_items):
                if page_id in refused and results[index] is None:
                    results[index] = refused.pop(page_id)
            shares[crawl_id] = results
        # Back in submission order: each crawl's results are in the order of its items.
        iterators = {crawl_id: iter(results) for crawl_id, results in shares.items()}
        return [next(iterators[crawl_id]) for crawl_id, _, _ in items]

    async def _settle_crawl(
        self, crawl_id: str, items: Items, now: datetime
    ) -> tuple[SettledBatch | None, dict[int, Exception]]:
        async with self._locks.held(crawl_id, "finishing pages"):
            crawl = await self._crawls.find_one({"_id": crawl_id}, {"state": 1, "version": 1})
            if crawl is None:
                return None, {}
            ids = sorted({page_id for page_id, _ in items})
            fetching = {
                int(doc["_id"]): int(doc["depth"])
                for doc in await self._pages.find(
                    {"crawl_id": crawl_id, "state": P.FETCHING.value, "_id": {"$in": ids}}, {"depth": 1}
                ).to_list(None)
            }
            chosen: dict[int, PageOutcome] = {}
            for page_id, outcome in items:
                if page_id in fetching and page_id not in chosen:
                    chosen[page_id] = outcome
            if not chosen:
                return None, {}
            settled, refused = await self._write_outcomes(list(chosen.items()), int(crawl["version"]), now)
            if not settled:
                return None, refused
            batch = await self._advance(
                crawl_id, crawl["state"], [(chosen[page_id], fetching[page_id]) for page_id in settled]
            )
        return None if batch is None else SettledBatch(settled, *batch), refused

    async def _advance(
        self, crawl_id: str, state_read: str, settled: Sequence[tuple[PageOutcome, int]]
    ) -> tuple[CrawlState, CrawlState, list[PageRef]] | None:
        """Add the settled pages' links, count them and give their slots back, refill the window, detect completion
        (under the crawl's lease); → the crawl's state after and before, and the pages to publish."""
        counters, links = tally(settled)
        config = await self._config(crawl_id)
        if state_read in ACTIVE and config is not None and links:
            await self._frontier.add_pages(crawl_id, config, list(links.items()))
        moved = await self._crawls.find_one_and_update(
            {"_id": crawl_id},
            {"$inc": {"version": len(settled), "in_flight": -len(settled), **counters}},
            return_document=ReturnDocument.AFTER,
        )
        if moved is None:
            return None
        state = previous_state = CrawlState(moved["state"])
        to_publish: list[PageRef] = []
        if moved["state"] in ACTIVE and config is not None:
            in_flight = int(moved["in_flight"])
            version = int(moved.get("frontier_version", 0))
            to_publish = await self._frontier.refill(crawl_id, config, in_flight, version)
            if not to_publish and in_flight == 0 and await self._frontier.complete_if_done(crawl_id):
                state = CrawlState.COMPLETED
        return state, previous_state, to_publish

    async def _write_outcomes(
        self, chosen: Sequence[tuple[int, PageOutcome]], version: int, now: datetime
    ) -> tuple[list[int], dict[int, Exception]]:
        """Write the outcomes numbered ``version + 1 …``; → the pages written, in order, and the refused ones with
        their errors (the lease keeps the pages FETCHING meanwhile)."""

        def values(outcome: PageOutcome, seq: int) -> dict[str, Any]:
            return {**outcome_values(outcome), "seq": seq, "fetched_at": now, "updated_at": now, "lease_until": None}

        writes = [
            UpdateOne({"_id": page_id, "state": P.FETCHING.value}, {"$set": values(outcome, version + index)})
            for index, (page_id, outcome) in enumerate(chosen, start=1)
        ]
        try:
            await self._pages.bulk_write(writes, ordered=True)
        except _ONE_DOCUMENT:  # one of them refused (BulkWriteError), or not encoded (InvalidDocument): see which
            pass
        else:
            return [page_id for page_id, _ in chosen], {}
        # One at a time: the pages the ordered bulk wrote before the refused one are written again with the same
        # numbers; those after it are numbered on from the last page written.
        settled: list[int] = []
        refused: dict[int, Exception] = {}
        for page_id, outcome in chosen:
            try:
                await self._pages.update_one({"_id": page_id}, {"$set": values(outcome, version + len(settled) + 1)})
            except _ONE_DOCUMENT as exc:
                refused[page_id] = store_error(exc, "finishing a page")
            else:
                settled.append(page_id)
        return settled, refused

"""Settling a batch of page outcomes in SQL: two strategies behind one interface, picked per engine.

A batch holds the outcomes of one or more crawls (group-committed across crawls, ``store/crawls.py``), settled in
one transaction, crawl after crawl in crawl-id order: a fixed order of the crawl row locks, so two workers'
batches (and the lease sweeper, ``SqlCrawlStore.expire_leases``) never wait for each other in a circle. For each
crawl both strategies do the same steps under the crawl's lock: write the outcome of each page still FETCHING (the
first outcome per page, numbered in arrival order for the SSE sequence), move the counters, add the new links to
the frontier (up to ``scope.maxPages``), refill the window, and mark the crawl COMPLETED when nothing is in flight
and nothing is PENDING. tests/integration/test_crawl_store.py runs the same cases through both.

- ``FinishInDatabase`` (PostgreSQL): the whole batch is one call of ``kubecrawl_finish_crawls`` (migration 0009),
  which calls ``kubecrawl_finish_pages`` (migration 0003) per crawl, in a transaction of its own, so the crawl
  rows stay locked for the server's work only, not for the worker's round trips (run as eight statements per
  crawl the lock was held for eight round trips: about 8 ms per batch).
- ``FinishInProcess`` (SQLite, in process, no round trips to save): the same steps statement by statement in one
  serialised transaction.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import bindparam, func, select, update

from kubecrawl.core.models import CrawlPageState, CrawlState
from kubecrawl.store.contract import PageOutcome, PageRef
from kubecrawl.store.dialects import Transactions, is_sqlite
from kubecrawl.store.engines import SqlConnection, SqlEngine
from kubecrawl.store.frontier import Frontier
from kubecrawl.store.outcomes import COUNTERS, OUTCOME_COLUMNS, SettledBatch, counted, outcome_values, pages_left, tally
from kubecrawl.store.prebuilt import Prebuilt
from kubecrawl.store.schema import Json, crawl_pages, crawls

P = CrawlPageState
Items = Sequence[tuple[int, PageOutcome]]

_FINISH_CRAWLS = select(
    func.kubecrawl_finish_crawls(
        bindparam("p_batches", type_=Json),
        bindparam("p_now", type_=crawl_pages.c.updated_at.type),
        type_=Json,
    )
)
# The columns a page outcome moves (the spec comes from the frontier's memo: not its JSON decoded per batch).
_LOCK_CRAWL_COUNTERS = Prebuilt(
    select(crawls.c.id, crawls.c.state, crawls.c.version, crawls.c.discovered, crawls.c.in_flight)
    .where(crawls.c.id == bindparam("p_crawl_id"))
    .with_for_update()
)
_FETCHING_PAGES = Prebuilt(
    select(crawl_pages.c.id, crawl_pages.c.depth).where(
        crawl_pages.c.id.in_(bindparam("p_ids", expanding=True)), crawl_pages.c.state == P.FETCHING.value
    )
)
_SETTLE_PAGE = Prebuilt(
    update(crawl_pages)
    .where(crawl_pages.c.id == bindparam("b_id"), crawl_pages.c.state == P.FETCHING.value)
    .values({name: bindparam(f"b_{name}") for name in OUTCOME_COLUMNS})
)
# A batch's outcomes moved into the crawl row (locked by the caller): counter increments, the window, the state.
_ADVANCE_CRAWL = Prebuilt(
    update(crawls)
    .where(crawls.c.id == bindparam("p_crawl_id"))
    .values(
        {name: crawls.c[name] + bindparam(f"p_{name}") for name in (*COUNTERS, "version")}
        | {
            "in_flight": bindparam("p_in_flight"),
            "state": bindparam("p_state", type_=crawls.c.state.type),
            "finished_at": func.coalesce(
                bindparam("p_finished_at", type_=crawls.c.finished_at.type), crawls.c.finished_at
            ),
        }
    )
)


class BatchFinisher(Protocol):
    async def settle(self, batches: Mapping[str, Items], now: datetime) -> dict[str, SettledBatch | None]:
        """Settle each crawl's batch (one transaction, each crawl under its lock, in crawl-id order); per crawl
        None if the crawl is gone or nothing settled."""
        ...


def batch_finisher(engine: SqlEngine, transactions: Transactions, frontier: Frontier) -> BatchFinisher:
    """The engine's strategy: PostgreSQL settles a batch in its own function, SQLite in this process."""
    if is_sqlite(engine):
        return FinishInProcess(transactions, frontier)
    return FinishInDatabase(transactions, frontier)


class FinishInDatabase:
    """PostgreSQL: one call of ``kubecrawl_finish_crawls`` per batch, in autocommit (its own transaction)."""

    def __init__(self, transactions: Transactions, frontier: Frontier) -> None:
        self._transactions = transactions
        self._frontier = frontier

    async def settle(self, batches: Mapping[str, Items], now: datetime) -> dict[str, SettledBatch | None]:
        # The function's input: per crawl, one object per outcome (see the comment on FINISH_PAGES in migration
        # 0003), less the links the worker already knows to be in the crawl's frontier.
        outcomes = {crawl_id: self._outcomes(crawl_id, items) for crawl_id, items in batches.items()}
        async with self._transactions.single() as conn:
            results = (
                await conn.execute(
                    _FINISH_CRAWLS,
                    {
                        "p_batches": [
                            {"crawl_id": crawl_id, "outcomes": crawl_outcomes}
                            for crawl_id, crawl_outcomes in sorted(outcomes.items())
                        ],
                        "p_now": now,
                    },
                )
            ).scalar_one()
        return {crawl_id: self._settled(crawl_id, outcomes[crawl_id], results.get(crawl_id)) for crawl_id in batches}

    def _outcomes(self, crawl_id: str, items: Items) -> list[dict[str, Any]]:
        known = self._frontier.memo(crawl_id).known
        return [
            {
                "id": page_id,
                **outcome_values(outcome),
                "counted": counted(outcome),
                "new_links": [url for url in outcome.new_links if url not in known],
            }
            for page_id, outcome in items
        ]

    def _settled(self, crawl_id: str, outcomes: list[dict[str, Any]], result: Any) -> SettledBatch | None:
        if result is None or not result["settled"]:
            return None
        # The links of the settled outcomes (the first one per page) are now in the frontier, or were cut by
        # maxPages, which then admits no page ever again: either way they need no probe in a later batch.
        known = self._frontier.memo(crawl_id).known
        settled = set(result["settled"])
        for outcome in outcomes:
            if outcome["id"] in settled:
                settled.discard(outcome["id"])
                known.update(outcome["new_links"])
        return SettledBatch(
            settled=result["settled"],
            state=CrawlState(result["state"]),
            previous_state=CrawlState(result["previous_state"]),
            to_publish=[PageRef(page_id, url, depth) for page_id, url, depth in result["publish"]],
        )


class FinishInProcess:
    """SQLite: the same steps as ``kubecrawl_finish_pages``, statement by statement, every crawl of the batch in
    one serialised transaction."""

    def __init__(self, transactions: Transactions, frontier: Frontier) -> None:
        self._transactions = transactions
        self._frontier = frontier

    async def settle(self, batches: Mapping[str, Items], now: datetime) -> dict[str, SettledBatch | None]:
        results: dict[str, SettledBatch | None] = {}
        added: dict[str, list[str]] = {}
        async with self._transactions.begin() as conn:
            for crawl_id in sorted(batches):
                results[crawl_id], added[crawl_id] = await self._settle_crawl(conn, crawl_id, batches[crawl_id], now)
        for crawl_id, urls in added.items():  # committed: the memo may learn them now
            batch = results[crawl_id]
            if urls and batch is not None and batch.state is not CrawlState.COMPLETED:
                self._frontier.memo(crawl_id).known.update(urls)
        return results

    async def _settle_crawl(
        self, conn: SqlConnection, crawl_id: str, items: Items, now: datetime
    ) -> tuple[SettledBatch | None, list[str]]:
        crawl = (await _LOCK_CRAWL_COUNTERS.execute(conn, {"p_crawl_id": crawl_id})).first()
        if crawl is None:
            return None, []
        settled = await self._settle_pages(conn, crawl, items, now)
        if not settled:
            return None, []
        state, to_publish, added = await self._advance_crawl(conn, crawl, list(settled.values()), now)
        return SettledBatch(list(settled), state, CrawlState(crawl.state), to_publish), added

    async def _settle_pages(
        self, conn: SqlConnection, crawl: Any, items: Items, now: datetime
    ) -> dict[int, tuple[PageOutcome, int]]:
        """Write the outcomes of the pages still FETCHING (the first outcome per page); → {page: (outcome, depth)}."""
        rows = await _FETCHING_PAGES.execute(conn, {"p_ids": sorted({page_id for page_id, _ in items})})
        fetching = {row.id: row.depth for row in rows}
        settled: dict[int, tuple[PageOutcome, int]] = {}
        for page_id, outcome in items:
            if page_id in fetching and page_id not in settled:
                settled[page_id] = (outcome, fetching[page_id])
        if settled:
            await _SETTLE_PAGE.execute(
                conn,
                [
                    {
                        "b_id": page_id,
                        "b_seq": crawl.version + index,  # SSE event ids: one per outcome, in commit order
                        "b_fetched_at": now,
                        "b_updated_at": now,
                        **{f"b_{name}": value for name, value in outcome_values(outcome).items()},
                    }
                    for index, (page_id, (outcome, _)) in enumerate(settled.items(), start=1)
                ],
            )
        return settled

    async def _advance_crawl(
        self, conn: SqlConnection, crawl: Any, settled: Sequence[tuple[PageOutcome, int]], now: datetime
    ) -> tuple[CrawlState, list[PageRef], list[str]]:
        """Count the settled pages, grow the frontier, refill the window, detect completion (under the lock)."""
        counters, links = tally(settled)
        values: dict[str, Any] = {f"p_{name}": counters[name] for name in COUNTERS}
        values.update(p_crawl_id=crawl.id, p_version=len(settled), p_finished_at=None)
        in_flight = crawl.in_flight - len(settled)
        state = CrawlState(crawl.state)
        to_publish: list[PageRef] = []
        added: list[str] = []
        if state in (CrawlState.QUEUED, CrawlState.RUNNING):
            config = await self._frontier.config(conn, crawl.id)
            added = await self._frontier.add_pages(
                conn, crawl.id, list(links.items()), limit=pages_left(config, crawl.discovered)
            )
            values["p_discovered"] = len(added)
            to_publish = await self._frontier.refill(conn, crawl.id, config, in_flight)
            in_flight += len(to_publish)
            values["p_queued"] = len(to_publish)
            if in_flight == 0:  # nothing in flight and nothing PENDING left (the refill had room for it)
                values["p_finished_at"] = now
                state = CrawlState.COMPLETED
        values.update(p_in_flight=in_flight, p_state=state.value)
        await _ADVANCE_CRAWL.execute(conn, values)
        return state, to_publish, added

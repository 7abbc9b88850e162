"""Crawls in SQL: their lifecycle (create once per idempotency key, cancel, release and reopen a window, find
lost and stalled work) and the worker's two per-page steps, ``begin_page`` and ``finish_page``.

Every rule that must hold across many workers is one transaction here, serialised on the crawl's row
(``SELECT … FOR UPDATE``; SQLite, which has no row locks, serialises the same transactions with an in-process
lock: ``store/dialects.py``):
- Idempotent triggers: ``crawls.idempotency_key`` is unique; ``INSERT … ON CONFLICT DO NOTHING`` decides which
  of any number of concurrent triggers creates the crawl; the others read it back.
- The concurrency window: ``crawls.in_flight`` counts published, unfinished pages. Pages move PENDING → QUEUED
  only in ``Frontier.refill`` (``store/frontier.py``), under the crawl's lock, so ``politeness.maxConcurrency``
  holds cluster-wide.
- Completion exactly once, exactly-once results: ``finish_page`` settles outcomes under the same lock, only for
  pages still FETCHING (``store/finishing.py``: PostgreSQL's function or the in-process steps).
Both per-page steps are group-committed across crawls (``store/batching.py``): a batch holds the pages of every
crawl that arrived during the previous one, and is written again one crawl at a time if the database refuses one
crawl's part of it (``split_on``), so one crawl's failure never fails another's pages. A batch of starts is
``store/starting.py``, of outcomes ``store/finishing.py``. Host politeness is ``store/hosts.py``; what an outcome
stores and counts is ``store/outcomes.py``.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, bindparam, func, select, update

from kubecrawl.core.clock import utcnow
from kubecrawl.core.models import Crawl, CrawlCounters, CrawlPage, CrawlPageState, CrawlState
from kubecrawl.core.settings import DEFAULT_LEASE
from kubecrawl.store.batching import GroupCommit
from kubecrawl.store.contract import LEASE_EXPIRED, LEASE_EXPIRED_PAGE, FinishResult, PageOutcome, PageRef, PageStart
from kubecrawl.store.database import broke_a_deadlock, refused_value
from kubecrawl.store.dialects import as_utc, dialect_insert, transactions
from kubecrawl.store.engines import SqlConnection, SqlEngine
from kubecrawl.store.finishing import batch_finisher
from kubecrawl.store.frontier import Frontier
from kubecrawl.store.hosts import SqlHostStore
from kubecrawl.store.outcomes import COUNTERS, ERROR_CHARS, max_pages_of, shared_out
from kubecrawl.store.schema import crawl_pages, crawls
from kubecrawl.store.starting import PageStarts

ACTIVE_STATES = (CrawlState.QUEUED.value, CrawlState.RUNNING.value)
_ALL_CRAWLS = ""  # the one group of the per-page batches: every crawl

P = CrawlPageState
_ACTIVE = (CrawlState.QUEUED.value, CrawlState.RUNNING.value)


def _all_crawls(_crawl_id: str) -> str:
    return _ALL_CRAWLS


def blames_one_crawl(exc: BaseException) -> bool:
    """An error of a batch of several crawls that one crawl's part may have caused: a value the database refused
    (a NUL byte in a title, a constraint), or a deadlock (two workers, or a worker and the lease sweeper, that
    locked rows in different orders despite the crawl-id order; PostgreSQL aborts one of them). Written again
    one crawl at a time, the others' pages go through, and the guilty crawl's fail alone."""
    return refused_value(exc) or broke_a_deadlock(exc)


def crawl_model(row: Any) -> Crawl:
    return Crawl(
        id=row.id,
        site=f"{row.site_namespace}/{row.site_name}",
        state=CrawlState(row.state),
        trigger=row.trigger,
        idempotency_key=row.idempotency_key,
        counters=CrawlCounters(**{name: getattr(row, name) for name in COUNTERS}),
        in_flight=row.in_flight,
        version=row.version,
        error=row.error,
        created_at=as_utc(row.created_at),
        started_at=as_utc(row.started_at),
        finished_at=as_utc(row.finished_at),
        max_pages=max_pages_of(getattr(row, "config", None)),
    )


def page_model(row: Any) -> CrawlPage:
    data = {name: getattr(row, name) for name in CrawlPage.model_fields}
    data["fetched_at"] = as_utc(data["fetched_at"])
    return CrawlPage.model_validate(data)


# The per-page statements, built once: building a Core statement per call (operators, clause objects, cache
# key) cost more CPU than SQLite spent executing it. Values arrive as bind parameters.
_LOCK_CRAWL = select(crawls).where(crawls.c.id == bindparam("p_crawl_id")).with_for_update()
# The crawls with a FETCHING page past its lease, locked in crawl-id order (``expire_leases``).
_LOCK_CRAWLS_OF_EXPIRED = (
    select(crawls.c.id)
    .where(
        crawls.c.id.in_(
            select(crawl_pages.c.crawl_id).where(
                crawl_pages.c.state == P.FETCHING.value, crawl_pages.c.lease_until < bindparam("p_now")
            )
        )
    )
    .order_by(crawls.c.id)
    .with_for_update()
)


class SqlCrawlStore:
    """``CrawlStore`` (store/contract.py) on PostgreSQL or SQLite."""

    def __init__(self, engine: SqlEngine, *, lease: timedelta = DEFAULT_LEASE) -> None:
        self._engine = engine
        self._insert = dialect_insert(engine)
        # One per store: on SQLite its lock serialises this store's transactions, hosts' included.
        self._tx = transactions(engine)
        self._frontier = Frontier(engine)
        self._finisher = batch_finisher(engine, self._tx, self._frontier)
        self._hosts = SqlHostStore(engine, self._tx)
        self._starts = PageStarts(self._tx, self._frontier, lease=lease)
        # Group commit across crawls for the two per-page transactions (store/batching.py): with many small
        # crawls (one per host) a batch per crawl held one page (docs/scaling.md, "Many hosts").
        self._beginning = GroupCommit[str, tuple[str, int], PageStart | None](
            self._starts.start, part_of=_all_crawls, split_on=blames_one_crawl
        )
        self._finishing = GroupCommit[str, tuple[str, int, PageOutcome], FinishResult | None](
            self._finish_batch, part_of=_all_crawls, split_on=blames_one_crawl
        )

    @property
    def hosts(self) -> SqlHostStore:
        return self._hosts

    async def _lock_crawl(self, conn: SqlConnection, crawl_id: str) -> Any:
        return (await conn.execute(_LOCK_CRAWL, {"p_crawl_id": crawl_id})).first()

    async def _open_window(self, conn: SqlConnection, crawl: Any) -> list[PageRef]:
        """Refill the window of the locked crawl row and count the pages in (``in_flight``, ``queued``)."""
        refs = await self._frontier.refill(conn, crawl.id, crawl.config, crawl.in_flight)
        if refs:
            await conn.execute(
                update(crawls)
                .where(crawls.c.id == crawl.id)
                .values(in_flight=crawls.c.in_flight + len(refs), queued=crawls.c.queued + len(refs))
            )
        return refs

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
        """Create a crawl with its seed pages and open its window; or return the crawl holding the key."""
        now = utcnow()
        crawl_id = str(uuid.uuid4())
        async with self._tx.begin() as conn:
            previous = (
                await conn.execute(
                    select(crawls.c.id)
                    .where(
                        crawls.c.site_namespace == namespace,
                        crawls.c.site_name == name,
                        crawls.c.state == CrawlState.COMPLETED.value,
                    )
                    .order_by(crawls.c.created_at.desc())
                    .limit(1)
                )
            ).scalar()
            inserted = (
                await conn.execute(
                    self._insert(crawls)
                    .values(
                        id=crawl_id,
                        site_namespace=namespace,
                        site_name=name,
                        trigger=trigger,
                        idempotency_key=idempotency_key,
                        state=CrawlState.QUEUED.value,
                        config=config,
                        previous_crawl_id=previous,
                        created_at=now,
                        started_by=started_by,
                    )
                    .on_conflict_do_nothing(index_elements=["idempotency_key"])
                    .returning(crawls.c.id)
                )
            ).first()
            if inserted is None:
                existing = (await conn.execute(select(crawls).where(crawls.c.idempotency_key == idempotency_key))).one()
                return crawl_model(existing), False, []
            crawl = await self._lock_crawl(conn, crawl_id)
            added = await self._frontier.add_pages(conn, crawl_id, [(url, 0) for url in seeds], limit=len(seeds))
            await conn.execute(update(crawls).where(crawls.c.id == crawl_id).values(discovered=len(added)))
            to_publish = await self._open_window(conn, crawl)
            row = (await conn.execute(select(crawls).where(crawls.c.id == crawl_id))).one()
        return crawl_model(row), True, to_publish

    async def get(self, crawl_id: str) -> Crawl | None:
        async with self._engine.connect() as conn:
            row = (await conn.execute(select(crawls).where(crawls.c.id == crawl_id))).first()
        return None if row is None else crawl_model(row)

    async def list_for_site(self, namespace: str, name: str, *, limit: int) -> list[Crawl]:
        async with self._engine.connect() as conn:
            rows = (
                await conn.execute(
                    select(crawls)
                    .where(crawls.c.site_namespace == namespace, crawls.c.site_name == name)
                    .order_by(crawls.c.created_at.desc(), crawls.c.id.desc())
                    .limit(limit)
                )
            ).all()
        return [crawl_model(row) for row in rows]

    async def active_started_by(self, started_by: str, *, limit: int) -> list[Crawl]:
        async with self._engine.connect() as conn:
            rows = (
                await conn.execute(
                    select(crawls)
                    .where(crawls.c.started_by == started_by, crawls.c.state.in_(ACTIVE_STATES))
                    .limit(limit)
                )
            ).all()
        return [crawl_model(row) for row in rows]

    async def pages(
        self,
        crawl_id: str,
        *,
        limit: int,
        after_id: int = 0,
        state: CrawlPageState | None = None,
        changed: bool | None = None,
    ) -> list[CrawlPage]:
        stmt = select(crawl_pages).where(crawl_pages.c.crawl_id == crawl_id, crawl_pages.c.id > after_id)
        if state is not None:
            stmt = stmt.where(crawl_pages.c.state == state.value)
        if changed is not None:
            stmt = stmt.where(crawl_pages.c.changed.is_(changed))
        async with self._engine.connect() as conn:
            rows = (await conn.execute(stmt.order_by(crawl_pages.c.id).limit(limit))).all()
        return [page_model(row) for row in rows]

    async def outcomes_since(self, crawl_id: str, seq: int, *, limit: int = 500) -> list[CrawlPage]:
        """Pages finished after event ``seq`` (SSE resume with Last-Event-ID)."""
        async with self._engine.connect() as conn:
            rows = (
                await conn.execute(
                    select(crawl_pages)
                    .where(crawl_pages.c.crawl_id == crawl_id, crawl_pages.c.seq > seq)
                    .order_by(crawl_pages.c.seq)
                    .limit(limit)
                )
            ).all()
        return [page_model(row) for row in rows]

    async def cancel(self, crawl_id: str) -> Crawl | None:
        async with self._tx.begin() as conn:
            row = await self._lock_crawl(conn, crawl_id)
            if row is None:
                return None
            if row.state in _ACTIVE:
                await conn.execute(
                    update(crawls)
                    .where(crawls.c.id == crawl_id)
                    .values(state=CrawlState.CANCELLED.value, finished_at=utcnow(), version=crawls.c.version + 1)
                )
            row = (await conn.execute(select(crawls).where(crawls.c.id == crawl_id))).one()
        return crawl_model(row)

    async def release(self, crawl_id: str, refs: Sequence[PageRef]) -> None:
        """Undo a refill whose publish failed: the pages go back to PENDING and leave the window."""
        if not refs:
            return
        async with self._tx.begin() as conn:
            await self._lock_crawl(conn, crawl_id)
            ids = [ref.page_id for ref in refs]
            result = await conn.execute(
                update(crawl_pages)
                .where(crawl_pages.c.id.in_(ids), crawl_pages.c.state == P.QUEUED.value)
                .values(state=P.PENDING.value, updated_at=utcnow())
            )
            await conn.execute(
                update(crawls)
                .where(crawls.c.id == crawl_id)
                .values(in_flight=crawls.c.in_flight - result.rowcount, queued=crawls.c.queued - result.rowcount)
            )

    async def reopen_window(self, crawl_id: str) -> list[PageRef]:
        """Reopen the window of an active crawl that has nothing in flight (its earlier publish failed)."""
        async with self._tx.begin() as conn:
            crawl = await self._lock_crawl(conn, crawl_id)
            if crawl is None or crawl.state not in _ACTIVE or crawl.in_flight > 0:
                return []
            return await self._open_window(conn, crawl)

    async def stalled(self) -> list[str]:
        """Active crawls with nothing in flight: a publish of their window failed and was released (``release``),
        at their start or at a refill, and no message is left to move them on (``reopen_window`` reopens it)."""
        async with self._engine.connect() as conn:
            rows = await conn.execute(select(crawls.c.id).where(crawls.c.state.in_(_ACTIVE), crawls.c.in_flight == 0))
            return [row.id for row in rows]

    async def queued_pages(self, crawl_id: str) -> list[PageRef]:
        """The window's pages that wait for a worker (QUEUED) while the crawl is active."""
        async with self._engine.connect() as conn:
            rows = await conn.execute(
                select(crawl_pages.c.id, crawl_pages.c.url, crawl_pages.c.depth)
                .join(crawls, crawls.c.id == crawl_pages.c.crawl_id)
                .where(
                    crawl_pages.c.crawl_id == crawl_id,
                    crawl_pages.c.state == P.QUEUED.value,
                    crawls.c.state.in_(_ACTIVE),
                )
                .order_by(crawl_pages.c.depth, crawl_pages.c.id)
            )
            return [PageRef(row.id, row.url, row.depth) for row in rows]

    async def requeue_lost(self, older_than: timedelta) -> list[tuple[str, PageRef]]:
        """QUEUED pages untouched for ``older_than`` whose message may be lost (a publisher crash after commit).

        Returns them for re-publishing; a duplicate message is harmless (``begin_page`` settles it once).
        """
        cutoff = utcnow() - older_than
        async with self._tx.begin() as conn:
            rows = (
                await conn.execute(
                    update(crawl_pages)
                    .where(
                        crawl_pages.c.state == P.QUEUED.value,
                        crawl_pages.c.updated_at < cutoff,
                        crawl_pages.c.crawl_id.in_(select(crawls.c.id).where(crawls.c.state.in_(_ACTIVE))),
                    )
                    .values(updated_at=utcnow())
                    .returning(crawl_pages.c.crawl_id, crawl_pages.c.id, crawl_pages.c.url, crawl_pages.c.depth)
                )
            ).all()
        return [(row.crawl_id, PageRef(row.id, row.url, row.depth)) for row in rows]

    async def expire_leases(self, now: datetime) -> list[tuple[str, PageRef]]:
        """FETCHING pages whose lease ended before ``now``: QUEUED again with ``lease_expired`` recorded.

        One ``UPDATE … RETURNING`` (row locks decide between concurrent sweepers, and between a sweeper and a
        late ``finish_page``: whichever comes second finds the page no longer FETCHING). The page stays in the
        window (``in_flight`` counts QUEUED and FETCHING alike), its attempt was counted when it started. The
        crawls of those pages are locked first, in crawl-id order, as a batch of outcomes locks them
        (``store/finishing.py``): a batch holding one crawl and waiting for the next never waits for a sweeper
        that holds a page of the first.
        """
        detail = LEASE_EXPIRED_PAGE
        async with self._tx.begin() as conn:
            crawl_ids = (await conn.execute(_LOCK_CRAWLS_OF_EXPIRED, {"p_now": now})).scalars().all()
            if not crawl_ids:
                return []
            rows = (
                await conn.execute(
                    update(crawl_pages)
                    .where(
                        crawl_pages.c.state == P.FETCHING.value,
                        crawl_pages.c.lease_until < now,
                        crawl_pages.c.crawl_id.in_(crawl_ids),
                    )
                    .values(
                        state=P.QUEUED.value,
                        lease_until=None,
                        error_code=LEASE_EXPIRED,
                        error=detail,
                        last_failure_code=LEASE_EXPIRED,
                        last_failure=detail,
                        updated_at=now,
                    )
                    .returning(crawl_pages.c.crawl_id, crawl_pages.c.id, crawl_pages.c.url, crawl_pages.c.depth)
                )
            ).all()
        return [(row.crawl_id, PageRef(row.id, row.url, row.depth)) for row in rows]

    # -- pages (worker side) ------------------------------------------------------------------------------

    async def begin_page(self, crawl_id: str, page_id: int) -> PageStart | None:
        """Mark the page FETCHING (one more attempt) and return what fetching it needs; ``None`` if settled.

        Group commit per crawl, like ``finish_page``; a batch is started by ``store/starting.py``. Two deliveries
        of one page in the same batch: the second gets ``None`` (the first is fetching it).
        """
        return await self._beginning.submit(crawl_id, (crawl_id, page_id))

    async def retry_page(self, page_id: int, *, code: str, error: str) -> None:
        """A transient failure: the page waits for its retry inside the window (QUEUED)."""
        async with self._tx.single() as conn:
            await conn.execute(
                update(crawl_pages)
                .where(crawl_pages.c.id == page_id, crawl_pages.c.state == P.FETCHING.value)
                .values(
                    state=P.QUEUED.value,
                    error_code=code,
                    error=error[:ERROR_CHARS],
                    last_failure_code=code,
                    last_failure=error[:ERROR_CHARS],
                    updated_at=utcnow(),
                )
            )

    async def finish_page(self, crawl_id: str, page_id: int, outcome: PageOutcome) -> FinishResult | None:
        """Record a page's outcome, grow the frontier, refill the window, detect completion: one transaction.

        Group commit: the outcomes that arrive while the previous batch is being written are written together in
        the next one, whatever their crawls (one transaction; per crawl one row lock, one frontier insert, one
        refill for the lot). Under load a batch holds about as many pages as finished during one transaction;
        with one page in flight it is a batch of one. ``None`` means the page was already settled (a duplicate
        delivery).
        """
        return await self._finishing.submit(crawl_id, (crawl_id, page_id, outcome))

    async def _finish_batch(
        self, _group: str, items: Sequence[tuple[str, int, PageOutcome]]
    ) -> list[FinishResult | None]:
        by_crawl: dict[str, list[tuple[int, PageOutcome]]] = {}
        for crawl_id, page_id, outcome in items:
            by_crawl.setdefault(crawl_id, []).append((page_id, outcome))
        batches = await self._finisher.settle(by_crawl, utcnow())
        shares: dict[str, Iterator[FinishResult | None]] = {}
        for crawl_id, crawl_items in by_crawl.items():
            batch = batches[crawl_id]
            if batch is not None and batch.state is CrawlState.COMPLETED:
                self._frontier.forget(crawl_id)
            shares[crawl_id] = iter(shared_out(batch, crawl_items))
        # Back in submission order: each crawl's results are in the order of its items.
        return [next(shares[crawl_id]) for crawl_id, _, _ in items]

    async def count_pages(self, crawl_id: str) -> int:
        async with self._engine.connect() as conn:
            stmt = select(func.count()).select_from(crawl_pages).where(and_(crawl_pages.c.crawl_id == crawl_id))
            return int((await conn.execute(stmt)).scalar_one())

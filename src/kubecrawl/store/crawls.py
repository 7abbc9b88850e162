"""Crawls and their frontier: every rule that must hold across many workers is one transaction here.

- Idempotent triggers: ``crawls.idempotency_key`` is unique; ``INSERT … ON CONFLICT DO NOTHING`` decides which
  of any number of concurrent triggers creates the crawl; the others read it back.
- The concurrency window: ``crawls.in_flight`` counts published, unfinished pages. Pages move PENDING → QUEUED
  only inside ``_take_pending``, under the crawl's row lock, so ``politeness.maxConcurrency`` holds cluster-wide.
- Completion exactly once: ``finish_page`` runs under the same row lock; the transaction that takes
  ``in_flight`` to zero with no PENDING page left is the one that marks the crawl COMPLETED.
- Exactly-once results: a page's outcome is written only while it is FETCHING; a duplicate delivery finds it
  DONE and changes nothing.
SQLite (embedded default) has no row locks; an in-process lock serialises the same transactions instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections import Counter, OrderedDict
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, bindparam, func, select, update
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from kubecrawl.core.clock import utcnow
from kubecrawl.core.models import Crawl, CrawlCounters, CrawlPage, CrawlPageState, CrawlState
from kubecrawl.store.batching import GroupCommit
from kubecrawl.store.dialects import as_utc, dialect_insert
from kubecrawl.store.schema import crawl_hosts, crawl_pages, crawls

P = CrawlPageState
_ACTIVE = (CrawlState.QUEUED.value, CrawlState.RUNNING.value)
COUNTERS = ("discovered", "queued", "fetched", "failed", "changed", "unchanged", "skipped_robots")
# Columns a page's outcome writes (besides state, seq and timestamps).
_RESULT_FIELDS = (
    "http_status",
    "content_hash",
    "changed",
    "etag",
    "last_modified",
    "title",
    "description",
    "canonical",
    "noindex",
    "nofollow",
    "links",
    "error_code",
    "error",
)
_OUTCOME_COLUMNS = ("state", "seq", "fetched_at", "updated_at", "outlinks", *_RESULT_FIELDS)
# What a process remembers of a crawl (``_CrawlMemo``) is kept for this many recent crawls.
_KNOWN_CRAWLS = 8


@dataclass(frozen=True, slots=True)
class PageRef:
    page_id: int
    url: str
    depth: int


@dataclass(frozen=True, slots=True)
class PageStart:
    """What a worker needs to fetch one page; ``None`` from ``begin_page`` means "already settled"."""

    url: str
    depth: int
    attempts: int
    crawl_state: CrawlState
    config: dict[str, Any]
    has_previous_crawl: bool
    previous: dict[str, Any] | None  # the same URL in the site's previous completed crawl
    # Hosts of this crawl that no request may reach before the given time (Retry-After, Crawl-delay).
    held_until: dict[str, datetime] = field(default_factory=dict)


@dataclass(slots=True)
class PageOutcome:
    state: CrawlPageState
    http_status: int | None = None
    content_hash: str | None = None
    changed: bool | None = None
    etag: str | None = None
    last_modified: str | None = None
    title: str | None = None
    description: str | None = None
    canonical: str | None = None
    noindex: bool | None = None
    nofollow: bool | None = None
    links: int | None = None
    error_code: str | None = None
    error: str | None = None
    skipped_robots: bool = False
    new_links: Sequence[str] = field(default_factory=tuple)


@dataclass(slots=True)
class _CrawlMemo:
    """What this process remembers of a recent crawl, so that page batches skip the database for it."""

    # URLs known to be in the frontier (inserted here or found there): never deleted, so safe to skip.
    known: set[str] = field(default_factory=set)
    # The crawl's spec: frozen when the crawl starts.
    config: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class _SettledBatch:
    settled: list[int]  # the pages whose outcome this batch wrote, in arrival order
    state: CrawlState
    previous_state: CrawlState
    to_publish: list[PageRef]


@dataclass(slots=True)
class FinishResult:
    to_publish: list[PageRef]
    crawl_state: CrawlState
    completed_now: bool


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
    )


def page_model(row: Any) -> CrawlPage:
    data = {name: getattr(row, name) for name in CrawlPage.model_fields}
    data["fetched_at"] = as_utc(data["fetched_at"])
    return CrawlPage.model_validate(data)


# The per-page statements, built once: building a Core statement per call (operators, clause objects, cache
# key) cost more CPU than SQLite spent executing it. Values arrive as bind parameters.
_LOCK_CRAWL = select(crawls).where(crawls.c.id == bindparam("p_crawl_id")).with_for_update()
# The columns a page outcome moves (the spec comes from ``_CrawlMemo``: not its JSON decoded per batch).
_LOCK_CRAWL_COUNTERS = (
    select(crawls.c.id, crawls.c.state, crawls.c.version, crawls.c.discovered, crawls.c.in_flight)
    .where(crawls.c.id == bindparam("p_crawl_id"))
    .with_for_update()
)
_BEGIN_PAGES = (
    update(crawl_pages)
    .where(
        crawl_pages.c.id.in_(bindparam("p_ids", expanding=True)),
        # The pages are found by primary key; the crawl is only checked. Written as ``crawl_id || ''`` so that no
        # index on crawl_id applies: with statistics from before the crawl (a first crawl), PostgreSQL took
        # ``crawl_id = $1`` for a few rows and walked all of the crawl's pages for each batch (auto_explain).
        crawl_pages.c.crawl_id.concat("") == bindparam("p_crawl_id"),
        crawl_pages.c.state.in_((P.QUEUED.value, P.FETCHING.value)),
    )
    .values(state=P.FETCHING.value, attempts=crawl_pages.c.attempts + 1, updated_at=bindparam("p_now"))
    .returning(crawl_pages.c.id, crawl_pages.c.url, crawl_pages.c.depth, crawl_pages.c.attempts)
)
_MARK_RUNNING = (
    update(crawls)
    .where(crawls.c.id == bindparam("p_crawl_id"), crawls.c.state == CrawlState.QUEUED.value)
    .values(state=CrawlState.RUNNING.value, started_at=bindparam("p_now"))
)
# The crawl's state, its previous crawl, and whether any of its hosts is held (Retry-After, Crawl-delay): one
# read per batch; which hosts and until when is read only when some are (rarely). The spec (``config``) cannot
# change during a crawl and is read once per process (``_CrawlMemo``).
_CRAWL_FOR_PAGES = select(
    crawls.c.state,
    crawls.c.previous_crawl_id,
    select(func.count())
    .where(crawl_hosts.c.crawl_id == crawls.c.id, crawl_hosts.c.next_fetch_at > bindparam("p_now"))
    .scalar_subquery()
    .label("held_hosts"),
).where(crawls.c.id == bindparam("p_crawl_id"))
_CRAWL_CONFIG = select(crawls.c.config).where(crawls.c.id == bindparam("p_crawl_id"))
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
_FETCHING_PAGES = select(crawl_pages.c.id, crawl_pages.c.depth).where(
    crawl_pages.c.id.in_(bindparam("p_ids", expanding=True)), crawl_pages.c.state == P.FETCHING.value
)
_SETTLE_PAGE = (
    update(crawl_pages)
    .where(crawl_pages.c.id == bindparam("b_id"), crawl_pages.c.state == P.FETCHING.value)
    .values({name: bindparam(f"b_{name}") for name in _OUTCOME_COLUMNS})
)
_KNOWN_URLS = select(crawl_pages.c.url).where(
    crawl_pages.c.crawl_id == bindparam("p_crawl_id"), crawl_pages.c.url.in_(bindparam("p_urls", expanding=True))
)
# A batch's outcomes moved into the crawl row (locked by the caller): counter increments, the window, the state.
_ADVANCE_CRAWL = (
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
_FINISH_PAGES = select(
    func.kubecrawl_finish_pages(
        bindparam("p_crawl_id", type_=crawls.c.id.type),
        bindparam("p_outcomes", type_=JSONB),
        bindparam("p_now", type_=crawl_pages.c.updated_at.type),
        type_=JSONB,
    )
)
# PENDING → QUEUED for the shallowest pages, as many as the window has room for: one statement.
_TAKE_PENDING = (
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


def _outcome_values(outcome: PageOutcome) -> dict[str, Any]:
    values = {name: getattr(outcome, name) for name in _RESULT_FIELDS}
    values["state"] = outcome.state.value
    values["outlinks"] = list(outcome.new_links) if outcome.state is P.DONE else None
    if values["error"] is not None:
        values["error"] = values["error"][:2000]
    return values


def _counted(outcome: PageOutcome) -> dict[str, int]:
    """The crawl counters one outcome moves."""
    if outcome.state is P.DONE:
        counted = {"fetched": 1}
        if outcome.changed is not None:
            counted["changed" if outcome.changed else "unchanged"] = 1
        return counted
    if outcome.state is P.FAILED:
        return {"failed": 1}
    return {"skipped_robots": 1} if outcome.skipped_robots else {}


class CrawlStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._insert = dialect_insert(engine)
        self._sqlite = engine.dialect.name == "sqlite"
        self._sqlite_lock = asyncio.Lock()
        self._autocommit = engine.execution_options(isolation_level="AUTOCOMMIT")
        self._insert_pages = self._insert(crawl_pages).on_conflict_do_nothing(index_elements=["crawl_id", "url"])
        # Group commit per crawl for the two per-page transactions (store/batching.py).
        self._beginning = GroupCommit[str, int, PageStart | None](self._begin_batch)
        self._finishing = GroupCommit[str, tuple[int, PageOutcome], FinishResult | None](self._finish_batch)
        self._memos: OrderedDict[str, _CrawlMemo] = OrderedDict()

    @contextlib.asynccontextmanager
    async def _tx(self) -> AsyncIterator[AsyncConnection]:
        if self._sqlite:
            async with self._sqlite_lock, self._engine.begin() as conn:
                yield conn
        else:
            async with self._engine.begin() as conn:
                yield conn

    @contextlib.asynccontextmanager
    async def _untransacted(self) -> AsyncIterator[AsyncConnection]:
        """For statements that need no transaction around them: on PostgreSQL each commits on its own, which
        spares the BEGIN and COMMIT round trips (a third of a worker's socket writes per page); SQLite, in
        process, has no round trips to spare and keeps the serialised transaction."""
        if self._sqlite:
            async with self._tx() as conn:
                yield conn
        else:
            async with self._autocommit.connect() as conn:
                yield conn

    async def _lock_crawl(self, conn: AsyncConnection, crawl_id: str) -> Any:
        return (await conn.execute(_LOCK_CRAWL, {"p_crawl_id": crawl_id})).first()

    async def _config(self, conn: AsyncConnection, crawl_id: str) -> dict[str, Any]:
        """The crawl's spec, read once per process (it cannot change while the crawl runs)."""
        memo = self._memo(crawl_id)
        if memo.config is None:
            memo.config = (await conn.execute(_CRAWL_CONFIG, {"p_crawl_id": crawl_id})).scalar_one()
        return memo.config

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
    ) -> tuple[Crawl, bool, list[PageRef]]:
        """Create a crawl with its seed pages and open its window; or return the crawl holding the key."""
        now = utcnow()
        crawl_id = str(uuid.uuid4())
        async with self._tx() as conn:
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
                    )
                    .on_conflict_do_nothing(index_elements=["idempotency_key"])
                    .returning(crawls.c.id)
                )
            ).first()
            if inserted is None:
                existing = (await conn.execute(select(crawls).where(crawls.c.idempotency_key == idempotency_key))).one()
                return crawl_model(existing), False, []
            await self._lock_crawl(conn, crawl_id)
            added = await self._add_pages(conn, crawl_id, [(url, 0) for url in seeds], limit=len(seeds))
            await conn.execute(update(crawls).where(crawls.c.id == crawl_id).values(discovered=len(added)))
            to_publish = await self._refill(conn, crawl_id)
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
        async with self._tx() as conn:
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
        async with self._tx() as conn:
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

    async def kick(self, crawl_id: str) -> list[PageRef]:
        """Reopen the window of an active crawl that has nothing in flight (its earlier publish failed)."""
        async with self._tx() as conn:
            crawl = await self._lock_crawl(conn, crawl_id)
            if crawl is None or crawl.state not in _ACTIVE or crawl.in_flight > 0:
                return []
            return await self._refill(conn, crawl_id)

    async def stalled(self) -> list[str]:
        """Active crawls with nothing in flight: a publish of their window failed and was released (``release``),
        at their start or at a refill, and no message is left to move them on (``kick`` reopens the window)."""
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
        async with self._tx() as conn:
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

    # -- pages (worker side) ------------------------------------------------------------------------------

    async def begin_page(self, crawl_id: str, page_id: int) -> PageStart | None:
        """Mark the page FETCHING (one more attempt) and return what fetching it needs; ``None`` if settled.

        Group commit per crawl, like ``finish_page``. Two deliveries of one page in the same batch: the second
        gets ``None`` (the first is fetching it). The batch's statements need no transaction around them: the
        pages are FETCHING once their update commits, and what is read after it (the crawl's state, the previous
        crawl's validators, paused hosts) may change at any moment anyway.
        """
        return await self._beginning.submit(crawl_id, page_id)

    async def _begin_batch(self, crawl_id: str, page_ids: Sequence[int]) -> list[PageStart | None]:
        now = utcnow()
        async with self._untransacted() as conn:
            ids = sorted(set(page_ids))
            pages = {
                row.id: row
                for row in await conn.execute(_BEGIN_PAGES, {"p_ids": ids, "p_crawl_id": crawl_id, "p_now": now})
            }
            if not pages:
                return [None] * len(page_ids)
            crawl = (await conn.execute(_CRAWL_FOR_PAGES, {"p_crawl_id": crawl_id, "p_now": now})).one()
            state = CrawlState(crawl.state)
            if state is CrawlState.QUEUED:  # its first pages: the crawl starts running
                await conn.execute(_MARK_RUNNING, {"p_crawl_id": crawl_id, "p_now": now})
                state = CrawlState.RUNNING
            config = await self._config(conn, crawl_id)
            previous: dict[str, dict[str, Any]] = {}
            if crawl.previous_crawl_id is not None:
                rows = await conn.execute(
                    _PREVIOUS_PAGES,
                    {"p_previous_id": crawl.previous_crawl_id, "p_urls": [page.url for page in pages.values()]},
                )
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
                held = await conn.execute(_HELD_HOSTS, {"p_crawl_id": crawl_id, "p_now": now})
                held_until = {row.host: until for row in held if (until := as_utc(row.next_fetch_at)) is not None}
        results: list[PageStart | None] = []
        for page_id in page_ids:
            page = pages.pop(page_id, None)
            results.append(
                None
                if page is None
                else PageStart(
                    page.url,
                    page.depth,
                    page.attempts,
                    state,
                    config,
                    crawl.previous_crawl_id is not None,
                    previous.get(page.url),
                    held_until,
                )
            )
        return results

    async def retry_page(self, page_id: int, *, code: str, error: str) -> None:
        """A transient failure: the page waits for its retry inside the window (QUEUED)."""
        async with self._untransacted() as conn:
            await conn.execute(
                update(crawl_pages)
                .where(crawl_pages.c.id == page_id, crawl_pages.c.state == P.FETCHING.value)
                .values(state=P.QUEUED.value, error_code=code, error=error[:2000], updated_at=utcnow())
            )

    async def finish_page(self, crawl_id: str, page_id: int, outcome: PageOutcome) -> FinishResult | None:
        """Record a page's outcome, grow the frontier, refill the window, detect completion: one transaction.

        Group commit: the outcomes of one crawl that arrive while its previous batch is being written are
        written together in the next one (one crawl-row lock, one frontier insert, one refill for the lot).
        Under load a batch holds about as many pages as finished during one transaction; with one page in
        flight it is a batch of one. ``None`` means the page was already settled (a duplicate delivery).
        """
        return await self._finishing.submit(crawl_id, (page_id, outcome))

    async def _finish_batch(self, crawl_id: str, items: Sequence[tuple[int, PageOutcome]]) -> list[FinishResult | None]:
        now = utcnow()
        if self._sqlite:
            batch = await self._finish_in_process(crawl_id, items, now)
        else:
            batch = await self._finish_in_database(crawl_id, items, now)
        if batch is None:
            return [None] * len(items)
        if batch.state is CrawlState.COMPLETED:
            self._memos.pop(crawl_id, None)
        # One result per settled page (None for the rest); the refill is shared out so the callers publish in
        # parallel, and exactly one of them reports a completion.
        owners = {page_id: FinishResult([], batch.state, completed_now=False) for page_id in batch.settled}
        shares = list(owners.values())
        for index, ref in enumerate(batch.to_publish):
            shares[index % len(shares)].to_publish.append(ref)
        shares[0].completed_now = batch.state is CrawlState.COMPLETED and batch.previous_state is not batch.state
        return [owners.pop(page_id, None) for page_id, _ in items]

    async def _finish_in_database(
        self, crawl_id: str, items: Sequence[tuple[int, PageOutcome]], now: datetime
    ) -> _SettledBatch | None:
        """PostgreSQL: the whole batch is one call of ``kubecrawl_finish_pages`` (migration 0003), in a transaction
        of its own, so the crawl row stays locked for the server's work only, not for the worker's round trips."""
        known = self._memo(crawl_id).known
        outcomes = [
            {
                "id": page_id,
                **_outcome_values(outcome),
                "counted": _counted(outcome),
                "new_links": [url for url in outcome.new_links if url not in known],
            }
            for page_id, outcome in items
        ]
        async with self._autocommit.connect() as conn:
            result = (
                await conn.execute(_FINISH_PAGES, {"p_crawl_id": crawl_id, "p_outcomes": outcomes, "p_now": now})
            ).scalar_one()
        if result is None or not result["settled"]:
            return None
        # The links of the settled outcomes (the first one per page) are now in the frontier, or were cut by
        # maxPages, which then admits no page ever again: either way they need no probe in a later batch.
        settled = set(result["settled"])
        for outcome in outcomes:
            if outcome["id"] in settled:
                settled.discard(outcome["id"])
                known.update(outcome["new_links"])
        return _SettledBatch(
            settled=result["settled"],
            state=CrawlState(result["state"]),
            previous_state=CrawlState(result["previous_state"]),
            to_publish=[PageRef(page_id, url, depth) for page_id, url, depth in result["publish"]],
        )

    async def _finish_in_process(
        self, crawl_id: str, items: Sequence[tuple[int, PageOutcome]], now: datetime
    ) -> _SettledBatch | None:
        """SQLite (in process, no round trips to save): the same steps as ``kubecrawl_finish_pages``, statement by
        statement, in one serialised transaction."""
        async with self._tx() as conn:
            crawl = (await conn.execute(_LOCK_CRAWL_COUNTERS, {"p_crawl_id": crawl_id})).first()
            if crawl is None:
                return None
            settled = await self._settle_pages(conn, crawl, items, now)
            if not settled:
                return None
            state, to_publish, added = await self._advance_crawl(conn, crawl, list(settled.values()), now)
        if added and state is not CrawlState.COMPLETED:
            self._memo(crawl_id).known.update(added)
        return _SettledBatch(list(settled), state, CrawlState(crawl.state), to_publish)

    async def _settle_pages(
        self, conn: AsyncConnection, crawl: Any, items: Sequence[tuple[int, PageOutcome]], now: datetime
    ) -> dict[int, tuple[PageOutcome, int]]:
        """Write the outcomes of the pages still FETCHING (the first outcome per page); → {page: (outcome, depth)}."""
        rows = await conn.execute(_FETCHING_PAGES, {"p_ids": sorted({page_id for page_id, _ in items})})
        fetching = {row.id: row.depth for row in rows}
        settled: dict[int, tuple[PageOutcome, int]] = {}
        for page_id, outcome in items:
            if page_id in fetching and page_id not in settled:
                settled[page_id] = (outcome, fetching[page_id])
        if settled:
            await conn.execute(
                _SETTLE_PAGE,
                [
                    {
                        "b_id": page_id,
                        "b_seq": crawl.version + index,  # SSE event ids: one per outcome, in commit order
                        "b_fetched_at": now,
                        "b_updated_at": now,
                        **{f"b_{name}": value for name, value in _outcome_values(outcome).items()},
                    }
                    for index, (page_id, (outcome, _)) in enumerate(settled.items(), start=1)
                ],
            )
        return settled

    async def _advance_crawl(
        self, conn: AsyncConnection, crawl: Any, settled: Sequence[tuple[PageOutcome, int]], now: datetime
    ) -> tuple[CrawlState, list[PageRef], list[str]]:
        """Count the settled pages, grow the frontier, refill the window, detect completion (under the lock)."""
        counters = Counter[str]()
        links: dict[str, int] = {}
        for outcome, depth in settled:
            counters.update(_counted(outcome))
            for url in outcome.new_links:
                links.setdefault(url, depth + 1)
        values: dict[str, Any] = {f"p_{name}": counters[name] for name in COUNTERS}
        values.update(p_crawl_id=crawl.id, p_version=len(settled), p_finished_at=None)
        in_flight = crawl.in_flight - len(settled)
        state = CrawlState(crawl.state)
        to_publish: list[PageRef] = []
        added: list[str] = []
        if state in (CrawlState.QUEUED, CrawlState.RUNNING):
            config = await self._config(conn, crawl.id)
            remaining = max(0, int(config["scope"]["maxPages"]) - crawl.discovered)
            added = await self._add_pages(conn, crawl.id, list(links.items()), limit=remaining)
            values["p_discovered"] = len(added)
            to_publish = await self._take_pending(
                conn, crawl.id, int(config["politeness"]["maxConcurrency"]) - in_flight
            )
            in_flight += len(to_publish)
            values["p_queued"] = len(to_publish)
            if in_flight == 0:  # nothing in flight and nothing PENDING left (the refill had room for it)
                values["p_finished_at"] = now
                state = CrawlState.COMPLETED
        values.update(p_in_flight=in_flight, p_state=state.value)
        await conn.execute(_ADVANCE_CRAWL, values)
        return state, to_publish, added

    def _memo(self, crawl_id: str) -> _CrawlMemo:
        memo = self._memos.get(crawl_id)
        if memo is None:
            memo = self._memos[crawl_id] = _CrawlMemo()
            while len(self._memos) > _KNOWN_CRAWLS:
                self._memos.popitem(last=False)
        else:
            self._memos.move_to_end(crawl_id)
        return memo

    async def _add_pages(
        self, conn: AsyncConnection, crawl_id: str, candidates: Sequence[tuple[str, int]], *, limit: int
    ) -> list[str]:
        """Insert new frontier pages (deduplicated) up to ``limit``; the caller holds the crawl lock.

        Returns the inserted URLs; the caller adds them to the crawl's known URLs once the transaction has committed
        (a rolled-back insert must not be skipped by the next attempt).
        """
        if limit <= 0 or not candidates:
            return []
        known = self._memo(crawl_id).known
        unique: dict[str, int] = {}
        for url, depth in candidates:
            if url not in known:
                unique.setdefault(url, depth)
        if not unique:
            return []
        existing = set((await conn.execute(_KNOWN_URLS, {"p_crawl_id": crawl_id, "p_urls": list(unique)})).scalars())
        known.update(existing)
        fresh = [(url, depth) for url, depth in unique.items() if url not in existing][:limit]
        if not fresh:
            return []
        now = utcnow()
        # executemany of one prebuilt statement: compiled once (a multi-row VALUES would compile per row count).
        await conn.execute(
            self._insert_pages,
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

    async def _take_pending(self, conn: AsyncConnection, crawl_id: str, room: int) -> list[PageRef]:
        """Move up to ``room`` PENDING pages (shallowest first) into the window; the caller holds the lock."""
        if room <= 0:
            return []
        rows = (await conn.execute(_TAKE_PENDING, {"p_crawl_id": crawl_id, "p_room": room, "p_now": utcnow()})).all()
        return [PageRef(row.id, row.url, row.depth) for row in sorted(rows, key=lambda row: (row.depth, row.id))]

    async def _refill(self, conn: AsyncConnection, crawl_id: str) -> list[PageRef]:
        """Move PENDING pages into the window up to maxConcurrency; the caller holds the crawl lock."""
        crawl = (await conn.execute(select(crawls.c.in_flight, crawls.c.config).where(crawls.c.id == crawl_id))).one()
        refs = await self._take_pending(
            conn, crawl_id, int(crawl.config["politeness"]["maxConcurrency"]) - crawl.in_flight
        )
        if refs:
            await conn.execute(
                update(crawls)
                .where(crawls.c.id == crawl_id)
                .values(in_flight=crawls.c.in_flight + len(refs), queued=crawls.c.queued + len(refs))
            )
        return refs

    # -- hosts: robots.txt once per crawl, request spacing across workers ----------------------------------

    async def host(self, crawl_id: str, host: str) -> tuple[bool, Any]:
        """Claim the host's robots.txt fetch: (True, None) for the one claimer; else (False, row)."""
        async with self._tx() as conn:
            claimed = (
                await conn.execute(
                    self._insert(crawl_hosts)
                    .values(crawl_id=crawl_id, host=host, robots_state="PENDING")
                    .on_conflict_do_nothing(index_elements=["crawl_id", "host"])
                    .returning(crawl_hosts.c.host)
                )
            ).first()
            if claimed is not None:
                return True, None
            row = (
                await conn.execute(
                    select(crawl_hosts).where(crawl_hosts.c.crawl_id == crawl_id, crawl_hosts.c.host == host)
                )
            ).one()
        return False, row

    async def set_robots(self, crawl_id: str, host: str, robots_txt: str | None, crawl_delay: float | None) -> None:
        async with self._untransacted() as conn:
            await conn.execute(
                update(crawl_hosts)
                .where(crawl_hosts.c.crawl_id == crawl_id, crawl_hosts.c.host == host)
                .values(robots_state="READY", robots_txt=robots_txt, crawl_delay=crawl_delay)
            )

    async def reserve_slot(
        self, crawl_id: str, host: str, spacing: float, *, pause_until: datetime | None = None
    ) -> float:
        """Reserve the host's next request time (spacing apart, cluster-wide); return seconds to wait."""
        now = utcnow()
        async with self._tx() as conn:
            row = (
                await conn.execute(
                    select(crawl_hosts.c.next_fetch_at)
                    .where(crawl_hosts.c.crawl_id == crawl_id, crawl_hosts.c.host == host)
                    .with_for_update()
                )
            ).first()
            current = as_utc(row.next_fetch_at) if row is not None else None
            start = max(filter(None, (now, current, pause_until)))
            await conn.execute(
                update(crawl_hosts)
                .where(crawl_hosts.c.crawl_id == crawl_id, crawl_hosts.c.host == host)
                .values(next_fetch_at=start + timedelta(seconds=spacing))
            )
        return max(0.0, (start - now).total_seconds())

    async def pause_host(self, crawl_id: str, host: str, until: datetime) -> None:
        """429/503 Retry-After: no worker fetches from this host before ``until``."""
        async with self._untransacted() as conn:
            await conn.execute(
                update(crawl_hosts)
                .where(
                    crawl_hosts.c.crawl_id == crawl_id,
                    crawl_hosts.c.host == host,
                    (crawl_hosts.c.next_fetch_at.is_(None)) | (crawl_hosts.c.next_fetch_at < until),
                )
                .values(next_fetch_at=until)
            )

    async def count_pages(self, crawl_id: str) -> int:
        async with self._engine.connect() as conn:
            stmt = select(func.count()).select_from(crawl_pages).where(and_(crawl_pages.c.crawl_id == crawl_id))
            return int((await conn.execute(stmt)).scalar_one())

"""Crawls and their frontier: every rule that must hold across many workers is one transaction here.

- Idempotent triggers: ``crawls.idempotency_key`` is unique; ``INSERT … ON CONFLICT DO NOTHING`` decides which
  of any number of concurrent triggers creates the crawl; the others read it back.
- The concurrency window: ``crawls.in_flight`` counts published, unfinished pages. Pages move PENDING → QUEUED
  only inside ``_refill``, under the crawl's row lock, so ``politeness.maxConcurrency`` holds cluster-wide.
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
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from kubecrawl.core.models import Crawl, CrawlCounters, CrawlPage, CrawlPageState, CrawlState
from kubecrawl.store.pages import as_utc, dialect_insert, utcnow
from kubecrawl.store.schema import crawl_hosts, crawl_pages, crawls

P = CrawlPageState
_ACTIVE = (CrawlState.QUEUED.value, CrawlState.RUNNING.value)
COUNTERS = ("discovered", "queued", "fetched", "failed", "changed", "unchanged", "skipped_robots")


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


@dataclass(frozen=True, slots=True)
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


class CrawlStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._insert = dialect_insert(engine)
        self._sqlite = engine.dialect.name == "sqlite"
        self._sqlite_lock = asyncio.Lock()

    @contextlib.asynccontextmanager
    async def _tx(self) -> AsyncIterator[AsyncConnection]:
        if self._sqlite:
            async with self._sqlite_lock, self._engine.begin() as conn:
                yield conn
        else:
            async with self._engine.begin() as conn:
                yield conn

    async def _lock_crawl(self, conn: AsyncConnection, crawl_id: str) -> Any:
        return (await conn.execute(select(crawls).where(crawls.c.id == crawl_id).with_for_update())).first()

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
            await conn.execute(update(crawls).where(crawls.c.id == crawl_id).values(discovered=added))
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

    async def requeue_lost(self, older_than: timedelta) -> list[tuple[str, PageRef]]:
        """QUEUED pages untouched for ``older_than`` whose message may be lost (a publisher crash after commit).

        Returns them for re-publishing; a duplicate message is harmless (``begin_page`` settles it once).
        """
        cutoff = utcnow() - older_than
        async with self._engine.begin() as conn:
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
        now = utcnow()
        async with self._tx() as conn:
            page = (
                await conn.execute(
                    update(crawl_pages)
                    .where(
                        crawl_pages.c.id == page_id,
                        crawl_pages.c.crawl_id == crawl_id,
                        crawl_pages.c.state.in_((P.QUEUED.value, P.FETCHING.value)),
                    )
                    .values(state=P.FETCHING.value, attempts=crawl_pages.c.attempts + 1, updated_at=now)
                    .returning(crawl_pages.c.url, crawl_pages.c.depth, crawl_pages.c.attempts)
                )
            ).first()
            if page is None:
                return None
            await conn.execute(
                update(crawls)
                .where(crawls.c.id == crawl_id, crawls.c.state == CrawlState.QUEUED.value)
                .values(state=CrawlState.RUNNING.value, started_at=now)
            )
            crawl = (
                await conn.execute(
                    select(crawls.c.state, crawls.c.config, crawls.c.previous_crawl_id).where(crawls.c.id == crawl_id)
                )
            ).one()
            previous = None
            if crawl.previous_crawl_id is not None:
                prev = (
                    await conn.execute(
                        select(
                            crawl_pages.c.content_hash,
                            crawl_pages.c.etag,
                            crawl_pages.c.last_modified,
                            crawl_pages.c.outlinks,
                        ).where(
                            crawl_pages.c.crawl_id == crawl.previous_crawl_id,
                            crawl_pages.c.url == page.url,
                            crawl_pages.c.state == P.DONE.value,
                        )
                    )
                ).first()
                if prev is not None:
                    previous = {
                        "content_hash": prev.content_hash,
                        "etag": prev.etag,
                        "last_modified": prev.last_modified,
                        "outlinks": prev.outlinks or [],
                    }
        return PageStart(
            page.url,
            page.depth,
            page.attempts,
            CrawlState(crawl.state),
            crawl.config,
            crawl.previous_crawl_id is not None,
            previous,
        )

    async def retry_page(self, page_id: int, *, code: str, error: str) -> None:
        """A transient failure: the page waits for its retry inside the window (QUEUED)."""
        async with self._engine.begin() as conn:
            await conn.execute(
                update(crawl_pages)
                .where(crawl_pages.c.id == page_id, crawl_pages.c.state == P.FETCHING.value)
                .values(state=P.QUEUED.value, error_code=code, error=error[:2000], updated_at=utcnow())
            )

    async def finish_page(self, crawl_id: str, page_id: int, outcome: PageOutcome) -> FinishResult | None:
        """Record a page's outcome, grow the frontier, refill the window, detect completion: one transaction."""
        now = utcnow()
        async with self._tx() as conn:
            crawl = await self._lock_crawl(conn, crawl_id)
            if crawl is None:
                return None
            values = {
                name: getattr(outcome, name)
                for name in (
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
            }
            values["outlinks"] = list(outcome.new_links) if outcome.state is P.DONE else None
            done = (
                await conn.execute(
                    update(crawl_pages)
                    .where(crawl_pages.c.id == page_id, crawl_pages.c.state == P.FETCHING.value)
                    .values(state=outcome.state.value, seq=crawl.version + 1, fetched_at=now, updated_at=now, **values)
                    .returning(crawl_pages.c.depth)
                )
            ).first()
            if done is None:
                return None  # settled already (duplicate delivery)
            counters: dict[str, Any] = {"version": crawls.c.version + 1, "in_flight": crawls.c.in_flight - 1}
            if outcome.state is P.DONE:
                counters["fetched"] = crawls.c.fetched + 1
                if outcome.changed is not None:
                    key = "changed" if outcome.changed else "unchanged"
                    counters[key] = getattr(crawls.c, key) + 1
            elif outcome.state is P.FAILED:
                counters["failed"] = crawls.c.failed + 1
            elif outcome.skipped_robots:
                counters["skipped_robots"] = crawls.c.skipped_robots + 1
            if outcome.new_links and crawl.state in _ACTIVE:
                remaining = max(0, int(crawl.config["scope"]["maxPages"]) - crawl.discovered)
                added = await self._add_pages(
                    conn, crawl_id, [(url, done.depth + 1) for url in outcome.new_links], limit=remaining
                )
                counters["discovered"] = crawls.c.discovered + added
            await conn.execute(update(crawls).where(crawls.c.id == crawl_id).values(**counters))
            to_publish: list[PageRef] = []
            state = CrawlState(crawl.state)
            completed_now = False
            if state in (CrawlState.QUEUED, CrawlState.RUNNING):
                to_publish = await self._refill(conn, crawl_id)
                row = (await conn.execute(select(crawls.c.in_flight).where(crawls.c.id == crawl_id))).one()
                if row.in_flight == 0 and not to_publish:
                    await conn.execute(
                        update(crawls)
                        .where(crawls.c.id == crawl_id)
                        .values(state=CrawlState.COMPLETED.value, finished_at=now)
                    )
                    state, completed_now = CrawlState.COMPLETED, True
        return FinishResult(to_publish, state, completed_now)

    async def _add_pages(
        self, conn: AsyncConnection, crawl_id: str, candidates: Sequence[tuple[str, int]], *, limit: int
    ) -> int:
        """Insert new frontier pages (deduplicated) up to ``limit``; the caller holds the crawl lock."""
        if limit <= 0 or not candidates:
            return 0
        unique: dict[str, int] = {}
        for url, depth in candidates:
            unique.setdefault(url, depth)
        existing = set(
            (
                await conn.execute(
                    select(crawl_pages.c.url).where(
                        crawl_pages.c.crawl_id == crawl_id, crawl_pages.c.url.in_(list(unique))
                    )
                )
            ).scalars()
        )
        fresh = [(url, depth) for url, depth in unique.items() if url not in existing][:limit]
        if not fresh:
            return 0
        now = utcnow()
        await conn.execute(
            self._insert(crawl_pages)
            .values(
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
                ]
            )
            .on_conflict_do_nothing(index_elements=["crawl_id", "url"])
        )
        return len(fresh)

    async def _refill(self, conn: AsyncConnection, crawl_id: str) -> list[PageRef]:
        """Move PENDING pages into the window up to maxConcurrency; the caller holds the crawl lock."""
        crawl = (await conn.execute(select(crawls.c.in_flight, crawls.c.config).where(crawls.c.id == crawl_id))).one()
        room = int(crawl.config["politeness"]["maxConcurrency"]) - crawl.in_flight
        if room <= 0:
            return []
        rows = (
            await conn.execute(
                select(crawl_pages.c.id, crawl_pages.c.url, crawl_pages.c.depth)
                .where(crawl_pages.c.crawl_id == crawl_id, crawl_pages.c.state == P.PENDING.value)
                .order_by(crawl_pages.c.depth, crawl_pages.c.id)
                .limit(room)
            )
        ).all()
        if not rows:
            return []
        await conn.execute(
            update(crawl_pages)
            .where(crawl_pages.c.id.in_([row.id for row in rows]))
            .values(state=P.QUEUED.value, updated_at=utcnow())
        )
        await conn.execute(
            update(crawls)
            .where(crawls.c.id == crawl_id)
            .values(in_flight=crawls.c.in_flight + len(rows), queued=crawls.c.queued + len(rows))
        )
        return [PageRef(row.id, row.url, row.depth) for row in rows]

    # -- hosts: robots.txt once per crawl, request spacing across workers ----------------------------------

    async def host(self, crawl_id: str, host: str) -> tuple[bool, Any]:
        """Claim the host's robots.txt fetch: (True, None) for the one claimer; else (False, row)."""
        async with self._engine.begin() as conn:
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
        async with self._engine.begin() as conn:
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
        async with self._engine.begin() as conn:
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

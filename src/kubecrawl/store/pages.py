"""``page_metadata`` operations: every write is one atomic statement (upsert or conditional update).

The rules that make ``GET /metadata`` publish exactly once under concurrent misses live here:
- a miss is ``INSERT … ON CONFLICT DO NOTHING RETURNING``: only the inserter publishes;
- a refresh (stale record, or a pending fetch that looks lost) is a conditional ``UPDATE … RETURNING``: the
  first updater moves ``queued_at`` past ``fetched_at`` and every other concurrent request sees it pending.
A fetch is pending while ``queued_at`` is later than ``fetched_at`` (or nothing was fetched yet).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import and_, case, delete, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncEngine

from kubecrawl.core.models import FetchedPage, PageMetadataRecord, PageStatus
from kubecrawl.store.schema import page_metadata as pm

_FINAL = (PageStatus.COMPLETED.value, PageStatus.FAILED_PERMANENT.value)


def utcnow() -> datetime:
    return datetime.now(UTC)


def as_utc(value: datetime | None) -> datetime | None:
    """SQLite hands back naive datetimes; everything we store is UTC."""
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)


def dialect_insert(engine: AsyncEngine) -> Any:
    return postgresql.insert if engine.dialect.name == "postgresql" else sqlite.insert


@dataclass(frozen=True, slots=True)
class AttemptStart:
    attempts: int
    already_done: bool


def _record(row: Any) -> PageMetadataRecord:
    data = dict(row._mapping)  # noqa: SLF001 - Row._mapping is public API despite its name
    for key in ("created_at", "updated_at", "queued_at", "fetched_at"):
        data[key] = as_utc(data[key])
    return PageMetadataRecord.model_validate(data)


class PageStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._insert = dialect_insert(engine)

    async def get(self, url: str) -> PageMetadataRecord | None:
        async with self._engine.connect() as conn:
            row = (await conn.execute(select(pm).where(pm.c.url == url))).first()
        return None if row is None else _record(row)

    async def enqueue_if_missing(self, url: str, request_id: str) -> bool:
        """Insert a QUEUED row; True only for the one caller that inserted it (and must publish)."""
        now = utcnow()
        stmt = (
            self._insert(pm)
            .values(
                url=url,
                status=PageStatus.QUEUED.value,
                attempts=0,
                last_request_id=request_id,
                created_at=now,
                updated_at=now,
                queued_at=now,
            )
            .on_conflict_do_nothing(index_elements=["url"])
            .returning(pm.c.id)
        )
        async with self._engine.begin() as conn:
            return (await conn.execute(stmt)).first() is not None

    async def request_refresh(
        self, url: str, request_id: str, *, stale_before: datetime | None, stuck_before: datetime
    ) -> bool:
        """Mark a new fetch pending if the record is stale (or its pending fetch looks lost).

        True for exactly one of any number of concurrent callers.
        """
        now = utcnow()
        not_pending = or_(pm.c.queued_at.is_(None), pm.c.fetched_at >= pm.c.queued_at)
        conditions = []
        if stale_before is not None:
            conditions.append(and_(not_pending, pm.c.fetched_at.is_not(None), pm.c.fetched_at < stale_before))
        # A pending fetch whose message was lost (queue purged, broker volume replaced) must not leave the
        # record QUEUED forever: after ``stuck_before`` a new request may publish again.
        conditions.append(
            and_(
                pm.c.queued_at < stuck_before,
                or_(pm.c.fetched_at.is_(None), pm.c.fetched_at < pm.c.queued_at),
                pm.c.status != PageStatus.IN_PROGRESS.value,
            )
        )
        stmt = (
            update(pm)
            .where(pm.c.url == url, or_(*conditions))
            .values(
                queued_at=now,
                updated_at=now,
                last_request_id=request_id,
                attempts=0,
                status=case((pm.c.status.in_(_FINAL), pm.c.status), else_=PageStatus.QUEUED.value),
            )
            .returning(pm.c.id)
        )
        async with self._engine.begin() as conn:
            return (await conn.execute(stmt)).first() is not None

    async def record_request(self, url: str, request_id: str) -> None:
        """An explicit request (POST): always queue a new fetch; a stored result stays readable meanwhile."""
        now = utcnow()
        stmt = self._insert(pm).values(
            url=url,
            status=PageStatus.QUEUED.value,
            attempts=0,
            last_request_id=request_id,
            created_at=now,
            updated_at=now,
            queued_at=now,
        )
        stmt = stmt.on_conflict_do_update(
            index_elements=["url"],
            set_={
                "queued_at": now,
                "updated_at": now,
                "last_request_id": request_id,
                "attempts": 0,
                "status": case((pm.c.status.in_(_FINAL), pm.c.status), else_=PageStatus.QUEUED.value),
            },
        )
        async with self._engine.begin() as conn:
            await conn.execute(stmt)

    async def release_request(self, url: str, request_id: str) -> None:
        """Undo ``enqueue_if_missing``/``request_refresh``/``record_request`` whose publish failed."""
        async with self._engine.begin() as conn:
            await conn.execute(
                delete(pm).where(
                    pm.c.url == url,
                    pm.c.last_request_id == request_id,
                    pm.c.fetched_at.is_(None),
                    pm.c.status == PageStatus.QUEUED.value,
                )
            )
            await conn.execute(
                update(pm)
                .where(pm.c.url == url, pm.c.last_request_id == request_id, pm.c.fetched_at.is_not(None))
                .values(queued_at=pm.c.fetched_at, updated_at=utcnow())
            )

    async def begin_attempt(self, url: str, request_id: str) -> AttemptStart:
        """Count one more attempt (IN_PROGRESS unless a readable result is stored) and return the count.

        ``already_done`` tells a redelivered message whose result was already written (ack it, do nothing).
        """
        now = utcnow()
        async with self._engine.begin() as conn:
            row = (
                await conn.execute(select(pm.c.last_request_id, pm.c.queued_at, pm.c.fetched_at).where(pm.c.url == url))
            ).first()
            if row is not None and row.last_request_id == request_id and row.fetched_at is not None:
                queued, fetched = as_utc(row.queued_at), as_utc(row.fetched_at)
                if fetched is not None and (queued is None or fetched >= queued):
                    return AttemptStart(attempts=0, already_done=True)
            stmt = (
                self._insert(pm)
                .values(
                    url=url,
                    status=PageStatus.IN_PROGRESS.value,
                    attempts=1,
                    last_request_id=request_id,
                    created_at=now,
                    updated_at=now,
                    queued_at=now,
                )
                .on_conflict_do_update(
                    index_elements=["url"],
                    set_={
                        "attempts": pm.c.attempts + 1,
                        "updated_at": now,
                        "status": case((pm.c.status.in_(_FINAL), pm.c.status), else_=PageStatus.IN_PROGRESS.value),
                    },
                )
                .returning(pm.c.attempts)
            )
            attempts = (await conn.execute(stmt)).scalar_one()
        return AttemptStart(attempts=int(attempts), already_done=False)

    async def complete(self, url: str, request_id: str, page: FetchedPage) -> None:
        now = utcnow()
        values = page.model_dump()
        values.update(
            status=PageStatus.COMPLETED.value,
            last_error=None,
            last_error_code=None,
            last_request_id=request_id,
            updated_at=now,
            fetched_at=now,
        )
        await self._upsert(url, values, now)

    async def fail(
        self,
        url: str,
        request_id: str,
        *,
        code: str,
        detail: str,
        permanent: bool,
        http_status: int | None = None,
    ) -> None:
        now = utcnow()
        values: dict[str, Any] = {
            "last_error": detail[:4000],
            "last_error_code": code,
            "last_request_id": request_id,
            "updated_at": now,
        }
        if http_status is not None:
            values["http_status"] = http_status
        if permanent:
            values.update(status=PageStatus.FAILED_PERMANENT.value, fetched_at=now)
        async with self._engine.begin() as conn:
            if not permanent:
                # A failed refresh keeps a readable stored result; a first fetch shows FAILED_RETRYABLE.
                values["status"] = case((pm.c.status.in_(_FINAL), pm.c.status), else_=PageStatus.FAILED_RETRYABLE.value)
            await conn.execute(update(pm).where(pm.c.url == url).values(**values))

    async def _upsert(self, url: str, values: dict[str, Any], now: datetime) -> None:
        stmt = self._insert(pm).values(url=url, created_at=now, queued_at=now, attempts=1, **values)
        stmt = stmt.on_conflict_do_update(index_elements=["url"], set_=values)
        async with self._engine.begin() as conn:
            await conn.execute(stmt)

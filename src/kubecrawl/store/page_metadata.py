"""``page_metadata`` operations: every write is one atomic statement (upsert or conditional update).

The rules that make ``GET /metadata`` publish exactly once under concurrent misses live here:
- a miss is ``INSERT … ON CONFLICT DO NOTHING RETURNING``: only the inserter publishes;
- a refresh (stale record, or a pending fetch that looks lost) is a conditional ``UPDATE … RETURNING``: the
  first updater moves ``queued_at`` past ``fetched_at`` and every other concurrent request sees it pending.
A fetch is pending while ``queued_at`` is later than ``fetched_at`` (or nothing was fetched yet).

The statements of the hot paths are built once per dialect (``_Statements``), with ``bindparam()`` for the
per-call values, so SQLAlchemy finds them in its compiled cache instead of building a construct per call. A
single statement is atomic on its own, so single-statement operations run in autocommit: one round trip, no
BEGIN/COMMIT around it. Operations of several statements keep a transaction. Together that took the API's
write from about 1.9 to 0.85 ms of CPU, 64 requests in flight (bench/publish.py's load).

``POST /metadata`` records its requests in batches (``api/enqueuing.py`` gathers them): a ``SqlRequestWriter``
writes each batch with ONE statement, ``INSERT … SELECT … FROM unnest($1, $2) ON CONFLICT (url) DO UPDATE``,
sent straight to asyncpg on a pooled connection the writer holds while batches keep coming: one prepared
statement for any batch size, no SQLAlchemy statement execution or pool checkout per batch (each cost about
100 µs of API CPU, twice the write itself; bench/publish.py). A batch is deduplicated by URL
first (ON CONFLICT cannot update one row twice in one statement): the last request for a URL wins
``last_request_id``, as if the batch's requests had been written one after the other. ``release_requests``
undoes a batch's failed publishes the same way (two set-based statements in one transaction). On SQLite (the
embedded default) both run the single-row statements for each row in one transaction.

The metadata worker's claim (``begin_attempt``) and result (``complete``) are group-committed on PostgreSQL: one
raw asyncpg statement per batch of messages (``store/metadata_batches.py``). On SQLite a claim is two statements
and results are group-committed as an ``executemany`` in one transaction.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, and_, bindparam, case, delete, or_, select, update
from sqlalchemy.sql.dml import Delete, Insert, Update
from sqlalchemy.sql.selectable import Select

from kubecrawl.core.clock import utcnow
from kubecrawl.core.errors import StoreUnavailable
from kubecrawl.core.models import FetchedPage, PageMetadataRecord, PageStatus
from kubecrawl.core.settings import DEFAULT_LEASE
from kubecrawl.store import metadata_batches
from kubecrawl.store.batching import GroupCommit
from kubecrawl.store.contract import LEASE_EXPIRED, LEASE_EXPIRED_RECORD, AttemptStart, Request
from kubecrawl.store.database import database_errors, refused_value
from kubecrawl.store.dialects import as_utc, dialect_insert
from kubecrawl.store.engines import SqlConnection, SqlEngine
from kubecrawl.store.request_writing import SqlRequestWriter
from kubecrawl.store.schema import page_metadata as pm

# ``status IN (…)`` over a literal list compiles to an "expanding" parameter that SQLAlchemy re-renders into
# the SQL on every execution; two equalities compile once.
_IS_FINAL = or_(pm.c.status == PageStatus.COMPLETED.value, pm.c.status == PageStatus.FAILED_PERMANENT.value)
# Parameter names differ from column names: SQLAlchemy reserves those for the SET clause of an UPDATE.
_NOW = bindparam("now", type_=pm.c.updated_at.type)
_URL = bindparam("page_url", type_=pm.c.url.type)
_REQUEST_ID = bindparam("request_id", type_=pm.c.last_request_id.type)
_LEASE_UNTIL = bindparam("lease_until", type_=pm.c.lease_until.type)


def _status_unless_final(status: PageStatus) -> ColumnElement[Any]:
    """A stored result (COMPLETED, FAILED_PERMANENT) keeps its status and stays readable; others move on."""
    return case((_IS_FINAL, pm.c.status), else_=status.value)


@dataclass(frozen=True, slots=True)
class _Statements:
    """The statements of the API's and the worker's hot paths, for one dialect's ``insert``."""

    get: Select[Any]
    enqueue_if_missing: Insert
    refresh_lost: Update
    refresh_stale_or_lost: Update
    record_request: Insert
    release_unfetched: Delete
    release_fetched: Update
    attempt_state: Select[Any]
    begin_attempt: Insert
    expire_leases: Update

    @classmethod
    def build(cls, insert: Any) -> _Statements:
        queued = {
            "url": _URL,
            "status": PageStatus.QUEUED.value,
            "attempts": 0,
            "last_request_id": _REQUEST_ID,
            "created_at": _NOW,
            "updated_at": _NOW,
            "queued_at": _NOW,
        }
        requeue = {
            "queued_at": _NOW,
            "updated_at": _NOW,
            "last_request_id": _REQUEST_ID,
            "attempts": 0,
            "status": _status_unless_final(PageStatus.QUEUED),
        }
        # A pending fetch whose message was lost (queue purged, broker volume replaced) must not leave the
        # record QUEUED forever: after ``stuck_before`` a new request may publish again.
        lost = and_(
            pm.c.queued_at < bindparam("stuck_before", type_=pm.c.queued_at.type),
            or_(pm.c.fetched_at.is_(None), pm.c.fetched_at < pm.c.queued_at),
            pm.c.status != PageStatus.IN_PROGRESS.value,
        )
        stale = and_(
            or_(pm.c.queued_at.is_(None), pm.c.fetched_at >= pm.c.queued_at),  # not pending
            pm.c.fetched_at.is_not(None),
            pm.c.fetched_at < bindparam("stale_before", type_=pm.c.fetched_at.type),
        )
        refresh = update(pm).values(**requeue).returning(pm.c.id)
        mine = (pm.c.url == _URL, pm.c.last_request_id == _REQUEST_ID)
        return cls(
            get=select(pm).where(pm.c.url == _URL),
            enqueue_if_missing=insert(pm)
            .values(**queued)
            .on_conflict_do_nothing(index_elements=["url"])
            .returning(pm.c.id),
            refresh_lost=refresh.where(pm.c.url == _URL, lost),
            refresh_stale_or_lost=refresh.where(pm.c.url == _URL, or_(stale, lost)),
            record_request=insert(pm).values(**queued).on_conflict_do_update(index_elements=["url"], set_=requeue),
            release_unfetched=delete(pm).where(
                *mine, pm.c.fetched_at.is_(None), pm.c.status == PageStatus.QUEUED.value
            ),
            release_fetched=update(pm)
            .where(*mine, pm.c.fetched_at.is_not(None))
            .values(queued_at=pm.c.fetched_at, updated_at=_NOW),
            attempt_state=select(pm.c.last_request_id, pm.c.queued_at, pm.c.fetched_at).where(pm.c.url == _URL),
            begin_attempt=insert(pm)
            .values(**{**queued, "status": PageStatus.IN_PROGRESS.value, "attempts": 1, "lease_until": _LEASE_UNTIL})
            .on_conflict_do_update(
                index_elements=["url"],
                set_={
                    "attempts": pm.c.attempts + 1,
                    "updated_at": _NOW,
                    "status": _status_unless_final(PageStatus.IN_PROGRESS),
                    "lease_until": _LEASE_UNTIL,
                },
            )
            .returning(pm.c.attempts),
            # One statement: concurrent sweepers each get the rows their own update changed, never the same one.
            expire_leases=update(pm)
            .where(pm.c.lease_until < _NOW)
            .values(
                lease_until=None,
                status=_status_unless_final(PageStatus.QUEUED),
                last_error=bindparam("detail"),
                last_error_code=LEASE_EXPIRED,
                last_failure=bindparam("detail"),
                last_failure_code=LEASE_EXPIRED,
                updated_at=_NOW,
            )
            .returning(pm.c.url, pm.c.last_request_id),
        )


@functools.cache
def _statements(insert: Any) -> _Statements:
    """One dialect's statements, built when its first store is: a SQLite process never imports PostgreSQL's
    dialect (docs/crawls.md, "Start-up")."""
    return _Statements.build(insert)


def _record(row: Any) -> PageMetadataRecord:
    data = dict(row._mapping)  # noqa: SLF001 - Row._mapping is public API despite its name
    for key in ("created_at", "updated_at", "queued_at", "fetched_at"):
        data[key] = as_utc(data[key])
    return PageMetadataRecord.model_validate(data)


class SqlPageMetadataStore:
    """``PageMetadataStore`` (store/contract.py) on PostgreSQL or SQLite."""

    def __init__(self, engine: SqlEngine, *, lease: timedelta = DEFAULT_LEASE) -> None:
        self._engine = engine
        self._lease = lease
        # Shares the engine's pool; each checkout runs without a transaction (see the module docstring).
        self._autocommit = engine.execution_options(isolation_level="AUTOCOMMIT")
        self._insert = dialect_insert(engine)
        self._sql = _statements(self._insert)
        self._postgres = engine.dialect.name == "postgresql"
        # Completed records are group-committed: under load one transaction writes every record finished while
        # the previous one was being written (store/batching.py).
        self._upserts: GroupCommit[None, dict[str, Any], Exception | None] = GroupCommit(self._write_upserts)
        self._upsert_statements: dict[tuple[str, ...], Any] = {}
        # On PostgreSQL the worker's claims and results are group-committed too, one raw statement per batch
        # (store/metadata_batches.py).
        self._claims: GroupCommit[None, Request, AttemptStart] = GroupCommit(self._write_claims)
        self._results: GroupCommit[None, metadata_batches.Result, Exception | None] = GroupCommit(self._write_results)

    async def get(self, url: str) -> PageMetadataRecord | None:
        async with self._autocommit.connect() as conn:
            row = (await conn.execute(self._sql.get, {"page_url": url})).first()
        return None if row is None else _record(row)

    async def enqueue_if_missing(self, url: str, request_id: str) -> bool:
        """Insert a QUEUED row; True only for the one caller that inserted it (and must publish)."""
        params = {"page_url": url, "request_id": request_id, "now": utcnow()}
        async with self._autocommit.connect() as conn:
            return (await conn.execute(self._sql.enqueue_if_missing, params)).first() is not None

    async def request_refresh(
        self, url: str, request_id: str, *, stale_before: datetime | None, stuck_before: datetime
    ) -> bool:
        """Mark a new fetch pending if the record is stale (or its pending fetch looks lost).

        True for exactly one of any number of concurrent callers.
        """
        params: dict[str, Any] = {
            "page_url": url,
            "request_id": request_id,
            "now": utcnow(),
            "stuck_before": stuck_before,
        }
        stmt = self._sql.refresh_lost
        if stale_before is not None:
            stmt = self._sql.refresh_stale_or_lost
            params["stale_before"] = stale_before
        async with self._autocommit.connect() as conn:
            return (await conn.execute(stmt, params)).first() is not None

    async def request_writer(self) -> SqlRequestWriter:
        """A ``SqlRequestWriter`` holding a pooled connection; ``StoreUnavailable`` if none can be had."""
        conn: SqlConnection | None = None
        try:
            if self._postgres:
                conn = await self._autocommit.connect()
                driver = (await conn.get_raw_connection()).driver_connection
                return SqlRequestWriter(conn, driver, self._sql.record_request)
            conn = await self._engine.connect()
            return SqlRequestWriter(conn, None, self._sql.record_request)
        except database_errors() as exc:
            if conn is not None:
                await conn.close()
            raise StoreUnavailable(f"no database connection: {type(exc).__name__}: {exc}") from exc

    async def release_request(self, url: str, request_id: str) -> None:
        """Undo ``enqueue_if_missing``/``request_refresh``/``RequestWriter.record`` whose publish failed.

        Only while the row is still this request's (``last_request_id``): a later request for the URL keeps it.
        """
        await self.release_requests([(url, request_id)])

    async def release_requests(self, batch: Sequence[Request]) -> None:
        """``release_request`` for a batch, in one transaction (two set-based statements on PostgreSQL)."""
        # No deduplication needed: both statements only touch a row whose (url, last_request_id) is in the batch.
        now = utcnow()
        async with self._engine.begin() as conn:
            if self._postgres:
                params = {"urls": [url for url, _ in batch], "request_ids": [rid for _, rid in batch], "now": now}
                release = metadata_batches.release_statements()
                await conn.execute(release.release_unfetched, params)
                await conn.execute(release.release_fetched, params)
            else:
                rows = [{"page_url": url, "request_id": rid, "now": now} for url, rid in batch]
                await conn.execute(self._sql.release_unfetched, rows)
                await conn.execute(self._sql.release_fetched, rows)

    async def begin_attempt(self, url: str, request_id: str) -> AttemptStart:
        """Count one more attempt (IN_PROGRESS unless a readable result is stored) and return the count.

        ``already_done`` tells a redelivered message whose result was already written (ack it, do nothing).
        """
        if self._postgres:
            return await self._claims.submit(None, (url, request_id))
        now = utcnow()
        params = {"page_url": url, "request_id": request_id, "now": now, "lease_until": now + self._lease}
        # Two autocommitted statements, not a transaction: the read takes no lock, so BEGIN and COMMIT (two more
        # round trips per message) bought nothing; the count is the upsert's own, atomic.
        async with self._autocommit.connect() as conn:
            row = (await conn.execute(self._sql.attempt_state, params)).first()
            if row is not None and row.last_request_id == request_id and row.fetched_at is not None:
                queued, fetched = as_utc(row.queued_at), as_utc(row.fetched_at)
                if fetched is not None and (queued is None or fetched >= queued):
                    return AttemptStart(attempts=0, already_done=True)
            attempts = (await conn.execute(self._sql.begin_attempt, params)).scalar_one()
        return AttemptStart(attempts=int(attempts), already_done=False)

    async def complete(self, url: str, request_id: str, page: FetchedPage) -> None:
        now = utcnow()
        if self._postgres:
            error = await self._results.submit(None, (url, request_id, now, page))
            if error is not None:
                raise error
            return
        values = page.model_dump()
        values.update(
            status=PageStatus.COMPLETED.value,
            last_error=None,
            last_error_code=None,
            last_request_id=request_id,
            updated_at=now,
            fetched_at=now,
            lease_until=None,
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
            "last_failure": detail[:4000],
            "last_failure_code": code,
            "last_request_id": request_id,
            "updated_at": now,
            "lease_until": None,
        }
        if http_status is not None:
            values["http_status"] = http_status
        if permanent:
            values.update(status=PageStatus.FAILED_PERMANENT.value, fetched_at=now)
        else:
            # A failed refresh keeps a readable stored result; a first fetch shows FAILED_RETRYABLE.
            values["status"] = _status_unless_final(PageStatus.FAILED_RETRYABLE)
        async with self._autocommit.connect() as conn:
            await conn.execute(update(pm).where(pm.c.url == url).values(**values))

    async def expire_leases(self, now: datetime) -> list[Request]:
        """Claims whose lease ended before ``now`` go back to QUEUED with ``lease_expired``; each is returned to
        the one sweeper whose update changed it, to publish again for its last request."""
        detail = LEASE_EXPIRED_RECORD
        async with self._autocommit.connect() as conn:
            rows = (await conn.execute(self._sql.expire_leases, {"now": now, "detail": detail})).all()
        return [(row.url, row.last_request_id) for row in rows]

    async def requeue_lost(self, older_than: timedelta) -> list[Request]:
        """Waiting records (QUEUED, FAILED_RETRYABLE), unclaimed and untouched for ``older_than``: touched and
        returned for re-publishing, each to the one sweeper whose update changed it."""
        now = utcnow()
        stmt = (
            update(pm)
            .where(
                or_(pm.c.status == PageStatus.QUEUED.value, pm.c.status == PageStatus.FAILED_RETRYABLE.value),
                pm.c.updated_at < now - older_than,
                pm.c.lease_until.is_(None),
            )
            .values(updated_at=now)
            .returning(pm.c.url, pm.c.last_request_id)
        )
        async with self._autocommit.connect() as conn:
            rows = (await conn.execute(stmt)).all()
        return [(row.url, row.last_request_id) for row in rows]

    @asynccontextmanager
    async def _driver(self) -> AsyncIterator[Any]:
        """The asyncpg connection under a pooled autocommit connection; discarded if it failed (it may be the
        broken part), kept when only a value was refused."""
        async with self._autocommit.connect() as conn:
            driver = (await conn.get_raw_connection()).driver_connection
            try:
                yield driver
            except database_errors() as exc:
                if not refused_value(exc):
                    await conn.invalidate()
                raise

    async def _write_claims(self, _key: None, claims: Sequence[Request]) -> list[AttemptStart]:
        """The claims that arrived while the previous batch was written: one statement (PostgreSQL)."""
        now = utcnow()
        async with self._driver() as driver:
            return await metadata_batches.claim(driver, claims, now, now + self._lease)

    async def _write_results(self, _key: None, results: Sequence[metadata_batches.Result]) -> list[Exception | None]:
        """The results that arrived while the previous batch was written: one statement (PostgreSQL). A batch
        with a value the database refuses is written again row by row, so that only the guilty row fails."""
        try:
            async with self._driver() as driver:
                await metadata_batches.store(driver, results)
        except Exception as exc:
            if len(results) == 1 or not refused_value(exc):
                return [exc] * len(results)
            errors: list[Exception | None] = []
            for result in results:
                errors.extend(await self._write_results(None, [result]))
            return errors
        return [None] * len(results)

    async def _upsert(self, url: str, values: dict[str, Any], now: datetime) -> None:
        """Insert or update the record: one row of the next group-committed batch (see ``_write_upserts``)."""
        error = await self._upserts.submit(
            None, {"url": url, "created_at": now, "queued_at": now, "attempts": 1, **values}
        )
        if error is not None:
            raise error

    def _upsert_statement(self, columns: tuple[str, ...]) -> Any:
        """``INSERT … ON CONFLICT (url) DO UPDATE`` of these columns, built once per column set (building and
        cache-keying the statement per call was a fifth of the metadata worker's CPU, bench/metadata_pipeline.py)."""
        stmt = self._upsert_statements.get(columns)
        if stmt is None:
            insert = self._insert(pm)
            kept = {"url", "created_at", "queued_at", "attempts"}  # a new row's own; an update keeps the old ones
            stmt = insert.on_conflict_do_update(
                index_elements=["url"], set_={name: insert.excluded[name] for name in columns if name not in kept}
            )
            self._upsert_statements[columns] = stmt
        return stmt

    async def _write_upserts(self, _key: None, rows: Sequence[dict[str, Any]]) -> list[Exception | None]:
        """Every upsert that arrived while the previous batch was written: one executemany, one commit. A batch
        the database refuses is written again row by row, so that only the guilty row fails (a NUL byte, say)."""
        try:
            async with self._engine.begin() as conn:
                for columns, group in _by_columns(rows).items():
                    await conn.execute(self._upsert_statement(columns), group)
        except Exception as exc:
            if len(rows) == 1:
                return [exc]
            errors: list[Exception | None] = []
            for row in rows:
                errors.extend(await self._write_upserts(None, [row]))
            return errors
        return [None] * len(rows)


def _by_columns(rows: Sequence[dict[str, Any]]) -> dict[tuple[str, ...], list[dict[str, Any]]]:
    """Rows grouped by the columns they set (an executemany needs the same keys in every row)."""
    groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(tuple(row), []).append(row)
    return groups

"""``POST /metadata``'s batches of requests, written by one statement per batch (``store/page_metadata.py``'s
docstring says why: one prepared asyncpg statement for any batch size, no SQLAlchemy execution per batch)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from kubecrawl.core.clock import utcnow
from kubecrawl.store.contract import Request
from kubecrawl.store.database import database_errors, store_error
from kubecrawl.store.engines import SqlConnection

# ``_Statements.record_request`` for a whole batch, as SQL for asyncpg itself ($1 urls, $2 request ids, $3 now):
# the same upsert (a stored result keeps its status and stays readable), one row per URL.
_RECORD_REQUESTS = """
INSERT INTO page_metadata (url, status, attempts, last_request_id, created_at, updated_at, queued_at)
SELECT batch.url, 'QUEUED', 0, batch.request_id, $3::timestamptz, $3::timestamptz, $3::timestamptz
FROM unnest($1::text[], $2::text[]) AS batch(url, request_id)
ON CONFLICT (url) DO UPDATE SET
    queued_at = excluded.queued_at,
    updated_at = excluded.updated_at,
    last_request_id = excluded.last_request_id,
    attempts = 0,
    status = CASE WHEN page_metadata.status IN ('COMPLETED', 'FAILED_PERMANENT') THEN page_metadata.status
        ELSE 'QUEUED' END
"""


class SqlRequestWriter:
    """Records batches of explicit requests (``POST /metadata``) on one pooled connection, until ``close``.

    ``record`` returns once its batch is committed. A failed batch raises ``StoreUnavailable`` (or
    ``InvalidValue`` when the database refused a value of the batch) and discards the connection (it may be the
    broken part): the writer is closed then, and the caller opens a new one.
    """

    def __init__(self, conn: SqlConnection, driver: Any | None, record_request: Any) -> None:
        self._conn = conn
        self._driver = driver  # the asyncpg connection under ``conn`` (PostgreSQL); None on SQLite
        self._record_request = record_request  # the single-row upsert, run per row on SQLite
        self.closed = False

    async def record(self, batch: Sequence[Request]) -> None:
        latest = dict(batch)  # url → the batch's last request id for it
        now = utcnow()
        try:
            if self._driver is not None:
                await self._driver.execute(_RECORD_REQUESTS, list(latest), list(latest.values()), now)
            else:
                rows = [{"page_url": url, "request_id": rid, "now": now} for url, rid in latest.items()]
                async with self._conn.begin():
                    await self._conn.execute(self._record_request, rows)
        except database_errors() as exc:
            await self._discard()
            raise store_error(exc, f"recording {len(latest)} requests") from exc
        except BaseException:
            await self._discard()
            raise

    async def _discard(self) -> None:
        self.closed = True
        try:
            await self._conn.invalidate()
        finally:
            await self._conn.close()

    async def close(self) -> None:
        if not self.closed:
            self.closed = True
            await self._conn.close()

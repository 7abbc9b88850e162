"""The metadata worker's two writes per message on PostgreSQL, one statement per batch of messages: the claims
(``begin_attempt``) and the results (``complete``) of every message that arrived while the previous batch was
being written (group commit, ``store/batching.py``; ``store/page_metadata.py`` holds the batches).

Each batch is ONE prepared ``INSERT … SELECT … FROM unnest(…) ON CONFLICT (url) DO UPDATE`` sent straight to
asyncpg, in autocommit (a single statement is atomic on its own: no BEGIN/COMMIT round trips), as
``request_writing.py`` does for the API's requests. Per message that replaces two SQLAlchemy statements for the
claim and an ``executemany`` in a transaction for the result (bench/metadata_pipeline.py, docs/scaling.md).

- A claim counts one more attempt and marks the record IN_PROGRESS (a stored result keeps its status) unless
  the message's own result is already written (a redelivery): such rows are left out by ``NOT EXISTS`` and
  come back as ``already_done``. The read and the write are one statement, so nothing can come in between.
- ON CONFLICT cannot change one row twice in one statement: a URL twice in a batch goes into the next
  statement, after the first (``rounds``), as if they had been written one after the other. Each statement
  takes the rows in URL order, so two workers' batches lock the rows they share in the same order.

Also here: ``release_statements()``, the batch form of ``release_request`` (SQLAlchemy Core over two parallel arrays).
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

import orjson
from sqlalchemy import Text, bindparam, delete, func, update
from sqlalchemy.sql.dml import Delete, Update

from kubecrawl.core.models import FetchedPage, PageStatus
from kubecrawl.store.contract import AttemptStart
from kubecrawl.store.schema import page_metadata as pm

T = TypeVar("T")
# One ``complete``: url, request id, the time it was stored, the page.
Result = tuple[str, str, datetime, FetchedPage]

# $1 urls, $2 request ids, $3 now, $4 lease_until.
_CLAIM = """
INSERT INTO page_metadata AS pm
    (url, status, attempts, last_request_id, created_at, updated_at, queued_at, lease_until)
SELECT claim.url, 'IN_PROGRESS', 1, claim.request_id, $3::timestamptz, $3::timestamptz, $3::timestamptz,
    $4::timestamptz
FROM unnest($1::text[], $2::text[]) AS claim(url, request_id)
WHERE NOT EXISTS (
    SELECT 1 FROM page_metadata AS done
    WHERE done.url = claim.url AND done.last_request_id = claim.request_id AND done.fetched_at IS NOT NULL
        AND (done.queued_at IS NULL OR done.fetched_at >= done.queued_at)
)
ON CONFLICT (url) DO UPDATE SET
    attempts = pm.attempts + 1,
    updated_at = excluded.updated_at,
    lease_until = excluded.lease_until,
    status = CASE WHEN pm.status IN ('COMPLETED', 'FAILED_PERMANENT') THEN pm.status ELSE 'IN_PROGRESS' END
RETURNING url, attempts
"""

# The stored fields of a FetchedPage, with their array types; JSON ones travel as text and are cast.
_FIELDS: tuple[tuple[str, str], ...] = (
    ("http_status", "int"),
    ("final_url", "text"),
    ("redirects", "json"),
    ("response_headers", "json"),
    ("cookies", "json"),
    ("title", "text"),
    ("description", "text"),
    ("canonical", "text"),
    ("language", "text"),
    ("robots", "text"),
    ("opengraph", "json"),
    ("twitter", "json"),
    ("content_type", "text"),
    ("content_length", "bigint"),
    ("content_hash", "text"),
    ("charset", "text"),
    ("body_bytes", "bigint"),
    ("truncated", "boolean"),
    ("page_source", "text"),
    ("timings", "json"),
)
_JSON = frozenset(name for name, kind in _FIELDS if kind == "json")


def _store_sql() -> str:
    """``complete`` for a batch: $1 urls, $2 request ids, $3 the time of each, then one array per field.

    A new row gets the row's ``created_at``/``queued_at`` and one attempt; an existing one keeps those."""
    names = [name for name, _ in _FIELDS]
    arrays = ", ".join(
        f"${index}::{'text' if kind == 'json' else kind}[]" for index, (_, kind) in enumerate(_FIELDS, 4)
    )
    values = ", ".join(f"r.{name}::jsonb" if name in _JSON else f"r.{name}" for name in names)
    updates = ",\n    ".join(f"{name} = excluded.{name}" for name in names)
    # Built from the constant _FIELDS above, never from a value.
    return f"""
INSERT INTO page_metadata
    (url, status, attempts, last_request_id, last_error, last_error_code, lease_until,
     created_at, queued_at, updated_at, fetched_at, {", ".join(names)})
SELECT r.url, 'COMPLETED', 1, r.request_id, NULL, NULL, NULL, r.at, r.at, r.at, r.at, {values}
FROM unnest($1::text[], $2::text[], $3::timestamptz[], {arrays}) AS r(url, request_id, at, {", ".join(names)})
ON CONFLICT (url) DO UPDATE SET
    status = excluded.status,
    last_request_id = excluded.last_request_id,
    last_error = NULL,
    last_error_code = NULL,
    lease_until = NULL,
    updated_at = excluded.updated_at,
    fetched_at = excluded.fetched_at,
    {updates}
"""  # noqa: S608


_STORE = _store_sql()


def rounds(items: Sequence[T], url: Any) -> Iterator[list[tuple[int, T]]]:
    """The items (with their index) in statements of distinct URLs, each sorted by URL; a URL's later items go
    into later statements, in their order."""
    pending = list(enumerate(items))
    while pending:
        batch: dict[str, tuple[int, T]] = {}
        later: list[tuple[int, T]] = []
        for entry in pending:
            key = url(entry[1])
            if key in batch:
                later.append(entry)
            else:
                batch[key] = entry
        yield [batch[key] for key in sorted(batch)]
        pending = later


async def claim(
    driver: Any, claims: Sequence[tuple[str, str]], now: datetime, lease_until: datetime
) -> list[AttemptStart]:
    """``begin_attempt`` for each (url, request id), in order, on an asyncpg connection."""
    results: list[AttemptStart] = [AttemptStart(attempts=0, already_done=True)] * len(claims)
    for batch in rounds(claims, lambda item: item[0]):
        urls = [url for _, (url, _) in batch]
        rows = await driver.fetch(_CLAIM, urls, [rid for _, (_, rid) in batch], now, lease_until)
        attempts = {row[0]: row[1] for row in rows}
        for index, (url, _) in batch:
            if url in attempts:  # left out: its message's result is already written
                results[index] = AttemptStart(attempts=int(attempts[url]), already_done=False)
    return results


def _json(value: Any) -> str:
    return orjson.dumps(value).decode()


async def store(driver: Any, results: Sequence[Result]) -> None:
    """``complete`` for each (url, request id, time, page), as if one after the other, on an asyncpg connection."""
    for batch in rounds(results, lambda item: item[0]):
        columns: list[list[Any]] = [[] for _ in range(3 + len(_FIELDS))]
        for _, (url, request_id, at, page) in batch:
            columns[0].append(url)
            columns[1].append(request_id)
            columns[2].append(at)
            for column, (name, _) in enumerate(_FIELDS, 3):
                value = getattr(page, name)
                columns[column].append(_json(value) if name in _JSON else value)
        await driver.execute(_STORE, *columns)


@dataclass(frozen=True, slots=True)
class _ReleaseStatements:
    """PostgreSQL's batch form of ``release_request``: the rows come as two parallel arrays."""

    release_unfetched: Delete
    release_fetched: Update

    @classmethod
    def build(cls) -> _ReleaseStatements:
        from sqlalchemy.dialects import postgresql

        rows = (
            func.unnest(
                bindparam("urls", type_=postgresql.ARRAY(Text)),
                bindparam("request_ids", type_=postgresql.ARRAY(Text)),
            )
            .table_valued("url", "request_id")
            .render_derived(name="batch")
        )
        mine = (pm.c.url == rows.c.url, pm.c.last_request_id == rows.c.request_id)
        return cls(
            release_unfetched=delete(pm).where(
                *mine, pm.c.fetched_at.is_(None), pm.c.status == PageStatus.QUEUED.value
            ),
            release_fetched=update(pm)
            .where(*mine, pm.c.fetched_at.is_not(None))
            .values(queued_at=pm.c.fetched_at, updated_at=bindparam("now", type_=pm.c.updated_at.type)),
        )


# Built at its first use: a SQLite process never imports PostgreSQL's dialect (docs/crawls.md, "Start-up").
release_statements = functools.cache(_ReleaseStatements.build)

"""Host politeness in SQL (``crawl_hosts``, one row per crawl and host): robots.txt fetched once per crawl, and
request times reserved ``spacing`` apart across every worker (``politeness.delaySeconds``, Crawl-delay), pushed
back by a 429/503 Retry-After.

- One claimer per host at a time: ``INSERT … ON CONFLICT DO NOTHING RETURNING`` inserts the row for exactly one
  caller, who fetches robots.txt and marks it READY; the others read the row and wait for READY. The claim is a
  lease (``robots_claimed_until``): a conditional ``UPDATE … RETURNING`` hands a claim whose lease ran out (its
  worker was killed or hangs), or a READY result past ``robots_expires_at``, to exactly one next caller.
- Spacing: ``reserve_slot`` locks the row (``FOR UPDATE``; SQLite: the store's in-process lock), takes the later
  of now, the reserved time and any pause, and moves the reservation on by ``spacing``.
- A pause never shortens an earlier, longer one (a conditional ``UPDATE``).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, and_, or_, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from kubecrawl.core.clock import utcnow
from kubecrawl.store.contract import HostState
from kubecrawl.store.dialects import Transactions, as_utc, dialect_insert
from kubecrawl.store.schema import crawl_hosts


def _this(crawl_id: str, host: str) -> tuple[ColumnElement[bool], ColumnElement[bool]]:
    return (crawl_hosts.c.crawl_id == crawl_id, crawl_hosts.c.host == host)


class SqlHostStore:
    def __init__(self, engine: AsyncEngine, transactions: Transactions) -> None:
        self._insert = dialect_insert(engine)
        self._transactions = transactions

    async def claim_robots(
        self, crawl_id: str, host: str, *, lease: timedelta, now: datetime | None = None
    ) -> tuple[bool, HostState]:
        """Claim the host's robots.txt fetch: True for the one claimer; else False and the host's state."""
        now = now or utcnow()
        until = now + lease
        async with self._transactions.begin() as conn:
            claimed = (
                await conn.execute(
                    self._insert(crawl_hosts)
                    .values(crawl_id=crawl_id, host=host, robots_state="PENDING", robots_claimed_until=until)
                    .on_conflict_do_nothing(index_elements=["crawl_id", "host"])
                    .returning(crawl_hosts.c.host)
                )
            ).first()
            if claimed is None:
                ended = or_(
                    # a claim without a deadline was left by a version without leases (before migration 0006)
                    and_(
                        crawl_hosts.c.robots_state == "PENDING",
                        or_(crawl_hosts.c.robots_claimed_until.is_(None), crawl_hosts.c.robots_claimed_until < now),
                    ),
                    and_(crawl_hosts.c.robots_state == "READY", crawl_hosts.c.robots_expires_at < now),
                )
                claimed = (
                    await conn.execute(
                        update(crawl_hosts)
                        .where(*_this(crawl_id, host), ended)
                        .values(robots_state="PENDING", robots_claimed_until=until, robots_expires_at=None)
                        .returning(crawl_hosts.c.host)
                    )
                ).first()
            if claimed is not None:
                return True, HostState("PENDING", None)
            row = (
                await conn.execute(
                    select(crawl_hosts.c.robots_state, crawl_hosts.c.robots_txt, crawl_hosts.c.robots_expires_at).where(
                        *_this(crawl_id, host)
                    )
                )
            ).one()
        return False, HostState(row.robots_state, row.robots_txt, as_utc(row.robots_expires_at))

    async def set_robots(
        self,
        crawl_id: str,
        host: str,
        robots_txt: str | None,
        crawl_delay: float | None,
        *,
        expires_at: datetime | None = None,
    ) -> None:
        async with self._transactions.single() as conn:
            await conn.execute(
                update(crawl_hosts)
                .where(*_this(crawl_id, host))
                .values(
                    robots_state="READY",
                    robots_txt=robots_txt,
                    crawl_delay=crawl_delay,
                    robots_claimed_until=None,
                    robots_expires_at=expires_at,
                )
            )

    async def reserve_slot(
        self, crawl_id: str, host: str, spacing: float, *, pause_until: datetime | None = None
    ) -> float:
        """Reserve the host's next request time (spacing apart, cluster-wide); return seconds to wait."""
        now = utcnow()
        async with self._transactions.begin() as conn:
            row = (
                await conn.execute(select(crawl_hosts.c.next_fetch_at).where(*_this(crawl_id, host)).with_for_update())
            ).first()
            current = as_utc(row.next_fetch_at) if row is not None else None
            start = max(filter(None, (now, current, pause_until)))
            await conn.execute(
                update(crawl_hosts)
                .where(*_this(crawl_id, host))
                .values(next_fetch_at=start + timedelta(seconds=spacing))
            )
        return max(0.0, (start - now).total_seconds())

    async def pause(self, crawl_id: str, host: str, until: datetime) -> None:
        """429/503 Retry-After: no worker fetches from this host before ``until``."""
        async with self._transactions.single() as conn:
            await conn.execute(
                update(crawl_hosts)
                .where(
                    *_this(crawl_id, host),
                    (crawl_hosts.c.next_fetch_at.is_(None)) | (crawl_hosts.c.next_fetch_at < until),
                )
                .values(next_fetch_at=until)
            )

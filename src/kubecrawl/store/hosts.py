"""Host politeness in SQL (``crawl_hosts``, one row per crawl and host): robots.txt fetched once per crawl, and
a spaced host (``politeness.delaySeconds``, Crawl-delay) taking one request at a time across every worker, the
next one ``spacing`` after the last one's answer, pushed back by a 429/503 Retry-After.

- One claimer per host at a time: ``INSERT … ON CONFLICT DO NOTHING RETURNING`` inserts the row for exactly one
  caller, who fetches robots.txt and marks it READY; the others read the row and wait for READY. The claim is a
  lease (``robots_claimed_until``): a conditional ``UPDATE … RETURNING`` hands a claim whose lease ran out (its
  worker was killed or hangs), or a READY result past ``robots_expires_at``, to exactly one next caller.
- Spacing: ``reserve_slot`` locks the row (``FOR UPDATE``; SQLite: the store's in-process lock); unless a turn
  holds the host (``turn_until`` not passed), it takes the later of now and ``next_fetch_at`` and holds the host
  until ``release_slot`` (or the hold's end). ``release_slot`` sets ``next_fetch_at`` to the spacing after the
  answer (a conditional ``CASE``: never shortening a pause) and ends the turn if it is still the caller's. Spacing
  from the answer, not from a reserved slot, is what makes it exact at the host: a request that reached the host
  late can never have the next one arrive closer than ``spacing`` after it.
- A pause never shortens an earlier, longer one (a conditional ``UPDATE``).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, and_, case, literal, or_, select, update

from kubecrawl.core.clock import utcnow
from kubecrawl.store.contract import HostState, HostTurn
from kubecrawl.store.dialects import Transactions, as_utc, dialect_insert
from kubecrawl.store.engines import SqlEngine
from kubecrawl.store.schema import crawl_hosts


def _this(crawl_id: str, host: str) -> tuple[ColumnElement[bool], ColumnElement[bool]]:
    return (crawl_hosts.c.crawl_id == crawl_id, crawl_hosts.c.host == host)


class SqlHostStore:
    def __init__(self, engine: SqlEngine, transactions: Transactions) -> None:
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

    async def reserve_slot(self, crawl_id: str, host: str, *, hold: timedelta) -> HostTurn | None:
        """The host's turn for one request (None while another request holds it); see store/contract.py."""
        now = utcnow()
        async with self._transactions.begin() as conn:
            row = (
                await conn.execute(
                    select(crawl_hosts.c.next_fetch_at, crawl_hosts.c.turn_until)
                    .where(*_this(crawl_id, host))
                    .with_for_update()
                )
            ).first()
            if row is None:  # no host state (robots.txt never claimed): nothing to space against
                return HostTurn(0.0, now + hold)
            held = as_utc(row.turn_until)
            if held is not None and held > now:
                return None
            start = max(now, as_utc(row.next_fetch_at) or now)
            turn = HostTurn((start - now).total_seconds(), start + hold)
            await conn.execute(update(crawl_hosts).where(*_this(crawl_id, host)).values(turn_until=turn.held_until))
        return turn

    async def release_slot(self, crawl_id: str, host: str, turn: HostTurn, spacing: float) -> None:
        at = utcnow() + timedelta(seconds=spacing)
        until = literal(at, crawl_hosts.c.next_fetch_at.type)
        next_fetch_at, turn_until = crawl_hosts.c.next_fetch_at, crawl_hosts.c.turn_until
        async with self._transactions.single() as conn:
            await conn.execute(
                update(crawl_hosts)
                .where(*_this(crawl_id, host))
                .values(
                    next_fetch_at=case((or_(next_fetch_at.is_(None), next_fetch_at < at), until), else_=next_fetch_at),
                    turn_until=case((turn_until == turn.held_until, None), else_=turn_until),
                )
            )

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

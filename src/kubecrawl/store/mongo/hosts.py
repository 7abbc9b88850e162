"""Host politeness on MongoDB (``crawl_hosts``, one document per crawl and host, unique): robots.txt fetched
once per crawl, a spaced host taking one request at a time across every worker (the next one ``spacing`` after the
last one's answer), pushed back by Retry-After.

- One claimer at a time: an upsert with ``$setOnInsert`` only; the caller whose upsert inserted the document claims
  it. The claim is a lease (``robots_claimed_until``): under the host's lease, a claim that ran out (its worker
  was killed or hangs), or a READY result past ``robots_expires_at``, is handed to exactly one next caller.
- Every other write holds the host's lease (``store/mongo/locking.py``; the SQL store locks the row): a turn
  is taken unless one holds the host (``turn_until`` not passed), from the later of now and ``next_fetch_at``;
  its release sets ``next_fetch_at`` to the spacing after the answer and ends the turn if it is still the
  caller's; a pause never shortens an earlier, longer one; robots.txt is marked READY. On FerretDB an update is
  a read and a write-back, so two unleased writers of one document could each undo the other's change. BSON
  times hold milliseconds: the times a turn writes are rounded up to one, so spacing is never cut short.
"""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from datetime import datetime, timedelta

from pymongo.errors import DuplicateKeyError

from kubecrawl.core.clock import utcnow
from kubecrawl.store.contract import HostState, HostTurn
from kubecrawl.store.mongo.database import Database, Document, wrapped
from kubecrawl.store.mongo.locking import Leases


def _claim_ended(doc: Document, now: datetime) -> bool:
    """The last claim's lease ran out while PENDING, or the READY result expired (as of ``now``)."""
    if doc["robots_state"] == "PENDING":
        claimed_until = doc.get("robots_claimed_until")
        return claimed_until is None or claimed_until < now
    expires_at = _expires_at(doc)
    return expires_at is not None and expires_at < now


def _up_to_ms(at: datetime) -> datetime:
    """``at`` as BSON stores it without moving it earlier: rounded up to the millisecond."""
    return at + timedelta(microseconds=-at.microsecond % 1000)


def _expires_at(doc: Document) -> datetime | None:
    expires_at: datetime | None = doc.get("robots_expires_at")
    microsecond = doc.get("robots_expires_us")
    if expires_at is None or microsecond is None:
        return expires_at
    return expires_at.replace(microsecond=int(microsecond))


class MongoHostStore:
    def __init__(self, db: Database, leases: Leases) -> None:
        self._hosts = db.crawl_hosts
        self._leases = leases

    def _lease(self, crawl_id: str, host: str) -> AbstractAsyncContextManager[object]:
        return self._leases.hold(f"host:{crawl_id}:{host}")

    async def claim_robots(
        self, crawl_id: str, host: str, *, lease: timedelta, now: datetime | None = None
    ) -> tuple[bool, HostState]:
        now = now or utcnow()
        until = now + lease
        where = {"crawl_id": crawl_id, "host": host}
        async with wrapped("claiming robots.txt"):
            try:
                claimed = await self._hosts.update_one(
                    where,
                    {"$setOnInsert": {"robots_state": "PENDING", "robots_claimed_until": until}},
                    upsert=True,
                )
                if claimed.upserted_id is not None:
                    return True, HostState("PENDING", None)
            except DuplicateKeyError:
                pass  # a concurrent claimer inserted it
            async with self._lease(crawl_id, host):
                doc = await self._hosts.find_one(where)
                if doc is not None and _claim_ended(doc, now):
                    await self._hosts.update_one(
                        where,
                        {"$set": {"robots_state": "PENDING", "robots_claimed_until": until, "robots_expires_at": None}},
                    )
                    return True, HostState("PENDING", None)
        if doc is None:  # the crawl was deleted meanwhile
            return False, HostState("PENDING", None)
        return False, HostState(doc["robots_state"], doc.get("robots_txt"), _expires_at(doc))

    async def set_robots(
        self,
        crawl_id: str,
        host: str,
        robots_txt: str | None,
        crawl_delay: float | None,
        *,
        expires_at: datetime | None = None,
    ) -> None:
        async with wrapped("storing robots.txt"), self._lease(crawl_id, host):
            await self._hosts.update_one(
                {"crawl_id": crawl_id, "host": host},
                {
                    "$set": {
                        "robots_state": "READY",
                        "robots_txt": robots_txt,
                        "crawl_delay": crawl_delay,
                        "robots_claimed_until": None,
                        "robots_expires_at": expires_at,
                        # BSON times hold milliseconds: the rest, so the expiry read back is the one given
                        "robots_expires_us": None if expires_at is None else expires_at.microsecond,
                    }
                },
            )

    async def reserve_slot(self, crawl_id: str, host: str, *, hold: timedelta) -> HostTurn | None:
        where = {"crawl_id": crawl_id, "host": host}
        async with wrapped("taking a host's turn"), self._lease(crawl_id, host):
            now = utcnow()
            doc = await self._hosts.find_one(where, {"next_fetch_at": 1, "turn_until": 1})
            if doc is None:  # no host state (never claimed): nothing to space against
                return HostTurn(0.0, _up_to_ms(now + hold))
            held = doc.get("turn_until")
            if held is not None and held > now:
                return None
            start: datetime = max(now, doc.get("next_fetch_at") or now)
            turn = HostTurn((start - now).total_seconds(), _up_to_ms(start + hold))
            await self._hosts.update_one(where, {"$set": {"turn_until": turn.held_until}})
        return turn

    async def release_slot(self, crawl_id: str, host: str, turn: HostTurn, spacing: float) -> None:
        where = {"crawl_id": crawl_id, "host": host}
        async with wrapped("ending a host's turn"), self._lease(crawl_id, host):
            until = _up_to_ms(utcnow() + timedelta(seconds=spacing))
            doc = await self._hosts.find_one(where, {"next_fetch_at": 1, "turn_until": 1})
            if doc is None:
                return
            changes: dict[str, datetime | None] = {}
            current = doc.get("next_fetch_at")
            if current is None or current < until:
                changes["next_fetch_at"] = until
            if doc.get("turn_until") == turn.held_until:
                changes["turn_until"] = None
            if changes:
                await self._hosts.update_one(where, {"$set": changes})

    async def pause(self, crawl_id: str, host: str, until: datetime) -> None:
        async with wrapped("pausing a host"), self._lease(crawl_id, host):
            await self._hosts.update_one(
                {
                    "crawl_id": crawl_id,
                    "host": host,
                    "$or": [{"next_fetch_at": None}, {"next_fetch_at": {"$lt": until}}],
                },
                {"$set": {"next_fetch_at": until}},
            )

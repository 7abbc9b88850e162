"""Leases on MongoDB: a lock is a document inserted under a unique ``_id``; the one caller whose insert succeeds
holds it until it deletes it (or its lease runs out).

Why there are locks at all: FerretDB v1 (the MongoDB server the tests run on, and one teams run in production)
applies an update by reading the document and writing it back, without a transaction around the two (FerretDB
issue #3040), so concurrent ``$inc``s lose increments and two conditional updates of one document can both
match (measured here: 50 concurrent ``$inc`` of one field left it at 16). An insert into a unique index is
atomic on it, as on MongoDB. So every step that reads and writes several documents of one crawl (the SQL
store's ``SELECT … FOR UPDATE`` on the crawl's row) holds the crawl's lease, and an "exactly one caller" choice
that a conditional update makes on MongoDB is a ``try_hold`` here.

Within one process the callers of one key queue on an ``asyncio.Lock`` before they ask the database: a worker's
page batches and other steps of one crawl wait their turn in memory instead of polling the lock document
(before 2026-12-06 each of 16 pages in flight polled it, each failed poll an insert and a delete, with a back-off
of up to 50 ms that often outlasted the holder: docs/crawls.md, "On MongoDB").

A lease runs out after ``LEASE_SECONDS``: a process killed while holding one (SIGKILL, an OOM kill) blocks the
crawl that long, then the next caller takes it over and is told so (``Lease.broken``) to repair what the dead
holder may have left half done.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta

from pymongo.errors import DuplicateKeyError

from kubecrawl.core.clock import utcnow
from kubecrawl.core.errors import StoreUnavailable
from kubecrawl.store.mongo.database import Database

# Longer than any step held under a lease (a few round trips); short enough that a killed holder's crawl moves
# on soon after (the worker's redelivered messages wait for it).
LEASE_SECONDS = 10.0
# Waiting for a held lease: first 2 ms (a step takes a few), doubling to 50 ms between attempts.
_FIRST_WAIT, _LONGEST_WAIT = 0.002, 0.05
# A caller gives up (StoreUnavailable: retried later) after waiting this long: two leases' worth.
_GIVE_UP_SECONDS = 2 * LEASE_SECONDS


@dataclass(slots=True)
class _Queue:
    """This process's callers of one key: they take the database lease one at a time."""

    lock: asyncio.Lock
    users: int = 0


@dataclass(slots=True)
class Lease:
    key: str
    broken: bool = False  # taken over from a holder whose lease ran out


class Leases:
    def __init__(self, db: Database) -> None:
        self._locks = db.kubecrawl_locks
        self._queues: dict[str, _Queue] = {}

    async def _insert(self, key: str, token: str) -> bool:
        try:
            await self._locks.insert_one(
                {"_id": key, "token": token, "expires_at": utcnow() + timedelta(seconds=LEASE_SECONDS)}
            )
        except DuplicateKeyError:
            return False
        return True

    async def _break_expired(self, key: str) -> bool:
        """Delete the lease if it ran out; True if this call deleted it."""
        result = await self._locks.delete_one({"_id": key, "expires_at": {"$lt": utcnow()}})
        return bool(result.deleted_count)

    async def _release(self, key: str, token: str) -> None:
        await self._locks.delete_one({"_id": key, "token": token})

    @asynccontextmanager
    async def try_hold(self, key: str) -> AsyncIterator[bool]:
        """Hold ``key`` if nobody does (True), else go on at once (False)."""
        token = uuid.uuid4().hex
        held = await self._insert(key, token) or (await self._break_expired(key) and await self._insert(key, token))
        try:
            yield held
        finally:
            if held:
                await self._release(key, token)

    @asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[Lease]:
        """Hold ``key``, waiting for its holder (or for its lease to run out): first behind this process's other
        callers of the key, then for the database lease."""
        queue = self._queues.get(key)
        if queue is None:
            queue = self._queues[key] = _Queue(asyncio.Lock())
        queue.users += 1
        try:
            deadline = asyncio.get_running_loop().time() + _GIVE_UP_SECONDS
            try:
                async with asyncio.timeout_at(deadline):
                    await queue.lock.acquire()
            except TimeoutError:
                raise StoreUnavailable(f"lock {key} held in this process for over {_GIVE_UP_SECONDS:.0f} s") from None
            try:
                async with self._held(key, deadline) as lease:
                    yield lease
            finally:
                queue.lock.release()
        finally:
            queue.users -= 1
            if not queue.users:
                del self._queues[key]

    @asynccontextmanager
    async def _held(self, key: str, deadline: float) -> AsyncIterator[Lease]:
        token = uuid.uuid4().hex
        lease = Lease(key)
        wait = _FIRST_WAIT
        while not await self._insert(key, token):
            if await self._break_expired(key):
                lease.broken = True
                continue
            if asyncio.get_running_loop().time() > deadline:
                raise StoreUnavailable(f"lock {key} held for over {_GIVE_UP_SECONDS:.0f} s")
            await asyncio.sleep(wait)
            wait = min(wait * 2, _LONGEST_WAIT)
        try:
            yield lease
        finally:
            await self._release(key, token)

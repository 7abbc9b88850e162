"""``page_metadata`` on MongoDB: one document per normalised URL (unique index on ``url``), every write one
conditional single-document operation.

- A miss is an upsert with ``$setOnInsert`` only: the one caller whose upsert inserted publishes (a concurrent
  upsert that loses the race on the unique index gets ``DuplicateKeyError``: not the inserter).
- A pending fetch is ``processing.pending`` (SQL compares ``queued_at`` with ``fetched_at``; FerretDB has no
  ``$expr`` to compare two fields): true from a request until its result (or a permanent failure) is written.
- "A stored result keeps its status" (COMPLETED, FAILED_PERMANENT never move back): a status change is an update
  conditional on the status not being final, and the same update without the status for a final document (SQL
  does it with a ``CASE``; FerretDB has no pipeline update). Each of the two is conditional on the document's
  current state, so however requests, redeliveries and late messages interleave, a document never moves back.
- ``processing.last_request_id`` names the request the document is for; a release undoes only its own request.
- On FerretDB an update is a read and a write-back (``store/mongo/locking.py``), so the worker's writes of a
  URL (an attempt, its result or failure) hold the URL's lease and a refresh only tries it: a late message can
  then not write back an older document over a result. The API's request writes take no lease (a batch would
  pay a round trip per URL): what one of them overwrites is refetched, since each is followed by a message.
- A worker's claim (``begin_attempt``) has a lease, ``lease_until`` (the contract's; not the write leases above):
  ``expire_leases`` and ``requeue_lost`` find their candidates, then change each under the URL's write lease
  with an update conditional on what found it, so each record goes to exactly one sweeper.
- Response headers are stored as ``[{"name", "value"}]``: FerretDB stores no array of arrays (the record's
  ``[[name, value]]``).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from pymongo import ReturnDocument, UpdateOne
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import BulkWriteError, DuplicateKeyError

from kubecrawl.core.clock import utcnow
from kubecrawl.core.models import FetchedPage, PageMetadataRecord, PageStatus
from kubecrawl.core.settings import DEFAULT_LEASE
from kubecrawl.store.contract import LEASE_EXPIRED, LEASE_EXPIRED_RECORD, AttemptStart, Request
from kubecrawl.store.mongo.database import Database, Document, duplicates, wrapped
from kubecrawl.store.mongo.locking import Leases

S = PageStatus
_FINAL = [S.COMPLETED.value, S.FAILED_PERMANENT.value]
_NOT_FINAL = {"$nin": _FINAL}
_IS_FINAL = {"$in": _FINAL}


def _requeue(request_id: str, now: datetime) -> Document:
    """A new fetch pending for ``request_id`` (the status is set apart: unless final)."""
    return {
        "queued_at": now,
        "updated_at": now,
        "attempts": 0,
        "processing.last_request_id": request_id,
        "processing.pending": True,
    }


def _queued(url: str, request_id: str, now: datetime) -> Document:
    return {
        "url": url,
        "status": S.QUEUED.value,
        "attempts": 0,
        "created_at": now,
        "updated_at": now,
        "queued_at": now,
        "processing": {"last_request_id": request_id, "pending": True},
    }


def _lease(url: str) -> str:
    """The URL's lease: the worker's writes hold it, a refresh tries it (``store/mongo/locking.py``)."""
    return f"page:{url}"


def _record(doc: Document) -> PageMetadataRecord:
    processing = doc.get("processing") or {}
    data = {key: value for key, value in doc.items() if key not in ("_id", "processing", "lease_until")}
    data["last_request_id"] = processing.get("last_request_id")
    if data.get("response_headers") is not None:
        data["response_headers"] = [[header["name"], header["value"]] for header in data["response_headers"]]
    return PageMetadataRecord.model_validate(data)


async def _set_status_unless_final(
    pm: AsyncCollection[Document], where: Document, values: Document, status: PageStatus
) -> bool:
    """Update the matching document: ``values`` and ``status``, or ``values`` alone if its status is final.

    Two conditional updates (no pipeline update on FerretDB); at most one matches. True if one did."""
    moved = await pm.update_one({**where, "status": _NOT_FINAL}, {"$set": {**values, "status": status.value}})
    if moved.matched_count:
        return True
    kept = await pm.update_one({**where, "status": _IS_FINAL}, {"$set": values})
    return bool(kept.matched_count)


class MongoRequestWriter:
    """``RequestWriter`` on MongoDB: a batch is one unordered bulk write (plus one for URLs with a stored
    result); the client's pool is shared, so there is no connection to hold."""

    def __init__(self, pm: AsyncCollection[Document]) -> None:
        self._pm = pm
        self.closed = False

    async def record(self, batch: Sequence[Request]) -> None:
        latest = dict(batch)  # url → the batch's last request id for it
        now = utcnow()
        urls = list(latest)
        try:
            async with wrapped(f"recording {len(latest)} requests"):
                upserts = [
                    UpdateOne(
                        {"url": url, "status": _NOT_FINAL},
                        {
                            "$set": {**_requeue(rid, now), "status": S.QUEUED.value},
                            "$setOnInsert": {"created_at": now},
                        },
                        upsert=True,
                    )
                    for url, rid in latest.items()
                ]
                stored: list[str] = []
                try:
                    await self._pm.bulk_write(upserts, ordered=False)
                except BulkWriteError as exc:
                    # An upsert whose filter missed a stored result (final status) hit the unique url index.
                    stored = [urls[index] for index in sorted(duplicates(exc))]
                for url in stored:
                    await _set_status_unless_final(self._pm, {"url": url}, _requeue(latest[url], now), S.QUEUED)
        except BaseException:
            self.closed = True
            raise

    async def close(self) -> None:
        self.closed = True


class MongoPageMetadataStore:
    """``PageMetadataStore`` (store/contract.py) on MongoDB."""

    def __init__(self, db: Database, *, lease: timedelta = DEFAULT_LEASE) -> None:
        self._pm = db.page_metadata
        self._leases = Leases(db)
        self._claim = lease  # how long a worker's attempt holds the record (``lease_until``)

    async def get(self, url: str) -> PageMetadataRecord | None:
        async with wrapped("reading a page"):
            doc = await self._pm.find_one({"url": url})
        return None if doc is None else _record(doc)

    async def enqueue_if_missing(self, url: str, request_id: str) -> bool:
        async with wrapped("enqueueing a page"):
            try:
                result = await self._pm.update_one(
                    {"url": url}, {"$setOnInsert": _queued(url, request_id, utcnow())}, upsert=True
                )
            except DuplicateKeyError:
                return False  # a concurrent caller inserted it
        return result.upserted_id is not None

    async def request_refresh(
        self, url: str, request_id: str, *, stale_before: datetime | None, stuck_before: datetime
    ) -> bool:
        # A pending fetch whose message was lost must not leave the record QUEUED forever (as in SQL).
        conditions: list[Document] = [
            {
                "processing.pending": True,
                "queued_at": {"$lt": stuck_before},
                "status": {"$ne": S.IN_PROGRESS.value},
            }
        ]
        if stale_before is not None:
            conditions.append({"processing.pending": {"$ne": True}, "fetched_at": {"$lt": stale_before}})
        where = {"url": url, "$or": conditions}
        # One refresher at a time (FerretDB's conditional update is no atomic test-and-set): a caller who finds
        # another refreshing the URL, or a worker writing its result, leaves it be.
        async with wrapped("refreshing a page"), self._leases.try_hold(_lease(url)) as held:
            if not held:
                return False
            return await _set_status_unless_final(self._pm, where, _requeue(request_id, utcnow()), S.QUEUED)

    async def request_writer(self) -> MongoRequestWriter:
        return MongoRequestWriter(self._pm)

    async def release_request(self, url: str, request_id: str) -> None:
        await self.release_requests([(url, request_id)])

    async def release_requests(self, batch: Sequence[Request]) -> None:
        """Undo requests whose publish failed, each only while the document is still that request's: a never
        fetched one goes, a fetched one is no longer pending."""
        now = utcnow()
        async with wrapped(f"releasing {len(batch)} requests"):
            for url, rid in batch:
                mine = {"url": url, "processing.last_request_id": rid}
                await self._pm.delete_one({**mine, "fetched_at": None, "status": S.QUEUED.value})
                await self._pm.update_one(
                    {**mine, "fetched_at": {"$ne": None}},
                    {"$set": {"processing.pending": False, "updated_at": now}},
                )

    async def begin_attempt(self, url: str, request_id: str) -> AttemptStart:
        now = utcnow()
        async with wrapped("starting an attempt"), self._leases.hold(_lease(url)):
            doc = await self._pm.find_one({"url": url}, {"processing": 1, "fetched_at": 1})
            if (
                doc is not None
                and doc.get("processing", {}).get("last_request_id") == request_id
                and doc.get("fetched_at") is not None
                and not doc["processing"].get("pending")
            ):
                return AttemptStart(attempts=0, already_done=True)
            try:
                after = await self._pm.find_one_and_update(
                    {"url": url, "status": _NOT_FINAL},
                    {
                        "$set": {"status": S.IN_PROGRESS.value, "updated_at": now, "lease_until": now + self._claim},
                        "$inc": {"attempts": 1},
                        "$setOnInsert": {
                            "created_at": now,
                            "queued_at": now,
                            "processing": {"last_request_id": request_id, "pending": True},
                        },
                    },
                    upsert=True,
                    return_document=ReturnDocument.AFTER,
                )
            except DuplicateKeyError:  # a stored result: it keeps its status, the attempt is counted
                after = await self._pm.find_one_and_update(
                    {"url": url},
                    {"$set": {"updated_at": now, "lease_until": now + self._claim}, "$inc": {"attempts": 1}},
                    return_document=ReturnDocument.AFTER,
                )
        return AttemptStart(attempts=int(after["attempts"]) if after else 1, already_done=False)

    async def complete(self, url: str, request_id: str, page: FetchedPage) -> None:
        now = utcnow()
        values: Document = page.model_dump()
        values["response_headers"] = [{"name": name, "value": value} for name, value in page.response_headers]
        values.update(
            {
                "status": S.COMPLETED.value,
                "last_error": None,
                "last_error_code": None,
                "processing.last_request_id": request_id,
                "processing.pending": False,
                "updated_at": now,
                "fetched_at": now,
                "lease_until": None,
            }
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
        values: Document = {
            "last_error": detail[:4000],
            "last_error_code": code,
            "last_failure": detail[:4000],
            "last_failure_code": code,
            "processing.last_request_id": request_id,
            "updated_at": now,
            "lease_until": None,
        }
        if http_status is not None:
            values["http_status"] = http_status
        async with wrapped("recording a failure"), self._leases.hold(_lease(url)):
            if permanent:
                values.update({"status": S.FAILED_PERMANENT.value, "fetched_at": now, "processing.pending": False})
                await self._pm.update_one({"url": url}, {"$set": values})
            else:
                # A failed refresh keeps a readable stored result; a first fetch shows FAILED_RETRYABLE.
                await _set_status_unless_final(self._pm, {"url": url}, values, S.FAILED_RETRYABLE)

    async def expire_leases(self, now: datetime) -> list[Request]:
        """Claims whose lease ended before ``now`` go back to QUEUED with ``lease_expired`` (a stored result keeps
        its status); each is returned to the one sweeper whose conditional update, under the URL's write lease,
        changed it (a URL another sweeper or its worker is writing is left to them)."""
        detail = LEASE_EXPIRED_RECORD
        values: Document = {
            "lease_until": None,
            "last_error": detail,
            "last_error_code": LEASE_EXPIRED,
            "last_failure": detail,
            "last_failure_code": LEASE_EXPIRED,
            "updated_at": now,
        }
        expired: list[Request] = []
        async with wrapped("expiring leases"):
            found = await self._pm.find({"lease_until": {"$lt": now}}, {"url": 1}).to_list(None)
            for doc in found:
                url = doc["url"]
                async with self._leases.try_hold(_lease(url)) as held:
                    if not held:
                        continue
                    where = {"url": url, "lease_until": {"$lt": now}}
                    current = await self._pm.find_one(where, {"processing": 1})
                    if current is None or not await _set_status_unless_final(self._pm, where, values, S.QUEUED):
                        continue
                expired.append((url, current["processing"]["last_request_id"]))
        return expired

    async def requeue_lost(self, older_than: timedelta) -> list[Request]:
        """Waiting records (QUEUED, FAILED_RETRYABLE), unclaimed and untouched for ``older_than``: touched and
        returned for re-publishing, each to the one sweeper whose conditional update (under the URL's write
        lease) touched it."""
        now = utcnow()
        lost: Document = {
            "status": {"$in": [S.QUEUED.value, S.FAILED_RETRYABLE.value]},
            "updated_at": {"$lt": now - older_than},
            "lease_until": None,
        }
        handed: list[Request] = []
        async with wrapped("finding lost records"):
            found = await self._pm.find(lost, {"url": 1}).to_list(None)
            for doc in found:
                url = doc["url"]
                async with self._leases.try_hold(_lease(url)) as held:
                    if not held:
                        continue
                    touched = await self._pm.find_one_and_update(
                        {**lost, "url": url}, {"$set": {"updated_at": now}}, return_document=ReturnDocument.AFTER
                    )
                if touched is not None:
                    handed.append((url, touched["processing"]["last_request_id"]))
        return handed

    async def _upsert(self, url: str, values: dict[str, Any], now: datetime) -> None:
        update = {"$set": values, "$setOnInsert": {"created_at": now, "queued_at": now, "attempts": 1}}
        async with wrapped("storing a page"), self._leases.hold(_lease(url)):
            try:
                await self._pm.update_one({"url": url}, update, upsert=True)
            except DuplicateKeyError:  # inserted concurrently: now it exists
                await self._pm.update_one({"url": url}, {"$set": values})

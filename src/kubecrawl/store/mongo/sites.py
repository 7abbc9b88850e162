"""``sites`` on MongoDB: one document per (namespace, name), unique; a put is one upsert."""

from __future__ import annotations

from typing import Any

from pymongo import ASCENDING, ReturnDocument
from pymongo.errors import DuplicateKeyError

from kubecrawl.core.clock import utcnow
from kubecrawl.store.mongo.database import Database, Document, wrapped


def _site(doc: Document) -> dict[str, Any]:
    return {key: doc[key] for key in ("namespace", "name", "spec", "created_at", "updated_at")}


class MongoSiteStore:
    """``SiteStore`` (store/contract.py) on MongoDB."""

    def __init__(self, db: Database) -> None:
        self._sites = db.sites

    async def put(self, namespace: str, name: str, spec: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        now = utcnow()
        where = {"namespace": namespace, "name": name}
        update = {"$set": {"spec": spec, "updated_at": now}, "$setOnInsert": {"created_at": now}}
        async with wrapped("storing a site"):
            try:
                before = await self._sites.find_one_and_update(
                    where, update, upsert=True, return_document=ReturnDocument.BEFORE
                )
            except DuplicateKeyError:  # created concurrently: this put replaces it
                before = await self._sites.find_one_and_update(where, update)
            after = await self._sites.find_one(where)
        assert after is not None
        return _site(after), before is None

    async def get(self, namespace: str, name: str) -> dict[str, Any] | None:
        async with wrapped("reading a site"):
            doc = await self._sites.find_one({"namespace": namespace, "name": name})
        return None if doc is None else _site(doc)

    async def delete(self, namespace: str, name: str) -> bool:
        async with wrapped("deleting a site"):
            result = await self._sites.delete_one({"namespace": namespace, "name": name})
        return bool(result.deleted_count)

    async def list(self) -> list[dict[str, Any]]:
        async with wrapped("listing sites"):
            docs = await self._sites.find().sort([("namespace", ASCENDING), ("name", ASCENDING)]).to_list(None)
        return [_site(doc) for doc in docs]

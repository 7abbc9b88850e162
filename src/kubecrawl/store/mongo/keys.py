"""API keys in MongoDB (``api_keys``: ``_id`` the name, a unique index on the key's SHA-256); what a key is:
``store/apikeys.py``."""

from __future__ import annotations

from typing import Any

from pymongo import ASCENDING
from pymongo.errors import DuplicateKeyError

from kubecrawl.core.clock import utcnow
from kubecrawl.core.errors import Conflict, NotFound
from kubecrawl.store.apikeys import NO_QUOTAS, ApiKey, KeyQuotas, key_hash, new_key
from kubecrawl.store.mongo.database import Database, wrapped


def _key(doc: dict[str, Any]) -> ApiKey:
    namespaces = doc.get("namespaces")
    return ApiKey(
        name=doc["_id"],
        scopes=frozenset(doc["scopes"]),
        namespaces=frozenset(namespaces) if namespaces is not None else None,
        created_at=doc["created_at"],
        revoked_at=doc.get("revoked_at"),
        max_concurrent_crawls=doc.get("max_concurrent_crawls"),
        max_pages=doc.get("max_pages"),
    )


class MongoKeyStore:
    """``ApiKeyStore`` (store/apikeys.py) on MongoDB."""

    def __init__(self, db: Database) -> None:
        self._keys = db.api_keys

    async def create(
        self, name: str, scopes: list[str], namespaces: list[str] | None, quotas: KeyQuotas = NO_QUOTAS
    ) -> str:
        key = new_key()
        doc = {
            "_id": name,
            "key_hash": key_hash(key),
            "scopes": sorted(set(scopes)),
            "namespaces": sorted(set(namespaces)) if namespaces else None,
            "max_concurrent_crawls": quotas.max_concurrent_crawls,
            "max_pages": quotas.max_pages,
            "created_at": utcnow(),
            "revoked_at": None,
        }
        async with wrapped("creating a key"):
            try:
                await self._keys.insert_one(doc)
            except DuplicateKeyError as exc:
                raise Conflict(f"a key named {name!r} exists", code="key_exists") from exc
        return key

    async def list(self) -> list[ApiKey]:
        async with wrapped("listing keys"):
            docs = await self._keys.find().sort("_id", ASCENDING).to_list(None)
        return [_key(doc) for doc in docs]

    async def revoke(self, name: str) -> None:
        async with wrapped("revoking a key"):
            result = await self._keys.update_one({"_id": name, "revoked_at": None}, {"$set": {"revoked_at": utcnow()}})
        if result.matched_count == 0:
            raise NotFound(f"no active key named {name!r}", code="key_not_found")

    async def verify(self, key: str) -> ApiKey | None:
        async with wrapped("verifying a key"):
            doc = await self._keys.find_one({"key_hash": key_hash(key), "revoked_at": None})
        return None if doc is None else _key(doc)

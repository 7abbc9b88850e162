"""API keys in SQL (``api_keys``): made, listed, revoked (``kubecrawl keys``) and looked up by the API
(``api/auth.py``). What a key is, whatever the database, is ``store/apikeys.py``."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError

from kubecrawl.core.clock import utcnow
from kubecrawl.core.errors import Conflict, NotFound
from kubecrawl.store.apikeys import KEY_PREFIX, NO_QUOTAS, SCOPES, ApiKey, KeyQuotas, key_hash, new_key
from kubecrawl.store.dialects import as_utc
from kubecrawl.store.engines import SqlEngine
from kubecrawl.store.schema import api_keys

__all__ = ["KEY_PREFIX", "SCOPES", "ApiKey", "KeyStore", "key_hash"]


def _key(row: Any) -> ApiKey:
    return ApiKey(
        name=row.name,
        scopes=frozenset(row.scopes),
        namespaces=frozenset(row.namespaces) if row.namespaces is not None else None,
        created_at=as_utc(row.created_at) or row.created_at,
        revoked_at=as_utc(row.revoked_at),
        max_concurrent_crawls=row.max_concurrent_crawls,
        max_pages=row.max_pages,
    )


class KeyStore:
    def __init__(self, engine: SqlEngine) -> None:
        self._engine = engine

    async def create(
        self, name: str, scopes: list[str], namespaces: list[str] | None, quotas: KeyQuotas = NO_QUOTAS
    ) -> str:
        """Make a key and return it (the only time it is seen); ``Conflict`` if the name is taken."""
        key = new_key()
        try:
            async with self._engine.begin() as conn:
                await conn.execute(
                    api_keys.insert().values(
                        name=name,
                        key_hash=key_hash(key),
                        scopes=sorted(set(scopes)),
                        namespaces=sorted(set(namespaces)) if namespaces else None,
                        max_concurrent_crawls=quotas.max_concurrent_crawls,
                        max_pages=quotas.max_pages,
                        created_at=utcnow(),
                    )
                )
        except IntegrityError as exc:
            raise Conflict(f"a key named {name!r} exists", code="key_exists") from exc
        return key

    async def list(self) -> list[ApiKey]:
        async with self._engine.connect() as conn:
            rows = (await conn.execute(select(api_keys).order_by(api_keys.c.name))).all()
        return [_key(row) for row in rows]

    async def revoke(self, name: str) -> None:
        async with self._engine.begin() as conn:
            result = await conn.execute(
                update(api_keys)
                .where(api_keys.c.name == name, api_keys.c.revoked_at.is_(None))
                .values(revoked_at=utcnow())
            )
        if result.rowcount == 0:
            raise NotFound(f"no active key named {name!r}", code="key_not_found")

    async def verify(self, key: str) -> ApiKey | None:
        """The active key ``key`` is, or ``None``."""
        async with self._engine.connect() as conn:
            row = (
                await conn.execute(
                    select(api_keys).where(api_keys.c.key_hash == key_hash(key), api_keys.c.revoked_at.is_(None))
                )
            ).first()
        return _key(row) if row is not None else None

"""API keys: made, listed, revoked (``kubecrawl keys``) and looked up by the API (``api/auth.py``).

A key is ``kc_`` and 43 URL-safe characters (256 random bits). Only its SHA-256 is stored: the table authenticates
nothing by itself. A key is shown once, when it is made.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from kubecrawl.core.clock import utcnow
from kubecrawl.core.errors import Conflict, NotFound
from kubecrawl.store.dialects import as_utc
from kubecrawl.store.schema import api_keys

SCOPES = ("read", "write", "admin")
KEY_PREFIX = "kc_"


def key_hash(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


@dataclass(frozen=True, slots=True)
class ApiKey:
    name: str
    scopes: frozenset[str]
    namespaces: frozenset[str] | None  # None: every namespace
    created_at: datetime
    revoked_at: datetime | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "scopes": sorted(self.scopes),
            "namespaces": sorted(self.namespaces) if self.namespaces is not None else None,
            "created_at": self.created_at.isoformat(),
            "revoked_at": self.revoked_at.isoformat() if self.revoked_at else None,
        }


def _key(row: Any) -> ApiKey:
    return ApiKey(
        name=row.name,
        scopes=frozenset(row.scopes),
        namespaces=frozenset(row.namespaces) if row.namespaces is not None else None,
        created_at=as_utc(row.created_at) or row.created_at,
        revoked_at=as_utc(row.revoked_at),
    )


class KeyStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def create(self, name: str, scopes: list[str], namespaces: list[str] | None) -> str:
        """Make a key and return it (the only time it is seen); ``Conflict`` if the name is taken."""
        key = KEY_PREFIX + secrets.token_urlsafe(32)
        try:
            async with self._engine.begin() as conn:
                await conn.execute(
                    api_keys.insert().values(
                        name=name,
                        key_hash=key_hash(key),
                        scopes=sorted(set(scopes)),
                        namespaces=sorted(set(namespaces)) if namespaces else None,
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

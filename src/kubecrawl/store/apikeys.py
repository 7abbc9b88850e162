"""API keys, whatever the database: what a key is and what a key store does (``kubecrawl keys``, ``api/auth.py``).

A key is ``kc_`` and 43 URL-safe characters (256 random bits). Only its SHA-256 is stored: the table (or
collection) authenticates nothing by itself. A key is shown once, when it is made. ``store/keys.py`` keeps keys in
SQL, ``store/mongo/keys.py`` in MongoDB; ``store/opening.py`` hands out the database's one.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

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
    # The key's own crawl quotas (docs/security.md, "Crawl quotas"); None: the API's settings.
    max_concurrent_crawls: int | None = None
    max_pages: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "scopes": sorted(self.scopes),
            "namespaces": sorted(self.namespaces) if self.namespaces is not None else None,
            "created_at": self.created_at.isoformat(),
            "revoked_at": self.revoked_at.isoformat() if self.revoked_at else None,
            "max_concurrent_crawls": self.max_concurrent_crawls,
            "max_pages": self.max_pages,
        }


def new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


@dataclass(frozen=True, slots=True)
class KeyQuotas:
    """A key's own crawl quotas; None: the API's settings (``KUBECRAWL_AUTH_MAX_CONCURRENT_CRAWLS``,
    ``KUBECRAWL_AUTH_MAX_PAGES``)."""

    max_concurrent_crawls: int | None = None
    max_pages: int | None = None


NO_QUOTAS = KeyQuotas()


class ApiKeyStore(Protocol):
    async def create(
        self, name: str, scopes: list[str], namespaces: list[str] | None, quotas: KeyQuotas = NO_QUOTAS
    ) -> str:
        """Make a key and return it (the only time it is seen); ``Conflict`` if the name is taken."""
        ...

    async def list(self) -> list[ApiKey]: ...

    async def revoke(self, name: str) -> None:
        """``NotFound`` unless an active key has that name."""
        ...

    async def verify(self, key: str) -> ApiKey | None:
        """The active key ``key`` is, or ``None``."""
        ...

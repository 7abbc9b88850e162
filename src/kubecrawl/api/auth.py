"""API authentication with API keys: ``Authorization: Bearer <key>`` on every route but ``/health/*`` (and, by
setting, ``/metrics``), when ``KUBECRAWL_AUTH=api_keys``.

A plain ASGI middleware between ``ObservingMiddleware`` and the body limit, so an unauthenticated client is
answered before any body is read. It decides from the method and the path alone (``required``), so a new route
is covered the day it is added: anything not listed needs ``admin``. Answers: 401 ``unauthenticated`` with
``WWW-Authenticate: Bearer`` when the token is missing, unknown or revoked; 403 ``forbidden`` when the key lacks
the scope, or the namespace (``/sites/{namespace}/…``; crawls are checked against their site's namespace by
``routes/crawls.py``, which reads the identity from ``scope["state"]["identity"]``).

Scopes: ``read`` (GET of sites, crawls, events), ``write`` (metadata, both verbs since ``GET /metadata``
enqueues on a miss; triggering and cancelling crawls), ``admin`` (sites, and anything else); ``admin`` implies
the others, ``write`` implies ``read``. Verified keys are remembered ``auth_cache_seconds`` (10 s): a revoked key
stops working within that time, and ``POST /metadata`` does not pay a database round trip per request.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass

import orjson
from starlette.types import ASGIApp, Receive, Scope, Send

from kubecrawl.store.apikeys import ApiKey, ApiKeyStore

_IMPLIED = {"read": {"read"}, "write": {"read", "write"}, "admin": {"read", "write", "admin"}}
_SITE = re.compile(r"^/sites/([^/]+)(?:/|$)")
_PUBLIC_PREFIXES = ("/health/",)
# Verified keys remembered at most: far more than the keys anyone makes; refused tokens are never remembered.
_CACHE_SIZE = 1024


@dataclass(frozen=True, slots=True)
class Identity:
    name: str
    scopes: frozenset[str]
    namespaces: frozenset[str] | None

    def may(self, scope: str) -> bool:
        return any(scope in _IMPLIED[held] for held in self.scopes if held in _IMPLIED)

    def may_see(self, namespace: str) -> bool:
        return self.namespaces is None or namespace in self.namespaces


# (method or "*", path pattern) → scope, first match wins; a route not listed needs admin.
_RULES: tuple[tuple[str, re.Pattern[str], str], ...] = (
    ("*", re.compile(r"^/metadata$"), "write"),  # GET too: it enqueues a fetch on a miss
    ("GET", re.compile(r"^/crawls/"), "read"),
    ("*", re.compile(r"^/crawls/"), "write"),
    ("GET", re.compile(r"^/sites(/|$)"), "read"),
    ("POST", re.compile(r"^/sites/[^/]+/[^/]+/crawls$"), "write"),
    ("GET", re.compile(r"^/(docs|redoc|openapi\.json|docs/oauth2-redirect|metrics)$"), "read"),
)


def required(method: str, path: str, *, metrics_public: bool) -> str | None:
    """The scope a request needs, ``None`` for public routes."""
    if path.startswith(_PUBLIC_PREFIXES) or (path == "/metrics" and metrics_public):
        return None
    verb = "GET" if method == "HEAD" else method
    return next((scope for m, pattern, scope in _RULES if m in ("*", verb) and pattern.match(path)), "admin")


def _namespace_refused(identity: Identity, path: str) -> bool:
    """A namespaced key on a route of another namespace, or on one with none (but metadata and crawls, whose
    namespace ``routes/crawls.py`` checks against the crawl's site)."""
    if identity.namespaces is None:
        return False
    site = _SITE.match(path)
    if site is None:
        return not (path == "/metadata" or path.startswith("/crawls/"))
    return not identity.may_see(site.group(1))


class AuthMiddleware:
    def __init__(self, app: ASGIApp, *, keys: ApiKeyStore, cache_seconds: float, metrics_public: bool) -> None:
        self.app = app
        self._keys = keys
        self._cache_seconds = cache_seconds
        self._metrics_public = metrics_public
        self._cache: dict[str, tuple[float, Identity]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        needed = required(scope["method"], scope["path"], metrics_public=self._metrics_public)
        if needed is None:
            await self.app(scope, receive, send)
            return
        identity = await self._identify(_bearer(scope))
        if identity is None:
            await _answer(send, 401, "unauthenticated", "a valid API key is required: Authorization: Bearer <key>")
            return
        if not identity.may(needed):
            await _answer(send, 403, "forbidden", f"key {identity.name!r} lacks the {needed!r} scope")
            return
        if _namespace_refused(identity, scope["path"]):
            await _answer(send, 403, "forbidden", f"key {identity.name!r} is limited to other namespaces")
            return
        scope.setdefault("state", {})["identity"] = identity
        await self.app(scope, receive, send)

    async def _identify(self, token: str | None) -> Identity | None:
        if not token:
            return None
        now = time.monotonic()
        cached = self._cache.get(token)
        if cached is not None and cached[0] > now:
            return cached[1]
        key = await self._keys.verify(token)
        if key is None:
            self._cache.pop(token, None)
            return None
        identity = _identity(key)
        if self._cache_seconds > 0:
            if len(self._cache) >= _CACHE_SIZE:
                self._cache.clear()
            self._cache[token] = (now + self._cache_seconds, identity)
        return identity


def _identity(key: ApiKey) -> Identity:
    return Identity(key.name, key.scopes, key.namespaces)


def _bearer(scope: Scope) -> str | None:
    for name, value in scope.get("headers", []):
        if name == b"authorization":
            kind, _, token = value.decode("latin-1").partition(" ")
            return token.strip() if kind.lower() == "bearer" and 0 < len(token) <= 256 else None
    return None


async def _answer(send: Send, status: int, code: str, detail: str) -> None:
    headers = [(b"content-type", b"application/json")]
    if status == 401:
        headers.append((b"www-authenticate", b'Bearer realm="kubecrawl"'))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": orjson.dumps({"code": code, "detail": detail})})

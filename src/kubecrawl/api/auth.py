"""API authentication: ``Authorization: Bearer <token>`` on every route but ``/health/*`` (and, by setting,
``/metrics``), with API keys (``KUBECRAWL_AUTH=api_keys``), Kubernetes ServiceAccount tokens (``kubernetes``,
checked by ``api/reviews.py``) or both (``api_keys+kubernetes``; a token starting ``kc_`` is a key).

A plain ASGI middleware between ``ObservingMiddleware`` and the body limit, so an unauthenticated client is
answered before any body is read. It decides from the method and the path alone (``api/access.py``), so a new
route is covered the day it is added: anything not listed needs ``admin`` (or its non-resource URL in RBAC).
Answers: 401 ``unauthenticated`` with ``WWW-Authenticate: Bearer`` when the token is missing, unknown, revoked or
not issued for our audience; 403 ``forbidden`` when the identity may not (a key's scope or namespaces, a
SubjectAccessReview's answer); 503 ``auth_unavailable`` when the Kubernetes API cannot be asked. Crawl routes name
no site: ``routes/crawls.py`` asks :func:`may_reach` once it has read the crawl (``scope["state"]``).

Key scopes: ``read`` (GET of sites, crawls, events), ``write`` (metadata, both verbs since ``GET /metadata``
enqueues on a miss; triggering and cancelling crawls), ``admin`` (sites, and anything else); ``admin`` implies
the others, ``write`` implies ``read``. Verified keys are remembered ``auth_cache_seconds`` (10 s): a revoked key
stops working within that time, and ``POST /metadata`` does not pay a database round trip per request.
With ``KUBECRAWL_AUTH_RATE_LIMIT_PER_SECOND`` each caller gets a token bucket (:class:`RateLimiter`): beyond it,
429 ``rate_limited`` with ``Retry-After``, so one key cannot take the API from the others.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Protocol

import orjson
from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from kubecrawl.api.access import READ_CRAWLS, Access, crawl_access, request_access
from kubecrawl.api.caching import TtlCache
from kubecrawl.api.reviews import KubernetesReviews, KubernetesUser, ReviewUnavailable
from kubecrawl.store.apikeys import ApiKeyStore

_IMPLIED = {"read": {"read"}, "write": {"read", "write"}, "admin": {"read", "write", "admin"}}
# Verified keys remembered at most: far more than the keys anyone makes; refused keys are never remembered.
_CACHE_SIZE = 1024
KEY_PREFIX = "kc_"


class Principal(Protocol):
    @property
    def name(self) -> str: ...

    async def permits(self, access: Access) -> bool: ...


@dataclass(frozen=True, slots=True)
class Identity:
    """An API key's holder."""

    name: str
    scopes: frozenset[str]
    namespaces: frozenset[str] | None
    # The key's own crawl quotas (``kubecrawl keys create --max-…``); None: the API's settings.
    max_concurrent_crawls: int | None = None
    max_pages: int | None = None

    def may(self, scope: str) -> bool:
        return any(scope in _IMPLIED[held] for held in self.scopes if held in _IMPLIED)

    def may_see(self, namespace: str) -> bool:
        return self.namespaces is None or namespace in self.namespaces

    async def permits(self, access: Access) -> bool:
        """The scope, then the namespace: a namespaced key reaches its namespaces' sites and crawls and
        ``/metadata`` (which has none), nothing cluster-wide."""
        if not self.may(access.scope):
            return False
        if self.namespaces is None or access.deferred or access.resource == "metadata":
            return True
        return access.resource is not None and bool(access.namespace) and self.may_see(access.namespace)


@dataclass(frozen=True, slots=True)
class KubernetesIdentity:
    """A Kubernetes user (a ServiceAccount) vouched for by a TokenReview; RBAC decides each request."""

    user: KubernetesUser
    reviews: KubernetesReviews

    @property
    def name(self) -> str:
        return self.user.name

    async def permits(self, access: Access) -> bool:
        return access.deferred or await self.reviews.allowed(self.user, access)


async def may_reach(request: Request, site: str, *, read: bool = False) -> bool:
    """Whether the caller may do what it asks (a crawl route, deferred by the middleware) on ``site`` (NS/NAME),
    or with ``read`` whether it may read the site's crawls; True when authentication is off."""
    state: dict[str, Any] = request.scope.get("state", {})
    principal: Principal | None = state.get("identity")
    access: Access | None = state.get("access")
    if principal is None or access is None:
        return True
    return await principal.permits(crawl_access(READ_CRAWLS if read else access, site))


class RateLimiter:
    """A token bucket per caller (an API key's name, a ServiceAccount's user name): ``rate`` requests a second on
    average, bursts of ``burst``. Callers are authenticated, so the buckets are bounded by the keys and accounts
    that exist; an idle bucket is full again and is forgotten (at most ``_CACHE_SIZE`` kept)."""

    def __init__(self, *, rate: float, burst: int) -> None:
        self._rate = rate
        self._burst = float(burst)
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # caller → (tokens, at)

    def wait(self, caller: str) -> float:
        """0 when the request may go now (and spend a token), else the seconds until it may."""
        now = time.monotonic()
        tokens, at = self._buckets.pop(caller, (self._burst, now))
        tokens = min(self._burst, tokens + (now - at) * self._rate)
        if len(self._buckets) >= _CACHE_SIZE:
            self._buckets.popitem(last=False)
        if tokens < 1:
            self._buckets[caller] = (tokens, now)
            return (1 - tokens) / self._rate
        self._buckets[caller] = (tokens - 1, now)
        return 0.0


class AuthMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        *,
        keys: ApiKeyStore | None,
        kubernetes: bool,
        cache_seconds: float,
        metrics_public: bool,
        limiter: RateLimiter | None = None,
    ) -> None:
        """``kubernetes``: tokens are reviewed by the app's ``state.reviews`` (connected in its lifespan).
        ``limiter``: requests per caller, 429 ``rate_limited`` with ``Retry-After`` beyond it."""
        self.app = app
        self._keys = keys
        self._kubernetes = kubernetes
        self._metrics_public = metrics_public
        self._limiter = limiter
        self._cache: TtlCache[str, Identity] = TtlCache(size=_CACHE_SIZE, seconds=cache_seconds)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        access = request_access(scope["method"], scope["path"], metrics_public=self._metrics_public)
        if access is None:
            await self.app(scope, receive, send)
            return
        try:
            principal = await self._identify(scope, _bearer(scope))
            if principal is None:
                await _answer(send, 401, "unauthenticated", "a valid token is required: Authorization: Bearer <token>")
                return
            if not await principal.permits(access):
                await _answer(send, 403, "forbidden", f"{principal.name!r} may not {_describe(access)}")
                return
        except ReviewUnavailable as exc:
            await _answer(send, 503, exc.code, exc.detail)
            return
        if self._limiter is not None and (wait := self._limiter.wait(principal.name)) > 0:
            await _answer(
                send, 429, "rate_limited", f"{principal.name!r} sends too many requests", retry_after=math.ceil(wait)
            )
            return
        state = scope.setdefault("state", {})
        state["identity"] = principal
        state["access"] = access
        await self.app(scope, receive, send)

    async def _identify(self, scope: Scope, token: str | None) -> Principal | None:
        if not token:
            return None
        if self._keys is not None and (token.startswith(KEY_PREFIX) or not self._kubernetes):
            return await self._key_holder(self._keys, token)
        if self._kubernetes:
            reviews: KubernetesReviews = scope["app"].state.reviews
            user = await reviews.authenticate(token)
            return None if user is None else KubernetesIdentity(user, reviews)
        return None

    async def _key_holder(self, keys: ApiKeyStore, token: str) -> Identity | None:
        if (cached := self._cache.get(token)) is not None:
            return cached
        key = await keys.verify(token)
        if key is None:
            return None
        identity = Identity(key.name, key.scopes, key.namespaces, key.max_concurrent_crawls, key.max_pages)
        self._cache.put(token, identity)
        return identity


def _describe(access: Access) -> str:
    if access.resource is None:
        return f"{access.verb} {access.path} (needs the {access.scope!r} scope)"
    what = f"{access.resource}/{access.subresource}" if access.subresource else access.resource
    where = f" {access.name!r} in namespace {access.namespace!r}" if access.namespace else ""
    return f"{access.verb} {what}{where} (needs the {access.scope!r} scope with an API key)"


def _bearer(scope: Scope) -> str | None:
    for name, value in scope.get("headers", []):
        if name == b"authorization":
            kind, _, token = value.decode("latin-1").partition(" ")
            # A projected ServiceAccount token is a JWT of about 1 KiB; 8 KiB leaves room for long claims.
            return token.strip() if kind.lower() == "bearer" and 0 < len(token) <= 8192 else None
    return None


async def _answer(send: Send, status: int, code: str, detail: str, *, retry_after: int = 1) -> None:
    headers = [(b"content-type", b"application/json")]
    if status == 401:
        headers.append((b"www-authenticate", b'Bearer realm="kubecrawl"'))
    elif status in (429, 503):
        headers.append((b"retry-after", str(retry_after).encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": orjson.dumps({"code": code, "detail": detail})})

"""Kubernetes identities for the API: a bearer token is checked with a TokenReview (audience-bound: only tokens
issued for ``KUBECRAWL_AUTH_AUDIENCE``, ``kubecrawl`` by default, pass) and each request is decided with a
SubjectAccessReview of the attributes ``api/access.py`` derives from it, so who may do what is ordinary RBAC.

The API's own identity needs ``create`` on ``tokenreviews`` and ``subjectaccessreviews`` (the built-in ClusterRole
``system:auth-delegator``). It logs in like the operator: the in-cluster ServiceAccount, else ``KUBECONFIG``.

Both answers are remembered ``cache_seconds`` (10 s by default) in bounded caches (``api/caching.py``): a token
or a RoleBinding removed stops working within that time, and a burst of ``POST /metadata`` costs two reviews per
caller, not per request. Refused tokens are remembered too (a client retrying with a bad token does not make the
API server work for each retry); distinct tokens cost at most ``CACHE_SIZE`` entries. The Kubernetes API being
unreachable is :class:`ReviewUnavailable` (503), never a 401: the caller's token may be fine.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from kubernetes_asyncio import client, config
from kubernetes_asyncio.client.exceptions import ApiException
from kubernetes_asyncio.config.config_exception import ConfigException

from kubecrawl.api.access import GROUP, Access
from kubecrawl.api.caching import TtlCache
from kubecrawl.core.errors import TransientError
from kubecrawl.core.logging import get_logger

log = get_logger(__name__)
# Reviews remembered at most (each a few hundred bytes): far more than the callers of one installation.
CACHE_SIZE = 4096
# A review is one small request to the API server; 5 s means it is in trouble, and the client gets a 503.
REVIEW_TIMEOUT_SECONDS = 5.0


class ReviewUnavailable(TransientError):
    code = "auth_unavailable"


@dataclass(frozen=True, slots=True)
class KubernetesUser:
    """The user a TokenReview vouched for (``system:serviceaccount:NS:NAME`` for a ServiceAccount)."""

    name: str
    uid: str
    groups: tuple[str, ...]
    extra: tuple[tuple[str, tuple[str, ...]], ...] = field(default=())


class KubernetesReviews:
    def __init__(self, api: client.ApiClient, *, audience: str, cache_seconds: float) -> None:
        self._api = api
        self._audience = audience
        self._users: TtlCache[bytes, KubernetesUser | None] = TtlCache(size=CACHE_SIZE, seconds=cache_seconds)
        self._decisions: TtlCache[tuple[str, tuple[str, ...], Access], bool] = TtlCache(
            size=CACHE_SIZE, seconds=cache_seconds
        )

    @classmethod
    async def connect(cls, *, audience: str, cache_seconds: float) -> KubernetesReviews:
        configuration = client.Configuration()
        try:
            config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
        except ConfigException:
            await config.load_kube_config(client_configuration=configuration)
        return cls(client.ApiClient(configuration), audience=audience, cache_seconds=cache_seconds)

    async def aclose(self) -> None:
        await self._api.close()

    async def authenticate(self, token: str) -> KubernetesUser | None:
        """The token's user, or None when the API server does not vouch for it for our audience."""
        key = hashlib.sha256(token.encode()).digest()
        if key in self._users:  # refused tokens are remembered as None
            return self._users.get(key)
        body: Any = {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenReview",
            "spec": {"token": token, "audiences": [self._audience]},
        }
        answer = await _post(
            "TokenReview",
            lambda: client.AuthenticationV1Api(self._api).create_token_review(
                body, _preload_content=False, _request_timeout=REVIEW_TIMEOUT_SECONDS
            ),
        )
        status = answer.get("status") or {}
        user = None
        # The API server may ignore the requested audiences (an authenticator that has none): check them here.
        if status.get("authenticated") and self._audience in (status.get("audiences") or []):
            raw = status.get("user") or {}
            user = KubernetesUser(
                name=str(raw.get("username", "")),
                uid=str(raw.get("uid", "")),
                groups=tuple(raw.get("groups") or ()),
                extra=tuple(sorted((k, tuple(v)) for k, v in (raw.get("extra") or {}).items())),
            )
        else:
            log.info("token_refused", reason=status.get("error") or "not authenticated for the audience")
        self._users.put(key, user)
        return user

    async def allowed(self, user: KubernetesUser, access: Access) -> bool:
        """A SubjectAccessReview of ``access`` for ``user``."""
        key = (user.name, user.groups, access)
        if (cached := self._decisions.get(key)) is not None:
            return cached
        spec: dict[str, Any] = {"user": user.name, "uid": user.uid, "groups": list(user.groups)}
        if user.extra:
            spec["extra"] = {k: list(v) for k, v in user.extra}
        if access.resource is None:
            spec["nonResourceAttributes"] = {"path": access.path, "verb": access.verb}
        else:
            spec["resourceAttributes"] = {
                "group": GROUP,
                "resource": access.resource,
                "subresource": access.subresource,
                "verb": access.verb,
                "namespace": access.namespace,
                "name": access.name,
            }
        body: Any = {"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview", "spec": spec}
        answer = await _post(
            "SubjectAccessReview",
            lambda: client.AuthorizationV1Api(self._api).create_subject_access_review(
                body, _preload_content=False, _request_timeout=REVIEW_TIMEOUT_SECONDS
            ),
        )
        decision = bool((answer.get("status") or {}).get("allowed"))
        self._decisions.put(key, decision)
        return decision


async def _post(kind: str, request: Callable[[], Awaitable[Any]]) -> dict[str, Any]:
    """The created review's JSON; anything but a 201 is :class:`ReviewUnavailable`."""
    try:
        response = await request()
        try:
            raw = await response.read()
        finally:
            response.release()
    except (aiohttp.ClientError, TimeoutError, ApiException) as exc:
        raise ReviewUnavailable(f"{kind}: {exc.__class__.__name__}: {exc}") from exc
    if response.status != 201:  # 403: the API's identity lacks system:auth-delegator
        raise ReviewUnavailable(f"{kind}: HTTP {response.status}: {raw[:200].decode(errors='replace')}")
    body = json.loads(raw)
    return body if isinstance(body, dict) else {}

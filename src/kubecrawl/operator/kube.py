"""The Kubernetes API edge both resources' clients share (``crawlsite.cronjobs``, ``crawlsite.patching``,
``pool.workloads``): log-in, one raw call, and the error wrapping. The API group itself is in ``group.py``.

Responses are read as JSON (``_preload_content=False``), never deserialised into kubernetes_asyncio's model
classes: that round trip (JSON → models → dicts) costs milliseconds of CPU per call, which dominated the
operator's CPU in bench/operator_apply.py.

Errors: 400/409/422 (the API server refused the object) are the caller's to name (:func:`failure` takes the
class); everything else (5xx, 429, 401/403 while RBAC is being fixed or a namespace is terminating, connection
errors) → :class:`KubernetesUnavailable`, retried later. ``pool.workloads`` still goes through
kubernetes_asyncio's typed calls, whose errors :func:`unavailable` wraps the same way.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import aiohttp
from kubernetes_asyncio import client, config
from kubernetes_asyncio.client.rest import ApiException
from kubernetes_asyncio.config.config_exception import ConfigException

from kubecrawl.core.errors import PermanentError, TransientError

REJECTED = frozenset({400, 409, 422})
MERGE_PATCH = "application/merge-patch+json"
APPLY_PATCH = "application/apply-patch+yaml"
# What a request fails with when the API server cannot be reached or does not answer in time.
TRANSPORT_ERRORS = (aiohttp.ClientError, TimeoutError)


class KubernetesUnavailable(TransientError):
    code = "kubernetes_unavailable"


async def connect() -> client.ApiClient:
    """An API client from the in-cluster service account, else from KUBECONFIG (how kopf logs in, too)."""
    configuration = client.Configuration()
    try:
        config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
    except ConfigException:
        await config.load_kube_config(client_configuration=configuration)
    return client.ApiClient(configuration)


async def call(action: str, request: Callable[[], Awaitable[Any]]) -> tuple[int, dict[str, Any]]:
    """(HTTP status, JSON body) of one raw call; transport failures become :class:`KubernetesUnavailable`."""
    try:
        response = await request()
        try:
            raw = await response.read()
        finally:
            response.release()
    except TRANSPORT_ERRORS as exc:
        raise KubernetesUnavailable(f"{action}: {exc.__class__.__name__}: {exc}") from exc
    try:
        body = json.loads(raw) if raw else {}
    except ValueError:
        body = {"message": raw[:200].decode(errors="replace")}
    return int(response.status), body if isinstance(body, dict) else {}


def apply_options(field_manager: str) -> dict[str, Any]:
    """Keyword arguments that make a kubernetes_asyncio ``patch_*`` call a forced server-side apply (creates or
    patches in one call; ``force`` takes over fields another manager set) answered as raw JSON for :func:`call`.
    (Passed as a dict: the client's stubs do not declare ``_content_type``.)"""
    return {"field_manager": field_manager, "force": True, "_content_type": APPLY_PATCH, "_preload_content": False}


def failure(action: str, status: int, body: dict[str, Any], rejected: type[PermanentError]) -> Exception:
    """The error for a non-2xx answer: ``rejected`` for 400/409/422, :class:`KubernetesUnavailable` otherwise."""
    message = f"{action}: {body.get('message') or f'HTTP {status}'}"
    if status in REJECTED:
        return rejected(message)
    return KubernetesUnavailable(message, code=f"kubernetes_http_{status}")


def unavailable(exc: Exception, action: str) -> KubernetesUnavailable:
    """:class:`KubernetesUnavailable` for a typed call's :class:`ApiException` or transport error."""
    if isinstance(exc, ApiException):
        return KubernetesUnavailable(f"{action}: HTTP {exc.status} {exc.reason}", code=f"kubernetes_http_{exc.status}")
    return KubernetesUnavailable(f"{action}: {exc.__class__.__name__}: {exc}")


EVENT_SOURCE = "kubecrawl-operator"
_INSTANCE = socket.gethostname()
_EVENT_MESSAGE_LIMIT = 1024


def event_body(involved: dict[str, str], *, type_: str, reason: str, message: str) -> dict[str, Any]:
    """A core/v1 Event about one of our objects (what ``kubectl describe`` lists), posted by our own client:
    ``kopf.event`` only works inside kopf's per-object handler context. ``involved``: apiVersion, kind,
    namespace, name and uid of the object."""
    stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "metadata": {"generateName": f"{involved['name']}.", "namespace": involved["namespace"]},
        "involvedObject": involved,
        "type": type_,
        "reason": reason,
        "message": message[:_EVENT_MESSAGE_LIMIT],
        "source": {"component": EVENT_SOURCE},
        "reportingComponent": EVENT_SOURCE,
        "reportingInstance": _INSTANCE,
        "firstTimestamp": stamp,
        "lastTimestamp": stamp,
        "count": 1,
    }

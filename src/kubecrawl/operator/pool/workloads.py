"""The Kubernetes side of a CrawlWorkerPool (kubernetes_asyncio, plain dicts): the Deployment's ``/scale``
subresource, its pods' deletion costs, autoscalers that would conflict, and the pool's own status.

Replicas are written through ``/scale`` (what ``kubectl scale`` and an HPA use: it needs no rights on the whole
Deployment), with the resourceVersion that was read, so a concurrent change (a user's ``kubectl scale``) makes the
write fail with 409 (:class:`ScaleConflict`) instead of being overwritten; the next poll decides again.
Errors are wrapped here: 404 on reads → ``None``; everything else → :class:`KubernetesUnavailable`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kubernetes_asyncio import client
from kubernetes_asyncio.client.rest import ApiException

from kubecrawl.core.logging import get_logger
from kubecrawl.operator import failures
from kubecrawl.operator.conditions import Event
from kubecrawl.operator.group import API_VERSION, GROUP, VERSION
from kubecrawl.operator.kube import MERGE_PATCH, TRANSPORT_ERRORS, KubernetesUnavailable, event_body, unavailable
from kubecrawl.operator.pool.conflicts import scaled_objects_of
from kubecrawl.operator.pool.costs import DELETION_COST_ANNOTATION

log = get_logger(__name__)
PLURAL = "crawlworkerpools"
KIND = "CrawlWorkerPool"


@dataclass(frozen=True, slots=True)
class PoolObject:
    """The pool an Event is about."""

    namespace: str
    name: str
    uid: str


class ScaleConflict(KubernetesUnavailable):
    code = "scale_conflict"


@dataclass(frozen=True, slots=True)
class Scale:
    replicas: int
    selector: str  # the Deployment's label selector, serialised (``app=worker,tier=x``)
    resource_version: str


@dataclass(frozen=True, slots=True)
class Pod:
    name: str
    deletion_cost: str | None


class Workloads:
    """What the scaler reads and writes through the Kubernetes API."""

    def __init__(self, api_client: client.ApiClient) -> None:
        self._client = api_client
        self._apps = client.AppsV1Api(api_client)
        self._core = client.CoreV1Api(api_client)
        self._custom = client.CustomObjectsApi(api_client)

    def _plain(self, obj: Any) -> dict[str, Any]:
        plain: dict[str, Any] = self._client.sanitize_for_serialization(obj)
        return plain

    async def read_scale(self, namespace: str, deployment: str) -> Scale | None:
        action = f"reading the scale of Deployment {namespace}/{deployment}"
        try:
            scale = await self._apps.read_namespaced_deployment_scale(deployment, namespace)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise unavailable(exc, action) from exc
        except TRANSPORT_ERRORS as exc:
            raise unavailable(exc, action) from exc
        return Scale(
            replicas=int(scale.spec.replicas or 0),
            selector=str(scale.status.selector or ""),
            resource_version=str(scale.metadata.resource_version),
        )

    async def write_replicas(self, namespace: str, deployment: str, replicas: int, resource_version: str) -> None:
        action = f"scaling Deployment {namespace}/{deployment} to {replicas}"
        body = {"metadata": {"resourceVersion": resource_version}, "spec": {"replicas": replicas}}
        try:
            await self._apps.patch_namespaced_deployment_scale(deployment, namespace, body, _content_type=MERGE_PATCH)  # type: ignore[call-arg]  # the stub omits _content_type; the client honours it
        except ApiException as exc:
            if exc.status == 409:
                raise ScaleConflict(f"{action}: the scale changed since it was read") from exc
            raise unavailable(exc, action) from exc
        except TRANSPORT_ERRORS as exc:
            raise unavailable(exc, action) from exc

    async def pods(self, namespace: str, selector: str) -> list[Pod]:
        """The Deployment's pods that are not being deleted already."""
        action = f"listing pods {selector!r} in {namespace}"
        try:
            listed = await self._core.list_namespaced_pod(namespace, label_selector=selector)
        except (ApiException, *TRANSPORT_ERRORS) as exc:
            raise unavailable(exc, action) from exc
        return [
            Pod(pod.metadata.name, (pod.metadata.annotations or {}).get(DELETION_COST_ANNOTATION))
            for pod in listed.items
            if pod.metadata.deletion_timestamp is None
        ]

    async def set_deletion_costs(self, namespace: str, costs: dict[str, str]) -> None:
        for pod, cost in costs.items():
            body = {"metadata": {"annotations": {DELETION_COST_ANNOTATION: cost}}}
            try:
                await self._core.patch_namespaced_pod(pod, namespace, body)
            except ApiException as exc:
                if exc.status == 404:  # deleted meanwhile: nothing to rank
                    continue
                raise unavailable(exc, f"annotating pod {namespace}/{pod}") from exc
            except TRANSPORT_ERRORS as exc:
                raise unavailable(exc, f"annotating pod {namespace}/{pod}") from exc

    async def scaled_objects(self, namespace: str, deployment: str) -> list[str]:
        """KEDA ScaledObjects targeting the Deployment (no KEDA CRD installed: none). HPAs come from the operator's
        index of them (``conflicts.py``)."""
        try:
            scaled: dict[str, Any] = await self._custom.list_namespaced_custom_object(
                "keda.sh", "v1alpha1", namespace, "scaledobjects"
            )
        except ApiException as exc:
            if exc.status != 404:  # 404: KEDA is not installed
                raise unavailable(exc, f"listing ScaledObjects in {namespace}") from exc
            scaled = {"items": []}
        except TRANSPORT_ERRORS as exc:
            raise unavailable(exc, f"listing ScaledObjects in {namespace}") from exc
        return scaled_objects_of(deployment, scaled.get("items") or [])

    async def post_event(self, pool: PoolObject, event: Event) -> None:
        """A core/v1 Event on the pool (what ``kubectl describe crawlworkerpool`` lists). Best effort: an Event that
        cannot be posted is logged and counted, never fails the poll."""
        involved = {
            "apiVersion": API_VERSION,
            "kind": KIND,
            "namespace": pool.namespace,
            "name": pool.name,
            "uid": pool.uid,
        }
        body = event_body(involved, type_=event.type, reason=event.reason, message=event.message)
        try:
            await self._core.create_namespaced_event(pool.namespace, body)  # type: ignore[arg-type]  # a dict is sent as is
        except (ApiException, *TRANSPORT_ERRORS) as exc:
            failures.count(failures.POOL, failures.EVENT_FAILED)
            log.warning("pool_event_failed", pool=f"{pool.namespace}/{pool.name}", reason=event.reason, error=str(exc))

    async def patch_status(self, namespace: str, name: str, patch: dict[str, Any]) -> bool:
        """Merge-patch the pool's status; False when the pool is gone."""
        try:
            await self._custom.patch_namespaced_custom_object_status(
                GROUP, VERSION, namespace, PLURAL, name, {"status": patch}, _content_type=MERGE_PATCH
            )  # type: ignore[call-arg]
        except ApiException as exc:
            if exc.status == 404:
                return False
            raise unavailable(exc, f"patching the status of CrawlWorkerPool {namespace}/{name}") from exc
        except TRANSPORT_ERRORS as exc:
            raise unavailable(exc, f"patching the status of CrawlWorkerPool {namespace}/{name}") from exc
        return True

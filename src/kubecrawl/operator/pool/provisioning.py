"""The Helm chart's own CrawlWorkerPool, kept in place by the operator (``KUBECRAWL_OPERATOR_WORKER_POOL``).

Why not helm: the chart installs the CRDs as release objects (so ``helm upgrade`` applies a changed schema), and
helm maps a release's whole manifest to API resources before it creates anything, with discovery it does not
refresh afterwards (helm 3.22: only its ``crds/`` directory resets the mapper; a post-install hook fails the same
"no matches for kind" way). A CrawlWorkerPool in the same release as its CRD therefore cannot be created by one
``helm install`` on a fresh cluster; the operator, which starts once the CRDs exist, creates it instead.

At start-up: one server-side apply of the pool (field manager :data:`FIELD_MANAGER`, forced: the chart's values
are the source of truth for the fields they set), owned by the worker Deployment it scales: an ownerReference
with the Deployment's uid (read from its ``/scale``, which the operator may read anyway), so ``helm uninstall``,
which deletes the Deployment, has the garbage collector delete the pool too. No ``blockOwnerDeletion``: that
would need rights on the Deployment's finalizers. With the chart's pool off (``spec`` None), a pool of that name
that carries our ``managed-by`` label is deleted; any other is left alone.
"""

from __future__ import annotations

from typing import Any, Literal

from kubernetes_asyncio import client

from kubecrawl.core.errors import PermanentError, TransientError
from kubecrawl.operator.group import API_VERSION, GROUP, VERSION
from kubecrawl.operator.kube import apply_options, call, failure
from kubecrawl.operator.pool.workloads import KIND, PLURAL
from kubecrawl.operator.settings import ChartPool

FIELD_MANAGER = "kubecrawl-operator-chart-pool"
MANAGED_BY = "kubecrawl-operator"


class PoolRejected(PermanentError):
    code = "worker_pool_rejected"


class DeploymentMissing(TransientError):
    code = "worker_deployment_missing"


def pool_manifest(pool: ChartPool, deployment_uid: str) -> dict[str, Any]:
    """The CrawlWorkerPool to apply: the chart's spec, labels, and the worker Deployment as its owner."""
    assert pool.spec is not None
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {
            "name": pool.name,
            "namespace": pool.namespace,
            "labels": {**pool.labels, "app.kubernetes.io/managed-by": MANAGED_BY},
            "ownerReferences": [
                {
                    "apiVersion": "apps/v1",
                    "kind": "Deployment",
                    "name": pool.spec["deploymentName"],
                    "uid": deployment_uid,
                }
            ],
        },
        "spec": pool.spec,
    }


class ChartPools:
    """Reads the worker Deployment's uid and applies or deletes the chart's pool."""

    def __init__(self, api_client: client.ApiClient) -> None:
        self._apps = client.AppsV1Api(api_client)
        self._custom = client.CustomObjectsApi(api_client)

    async def keep(self, pool: ChartPool) -> Literal["applied", "deleted", "absent"]:
        if pool.spec is None:
            return await self._remove(pool)
        deployment = pool.spec["deploymentName"]
        action = f"reading the scale of Deployment {pool.namespace}/{deployment}"
        status, scale = await call(
            action,
            lambda: self._apps.read_namespaced_deployment_scale(deployment, pool.namespace, _preload_content=False),
        )
        if status == 404:
            raise DeploymentMissing(f"{action}: not found (yet)")
        if status >= 300:
            raise failure(action, status, scale, PoolRejected)
        manifest = pool_manifest(pool, scale["metadata"]["uid"])
        action = f"applying CrawlWorkerPool {pool.namespace}/{pool.name}"
        status, body = await call(
            action,
            lambda: self._custom.patch_namespaced_custom_object(
                GROUP, VERSION, pool.namespace, PLURAL, pool.name, manifest, **apply_options(FIELD_MANAGER)
            ),
        )
        if status >= 300:
            raise failure(action, status, body, PoolRejected)
        return "applied"

    async def _remove(self, pool: ChartPool) -> Literal["deleted", "absent"]:
        action = f"reading CrawlWorkerPool {pool.namespace}/{pool.name}"
        status, body = await call(
            action,
            lambda: self._custom.get_namespaced_custom_object(
                GROUP, VERSION, pool.namespace, PLURAL, pool.name, _preload_content=False
            ),
        )
        if status == 404:
            return "absent"
        if status >= 300:
            raise failure(action, status, body, PoolRejected)
        if body["metadata"].get("labels", {}).get("app.kubernetes.io/managed-by") != MANAGED_BY:
            return "absent"  # a pool someone else made under that name: not ours to delete
        action = f"deleting CrawlWorkerPool {pool.namespace}/{pool.name}"
        options = client.V1DeleteOptions(preconditions=client.V1Preconditions(uid=body["metadata"]["uid"]))
        status, body = await call(
            action,
            lambda: self._custom.delete_namespaced_custom_object(
                GROUP, VERSION, pool.namespace, PLURAL, pool.name, body=options, _preload_content=False
            ),
        )
        if status in {404, 409}:
            return "absent"
        if status >= 300:
            raise failure(action, status, body, PoolRejected)
        return "deleted"

"""Reading, applying and deleting CronJobs through the Kubernetes API, as plain dicts (see ``kube``).

404 on read → ``None``; a CronJob the API server refuses (e.g. an unknown time zone) → :class:`CronJobRejected`;
the rest → :class:`~kubecrawl.operator.kube.KubernetesUnavailable`.
"""

from __future__ import annotations

from typing import Any

from kubernetes_asyncio import client

from kubecrawl.core.errors import PermanentError
from kubecrawl.operator.crawlsite.naming import FIELD_MANAGER
from kubecrawl.operator.kube import apply_options, call, failure


class CronJobRejected(PermanentError):
    code = "cronjob_rejected"


class CronJobs:
    """The operator's view of batch/v1 CronJobs."""

    def __init__(self, api_client: client.ApiClient) -> None:
        self._batch = client.BatchV1Api(api_client)

    async def get(self, namespace: str, name: str) -> dict[str, Any] | None:
        action = f"reading CronJob {namespace}/{name}"
        status, body = await call(
            action, lambda: self._batch.read_namespaced_cron_job(name, namespace, _preload_content=False)
        )
        if status == 404:
            return None
        if status >= 300:
            raise failure(action, status, body, CronJobRejected)
        return body

    async def apply(self, manifest: dict[str, Any]) -> dict[str, Any]:
        """Server-side apply (creates or patches in one call); ``force`` takes over fields another manager set
        on a CronJob we control (e.g. someone ran ``kubectl edit``): the CrawlSite is the source of truth."""
        meta = manifest["metadata"]
        action = f"applying CronJob {meta['namespace']}/{meta['name']}"
        status, body = await call(
            action,
            lambda: self._batch.patch_namespaced_cron_job(
                meta["name"], meta["namespace"], manifest, **apply_options(FIELD_MANAGER)
            ),
        )
        if status >= 300:
            raise failure(action, status, body, CronJobRejected)
        return body

    async def delete(self, namespace: str, name: str, uid: str) -> bool:
        """Delete the CronJob (its Jobs follow through garbage collection) if it is still the one with ``uid``."""
        action = f"deleting CronJob {namespace}/{name}"
        options = client.V1DeleteOptions(propagation_policy="Background", preconditions=client.V1Preconditions(uid=uid))
        status, body = await call(
            action,
            lambda: self._batch.delete_namespaced_cron_job(name, namespace, body=options, _preload_content=False),
        )
        if status in {404, 409}:  # gone already, or replaced by another object (the uid precondition failed)
            return False
        if status >= 300:
            raise failure(action, status, body, CronJobRejected)
        return True

"""Writes to CrawlSites outside kopf's handlers (the status refresher): merge patches of ``status`` and of the
resync annotation, as plain dicts (see ``kube``), and Events about them. A CrawlSite deleted meanwhile (404) is not
an error."""

from __future__ import annotations

from typing import Any

from kubernetes_asyncio import client

from kubecrawl.core.errors import PermanentError
from kubecrawl.core.logging import get_logger
from kubecrawl.operator import failures
from kubecrawl.operator.conditions import Event
from kubecrawl.operator.crawlsite.manifest import SiteRef
from kubecrawl.operator.crawlsite.naming import KIND, PLURAL, RESYNC_ANNOTATION
from kubecrawl.operator.group import API_VERSION, GROUP, VERSION
from kubecrawl.operator.kube import MERGE_PATCH, KubernetesUnavailable, call, event_body, failure

log = get_logger(__name__)


class CrawlSitePatchRejected(PermanentError):
    code = "crawlsite_patch_rejected"


class CrawlSites:
    def __init__(self, api_client: client.ApiClient) -> None:
        self._custom = client.CustomObjectsApi(api_client)
        self._core = client.CoreV1Api(api_client)

    async def post_event(self, site: SiteRef, event: Event) -> None:
        """An Event on the CrawlSite. Best effort: one that cannot be posted is logged and counted."""
        involved = {"apiVersion": API_VERSION, "kind": KIND, "namespace": site.namespace, "name": site.name}
        body = event_body({**involved, "uid": site.uid}, type_=event.type, reason=event.reason, message=event.message)
        action = f"posting an Event on CrawlSite {site.namespace}/{site.name}"
        try:
            status, answer = await call(
                action,
                lambda: self._core.create_namespaced_event(
                    site.namespace,
                    body,  # type: ignore[arg-type]  # a dict is sent as is
                    _preload_content=False,
                ),
            )
            error = None if status < 300 else str(failure(action, status, answer, CrawlSitePatchRejected))
        except KubernetesUnavailable as exc:
            error = exc.detail
        if error is not None:
            failures.count(failures.CRAWLSITE, failures.EVENT_FAILED)
            log.warning(
                "crawlsite_event_failed", site=f"{site.namespace}/{site.name}", reason=event.reason, error=error
            )

    async def patch_status(self, namespace: str, name: str, patch: dict[str, Any]) -> bool:
        """Merge-patch ``status``; False when the CrawlSite is gone."""
        action = f"patching the status of CrawlSite {namespace}/{name}"
        status, body = await call(
            action,
            lambda: self._custom.patch_namespaced_custom_object_status(  # type: ignore[call-arg]  # _content_type
                GROUP,
                VERSION,
                namespace,
                PLURAL,
                name,
                {"status": patch},
                _content_type=MERGE_PATCH,
                _preload_content=False,
            ),
        )
        return self._outcome(action, status, body)

    async def request_resync(self, namespace: str, name: str, reason: str) -> bool:
        """Ask kopf's handlers for a full reconciliation by setting the resync annotation; False when gone."""
        action = f"requesting a resync of CrawlSite {namespace}/{name}"
        patch = {"metadata": {"annotations": {RESYNC_ANNOTATION: reason}}}
        status, body = await call(
            action,
            lambda: self._custom.patch_namespaced_custom_object(  # type: ignore[call-arg]  # _content_type
                GROUP, VERSION, namespace, PLURAL, name, patch, _content_type=MERGE_PATCH, _preload_content=False
            ),
        )
        return self._outcome(action, status, body)

    @staticmethod
    def _outcome(action: str, status: int, body: dict[str, Any]) -> bool:
        if status == 404:
            return False
        if status >= 300:
            raise failure(action, status, body, CrawlSitePatchRejected)
        return True

"""Writes to CrawlSites outside kopf's handlers (the status refresher): merge patches of ``status`` and of the
resync annotation, as plain dicts (see ``kube``). A CrawlSite deleted meanwhile (404) is not an error."""

from __future__ import annotations

from typing import Any

from kubernetes_asyncio import client

from kubecrawl.core.errors import PermanentError
from kubecrawl.operator.crawlsite.naming import PLURAL, RESYNC_ANNOTATION
from kubecrawl.operator.group import GROUP, VERSION
from kubecrawl.operator.kube import MERGE_PATCH, call, failure


class CrawlSitePatchRejected(PermanentError):
    code = "crawlsite_patch_rejected"


class CrawlSites:
    def __init__(self, api_client: client.ApiClient) -> None:
        self._custom = client.CustomObjectsApi(api_client)

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

"""The operator process: kopf handler registration, kopf settings, and ``run`` (``kubecrawl operator``).

Settings are built by the CLI and passed in; the registry is built here (not at import time) so the timer
interval comes from those settings and nothing is global.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from typing import Any

import kopf

from kubecrawl.core.logging import get_logger
from kubecrawl.core.settings import Settings
from kubecrawl.operator import cronjobs, kube
from kubecrawl.operator.crawlsites import CrawlSites
from kubecrawl.operator.group import GROUP, VERSION
from kubecrawl.operator.handlers import crawlsites, is_deletion
from kubecrawl.operator.pool import handlers as pool_handlers
from kubecrawl.operator.reconcile.naming import PLURAL, RESYNC_ANNOTATION
from kubecrawl.operator.reconciling import Reconciler
from kubecrawl.operator.refreshing import StatusRefresher
from kubecrawl.operator.settings import OperatorSettings
from kubecrawl.operator.syncing import SiteApi

log = get_logger(__name__)
CRAWLSITES = (GROUP, VERSION, PLURAL)
RESYNC_FIELD = ("metadata", "annotations", RESYNC_ANNOTATION)


def create_registry(shared: Settings, options: OperatorSettings) -> kopf.OperatorRegistry:
    """Handlers and start-up for one operator process (``shared``: the settings every kubecrawl process reads)."""
    registry = kopf.OperatorRegistry()

    @kopf.on.startup(registry=registry)
    async def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **kwargs: Any) -> None:
        # Handler progress and the last-handled spec live in annotations under our own prefix: the status schema
        # is structural, so kopf's default `status.kopf` would be pruned by the API server.
        settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
        settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
            prefix=GROUP, key="last-handled-configuration"
        )
        # No handler needs a finalizer today (children go by garbage collection); if one ever does, it is ours.
        settings.persistence.finalizer = f"{GROUP}/finalizer"
        # The CRD is installed (chart or kubectl) before the operator starts: one discovery at start-up is enough,
        # and watching CRDs and namespaces would need cluster-wide rights the operator has no other use for.
        settings.scanning.disabled = True
        # Kubernetes Events only for what the handlers post on purpose (created/updated/deleted, failures).
        settings.posting.loggers = False
        # kopf logs every handler and timer success at INFO ("Timer 'refresh' succeeded." per site per interval);
        # our handlers log what they changed, with context, so keep only kopf's warnings and errors per object.
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
        # A watch is re-opened every 5 minutes (the API server's own default), so a silently dropped connection
        # is noticed; 10 s to connect, 30 s per ordinary request.
        settings.watching.server_timeout = 300
        settings.watching.client_timeout = 330
        settings.watching.connect_timeout = 10
        settings.networking.connect_timeout = 10
        settings.networking.request_timeout = 30
        # kopf waits this long after an object's last event before handling it, so a burst of events (ours: the
        # annotation and status patches of one reconciliation) is handled once. kopf's 0.1 s default is added to
        # every reaction; 20 ms still coalesces one burst and keeps apply → CronJob well under a second.
        settings.batching.batch_window = 0.02
        api_client = await kube.connect()
        memo.kube_client = api_client
        memo.reconciler = Reconciler(
            settings=options,
            cronjobs=cronjobs.CronJobs(api_client),
            api=SiteApi(shared.api_url, timeout=options.api_timeout_seconds, retry_delays=options.api_retry_delays),
            trigger_api_url=options.trigger_api_url or shared.api_url,
        )
        # kopf passes every index to start-up handlers by its id, as a live view.
        index = kwargs["crawlsite_index"]
        refresher = StatusRefresher(memo.reconciler, CrawlSites(api_client), index, options.status_interval_seconds)
        memo.refresher = asyncio.create_task(refresher.run(), name="crawlsite status refresher")
        log.info("operator_configured", api_url=shared.api_url, status_interval=options.status_interval_seconds)

    @kopf.on.cleanup(registry=registry)
    async def close(memo: kopf.Memo, **_: Any) -> None:
        memo.refresher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await memo.refresher
        await memo.reconciler.api.aclose()
        await memo.kube_client.close()

    # kopf logs in exactly as our own kubernetes_asyncio client does (kube.connect): the pod's service account
    # in a cluster, else KUBECONFIG. A bare registry has no login handler of its own.
    kopf.on.login(registry=registry)(kopf.login_via_async_client)
    # One reconciliation for every cause: it is idempotent and converges from any starting point. The resync
    # annotation is set by the status refresher when it finds drift (refreshing.py).
    kopf.on.create(*CRAWLSITES, registry=registry, id="reconcile")(crawlsites.reconcile_site)
    kopf.on.update(*CRAWLSITES, registry=registry, id="reconcile", field="spec")(crawlsites.reconcile_site)
    kopf.on.update(*CRAWLSITES, registry=registry, id="resync", field=RESYNC_FIELD)(crawlsites.reconcile_site)
    kopf.on.resume(*CRAWLSITES, registry=registry, id="reconcile")(crawlsites.reconcile_site)
    # Status refresh: an index plus one loop, not a kopf timer, which would put a finalizer on every CrawlSite.
    kopf.index(*CRAWLSITES, registry=registry, id="crawlsite_index")(crawlsites.index_site)
    kopf.on.event(*CRAWLSITES, registry=registry, id="forget", when=is_deletion)(crawlsites.forget_site)
    # CrawlWorkerPools: an index plus one polling task per pool (pool/handlers.py), no finalizer either.
    pool_handlers.register(registry, shared, options)
    return registry


def run(
    settings: Settings,
    options: OperatorSettings,
    *,
    namespaces: Sequence[str] = (),
    liveness_endpoint: str | None = None,
    peering: str | None = None,
    priority: int = 0,
) -> None:
    """Run the operator until SIGTERM/SIGINT: all namespaces unless ``namespaces`` are given; standalone
    (no peering objects needed) unless a ``peering`` name is given for active/standby replicas."""
    log.info("operator_starting", namespaces=list(namespaces) or "all", peering=peering, priority=priority)
    kopf.run(
        registry=create_registry(settings, options),
        standalone=peering is None,
        peering_name=peering,
        priority=priority,
        clusterwide=not namespaces,
        namespaces=list(namespaces),
        liveness_endpoint=liveness_endpoint,
        memo=kopf.Memo(),
    )

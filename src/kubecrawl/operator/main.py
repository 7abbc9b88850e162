"""The operator process: kopf settings, the registry, and ``run`` (``kubecrawl operator``).

Settings are built by the CLI and passed in; the registry is built here (not at import time) so nothing is global.
Each resource adds its own handlers through its package's ``handlers.register(registry, shared, options)``
(``crawlsite/``, ``pool/``); this module only sets kopf up and calls them.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import kopf

from kubecrawl.core.logging import get_logger
from kubecrawl.core.settings import Settings
from kubecrawl.operator.crawlsite import handlers as crawlsite_handlers
from kubecrawl.operator.group import GROUP
from kubecrawl.operator.pool import handlers as pool_handlers
from kubecrawl.operator.settings import OperatorSettings

log = get_logger(__name__)


def create_registry(shared: Settings, options: OperatorSettings) -> kopf.OperatorRegistry:
    """Handlers and start-up for one operator process (``shared``: the settings every kubecrawl process reads)."""
    registry = kopf.OperatorRegistry()

    @kopf.on.startup(registry=registry)
    async def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
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

    # kopf logs in exactly as our own kubernetes_asyncio client does (kube.connect): the pod's service account
    # in a cluster, else KUBECONFIG. A bare registry has no login handler of its own.
    kopf.on.login(registry=registry)(kopf.login_via_async_client)
    # Each resource registers its own handlers and start-up/clean-up the same way (its package's handlers.py).
    # kopf runs start-up handlers in registration order, so the settings above are in place first.
    crawlsite_handlers.register(registry, shared, options)
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

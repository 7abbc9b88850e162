"""CrawlSite handlers: unpack kopf's kwargs, call :class:`~kubecrawl.operator.crawlsite.reconciler.Reconciler`,
turn its result into a status patch, Kubernetes Events and kopf errors (the one place CrawlSite errors meet kopf).

:func:`register` adds them to the operator's registry (called from ``main.create_registry``), with the start-up
that builds the reconciler and starts the status refresher (``refresher.py``). No handler needs a finalizer:
the CronJob goes through garbage collection, so a CrawlSite can be deleted whether or not the operator runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
from typing import Any

import kopf

from kubecrawl.core.clock import utcnow
from kubecrawl.core.errors import TransientError
from kubecrawl.core.logging import get_logger
from kubecrawl.core.settings import Settings
from kubecrawl.operator import failures, kube
from kubecrawl.operator.conditions import status_patch
from kubecrawl.operator.crawlsite.cronjobs import CronJobs
from kubecrawl.operator.crawlsite.manifest import SiteRef
from kubecrawl.operator.crawlsite.naming import PLURAL, RESYNC_ANNOTATION
from kubecrawl.operator.crawlsite.patching import CrawlSites
from kubecrawl.operator.crawlsite.reconciler import Reconciler, Result
from kubecrawl.operator.crawlsite.refresher import StatusRefresher
from kubecrawl.operator.crawlsite.status import next_schedule_time
from kubecrawl.operator.crawlsite.syncing import ApiRejected, SiteApi
from kubecrawl.operator.group import GROUP, VERSION
from kubecrawl.operator.settings import OperatorSettings

log = get_logger(__name__)
CRAWLSITES = (GROUP, VERSION, PLURAL)
RESYNC_FIELD = ("metadata", "annotations", RESYNC_ANNOTATION)
INDEX = "crawlsite_index"
# What StatusRefresher / Reconciler.refresh read and compare.
REFRESHER_STATUS_KEYS = (
    "observedGeneration",
    "cronJobName",
    "conditions",
    "lastScheduleTime",
    "nextScheduleTime",
    "lastCrawl",
    "lastSuccessTime",
)


# After a transient failure kopf re-runs the handler after 5 s, 10 s, 20 s … capped at 5 minutes: quick while the
# API is restarting, quiet during a long outage.
FIRST_DELAY_SECONDS = 5.0
MAX_DELAY_SECONDS = 300.0


def handler_retry_delay(retry: int) -> float:
    """Delay after the ``retry``-th failed attempt (kopf counts from 0)."""
    return min(MAX_DELAY_SECONDS, FIRST_DELAY_SECONDS * (1 << max(0, min(retry, 16))))


def is_deletion(event: kopf.RawEvent, **_: Any) -> bool:
    """A ``when=`` filter for ``kopf.on.event``: the object is gone."""
    return event.get("type") == "DELETED"


def _plain(value: Any) -> dict[str, Any]:
    """A deep, mutable copy of a kopf body view (spec/status)."""
    return copy.deepcopy(dict(value or {}))


def _apply(result: Result, body: kopf.Body, status: dict[str, Any], generation: int | None, patch: kopf.Patch) -> None:
    now = utcnow()
    desired = result.status(status, generation, now)
    desired["nextScheduleTime"] = next_schedule_time(_plain(body.get("spec")), now)
    patch.status.update(status_patch(status, desired))
    for event in result.events:
        kopf.event(body, type=event.type, reason=event.reason, message=event.message)


async def reconcile_site(
    body: kopf.Body,
    meta: kopf.Meta,
    patch: kopf.Patch,
    memo: kopf.Memo,
    retry: int,
    **_: Any,
) -> None:
    """create / update (spec, or the resync annotation) / resume: CronJob + API sync, status, Events."""
    reconciler: Reconciler = memo.reconciler
    site = SiteRef(meta["namespace"], meta["name"], meta["uid"])
    status = _plain(body.get("status"))
    generation = meta.get("generation")
    try:
        result = await reconciler.reconcile(site, _plain(body.get("spec")), status, generation)
        _apply(result, body, status, generation, patch)
    except Exception:
        # A bug (every expected failure is in the result): kopf logs the traceback and retries the handler.
        failures.count(failures.CRAWLSITE, failures.INTERNAL_ERROR)
        raise
    for reason in result.failed_steps:
        failures.count(failures.CRAWLSITE, reason)
    if result.retry:
        # The status patch above is applied by kopf even though the handler fails: the conditions say why.
        raise kopf.TemporaryError(f"will retry: {', '.join(result.failed_steps)}", delay=handler_retry_delay(retry))


def index_site(body: kopf.Body, meta: kopf.Meta, **_: Any) -> dict[tuple[str, str], dict[str, Any]]:
    """kopf index: what the status refresher (refresher.py) needs of every CrawlSite. Runs on every event, so it
    copies only that (the schedule, and the status fields the refresher compares), not the whole body."""
    status = body.get("status") or {}
    snapshot = {
        "namespace": meta["namespace"],
        "name": meta["name"],
        "uid": meta["uid"],
        "generation": meta.get("generation"),
        "created": meta.get("creationTimestamp"),
        # The schedule, and what the freshness metrics need of it (crawlsite/freshness.py).
        "spec": {key: (body.get("spec") or {}).get(key) for key in ("schedule", "timeZone", "suspend")},
        "status": copy.deepcopy({key: status[key] for key in REFRESHER_STATUS_KEYS if key in status}),
    }
    return {(meta["namespace"], meta["name"]): snapshot}


async def forget_site(meta: kopf.Meta, memo: kopf.Memo, **_: Any) -> None:
    """A CrawlSite is gone (``is_deletion``): drop its spec from the API. Best effort: no finalizer holds the
    deletion; crawl history stays in the API; the CronJob goes through garbage collection, not through us."""
    reconciler: Reconciler = memo.reconciler
    namespace, name = meta["namespace"], meta["name"]
    try:
        await reconciler.api.delete_site(namespace, name)
    except (TransientError, ApiRejected) as exc:
        failures.count(failures.CRAWLSITE, failures.FORGET_FAILED)
        log.warning("site_forget_failed", site=f"{namespace}/{name}", error=exc.detail)
    else:
        log.info("site_forgotten", site=f"{namespace}/{name}")


def register(registry: kopf.OperatorRegistry, shared: Settings, options: OperatorSettings) -> None:
    """Add the CrawlSite handlers (and the Kubernetes and API clients they share) to ``registry``."""

    @kopf.on.startup(registry=registry)
    async def open_crawlsites(memo: kopf.Memo, **kwargs: Any) -> None:
        api_client = await kube.connect()
        memo.kube_client = api_client
        memo.reconciler = Reconciler(
            settings=options,
            cronjobs=CronJobs(api_client),
            api=SiteApi(
                shared.api_url,
                timeout=options.api_timeout_seconds,
                retry_delays=options.api_retry_delays,
                api_key=shared.api_key.get_secret_value() if shared.api_key else None,
                token_file=shared.api_token_file,
            ),
            trigger_api_url=options.trigger_api_url or shared.api_url,
        )
        # kopf passes every index to start-up handlers by its id, as a live view.
        refresher = StatusRefresher(
            memo.reconciler, CrawlSites(api_client), kwargs[INDEX], options.status_interval_seconds
        )
        memo.refresher = asyncio.create_task(refresher.run(), name="crawlsite status refresher")
        log.info("operator_configured", api_url=shared.api_url, status_interval=options.status_interval_seconds)

    @kopf.on.cleanup(registry=registry)
    async def close_crawlsites(memo: kopf.Memo, **_: Any) -> None:
        memo.refresher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await memo.refresher
        await memo.reconciler.api.aclose()
        await memo.kube_client.close()

    # One reconciliation for every cause: it is idempotent and converges from any starting point. The resync
    # annotation is set by the status refresher when it finds drift (refresher.py).
    kopf.on.create(*CRAWLSITES, registry=registry, id="reconcile")(reconcile_site)
    kopf.on.update(*CRAWLSITES, registry=registry, id="reconcile", field="spec")(reconcile_site)
    kopf.on.update(*CRAWLSITES, registry=registry, id="resync", field=RESYNC_FIELD)(reconcile_site)
    kopf.on.resume(*CRAWLSITES, registry=registry, id="reconcile")(reconcile_site)
    # Status refresh: an index plus one loop, not a kopf timer, which would put a finalizer on every CrawlSite.
    kopf.index(*CRAWLSITES, registry=registry, id=INDEX)(index_site)
    kopf.on.event(*CRAWLSITES, registry=registry, id="forget", when=is_deletion)(forget_site)

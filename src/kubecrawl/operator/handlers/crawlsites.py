"""CrawlSite handlers: unpack kopf's kwargs, call :class:`~kubecrawl.operator.reconciling.Reconciler`, turn its
result into a status patch, Kubernetes Events and kopf errors (the one place operator errors meet kopf)."""

from __future__ import annotations

import copy
from typing import Any

import kopf

from kubecrawl.core.clock import utcnow
from kubecrawl.core.errors import TransientError
from kubecrawl.core.logging import get_logger
from kubecrawl.operator import failures
from kubecrawl.operator.conditions import status_patch
from kubecrawl.operator.reconcile.cronjobs import SiteRef
from kubecrawl.operator.reconcile.retrying import handler_retry_delay
from kubecrawl.operator.reconciling import Reconciler, Result
from kubecrawl.operator.syncing import ApiRejected

log = get_logger(__name__)
# What StatusRefresher / Reconciler.refresh read and compare.
REFRESHER_STATUS_KEYS = ("observedGeneration", "cronJobName", "conditions", "lastScheduleTime", "lastCrawl")


def _plain(value: Any) -> dict[str, Any]:
    """A deep, mutable copy of a kopf body view (spec/status)."""
    return copy.deepcopy(dict(value or {}))


def _apply(result: Result, body: kopf.Body, status: dict[str, Any], generation: int | None, patch: kopf.Patch) -> None:
    patch.status.update(status_patch(status, result.status(status, generation, utcnow())))
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
    """kopf index: what the status refresher (refreshing.py) needs of every CrawlSite. Runs on every event, so it
    copies only that (the schedule, and the status fields the refresher compares), not the whole body."""
    status = body.get("status") or {}
    snapshot = {
        "namespace": meta["namespace"],
        "name": meta["name"],
        "uid": meta["uid"],
        "generation": meta.get("generation"),
        "spec": {"schedule": (body.get("spec") or {}).get("schedule")},
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

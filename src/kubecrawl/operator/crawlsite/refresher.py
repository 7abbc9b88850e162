"""The status refresher: one loop for all CrawlSites, every ``status_interval_seconds``, copying each one's
``lastScheduleTime`` (from its CronJob) and ``lastCrawl`` (from the API) into its status, and telling (an Event,
``ScheduledRunSkipped``) of a scheduled run that overlapPolicy Forbid skipped.

Why not a kopf timer per object: kopf puts a finalizer on every object with a timer or daemon, so deleting a
CrawlSite would hang while the operator is down (or uninstalled). The loop reads the CrawlSites from a kopf index
(``index_site``: kept current by kopf's watch, no extra API reads) and writes status with merge patches of only
what changed. When it finds drift (a CronJob deleted by hand, a site the API lost) it does not repair it itself:
it sets the resync annotation and kopf's update handler reconciles, with its usual retries, status and Events.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Mapping
from typing import Any

from kubecrawl.core.clock import utcnow
from kubecrawl.core.errors import KubecrawlError
from kubecrawl.core.logging import get_logger
from kubecrawl.operator import failures
from kubecrawl.operator.conditions import timestamp
from kubecrawl.operator.crawlsite.freshness import SiteFreshness
from kubecrawl.operator.crawlsite.manifest import SiteRef
from kubecrawl.operator.crawlsite.patching import CrawlSites
from kubecrawl.operator.crawlsite.reconciler import Reconciler

log = get_logger(__name__)

# Sites refreshed at once: each refresh is three small reads, so 8 keep a round of 1,000 sites to a few seconds
# without a burst of a thousand requests at the API server and the kubecrawl API.
CONCURRENCY = 8


class StatusRefresher:
    def __init__(
        self, reconciler: Reconciler, sites: CrawlSites, index: Mapping[Any, Iterable[Any]], interval: float
    ) -> None:
        self._reconciler = reconciler
        self._sites = sites
        self._index = index
        self._interval = interval
        self._freshness = SiteFreshness()
        # CrawlSite uid → the last skipped-run Event posted for it, so each skipped run is told once per process.
        self._skips_told: dict[str, str] = {}

    async def run(self) -> None:
        """Refresh every CrawlSite once per interval, until cancelled."""
        limit = asyncio.Semaphore(CONCURRENCY)

        async def one(item: dict[str, Any]) -> None:
            async with limit:
                try:
                    await self.refresh(item)
                except Exception:  # a bug for one site must not end the loop for all of them
                    failures.count(failures.CRAWLSITE, failures.INTERNAL_ERROR)
                    log.exception("status_refresh_crashed", site=f"{item['namespace']}/{item['name']}")

        while True:
            await asyncio.sleep(self._interval)
            started = time.monotonic()
            items = [item for store in list(self._index.values()) for item in store]
            await asyncio.gather(*(one(item) for item in items))
            # From the snapshots read before this round's patches: the series trail status by one interval.
            self._freshness.update(items, utcnow())
            log.debug("status_refresh_round", sites=len(items), seconds=round(time.monotonic() - started, 3))

    async def refresh(self, item: dict[str, Any]) -> None:
        """One CrawlSite, from its index snapshot (``handlers.index_site``)."""
        site = SiteRef(item["namespace"], item["name"], item["uid"])
        try:
            changes, drifted, skipped = await self._reconciler.refresh(
                site, item["spec"], item["status"], item["generation"]
            )
            if skipped is not None and self._skips_told.get(site.uid) != skipped.message:
                self._skips_told[site.uid] = skipped.message
                log.info("scheduled_run_skipped", site=f"{site.namespace}/{site.name}", detail=skipped.message)
                await self._sites.post_event(site, skipped)
            if changes:
                await self._sites.patch_status(site.namespace, site.name, changes)
            if drifted:
                log.info("drift_detected", site=f"{site.namespace}/{site.name}")
                await self._sites.request_resync(site.namespace, site.name, timestamp(utcnow()))
        except KubecrawlError as exc:  # this round is lost for this site; the next one tries again
            failures.count(failures.CRAWLSITE, failures.STATUS_REFRESH_FAILED)
            log.warning("status_refresh_failed", site=f"{site.namespace}/{site.name}", error=exc.detail)

"""The kopf-free StatusRefresher, one CrawlSite at a time: it copies what the API and the CronJob say into the
status, writes only what changed, and asks for a reconciliation (never repairs itself) when the world drifted."""

from __future__ import annotations

from typing import Any

from kubecrawl.core.clock import utcnow
from kubecrawl.core.errors import TransientError
from kubecrawl.operator.crawlsite.manifest import SiteRef
from kubecrawl.operator.crawlsite.naming import cronjob_name
from kubecrawl.operator.crawlsite.reconciler import Reconciler
from kubecrawl.operator.crawlsite.refresher import StatusRefresher
from kubecrawl.operator.settings import OperatorSettings
from tests.support.fakes import FakeCrawlSites, FakeCronJobs, FakeSiteApi

SPEC: dict[str, Any] = {"url": "https://example.com/", "schedule": "0 3 * * *"}
CRAWL = {"id": "c1", "state": "COMPLETED", "counters": {"fetched": 12, "failed": 1, "changed": 3}}


class World:
    def __init__(self) -> None:
        self.cronjobs, self.api, self.sites = FakeCronJobs(), FakeSiteApi(), FakeCrawlSites()
        reconciler = Reconciler(OperatorSettings(), self.cronjobs, self.api, "http://api")  # type: ignore[arg-type]
        self.refresher = StatusRefresher(reconciler, self.sites, {}, interval=30)  # type: ignore[arg-type]
        self.reconciler = reconciler

    async def reconciled(self) -> dict[str, Any]:
        """The site after its create handler ran: CronJob applied, spec synced, status written."""
        result = await self.reconciler.reconcile(SiteRef("team", "docs", "uid-1"), SPEC, {}, 1)
        status = result.status({}, 1, utcnow())
        return {"namespace": "team", "name": "docs", "uid": "uid-1", "spec": SPEC, "status": status, "generation": 1}


async def test_the_latest_crawl_is_copied_into_the_status() -> None:
    world = World()
    item = await world.reconciled()
    world.api.crawls["team", "docs"] = CRAWL
    await world.refresher.refresh(item)
    [(name, patch)] = world.sites.patches
    assert name == "docs"
    assert (patch["lastCrawl"]["id"], patch["lastCrawl"]["pages"], patch["lastCrawl"]["changed"]) == ("c1", 12, 3)
    assert world.sites.resyncs == []


async def test_nothing_is_written_when_nothing_changed() -> None:
    world = World()
    item = await world.reconciled()
    world.api.crawls["team", "docs"] = CRAWL
    await world.refresher.refresh(item)
    [(_, patch)] = world.sites.patches
    item["status"] = {**item["status"], **patch}
    await world.refresher.refresh(item)
    assert len(world.sites.patches) == 1


async def test_a_cronjob_deleted_by_hand_asks_for_a_reconciliation_instead_of_recreating_it() -> None:
    world = World()
    item = await world.reconciled()
    del world.cronjobs.objects["team", cronjob_name("docs")]
    await world.refresher.refresh(item)
    assert world.sites.resyncs == ["docs"]
    assert world.cronjobs.objects == {}  # the update handler recreates it, with its retries, status and Events


async def test_a_failing_api_still_lets_the_cronjob_half_of_the_status_through() -> None:
    world = World()
    item = await world.reconciled()
    world.api.error = TransientError("connection refused")
    await world.refresher.refresh(item)
    [(_, patch)] = world.sites.patches
    assert "nextScheduleTime" in patch
    assert "lastCrawl" not in patch
    assert world.sites.resyncs == []  # an API it cannot reach is not drift

"""The kopf-free CrawlSite Reconciler over fake CronJobs and a fake API: both halves always run, each failure
posts exactly one Warning, a transient one asks for a retry."""

from __future__ import annotations

from typing import Any

from kubecrawl.core.clock import utcnow
from kubecrawl.core.errors import TransientError
from kubecrawl.operator.crawlsite.manifest import SiteRef
from kubecrawl.operator.crawlsite.naming import cronjob_name
from kubecrawl.operator.crawlsite.reconciler import Reconciler
from kubecrawl.operator.crawlsite.syncing import ApiRejected
from kubecrawl.operator.settings import OperatorSettings
from tests.support.fakes import FakeCronJobs, FakeSiteApi

SITE = SiteRef("team", "docs", "uid-1")
SPEC: dict[str, Any] = {"url": "https://example.com/", "schedule": "0 3 * * *"}


def reconciler() -> tuple[Reconciler, FakeCronJobs, FakeSiteApi]:
    cronjobs, api = FakeCronJobs(), FakeSiteApi()
    built = Reconciler(OperatorSettings(), cronjobs, api, "http://kubecrawl-api")  # type: ignore[arg-type]
    return built, cronjobs, api


async def test_a_scheduled_site_gets_its_cronjob_and_its_spec_in_the_api() -> None:
    r, cronjobs, api = reconciler()
    result = await r.reconcile(SITE, SPEC, {}, 1)
    cronjob = cronjobs.objects["team", cronjob_name("docs")]
    assert cronjob["spec"]["schedule"] == "0 3 * * *"
    assert api.sites == {("team", "docs"): SPEC}
    assert (result.scheduled.status, result.synced.status, result.retry) == ("True", "True", False)
    assert [event.reason for event in result.events] == ["CronJobCreated"]
    assert result.status({}, 1, utcnow())["cronJobName"] == cronjob_name("docs")


async def test_reconciling_an_unchanged_site_again_posts_no_event() -> None:
    r, _, _ = reconciler()
    await r.reconcile(SITE, SPEC, {}, 1)
    again = await r.reconcile(SITE, SPEC, {}, 1)
    assert again.events == []


async def test_a_cronjob_of_the_same_name_owned_by_another_is_a_name_conflict_and_the_spec_is_still_synced() -> None:
    r, cronjobs, api = reconciler()
    name = cronjob_name("docs")
    cronjobs.objects["team", name] = {"metadata": {"name": name, "namespace": "team", "uid": "other"}, "spec": {}}
    result = await r.reconcile(SITE, SPEC, {}, 1)
    assert (result.scheduled.reason, result.retry) == ("NameConflict", True)
    assert result.failed_steps == ["NameConflict"]
    assert ("team", "docs") in api.sites


async def test_a_failing_api_is_retried_and_does_not_hold_back_the_cronjob() -> None:
    r, cronjobs, api = reconciler()
    api.error = TransientError("connection refused")
    result = await r.reconcile(SITE, SPEC, {}, 1)
    assert ("team", cronjob_name("docs")) in cronjobs.objects
    assert (result.synced.reason, result.retry) == ("SyncFailed", True)
    assert result.failed_steps == ["SyncFailed"]


async def test_a_spec_the_api_rejects_waits_for_a_change_instead_of_retrying() -> None:
    r, _, api = reconciler()
    api.error = ApiRejected("scope.include: not a valid RE2 pattern", code="invalid_spec")
    result = await r.reconcile(SITE, SPEC, {}, 1)
    assert (result.synced.reason, result.retry) == ("SpecRejected", False)


async def test_removing_the_schedule_deletes_the_cronjob() -> None:
    r, cronjobs, _ = reconciler()
    await r.reconcile(SITE, SPEC, {}, 1)
    result = await r.reconcile(SITE, {"url": SPEC["url"]}, {}, 2)
    assert cronjobs.objects == {}
    assert [event.reason for event in result.events] == ["CronJobDeleted"]
    assert result.scheduled.reason == "NoSchedule"

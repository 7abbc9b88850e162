"""Per-site freshness (kubecrawl.operator.crawlsite.freshness, status.last_success_time): pure logic and the series."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from prometheus_client import REGISTRY

from kubecrawl.operator.crawlsite.freshness import SiteFreshness, schedule_period_seconds
from kubecrawl.operator.crawlsite.status import last_success_time

NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)  # a Wednesday
DAY = 86_400.0


@pytest.mark.parametrize(
    ("schedule", "period"),
    [
        ("0 3 * * *", DAY),
        ("*/15 * * * *", 900.0),
        # Weekdays: judged by the weekend's gap, or every Monday would look stale.
        ("0 9 * * MON-FRI", 3 * DAY),
        ("@weekly", 7 * DAY),
    ],
)
def test_schedule_period_is_the_longest_gap_between_the_next_runs(schedule: str, period: float) -> None:
    assert schedule_period_seconds(schedule, None, NOW) == period


def test_schedule_period_follows_the_sites_time_zone_across_a_dst_change() -> None:
    # Europe/Berlin leaves summer time on 2026-10-25: that day is 25 hours long.
    before = datetime(2026, 10, 20, tzinfo=UTC)
    assert schedule_period_seconds("0 3 * * *", "Europe/Berlin", before) == DAY + 3600


def crawl(state: str, finished: str | None) -> dict[str, Any]:
    return {"state": state, "finishedAt": finished}


def test_last_success_moves_only_on_a_completed_crawl_and_never_back() -> None:
    assert last_success_time(crawl("COMPLETED", "2026-12-01T03:10:00Z"), None) == "2026-12-01T03:10:00Z"
    assert last_success_time(crawl("FAILED", "2026-12-02T03:10:00Z"), "2026-12-01T03:10:00Z") == "2026-12-01T03:10:00Z"
    assert last_success_time(crawl("RUNNING", None), "2026-12-01T03:10:00Z") == "2026-12-01T03:10:00Z"
    assert last_success_time(crawl("COMPLETED", "2026-11-30T03:10:00Z"), "2026-12-01T03:10:00Z") == (
        "2026-12-01T03:10:00Z"
    )
    assert last_success_time(None, None) is None


def site(namespace: str, name: str, spec: dict[str, Any], status: dict[str, Any]) -> dict[str, Any]:
    return {"namespace": namespace, "name": name, "created": "2026-11-01T00:00:00Z", "spec": spec, "status": status}


def sample(metric: str, namespace: str, name: str) -> float | None:
    return REGISTRY.get_sample_value(metric, {"namespace": namespace, "site": name})


def test_one_series_per_site_removed_with_the_site() -> None:
    namespace = "t-" + uuid.uuid4().hex[:8]  # the registry is the process's: keep clear of other tests' sites
    daily = site(
        namespace,
        "daily",
        {"schedule": "0 3 * * *"},
        {"lastSuccessTime": "2026-12-01T03:10:00Z", "lastCrawl": {"state": "RUNNING"}},
    )
    on_demand = site(namespace, "adhoc", {"schedule": None}, {"lastCrawl": {"state": "COMPLETED"}})
    suspended = site(namespace, "paused", {"schedule": "0 3 * * *", "suspend": True}, {})
    freshness = SiteFreshness()
    freshness.update([daily, on_demand, suspended], NOW)
    assert (
        sample("kubecrawl_site_last_success_timestamp_seconds", namespace, "daily")
        == datetime(2026, 12, 1, 3, 10, tzinfo=UTC).timestamp()
    )
    assert sample("kubecrawl_site_schedule_period_seconds", namespace, "daily") == DAY
    assert sample("kubecrawl_site_crawl_active", namespace, "daily") == 1
    assert (
        sample("kubecrawl_site_created_timestamp_seconds", namespace, "daily")
        == datetime(2026, 11, 1, tzinfo=UTC).timestamp()
    )
    # Never succeeded, not scheduled, suspended: no series the alert could misread.
    assert sample("kubecrawl_site_last_success_timestamp_seconds", namespace, "adhoc") is None
    assert sample("kubecrawl_site_schedule_period_seconds", namespace, "adhoc") is None
    assert sample("kubecrawl_site_schedule_period_seconds", namespace, "paused") is None
    assert sample("kubecrawl_site_crawl_active", namespace, "adhoc") == 0
    freshness.update([on_demand], NOW)
    assert sample("kubecrawl_site_last_success_timestamp_seconds", namespace, "daily") is None
    assert sample("kubecrawl_site_crawl_active", namespace, "daily") is None
    assert sample("kubecrawl_site_created_timestamp_seconds", namespace, "paused") is None

"""The CrawlSite spec model and the scheduled-crawl idempotency key."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from kubecrawl.core.schedules import schedule_key


def test_schedule_key_names_the_scheduled_minute_in_utc() -> None:
    moment = datetime(2025, 1, 2, 3, 4, 59, 123, tzinfo=UTC)
    assert schedule_key("ns", "site", moment) == "site:ns/site:cron:2025-01-02T03:04:00+00:00"


def test_schedule_key_is_the_same_for_one_instant_in_any_time_zone() -> None:
    moment = datetime(2025, 1, 2, 3, 4, tzinfo=UTC)
    berlin = moment.astimezone(timezone(timedelta(hours=1)))
    assert schedule_key("ns", "site", berlin) == schedule_key("ns", "site", moment)

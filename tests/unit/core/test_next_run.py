"""A site's next scheduled run: in its time zone, never while suspended, and None when it cannot be read."""

from __future__ import annotations

from datetime import UTC, datetime

from kubecrawl.core.schedules import next_run_at

NOW = datetime(2026, 12, 5, 10, 7, tzinfo=UTC)


def test_the_next_run_is_read_in_the_sites_time_zone() -> None:
    # 09:30 in New York on 5 December (EST, UTC-5) is 14:30 UTC, later the same day
    spec = {"schedule": "30 9 * * *", "timeZone": "America/New_York"}
    assert next_run_at(spec, NOW) == datetime(2026, 12, 5, 14, 30, tzinfo=UTC)


def test_no_schedule_a_suspended_one_or_an_unknown_time_zone_has_no_next_run() -> None:
    assert next_run_at({}, NOW) is None
    assert next_run_at({"schedule": "* * * * *", "suspend": True}, NOW) is None
    assert next_run_at({"schedule": "* * * * *", "timeZone": "Mars/Olympus_Mons"}, NOW) is None

"""A CrawlSite's schedule: its next run, and the idempotency key of a scheduled run.

Plain functions over the spec's fields, apart from the spec's pydantic models (``core/sites.py``): the trigger pod
that a CronJob runs at every schedule needs the key and nothing else (docs/crawls.md, "Start-up").
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError


def next_run(schedule: str, time_zone: str | None, after: datetime) -> datetime:
    """The first scheduled minute after ``after`` (UTC), reading the 5-field cron in ``time_zone`` (UTC by
    default) as the operator's CronJobs and the embedded scheduler do."""
    from croniter import croniter  # only where schedules are read: the trigger pod needs the key, not the parser

    zone = ZoneInfo(time_zone) if time_zone else UTC
    fire: datetime = croniter(schedule, after.astimezone(zone)).get_next(datetime)
    return fire.astimezone(UTC)


def next_run_at(spec: dict[str, Any], now: datetime) -> datetime | None:
    """A site spec's next scheduled run after ``now`` (``next_run_at`` in the site API, ``nextScheduleTime`` in
    the CrawlSite status); None without a schedule, while suspended, or when the schedule cannot be read here (a
    time zone this machine's tz database lacks: the CrawlSite's Scheduled condition says what is wrong)."""
    schedule = spec.get("schedule")
    if not schedule or spec.get("suspend"):
        return None
    try:
        return next_run(schedule, spec.get("timeZone"), now)
    except (ZoneInfoNotFoundError, ValueError, KeyError):  # croniter's errors are ValueErrors and KeyErrors
        return None


def schedule_key(namespace: str, name: str, scheduled: datetime) -> str:
    """Idempotency key of a scheduled crawl: ``site:{ns}/{name}:cron:{scheduled minute, ISO-8601 UTC}``.

    The operator's trigger pods and the embedded scheduler both use it, so two triggers for one scheduled
    minute (a retried Job, two schedulers) start one crawl.
    """
    moment = scheduled.astimezone(UTC).replace(second=0, microsecond=0)
    return f"site:{namespace}/{name}:cron:{moment.isoformat()}"

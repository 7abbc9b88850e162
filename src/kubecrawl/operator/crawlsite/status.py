"""A CrawlSite's status, computed from what the reconciler saw: conditions, lastCrawl, lastScheduleTime,
nextScheduleTime.

Its conditions are ``Scheduled``, ``Synced`` and ``Ready``; how a condition and a status patch are built (the
Kubernetes convention, merge patches of what changed) is shared with CrawlWorkerPools in ``operator.conditions``.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from kubecrawl.core.models import CrawlState
from kubecrawl.core.schedules import next_run_at, schedule_key
from kubecrawl.operator.conditions import Event, Outcome, condition, timestamp

SCHEDULED = "Scheduled"
SYNCED = "Synced"
READY = "Ready"

LAST_CRAWL_KEYS = ("id", "state", "pages", "failed", "changed", "startedAt", "finishedAt")


def scheduled_ok(cronjob: str, schedule: str, time_zone: str | None, *, suspended: bool) -> Outcome:
    if suspended:
        return Outcome("True", "Suspended", f"CronJob {cronjob} is suspended: no new crawls are scheduled")
    return Outcome("True", "CronJobReady", f"CronJob {cronjob} runs on {schedule!r} ({time_zone or 'UTC'})")


def no_schedule() -> Outcome:
    return Outcome("False", "NoSchedule", "spec.schedule is not set: crawls start only when triggered")


def synced_ok(generation: int | None) -> Outcome:
    return Outcome("True", "Synced", f"the kubecrawl API has the spec of generation {generation}")


def ready(scheduled: Outcome, synced: Outcome) -> Outcome:
    """Ready: the API has the spec, and the CronJob matches it (or no CronJob is wanted)."""
    if not synced.ok:
        return Outcome("False", "NotSynced", synced.message)
    if not scheduled.ok and scheduled.reason != "NoSchedule":
        return Outcome("False", "NotScheduled", scheduled.message)
    return Outcome("True", "Ready", "the site is synced and its schedule is in place")


def conditions(
    previous: list[dict[str, Any]],
    *,
    scheduled: Outcome,
    synced: Outcome,
    generation: int | None,
    now: datetime,
) -> list[dict[str, Any]]:
    """The three conditions, in a stable order; conditions of other types (someone else's) are kept."""
    ours = {SCHEDULED: scheduled, SYNCED: synced, READY: ready(scheduled, synced)}
    result = [condition(kind, value, previous, generation=generation, now=now) for kind, value in ours.items()]
    return result + [c for c in previous if c.get("type") not in ours]


def _rfc3339(value: Any) -> str | None:
    if not value:
        return None
    return timestamp(datetime.fromisoformat(str(value)))


def last_crawl(crawl: dict[str, Any] | None) -> dict[str, Any] | None:
    """``status.lastCrawl`` from the API's crawl JSON (``GET /sites/{ns}/{name}/crawls``); every key present,
    ``None`` where unknown, so a merge patch clears what the previous crawl had set."""
    if crawl is None:
        return None
    counters = crawl.get("counters") or {}
    return {
        "id": crawl["id"],
        "state": crawl.get("state"),
        "pages": int(counters.get("fetched", 0)),
        "failed": int(counters.get("failed", 0)),
        "changed": int(counters.get("changed", 0)),
        "startedAt": _rfc3339(crawl.get("started_at")),
        "finishedAt": _rfc3339(crawl.get("finished_at")),
    }


def last_success_time(crawl: dict[str, Any] | None, previous: str | None) -> str | None:
    """``status.lastSuccessTime``: the latest crawl's end if it COMPLETED, else what the status had (a failed or
    running crawl does not erase the last success). ``crawl`` is ``status.lastCrawl``; RFC 3339 strings in UTC
    compare in time order."""
    if crawl is not None and crawl.get("state") == CrawlState.COMPLETED and crawl.get("finishedAt"):
        finished: str = crawl["finishedAt"]
        return max(finished, previous or "")
    return previous


def next_schedule_time(spec: dict[str, Any], now: datetime) -> str | None:
    """``status.nextScheduleTime``: the next minute the schedule fires (the site API's ``next_run_at``); None
    without a schedule or while suspended."""
    upcoming = next_run_at(spec, now)
    return None if upcoming is None else timestamp(upcoming)


# A CronJob's run is judged this long after it fired: its trigger pod has started and asked the API by then.
SKIP_GRACE = timedelta(seconds=60)


def skipped_run(
    namespace: str,
    name: str,
    spec: dict[str, Any],
    last_schedule: str | None,
    latest: dict[str, Any] | None,
    now: datetime,
) -> Event | None:
    """The Event for a scheduled run that overlapPolicy Forbid skipped, judged from what the refresher reads:
    the CronJob's last run (``lastScheduleTime``) and the site's latest crawl (the API's JSON). A run was skipped
    when, a minute after it fired, no crawl holds its idempotency key and the latest crawl, started before it,
    was still running when it fired. None otherwise (also for runs that failed for another reason)."""
    if (spec.get("overlapPolicy") or "Forbid") != "Forbid" or not last_schedule or latest is None:
        return None
    fired = datetime.fromisoformat(last_schedule)
    if now - fired < SKIP_GRACE or latest.get("idempotency_key") == schedule_key(namespace, name, fired):
        return None
    created, finished = latest.get("created_at"), latest.get("finished_at")
    if not created or datetime.fromisoformat(created) >= fired:
        return None
    if finished and datetime.fromisoformat(finished) <= fired:
        return None  # nothing ran when it fired: the trigger failed for another reason (its Job says why)
    return Event(
        "Normal",
        "ScheduledRunSkipped",
        f"overlapPolicy Forbid: the run scheduled for {timestamp(fired)} started nothing while crawl "
        f"{latest.get('id')} was still running",
    )


def last_schedule_time(cronjob: dict[str, Any] | None) -> str | None:
    if cronjob is None:
        return None
    return _rfc3339((cronjob.get("status") or {}).get("lastScheduleTime"))

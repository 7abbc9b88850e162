"""A CrawlSite's status, computed from what the reconciler saw: conditions, lastCrawl, lastScheduleTime.

Conditions follow the Kubernetes convention (``type``/``status``/``reason``/``message``/``lastTransitionTime``/
``observedGeneration``); ``lastTransitionTime`` moves only when ``status`` changes. Status is written with a JSON
merge patch, so :func:`status_patch` sends only what changed and ``None`` for what must disappear.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

ConditionStatus = Literal["True", "False", "Unknown"]

SCHEDULED = "Scheduled"
SYNCED = "Synced"
READY = "Ready"

LAST_CRAWL_KEYS = ("id", "state", "pages", "failed", "changed", "startedAt", "finishedAt")


@dataclass(frozen=True, slots=True)
class Outcome:
    """One condition's value as the reconciler found it."""

    status: ConditionStatus
    reason: str
    message: str

    @property
    def ok(self) -> bool:
        return self.status == "True"


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


def timestamp(moment: datetime) -> str:
    """RFC 3339 in UTC, second precision: what Kubernetes writes in its own timestamps."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def condition(
    kind: str, outcome: Outcome, previous: list[dict[str, Any]], *, generation: int | None, now: datetime
) -> dict[str, Any]:
    before = next((c for c in previous if c.get("type") == kind), None)
    moved = before is None or before.get("status") != outcome.status or not before.get("lastTransitionTime")
    result: dict[str, Any] = {
        "type": kind,
        "status": outcome.status,
        "reason": outcome.reason,
        "message": outcome.message,
        "lastTransitionTime": timestamp(now) if moved else before["lastTransitionTime"],  # type: ignore[index]
    }
    if generation is not None:
        result["observedGeneration"] = generation
    return result


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


def last_schedule_time(cronjob: dict[str, Any] | None) -> str | None:
    if cronjob is None:
        return None
    return _rfc3339((cronjob.get("status") or {}).get("lastScheduleTime"))


def _pruned(value: Any) -> Any:
    """Drop ``None`` entries: a missing key and a null one mean the same in a status."""
    if isinstance(value, dict):
        return {k: _pruned(v) for k, v in value.items() if v is not None}
    return value


def status_patch(current: dict[str, Any], desired: dict[str, Any]) -> dict[str, Any]:
    """The merge patch taking ``current`` status to ``desired`` (``None`` values mean "absent")."""
    return {key: value for key, value in desired.items() if _pruned(current.get(key)) != _pruned(value)}

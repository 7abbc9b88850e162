"""Per-site freshness series (``kubecrawl_site_*`` in ``core/metrics.py``), set by the status refresher after each
round from what the kopf index holds of every CrawlSite.

Why the operator: it is one process (one replica, ``Recreate``), its refresher already reads every CrawlSite's
latest crawl, and ``status.lastSuccessTime`` keeps the last success across restarts. The API and the workers run
several replicas and see crawls, not sites; each replica exporting its own view would give as many answers.

The alert ``KubecrawlSiteStale`` compares ``time() - last success`` (or the site's creation, before a first
success) with N × ``kubecrawl_site_schedule_period_seconds``: the longest gap between the schedule's next
:data:`LOOKAHEAD` runs, so a weekday schedule (``0 9 * * MON-FRI``) is judged by its weekend gap, not its daily one.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from croniter import croniter

from kubecrawl.core import metrics
from kubecrawl.core.models import FINAL_CRAWL_STATES

# Runs looked at to find the longest gap: covers a week of a daily-except-weekends schedule and a month of weekly.
LOOKAHEAD = 10
_SERIES = (metrics.SITE_LAST_SUCCESS, metrics.SITE_CREATED, metrics.SITE_SCHEDULE_PERIOD, metrics.SITE_CRAWL_ACTIVE)


def schedule_period_seconds(schedule: str, time_zone: str | None, now: datetime) -> float:
    """The longest gap, in seconds, between consecutive runs among the next :data:`LOOKAHEAD` of ``schedule``."""
    runs = croniter(schedule, now.astimezone(ZoneInfo(time_zone) if time_zone else UTC))
    fires: list[datetime] = [runs.get_next(datetime) for _ in range(LOOKAHEAD + 1)]
    # Timestamps, not `b - a`: aware datetimes of one zone subtract as wall-clock times (a DST day is 25 h, not 24).
    return max(b.timestamp() - a.timestamp() for a, b in itertools.pairwise(fires))


def _seconds(rfc3339: str | None) -> float | None:
    return datetime.fromisoformat(rfc3339).timestamp() if rfc3339 else None


class SiteFreshness:
    """The ``kubecrawl_site_*`` series of the sites the last :meth:`update` saw (older sites' series removed)."""

    def __init__(self) -> None:
        self._exported: set[tuple[str, str]] = set()

    def update(self, items: Iterable[dict[str, Any]], now: datetime) -> None:
        seen: set[tuple[str, str]] = set()
        for item in items:
            labels = (item["namespace"], item["name"])
            seen.add(labels)
            spec, status = item["spec"], item["status"]
            self._set(metrics.SITE_LAST_SUCCESS, labels, _seconds(status.get("lastSuccessTime")))
            self._set(metrics.SITE_CREATED, labels, _seconds(item.get("created")))
            scheduled = bool(spec.get("schedule")) and not spec.get("suspend")
            period = schedule_period_seconds(spec["schedule"], spec.get("timeZone"), now) if scheduled else None
            self._set(metrics.SITE_SCHEDULE_PERIOD, labels, period)
            state = (status.get("lastCrawl") or {}).get("state")
            metrics.SITE_CRAWL_ACTIVE.labels(*labels).set(1 if state and state not in FINAL_CRAWL_STATES else 0)
        for labels in self._exported - seen:
            for series in _SERIES:
                _remove(series, labels)
        self._exported = seen

    @staticmethod
    def _set(series: Any, labels: tuple[str, str], value: float | None) -> None:
        if value is None:
            _remove(series, labels)
        else:
            series.labels(*labels).set(value)


def _remove(series: Any, labels: tuple[str, str]) -> None:
    with contextlib.suppress(KeyError):  # never set for this site
        series.remove(*labels)

"""One CrawlSite's reconciliation: its CronJob (create, patch, delete) and its spec in the kubecrawl API.

kopf-free: the handlers turn a :class:`Result` into a status patch, Events and kopf errors. Both halves always
run, so a failing API does not hold back the schedule (and the CronJob exists within a second of ``kubectl
apply``); a transient failure of either makes the handler retry the whole, idempotent, reconciliation.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from kubecrawl.core.clock import utcnow
from kubecrawl.core.errors import TransientError
from kubecrawl.core.logging import get_logger
from kubecrawl.operator import failures
from kubecrawl.operator.conditions import Event, Outcome, status_patch
from kubecrawl.operator.crawlsite import naming
from kubecrawl.operator.crawlsite import status as st
from kubecrawl.operator.crawlsite.cronjobs import CronJobRejected, CronJobs
from kubecrawl.operator.crawlsite.manifest import SiteRef, controlled_by, cronjob_manifest
from kubecrawl.operator.crawlsite.syncing import ApiRejected, SiteApi
from kubecrawl.operator.settings import OperatorSettings

log = get_logger(__name__)


@dataclass(slots=True)
class Result:
    scheduled: Outcome
    synced: Outcome
    cronjob: dict[str, Any] | None = None
    # True once the CronJob is known to be as the spec wants (applied, or deleted/absent without a schedule).
    # After a failure the CronJob is whatever it was before, so cronJobName and lastScheduleTime stay untouched.
    cronjob_settled: bool = False
    events: list[Event] = field(default_factory=list)
    # Transient failures: the handler is re-run later. Permanent ones wait for a spec change.
    retry: bool = False

    @property
    def failed_steps(self) -> list[str]:
        """The reasons of the steps that failed: every failure posts exactly one Warning Event, nothing else does."""
        return [event.reason for event in self.events if event.type == "Warning"]

    def status(self, previous: dict[str, Any], generation: int | None, now: datetime) -> dict[str, Any]:
        """The desired status fields this reconciliation decides (None = remove)."""
        desired: dict[str, Any] = {"observedGeneration": generation}
        if self.cronjob_settled:
            desired["cronJobName"] = (self.cronjob or {}).get("metadata", {}).get("name")
            desired["lastScheduleTime"] = st.last_schedule_time(self.cronjob)
        return desired | {
            "conditions": st.conditions(
                previous.get("conditions") or [],
                scheduled=self.scheduled,
                synced=self.synced,
                generation=generation,
                now=now,
            ),
        }


@dataclass(frozen=True, slots=True)
class Reconciler:
    """Everything a reconciliation needs; built once at operator start-up and kept in kopf's memo."""

    settings: OperatorSettings
    cronjobs: CronJobs
    api: SiteApi
    trigger_api_url: str

    async def reconcile(
        self, site: SiteRef, spec: dict[str, Any], previous_status: dict[str, Any], generation: int | None
    ) -> Result:
        result = Result(scheduled=st.no_schedule(), synced=Outcome("Unknown", "Pending", "not synced yet"))
        await self._schedule(site, spec, result)
        await self._sync(site, spec, previous_status, generation, result)
        return result

    async def _schedule(self, site: SiteRef, spec: dict[str, Any], result: Result) -> None:
        name = naming.cronjob_name(site.name)
        try:
            existing = await self.cronjobs.get(site.namespace, name)
            if existing is not None and not controlled_by(existing, site.uid):
                result.scheduled = Outcome(
                    "False",
                    "NameConflict",
                    f"CronJob {name} exists and is not controlled by this CrawlSite: rename or delete it",
                )
                result.events.append(Event("Warning", "NameConflict", result.scheduled.message))
                log.warning("cronjob_name_conflict", site=f"{site.namespace}/{site.name}", cronjob=name)
                result.retry = True  # the other CronJob may go away; look again later
                return
            if not spec.get("schedule"):
                if existing is not None and await self.cronjobs.delete(
                    site.namespace, name, existing["metadata"]["uid"]
                ):
                    result.events.append(Event("Normal", "CronJobDeleted", f"deleted CronJob {name}: no schedule"))
                    log.info("cronjob_deleted", site=f"{site.namespace}/{site.name}", cronjob=name)
                result.scheduled = st.no_schedule()
                result.cronjob_settled = True
                return
            manifest = cronjob_manifest(site, spec, self.settings, self.trigger_api_url)
            applied = await self.cronjobs.apply(manifest)
        except CronJobRejected as exc:
            log.warning("cronjob_rejected", site=f"{site.namespace}/{site.name}", cronjob=name, error=exc.detail)
            result.scheduled = Outcome("False", "CronJobRejected", exc.detail)
            result.events.append(Event("Warning", "CronJobRejected", exc.detail))
            return
        except TransientError as exc:
            log.warning("cronjob_apply_failed", site=f"{site.namespace}/{site.name}", cronjob=name, error=exc.detail)
            result.scheduled = Outcome("Unknown", "CronJobError", exc.detail)
            result.events.append(Event("Warning", "CronJobError", exc.detail))
            result.retry = True
            return
        result.cronjob, result.cronjob_settled = applied, True
        result.scheduled = st.scheduled_ok(
            name, spec["schedule"], spec.get("timeZone"), suspended=bool(spec.get("suspend"))
        )
        event = _cronjob_event(existing, applied, spec)
        if event is not None:
            result.events.append(event)
            log.info("cronjob_applied", site=f"{site.namespace}/{site.name}", cronjob=name, reason=event.reason)

    async def _sync(
        self, site: SiteRef, spec: dict[str, Any], previous: dict[str, Any], generation: int | None, result: Result
    ) -> None:
        try:
            created = await self.api.put_site(site.namespace, site.name, copy.deepcopy(spec))
        except ApiRejected as exc:
            log.warning("site_rejected", site=f"{site.namespace}/{site.name}", code=exc.code, error=exc.detail)
            result.synced = Outcome("False", "SpecRejected", exc.detail)
            result.events.append(Event("Warning", "SpecRejected", exc.detail))
            return
        except TransientError as exc:
            log.warning("site_sync_failed", site=f"{site.namespace}/{site.name}", error=exc.detail)
            result.synced = Outcome("False", "SyncFailed", f"retrying: {exc.detail}")
            result.events.append(Event("Warning", "SyncFailed", exc.detail))
            result.retry = True
            return
        result.synced = st.synced_ok(generation)
        # No Normal Event for a successful sync (the Synced condition says it): one Event write less per change.
        if created or not _is_synced(previous):
            log.info("site_synced", site=f"{site.namespace}/{site.name}", created=created)

    async def refresh(
        self, site: SiteRef, spec: dict[str, Any], current: dict[str, Any], generation: int | None
    ) -> tuple[dict[str, Any], bool, Event | None]:
        """Timer: the status fields that moved (nextScheduleTime, lastScheduleTime, lastCrawl), whether the
        world drifted from the spec (CronJob or API site gone) so a full reconciliation is due, and the Event for
        the CronJob's last run if overlapPolicy Forbid skipped it (``status.skipped_run``)."""
        now = utcnow()
        desired: dict[str, Any] = {"nextScheduleTime": st.next_schedule_time(spec, now)}
        skipped: Event | None = None
        drifted = False
        settled = current.get("observedGeneration") == generation  # a handler is not mid-flight for this spec
        if spec.get("schedule"):
            cronjob = await self.cronjobs.get(site.namespace, naming.cronjob_name(site.name))
            if cronjob is not None and controlled_by(cronjob, site.uid):
                desired["lastScheduleTime"] = st.last_schedule_time(cronjob)
            elif settled and current.get("cronJobName"):
                drifted = True
        try:
            crawl = await self.api.latest_crawl(site.namespace, site.name)
            if crawl is not None:
                desired["lastCrawl"] = st.last_crawl(crawl)
                desired["lastSuccessTime"] = st.last_success_time(desired["lastCrawl"], current.get("lastSuccessTime"))
            last_schedule = desired.get("lastScheduleTime") or current.get("lastScheduleTime")
            skipped = st.skipped_run(site.namespace, site.name, spec, last_schedule, crawl, now)
            if settled and _is_synced(current) and not await self.api.has_site(site.namespace, site.name):
                drifted = True
        except (TransientError, ApiRejected) as exc:
            # Caught (and counted) here so the CronJob half's lastScheduleTime is still written; the caller
            # (refresher.py) counts only what fails on its side of this call.
            failures.count(failures.CRAWLSITE, failures.STATUS_REFRESH_FAILED)
            log.warning("status_refresh_failed", site=f"{site.namespace}/{site.name}", error=exc.detail)
        return status_patch(current, desired), drifted, skipped


def _is_synced(status: dict[str, Any]) -> bool:
    return any(c.get("type") == st.SYNCED and c.get("status") == "True" for c in status.get("conditions") or [])


def _cronjob_event(before: dict[str, Any] | None, after: dict[str, Any], spec: dict[str, Any]) -> Event | None:
    name = after["metadata"]["name"]
    if before is None:
        return Event("Normal", "CronJobCreated", f"created CronJob {name} ({spec['schedule']!r})")
    if before["metadata"].get("resourceVersion") == after["metadata"].get("resourceVersion"):
        return None  # server-side apply changed nothing: a resume after a restart, or a status-only update
    suspended = (after.get("spec") or {}).get("suspend")
    detail = "suspended" if suspended else f"schedule {spec['schedule']!r}"
    return Event("Normal", "CronJobUpdated", f"updated CronJob {name} ({detail})")

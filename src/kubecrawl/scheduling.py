"""The embedded scheduler (``kubecrawl standalone --sites DIR``): CrawlSite YAML files, cron in-process.

The same rules as the operator's CronJobs: 5-field cron in the site's ``timeZone`` (UTC by default),
``suspend``, ``overlapPolicy`` (Forbid skips a run while the previous crawl is active, Replace cancels it,
Allow starts another), and the same idempotency key per scheduled minute, so a restart inside a minute does
not start a second crawl.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from kubecrawl.broker.base import Publisher
from kubecrawl.core.errors import KubecrawlError
from kubecrawl.core.logging import get_logger
from kubecrawl.core.schedules import next_run, schedule_key
from kubecrawl.core.sites import CrawlSiteSpec
from kubecrawl.store.contract import CrawlStore, SiteStore
from kubecrawl.triggers import start_crawl

log = get_logger(__name__)
# Never sleep longer than this between checks, so a clock jump or a new day's DST shift is noticed.
_MAX_SLEEP_SECONDS = 30.0


@dataclass(frozen=True, slots=True)
class SiteFile:
    namespace: str
    name: str
    spec: CrawlSiteSpec


def load_sites(directory: Path) -> list[SiteFile]:
    """Every ``kind: CrawlSite`` document in ``*.yaml``/``*.yml`` files of ``directory``."""
    found: list[SiteFile] = []
    for path in sorted([*directory.glob("*.yaml"), *directory.glob("*.yml")]):
        for doc in yaml.safe_load_all(path.read_text()):
            if not isinstance(doc, dict) or doc.get("kind") != "CrawlSite":
                continue
            meta: dict[str, Any] = doc.get("metadata") or {}
            found.append(
                SiteFile(
                    namespace=meta.get("namespace", "default"),
                    name=meta["name"],
                    spec=CrawlSiteSpec.model_validate(doc.get("spec") or {}),
                )
            )
    return found


class Scheduler:
    def __init__(self, sites: SiteStore, crawls: CrawlStore, publisher: Publisher) -> None:
        self._sites = sites
        self._crawls = crawls
        self._publisher = publisher

    async def register(self, files: list[SiteFile]) -> None:
        for site in files:
            await self._sites.put(site.namespace, site.name, site.spec.model_dump(mode="json", by_alias=True))
            log.info("site_loaded", site=f"{site.namespace}/{site.name}", schedule=site.spec.schedule)

    async def run(self, files: list[SiteFile], *, now: Any = None) -> None:
        clock = now or (lambda: datetime.now(UTC))
        scheduled = [s for s in files if s.spec.schedule and not s.spec.suspend]
        upcoming = {
            (s.namespace, s.name): next_run(s.spec.schedule or "", s.spec.time_zone, clock()) for s in scheduled
        }
        while scheduled:
            current = clock()
            for site in scheduled:
                key = (site.namespace, site.name)
                if upcoming[key] <= current:
                    await self.fire(site, upcoming[key])
                    upcoming[key] = next_run(site.spec.schedule or "", site.spec.time_zone, current)
            wait = min((moment - clock()).total_seconds() for moment in upcoming.values())
            await asyncio.sleep(min(max(wait, 0.05), _MAX_SLEEP_SECONDS))

    async def fire(self, site: SiteFile, moment: datetime) -> None:
        """One scheduled run; ``start_crawl`` applies the overlap policy (a Forbid skip is logged there)."""
        try:
            await start_crawl(
                self._sites,
                self._crawls,
                self._publisher,
                site.namespace,
                site.name,
                trigger="schedule",
                idempotency_key=schedule_key(site.namespace, site.name, moment),
            )
        except KubecrawlError as exc:
            log.warning("schedule_trigger_failed", site=f"{site.namespace}/{site.name}", code=exc.code)

"""Starting a crawl of a stored site: used by ``POST /sites/{ns}/{name}/crawls``, ``kubecrawl crawl`` and the
embedded scheduler, so every trigger follows the same idempotency rules.

Scheduled keys are ``site:{ns}/{name}:cron:{scheduled time ISO-8601 UTC}``: two triggers for one scheduled
minute (CronJob retries, two schedulers) create one crawl.

``overlapPolicy`` is enforced here, for scheduled triggers (``trigger="schedule"``), whichever scheduler sent them
(the embedded one, or a CronJob's ``kubecrawl trigger``): the CronJob's ``concurrencyPolicy`` only covers its
seconds-long trigger Job, never the crawl it starts. With a crawl of the site still active, Forbid starts nothing
and answers with the active crawl, marked ``skipped="crawl_overlap"`` (the API answers 200 with it, the trigger
Job succeeds: a skipped run is not a failure), Replace cancels the active crawls first (their pages still in
flight settle as SKIPPED ``crawl_cancelled``), Allow starts another. A retry of the same scheduled minute finds
its own crawl, as before. Manual triggers are never refused, like ``kubectl create job --from=cronjob/…``.

Crawl quotas (:class:`Quota`, built by the API from the caller; docs/security.md, "Crawl quotas"): at most
``max_concurrent`` crawls not yet finished per owner (a caller, or for a scheduled run its site), else 429
``too_many_crawls``; an explicit ``max_pages`` over the caller's ceiling is 400 ``max_pages_over_limit``, and a
site whose ``scope.maxPages`` is larger is crawled up to the ceiling (the crawl's config snapshot says so). The
count is read before the crawl is created: triggers of one owner that arrive together may each pass it, so the
limit can be exceeded by as many as arrive within one database round trip.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from kubecrawl.broker.base import Publisher
from kubecrawl.broker.tasks import publish_pages
from kubecrawl.core.errors import Conflict, NotFound, PermanentError, TooManyRequests
from kubecrawl.core.logging import get_logger
from kubecrawl.core.models import FINAL_CRAWL_STATES, Crawl
from kubecrawl.core.sites import CrawlSiteSpec
from kubecrawl.core.urls import normalise_url
from kubecrawl.store.contract import CrawlStore, SiteStore

log = get_logger(__name__)
SKIPPED_OVERLAP = "crawl_overlap"
# Retry-After of too_many_crawls: crawls take minutes, a client asking again every second learns nothing.
QUOTA_RETRY_SECONDS = 30


@dataclass(frozen=True, slots=True)
class Quota:
    """What one trigger may start: ``owner`` is who the crawl counts against (``key:NAME``, ``user:NAME``,
    ``site:NS/NAME`` for a scheduled run); ``max_concurrent`` crawls not yet finished per owner, and at most
    ``max_pages`` pages per crawl (0: no limit)."""

    owner: str
    max_concurrent: int = 0
    max_pages: int = 0


@dataclass(frozen=True, slots=True)
class Triggered:
    """What a trigger did: ``created`` a crawl, found the one holding its key, or ``skipped`` (a reason code)
    because the site's overlapPolicy Forbid let its active ``crawl`` run on."""

    crawl: Crawl
    created: bool
    skipped: str | None = None


async def start_crawl(
    sites: SiteStore,
    crawls: CrawlStore,
    publisher: Publisher,
    namespace: str,
    name: str,
    *,
    trigger: str,
    idempotency_key: str | None,
    quota: Quota | None = None,
    max_pages: int | None = None,
) -> Triggered:
    """Create (and enqueue) a crawl, or return the one of this site already holding ``idempotency_key`` (or,
    overlapPolicy Forbid, the site's active crawl, ``skipped``). ``max_pages``: at most this many pages this time
    (never more than the site's ``scope.maxPages``); ``quota``: the caller's (module docstring).

    Keys are per site (:func:`site_key`): a key one site uses can never name, or block, another site's crawl.
    """
    idempotency_key = site_key(namespace, name, idempotency_key)
    site = await sites.get(namespace, name)
    if site is None:
        raise NotFound(f"site {namespace}/{name} not found", code="site_not_found")
    spec = CrawlSiteSpec.model_validate(site["spec"])
    ceiling = quota.max_pages if quota is not None and quota.max_pages else None
    if max_pages is not None and ceiling is not None and max_pages > ceiling:
        raise PermanentError(
            f"max_pages {max_pages} is over this caller's ceiling of {ceiling} pages", code="max_pages_over_limit"
        )
    if trigger == "schedule" and spec.overlap_policy != "Allow":
        running = await _settle_overlap(crawls, namespace, name, spec, idempotency_key)
        if running is not None:
            return Triggered(running, created=False, skipped=SKIPPED_OVERLAP)
    if quota is not None and quota.max_concurrent:
        await _check_concurrent(crawls, quota, idempotency_key)
    config = spec.model_dump(mode="json", by_alias=True)
    config["scope"]["maxPages"] = min(p for p in (spec.scope.max_pages, max_pages, ceiling) if p is not None)
    crawl, created, to_publish = await crawls.create(
        namespace,
        name,
        trigger=trigger,
        idempotency_key=idempotency_key,
        config=config,
        seeds=[normalise_url(spec.url)],
        started_by=None if quota is None else quota.owner,
    )
    if not created:
        if crawl.site != f"{namespace}/{name}":
            # Cannot happen with site_key (every stored key names its site); kept so a store holding keys written
            # before it can never answer with (and resume) another site's crawl.
            raise Conflict(
                f"idempotency key {idempotency_key!r} belongs to a crawl of site {crawl.site}",
                code="idempotency_key_conflict",
            )
        log.info("crawl_trigger_duplicate", crawl_id=crawl.id, idempotency_key=idempotency_key)
        # Only a crawl whose first publish failed has an empty window: retrying the trigger resumes it.
        to_publish = await crawls.reopen_window(crawl.id)
    await publish_pages(publisher, crawl.id, to_publish, release=crawls.release)
    if created:
        log.info("crawl_enqueued", crawl_id=crawl.id, site=crawl.site, trigger=trigger)
    return Triggered(crawl, created)


# The store's idempotency_key column holds 512 characters.
_KEY_COLUMN = 512


def site_key(namespace: str, name: str, key: str | None) -> str | None:
    """The key as stored: unique per site. Keys that already name this site (``site:{ns}/{name}:cron:…`` of
    schedules, ``…:job:…`` of hand-made Jobs) are kept; any other key gets the site's prefix, so a client allowed to
    trigger site A cannot take site B's key for a scheduled minute and make B's trigger answer 409 (issue 12).
    A prefixed key that would not fit the column is replaced by its SHA-256."""
    if key is None:
        return None
    prefix = f"site:{namespace}/{name}:"
    if key.startswith(prefix):
        return key
    scoped = f"{prefix}key:{key}"
    return scoped if len(scoped) <= _KEY_COLUMN else f"{prefix}sha256:{hashlib.sha256(key.encode()).hexdigest()}"


# Crawls of one site looked at for overlap: more than one is active only after a switch from Allow.
_OVERLAP_LOOKBACK = 20


async def _settle_overlap(
    crawls: CrawlStore, namespace: str, name: str, spec: CrawlSiteSpec, idempotency_key: str | None
) -> Crawl | None:
    """Forbid: the active crawl of the site, if any (this run is skipped); Replace: cancel the active ones."""
    recent = await crawls.list_for_site(namespace, name, limit=_OVERLAP_LOOKBACK)
    active = [c for c in recent if c.state not in FINAL_CRAWL_STATES and c.idempotency_key != idempotency_key]
    if not active:
        return None
    if spec.overlap_policy == "Forbid":
        log.info("schedule_skipped_overlap", site=f"{namespace}/{name}", crawl_id=active[0].id, key=idempotency_key)
        return active[0]
    for crawl in active:
        await crawls.cancel(crawl.id)
        log.info("crawl_replaced", site=f"{namespace}/{name}", crawl_id=crawl.id, idempotency_key=idempotency_key)
    return None


async def _check_concurrent(crawls: CrawlStore, quota: Quota, idempotency_key: str | None) -> None:
    """429 ``too_many_crawls`` when ``quota.owner`` has ``max_concurrent`` crawls not yet finished, unless one of
    them holds this idempotency key (a retry of a trigger that worked answers with its crawl, as always)."""
    active = await crawls.active_started_by(quota.owner, limit=quota.max_concurrent)
    if len(active) < quota.max_concurrent or any(
        idempotency_key is not None and c.idempotency_key == idempotency_key for c in active
    ):
        return
    log.info("crawl_quota_exceeded", owner=quota.owner, active=len(active), limit=quota.max_concurrent)
    raise TooManyRequests(
        f"{quota.owner} has {len(active)} crawls running, the most allowed at once; wait for one to finish",
        code="too_many_crawls",
        retry_after=QUOTA_RETRY_SECONDS,
    )

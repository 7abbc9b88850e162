"""The crawl page pipeline: one ``PageTask`` → politeness → fetch → links → one frontier transaction → settle.

Per page: robots.txt (fetched once per crawl and host, by whichever worker claims it first), the host's
request spacing (max of ``delaySeconds`` and robots ``Crawl-delay``: one request at a time, the next one that
long after the answer, cluster-wide: ``worker/turns.py``; paused by 429/503 ``Retry-After``), a conditional
fetch with the previous crawl's validators (304 = unchanged, no body), change detection by content hash, and
in-scope links added to the frontier. The depth-0 seed also reads the site's sitemaps when ``scope.sitemap`` is
on. ``finish_page`` returns the pages that now fit in the window; they are published before the message is acked.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import ValidationError

from kubecrawl.broker.base import Delivery, Publisher
from kubecrawl.broker.tasks import publish_pages
from kubecrawl.core import metrics
from kubecrawl.core.contracts import PageTask
from kubecrawl.core.errors import FetchPermanent, KubecrawlError, PermanentError, TransientError
from kubecrawl.core.logging import get_logger
from kubecrawl.core.models import FINAL_CRAWL_STATES, CrawlPageState, PageReport
from kubecrawl.core.settings import (
    MAX_HOST_PAUSE_SECONDS,
    ROBOTS_CLAIM_MARGIN_SECONDS,
    ROBOTS_CLAIMS_WAITED,
    FetchSettings,
    RetrySettings,
)
from kubecrawl.core.sites import CrawlSiteSpec
from kubecrawl.core.urls import url_host
from kubecrawl.fetch.extracting import PageMeta, extract_metadata, robots_directives
from kubecrawl.fetch.fetching import Fetcher, FetchResult
from kubecrawl.fetch.retrying import response_error
from kubecrawl.fetch.robots import DISALLOW_ALL, Robots, robots_text_for, robots_url
from kubecrawl.fetch.scope import Scope
from kubecrawl.fetch.sitemaps import MAX_SITEMAP_BYTES, parse_sitemap
from kubecrawl.store.contract import CrawlStore, PageOutcome, PageStart
from kubecrawl.store.database import database_errors, refused_value, store_error
from kubecrawl.worker.memo import Memo
from kubecrawl.worker.settling import dead_letter, handle_guarded, retry_database_unavailable, settle_failure
from kubecrawl.worker.turns import HostTurns

log = get_logger(__name__)
# A page whose host's robots.txt another worker is fetching reads the host row this often until it is READY (or
# the claim's lease ran out and this worker takes it over).
_ROBOTS_POLL_SECONDS = 0.25
# Sitemap indexes can nest; follow at most this many sitemap documents per crawl seed.
_MAX_SITEMAPS = 20
# Parsed specs of this many recent crawls are kept per process: a few KB each (the spec and its compiled scope),
# and as many as the crawls a worker may serve at once (bench/many_hosts.py runs 200; 64 made each page of such a
# load parse its crawl's spec again).
_SITES_CACHED = 1024
# Parsed robots.txt of this many (crawl, host) pairs are kept per process: a crawl spanning many hosts
# (sameHost: false) must not grow a worker's memory without end.
_ROBOTS_CACHED = 1024
# An unreachable robots.txt (5xx, no connection) disallows the whole host this long, then it is fetched again
# (RFC 9309 section 2.3.1.4 asks for a complete disallow; a crawl lasts hours, a server error often minutes).
ROBOTS_UNREACHABLE_SECONDS = 600.0


@dataclass(frozen=True, slots=True)
class Fetched:
    """What a page's fetch gave, beyond its outcome: for the page report."""

    result: FetchResult
    meta: PageMeta | None  # None for 304 Not Modified: no body was read


def page_report(start: PageStart, outcome: PageOutcome, fetched: Fetched | None) -> PageReport:
    """A settled page as ``kubecrawl crawl -o`` writes it (built once per page: validated once, never copied)."""
    fields: dict[str, Any] = {
        "url": start.url,
        "depth": start.depth,
        "state": outcome.state,
        "status": outcome.http_status,
        "changed": outcome.changed,
        "title": outcome.title,
        "description": outcome.description,
        "canonical": outcome.canonical,
        "attempts": start.attempts,
        "error_code": outcome.error_code,
        "error": outcome.error,
    }
    if fetched is not None:
        headers: dict[str, str] = {}
        for name, value in fetched.result.headers:
            key = name.lower()
            headers[key] = f"{headers[key]}, {value}" if key in headers else value
        meta = fetched.meta
        fields.update(
            final_url=fetched.result.final_url,
            headers=headers,
            timings=fetched.result.timings,
            content_type=fetched.result.content_type,
            bytes=fetched.result.body_bytes,
            fetched_at=datetime.now(UTC),
            lang=meta.language if meta else None,
            opengraph=meta.opengraph if meta else {},
            twitter=meta.twitter if meta else {},
        )
    return PageReport(**fields)


class PagePipeline:
    def __init__(
        self,
        *,
        crawls: CrawlStore,
        fetcher: Fetcher,
        publisher: Publisher,
        retry: RetrySettings,
        fetch: FetchSettings,
        on_page: Callable[[PageReport], None] | None = None,
        on_crawl_completed: Callable[[str], None] | None = None,
    ) -> None:
        self._crawls = crawls
        # the embedded crawl's observers: every settled page, with what was fetched (kubecrawl crawl -o), and the
        # id of a crawl its last page completed (kubecrawl crawl returns then, not at its next progress tick)
        self._on_page = on_page
        self._on_crawl_completed = on_crawl_completed
        self._fetcher = fetcher
        self._publisher = publisher
        self._retry = retry
        self._fetch = fetch
        # (crawl, host) → the parsed robots.txt (None: not respected) and until when (loop time; None: the crawl)
        self._robots = Memo[tuple[str, str], tuple[Robots | None, float | None]](_ROBOTS_CACHED)
        self._sites = Memo[str, tuple[CrawlSiteSpec, Scope]](_SITES_CACHED)
        self._turns = HostTurns(crawls.hosts)

    async def handle(self, delivery: Delivery) -> None:
        await handle_guarded(delivery, self._handle)

    async def _handle(self, delivery: Delivery) -> str:
        try:
            task = PageTask.model_validate_json(delivery.body)
        except ValidationError as exc:
            await dead_letter(self._publisher, delivery, code="invalid_message", reason=f"not a PageTask v1: {exc}")
            return "invalid"
        try:
            start = await self._crawls.begin_page(task.crawl_id, task.page_id)
        except database_errors() as exc:
            return await retry_database_unavailable(
                self._publisher, delivery, exc, crawl_id=task.crawl_id, url=task.url
            )
        if start is None or start.crawl_state in FINAL_CRAWL_STATES or start.attempts > self._retry.max_attempts:
            return await self._not_fetched(delivery, task, start)
        spec, scope = self._site(task.crawl_id, start.config)
        try:
            outcome, fetched = await self._crawl_page(task, start, spec, scope)
        except KubecrawlError as exc:
            return await self._failed(delivery, task, start, spec, exc)
        try:
            await self._finish(task, outcome)
        except database_errors() as exc:
            if not refused_value(exc):
                raise  # an outage: handle_guarded puts the message back
            # A value of this page (a link, a title) the database refuses: the page fails, not the worker.
            return await self._failed(delivery, task, start, spec, store_error(exc, "storing the page"))
        await delivery.ack()
        self._report(start, outcome, fetched)
        metrics.CRAWL_PAGES.labels(state=outcome.state.value).inc()
        return "completed"

    async def _not_fetched(self, delivery: Delivery, task: PageTask, start: PageStart | None) -> str:
        """Settle a delivery whose page is not to be fetched: already settled, its crawl over, or out of attempts."""
        if start is None:
            if delivery.redelivered:
                await self._republish_window(task.crawl_id)
            await delivery.ack()
            return "duplicate"
        if start.crawl_state in FINAL_CRAWL_STATES:
            await self._finish(
                task, PageOutcome(CrawlPageState.SKIPPED, error_code="crawl_" + start.crawl_state.lower())
            )
            await delivery.ack()
            return "skipped"
        reason = f"gave up after {start.attempts - 1} attempts (worker crashes or redeliveries)"
        outcome = PageOutcome(CrawlPageState.FAILED, error_code="max_attempts_exceeded", error=reason)
        await self._finish(task, outcome)
        self._report(start, outcome, None)
        await dead_letter(self._publisher, delivery, code="max_attempts_exceeded", reason=reason)
        metrics.CRAWL_PAGES.labels(state="FAILED").inc()
        return "dead_lettered"

    async def _republish_window(self, crawl_id: str) -> None:
        """A redelivered message for a page already settled: its first delivery committed the outcome and may
        have died before publishing the pages that outcome let into the window. Publish every QUEUED page of
        the crawl again (at most maxConcurrency; a duplicate is settled once) instead of leaving them to the
        lost-page sweep, 15 minutes later."""
        refs = await self._crawls.queued_pages(crawl_id)
        await publish_pages(self._publisher, crawl_id, refs, release=self._crawls.release)  # as the sweeper does
        if refs:
            log.info("crawl_window_republished", crawl_id=crawl_id, pages=len(refs))

    def _site(self, crawl_id: str, config: dict[str, Any]) -> tuple[CrawlSiteSpec, Scope]:
        """A crawl's spec is frozen when it starts: parse it and compile its scope once per crawl."""
        site = self._sites.get(crawl_id)
        if site is None:
            spec = CrawlSiteSpec.model_validate(config)
            site = self._sites.put(crawl_id, (spec, Scope.for_site(spec.url, spec.scope)))
        return site

    async def _crawl_page(
        self, task: PageTask, start: PageStart, spec: CrawlSiteSpec, scope: Scope
    ) -> tuple[PageOutcome, Fetched | None]:
        host = url_host(start.url)
        user_agent = spec.fetch.user_agent or self._fetch.user_agent
        robots = await self._robots_for(task.crawl_id, host, start.url, spec)
        if robots is not None and not robots.allowed(user_agent, start.url):
            return PageOutcome(CrawlPageState.SKIPPED, skipped_robots=True, error_code="robots_disallowed"), None
        # Request spacing: max of delaySeconds and Crawl-delay, one request of the host at a time (worker/turns.py).
        spacing = max(spec.politeness.delay_seconds, (robots.crawl_delay(user_agent) if robots else None) or 0.0)
        headers = {"User-Agent": user_agent}
        previous = start.previous or {}
        if previous.get("etag"):
            headers["If-None-Match"] = previous["etag"]
        if previous.get("last_modified"):
            headers["If-Modified-Since"] = previous["last_modified"]
        hold = timedelta(seconds=spec.fetch.timeout_seconds + ROBOTS_CLAIM_MARGIN_SECONDS)
        async with self._turns.turn(task.crawl_id, host, spacing, hold=hold, paused_until=start.held_until.get(host)):
            fetch_started = time.perf_counter()
            try:
                result = await self._fetcher.fetch(
                    start.url,
                    headers=headers,
                    timeout_seconds=spec.fetch.timeout_seconds,
                    max_body_bytes=spec.fetch.max_body_bytes,
                )
            finally:  # failed fetches too, as the metadata pipeline observes them
                metrics.FETCH_DURATION.observe(time.perf_counter() - fetch_started)
        metrics.FETCH_BYTES.inc(result.body_bytes)
        response_headers = {name.lower(): value for name, value in result.headers}
        follow = start.depth < spec.scope.max_depth
        if result.status_code == 304 and start.previous is not None:
            # Not modified: no body to read, so follow the links the previous crawl found on this page.
            links = scope.filter(previous.get("outlinks") or []) if follow else []
            if start.depth == 0 and spec.scope.sitemap:
                links.extend(await self._sitemap_links(start.url, robots, scope))
            outcome = PageOutcome(
                CrawlPageState.DONE,
                http_status=304,
                content_hash=previous.get("content_hash"),
                changed=False,
                etag=previous.get("etag"),
                last_modified=previous.get("last_modified"),
                new_links=links,
            )
            return outcome, Fetched(result, None)
        error = response_error(result.status_code, response_headers)
        if error is not None:
            if isinstance(error, TransientError) and error.retry_after:
                pause = min(error.retry_after, MAX_HOST_PAUSE_SECONDS)
                await self._crawls.hosts.pause(task.crawl_id, host, datetime.now(UTC) + timedelta(seconds=pause))
            raise error
        meta = extract_metadata(result.body, content_type=result.content_type, base_url=result.final_url)
        noindex, nofollow = robots_directives(meta.robots, response_headers.get("x-robots-tag"))
        content_hash = hashlib.sha256(result.body).hexdigest()
        links = scope.filter(meta.links) if follow and not nofollow else []
        if start.depth == 0 and spec.scope.sitemap:
            links.extend(await self._sitemap_links(start.url, robots, scope))
        outcome = PageOutcome(
            CrawlPageState.DONE,
            http_status=result.status_code,
            content_hash=content_hash,
            # first crawl of a site: nothing to compare with; later crawls: a new page counts as changed
            changed=None if not start.has_previous_crawl else previous.get("content_hash") != content_hash,
            etag=response_headers.get("etag"),
            last_modified=response_headers.get("last-modified"),
            title=meta.title,
            description=meta.description,
            canonical=meta.canonical,
            noindex=noindex,
            nofollow=nofollow,
            links=len(meta.links),
            new_links=links,
        )
        return outcome, Fetched(result, meta)

    async def _robots_for(self, crawl_id: str, host: str, url: str, spec: CrawlSiteSpec) -> Robots | None:
        """The host's robots.txt for this crawl: from this process's cache, else from the store once READY, else
        fetched by this worker when it holds the host's claim (the first, or the next after a claim's lease ran
        out: a claimer killed or hung between claim and result never blocks the host for good)."""
        key = (crawl_id, host)
        loop = asyncio.get_running_loop()
        cached = self._robots.get(key)
        if cached is not None and (cached[1] is None or cached[1] > loop.time()):
            return cached[0]
        # The claim covers one robots.txt fetch, bounded by the fetch timeout (every redirect included).
        lease = timedelta(seconds=self._fetch.timeout_seconds + ROBOTS_CLAIM_MARGIN_SECONDS)
        give_up = loop.time() + ROBOTS_CLAIMS_WAITED * lease.total_seconds()
        claimed, row = await self._crawls.hosts.claim_robots(crawl_id, host, lease=lease)
        while not claimed and row.robots_state != "READY":
            if loop.time() > give_up:  # claimers keep dying: try this page again later rather than ignore robots
                raise TransientError(f"robots.txt of {host} is still being fetched", code="robots_pending")
            await asyncio.sleep(_ROBOTS_POLL_SECONDS)
            claimed, row = await self._crawls.hosts.claim_robots(crawl_id, host, lease=lease)
        expires: float | None = None
        if claimed:
            text, ttl = await self._fetch_robots(host, url, spec)
            delay = Robots(text).crawl_delay(spec.fetch.user_agent or self._fetch.user_agent) if text else None
            expires_at = None if ttl is None else datetime.now(UTC) + timedelta(seconds=ttl)
            await self._crawls.hosts.set_robots(crawl_id, host, text, delay, expires_at=expires_at)
            expires = None if ttl is None else loop.time() + ttl
        else:
            text = row.robots_txt
            if row.expires_at is not None:  # an unreachable robots.txt's disallow: read the store again after it
                expires = loop.time() + max(0.0, (row.expires_at - datetime.now(UTC)).total_seconds())
        robots_ = Robots(text) if spec.politeness.respect_robots_txt and text is not None else None
        self._robots.put(key, (robots_, expires))
        return robots_

    async def _fetch_robots(self, host: str, url: str, spec: CrawlSiteSpec) -> tuple[str | None, float | None]:
        """What the claimer stores: the text (None when robots.txt is not respected) and how long it holds
        (None: for the crawl). Every outcome ends the claim (RFC 9309 section 2.3.1)."""
        if not spec.politeness.respect_robots_txt:
            return None, None
        try:
            response = await self._fetcher.fetch(robots_url(url))
        except FetchPermanent as exc:  # a redirect loop, garbage: unavailable (RFC 9309 section 2.3.1.2)
            log.info("robots_unavailable", host=host, code=exc.code)
            return "", None
        except KubecrawlError as exc:  # unreachable: a complete disallow for a while (RFC 9309 section 2.3.1.4)
            log.info("robots_unreachable", host=host, code=exc.code)
            return DISALLOW_ALL, ROBOTS_UNREACHABLE_SECONDS
        text = robots_text_for(response.status_code, response.body)
        if response.status_code >= 500:  # a server error: the same complete disallow, for a while
            log.info("robots_unreachable", host=host, code=f"http_{response.status_code}")
            return text, ROBOTS_UNREACHABLE_SECONDS
        return text, None

    async def _sitemap_links(self, url: str, robots: Robots | None, scope: Scope) -> list[str]:
        queue = (robots.sitemaps() if robots else []) or [robots_url(url).replace("/robots.txt", "/sitemap.xml")]
        pages: list[str] = []
        seen: set[str] = set()
        while queue and len(seen) < _MAX_SITEMAPS:
            sitemap_url = queue.pop(0)
            if sitemap_url in seen:
                continue
            seen.add(sitemap_url)
            try:
                # a sitemap may be as large as the protocol allows, whatever the cap on page bodies
                result = await self._fetcher.fetch(sitemap_url, max_body_bytes=MAX_SITEMAP_BYTES)
            except (TransientError, PermanentError) as exc:
                log.info("sitemap_unavailable", sitemap=sitemap_url, code=exc.code)
                continue
            if result.status_code != 200:
                continue
            parsed = parse_sitemap(result.body)
            if parsed.truncated:
                log.info("sitemap_truncated", sitemap=sitemap_url, urls=len(parsed.pages) + len(parsed.sitemaps))
            pages.extend(parsed.pages)
            queue.extend(parsed.sitemaps)
        return scope.filter(pages)

    async def _failed(
        self, delivery: Delivery, task: PageTask, start: PageStart, spec: CrawlSiteSpec, exc: KubecrawlError
    ) -> str:
        del spec

        async def record(reason: str, *, permanent: bool) -> None:
            if not permanent:
                await self._crawls.retry_page(task.page_id, code=exc.code, error=reason)
                return
            http_status = int(exc.code[5:]) if exc.code.startswith("http_") and exc.code[5:].isdigit() else None
            outcome = PageOutcome(CrawlPageState.FAILED, http_status=http_status, error_code=exc.code, error=reason)
            await self._finish(task, outcome)
            self._report(start, outcome, None)

        failure = await settle_failure(
            self._publisher, delivery, exc, attempts=start.attempts, retry=self._retry, record=record
        )
        if failure.outcome == "dead_lettered":
            metrics.CRAWL_PAGES.labels(state="FAILED").inc()
        return failure.outcome

    def _report(self, start: PageStart, outcome: PageOutcome, fetched: Fetched | None) -> None:
        if self._on_page is not None:
            self._on_page(page_report(start, outcome, fetched))

    async def _finish(self, task: PageTask, outcome: PageOutcome) -> None:
        result = await self._crawls.finish_page(task.crawl_id, task.page_id, outcome)
        if result is None:
            return
        await publish_pages(self._publisher, task.crawl_id, result.to_publish, release=self._crawls.release)
        if result.completed_now:
            log.info("crawl_completed", crawl_id=task.crawl_id)
            if self._on_crawl_completed is not None:
                self._on_crawl_completed(task.crawl_id)

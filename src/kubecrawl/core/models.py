"""Domain models shared by the API, the worker and the store.

The models ``kubecrawl crawl`` never validates (a metadata record, a stored fetch, a crawl page as the API lists
it) build their validators at first use (``defer_build``), not at import: a few milliseconds of every command's
start-up (docs/crawls.md, "Start-up")."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class PageStatus(StrEnum):
    QUEUED = "QUEUED"
    IN_PROGRESS = "IN_PROGRESS"
    COMPLETED = "COMPLETED"
    FAILED_RETRYABLE = "FAILED_RETRYABLE"
    FAILED_PERMANENT = "FAILED_PERMANENT"


FINAL_PAGE_STATUSES = frozenset({PageStatus.COMPLETED, PageStatus.FAILED_PERMANENT})


class PageMetadataRecord(BaseModel):
    """One row of ``page_metadata`` as the API returns it."""

    model_config = ConfigDict(from_attributes=True, defer_build=True)

    url: str
    status: PageStatus
    http_status: int | None = None
    final_url: str | None = None
    redirects: list[dict[str, Any]] | None = None
    response_headers: list[list[str]] | None = None
    cookies: list[dict[str, Any]] | None = None
    title: str | None = None
    description: str | None = None
    canonical: str | None = None
    language: str | None = None
    robots: str | None = None
    opengraph: dict[str, str] | None = None
    twitter: dict[str, str] | None = None
    content_type: str | None = None
    content_length: int | None = None
    content_hash: str | None = None
    charset: str | None = None
    body_bytes: int | None = None
    truncated: bool | None = None
    page_source: str | None = None
    timings: dict[str, float] | None = None
    attempts: int = 0
    last_error: str | None = None
    last_error_code: str | None = None
    # The latest failed attempt (``lease_expired`` when a worker held it past its lease), kept after a success.
    last_failure: str | None = None
    last_failure_code: str | None = None
    last_request_id: str | None = None
    created_at: datetime
    updated_at: datetime
    queued_at: datetime | None = None
    fetched_at: datetime | None = None


class FetchedPage(BaseModel):
    """What a successful fetch stores: the worker builds it from the fetch result and extracted metadata."""

    model_config = ConfigDict(defer_build=True)

    http_status: int
    final_url: str
    redirects: list[dict[str, Any]]
    response_headers: list[list[str]]
    cookies: list[dict[str, Any]]
    title: str | None = None
    description: str | None = None
    canonical: str | None = None
    language: str | None = None
    robots: str | None = None
    opengraph: dict[str, str] = {}
    twitter: dict[str, str] = {}
    content_type: str | None = None
    content_length: int | None = None
    content_hash: str | None = None
    charset: str | None = None
    body_bytes: int = 0
    truncated: bool = False
    page_source: str | None = None
    timings: dict[str, float] = {}


class CrawlState(StrEnum):
    QUEUED = "QUEUED"
    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"


FINAL_CRAWL_STATES = frozenset({CrawlState.COMPLETED, CrawlState.FAILED, CrawlState.CANCELLED})


class CrawlPageState(StrEnum):
    PENDING = "PENDING"  # in the frontier, not yet published (outside the concurrency window)
    QUEUED = "QUEUED"  # published (inside the window), or waiting for a retry
    FETCHING = "FETCHING"  # a worker holds it
    DONE = "DONE"
    FAILED = "FAILED"
    SKIPPED = "SKIPPED"  # robots.txt disallowed, or the crawl was cancelled


class CrawlCounters(BaseModel):
    discovered: int = 0
    queued: int = 0
    fetched: int = 0
    failed: int = 0
    changed: int = 0
    unchanged: int = 0
    skipped_robots: int = 0


class Crawl(BaseModel):
    id: str
    site: str
    state: CrawlState
    trigger: str
    idempotency_key: str | None
    counters: CrawlCounters
    in_flight: int
    version: int
    error: str | None = None
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    max_pages: int | None = Field(
        default=None,
        description="the most pages this crawl fetches: the site's scope.maxPages, lowered by the trigger's "
        'max_pages or the caller\'s ceiling (docs/security.md, "Crawl quotas")',
    )


class CrawlPage(BaseModel):
    model_config = ConfigDict(defer_build=True)

    id: int
    url: str
    depth: int
    state: CrawlPageState
    attempts: int
    http_status: int | None = None
    content_hash: str | None = None
    changed: bool | None = None
    title: str | None = None
    description: str | None = None
    canonical: str | None = None
    noindex: bool | None = None
    nofollow: bool | None = None
    links: int | None = None
    error_code: str | None = None
    error: str | None = None
    # The latest failed attempt (a retried error, ``lease_expired``), kept after the page succeeded.
    last_failure_code: str | None = None
    last_failure: str | None = None
    seq: int | None = None
    fetched_at: datetime | None = None


class PageReport(BaseModel):
    """One settled page of a crawl as ``kubecrawl crawl -o`` writes it: what was fetched, found and failed.

    Made by the page pipeline for an in-process observer (the embedded crawl); nothing stores it.
    """

    url: str
    depth: int
    state: CrawlPageState
    status: int | None = None  # the HTTP status of the final response
    final_url: str | None = None
    changed: bool | None = None
    title: str | None = None
    description: str | None = None
    canonical: str | None = None
    lang: str | None = None
    opengraph: dict[str, str] = {}
    twitter: dict[str, str] = {}
    # response headers, lower-cased names; a repeated header's values joined with ", " (RFC 9110 section 5.3)
    headers: dict[str, str] = {}
    timings: dict[str, float] = {}
    content_type: str | None = None
    bytes: int = 0
    attempts: int = 0
    error_code: str | None = None
    error: str | None = None
    fetched_at: datetime | None = None

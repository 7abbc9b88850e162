"""The store contract: what the API, the worker, the embedded runtime and the schedulers may ask of a store.

Callers depend on these Protocols, never on a database's classes; each database has one implementation of each,
built together by its opener (``store/opening.py`` for SQL). Every operation below is one atomic step that a
database can do with the consistency its own way offers: the SQL stores use transactions and row locks, a
document database would use single-document conditional updates (MongoDB: ``find_one_and_update`` with the
current state in the filter, ``update_one(upsert=True)``, ``$inc``). What each operation promises, whatever the
database, is written on it and proved by ``tests/integration/test_store_contract.py``, which runs on every
backend.

The rules every implementation keeps:
- Page metadata: a miss inserts once (only the inserter publishes); a stored result (COMPLETED,
  FAILED_PERMANENT) keeps its status and stays readable through refreshes and retries.
- Crawls: one crawl per idempotency key; ``in_flight`` (published, unfinished pages) never exceeds the crawl's
  ``politeness.maxConcurrency``; a page's outcome is written once, only while it is FETCHING; exactly one
  ``finish_page`` reports the completion; counters and the SSE sequence (``version``/``seq``) move with outcomes.
- Hosts: one claimer at a time fetches a host's robots.txt per crawl, and its claim is a lease: once it ran out
  (the claimer died or hung) or the robots.txt it stored expired, the next caller claims it; a spaced host
  takes one request at a time across every worker (a turn, held until its release or its hold ran out), the next
  one ``spacing`` after the last one's answer.
- Leases: a claim (``begin_attempt``, ``begin_page``) holds until its lease ends, the store's ``lease`` after the
  claim (its opener is given it); ``expire_leases(now)`` hands every claim whose lease ended before ``now`` to
  exactly one caller, back in the queue (QUEUED, its attempt already counted), with ``lease_expired`` as its
  error and as its ``last_failure``. ``last_failure``/``last_failure_code`` keep the latest failure (also a
  retried one) and no success erases them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal, Protocol

from kubecrawl.core.models import Crawl, CrawlPage, CrawlPageState, CrawlState, FetchedPage, PageMetadataRecord

# The error code of a claim whose lease ended before its worker settled it.
LEASE_EXPIRED = "lease_expired"
# Its detail, for a crawl page and for a metadata record (every store writes the same words).
LEASE_EXPIRED_PAGE = "the worker holding this page did not finish it before its lease ended"
LEASE_EXPIRED_RECORD = "the worker holding this record did not finish it before its lease ended"

# (url, request_id): one POST /metadata in a batch.
Request = tuple[str, str]


# -- values -----------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AttemptStart:
    attempts: int
    already_done: bool


@dataclass(frozen=True, slots=True)
class PageRef:
    """A page of a crawl's window, to publish as one message."""

    page_id: int
    url: str
    depth: int


@dataclass(frozen=True, slots=True)
class PageStart:
    """What a worker needs to fetch one page; ``None`` from ``begin_page`` means "already settled"."""

    url: str
    depth: int
    attempts: int
    crawl_state: CrawlState
    config: dict[str, Any]
    has_previous_crawl: bool
    previous: dict[str, Any] | None  # the same URL in the site's previous completed crawl
    # Hosts of this crawl that no request may reach before the given time (Retry-After, Crawl-delay).
    held_until: dict[str, datetime] = field(default_factory=dict)


@dataclass(slots=True)
class PageOutcome:
    """A fetched (or failed, or skipped) page's outcome: THE definition. The stored fields are every field but
    ``state`` (stored as itself), ``skipped_robots`` (a counter only) and ``new_links`` (the frontier's); the
    columns, statements and the SQL function's field list derive from it (``store/outcomes.py``)."""

    state: CrawlPageState
    http_status: int | None = None
    content_hash: str | None = None
    changed: bool | None = None
    etag: str | None = None
    last_modified: str | None = None
    title: str | None = None
    description: str | None = None
    canonical: str | None = None
    noindex: bool | None = None
    nofollow: bool | None = None
    links: int | None = None
    error_code: str | None = None
    error: str | None = None
    skipped_robots: bool = False
    new_links: Sequence[str] = field(default_factory=tuple)


@dataclass(slots=True)
class FinishResult:
    to_publish: list[PageRef]
    crawl_state: CrawlState
    completed_now: bool


@dataclass(frozen=True, slots=True)
class HostState:
    """A crawl's view of one host: whether its robots.txt is known yet (``READY``) and what it said."""

    robots_state: Literal["PENDING", "READY"]
    robots_txt: str | None
    expires_at: datetime | None = None  # READY until then (``set_robots``); None: for the whole crawl


@dataclass(frozen=True, slots=True)
class HostTurn:
    """A host's turn for one request (``reserve_slot``): send it ``wait`` seconds from now; the host is held for it
    until ``release_slot`` or ``held_until`` (a holder that died or hung), whichever comes first."""

    wait: float
    held_until: datetime


# -- page metadata (GET/POST /metadata, the metadata worker) ----------------------------------------------


class RequestWriter(Protocol):
    """Records batches of explicit requests (``POST /metadata``) until ``close``; ``closed`` once it failed."""

    closed: bool

    async def record(self, batch: Sequence[Request]) -> None:
        """Mark every URL of the batch QUEUED for its request (the last request per URL wins)."""
        ...

    async def close(self) -> None: ...


class PageMetadataStore(Protocol):
    async def get(self, url: str) -> PageMetadataRecord | None: ...

    async def enqueue_if_missing(self, url: str, request_id: str) -> bool:
        """Insert a QUEUED record; True only for the one caller that inserted it (and must publish)."""
        ...

    async def request_refresh(
        self, url: str, request_id: str, *, stale_before: datetime | None, stuck_before: datetime
    ) -> bool:
        """Mark a new fetch pending if the record is stale (or its pending fetch looks lost); True for one caller."""
        ...

    async def request_writer(self) -> RequestWriter:
        """A writer for ``POST /metadata`` batches; ``StoreUnavailable`` if the database cannot be reached."""
        ...

    async def release_request(self, url: str, request_id: str) -> None:
        """Undo a request whose publish failed, while the record is still this request's."""
        ...

    async def release_requests(self, batch: Sequence[Request]) -> None: ...

    async def begin_attempt(self, url: str, request_id: str) -> AttemptStart:
        """Count one more attempt (IN_PROGRESS unless a readable result is stored); ``already_done`` for a
        redelivered message whose result was already written."""
        ...

    async def complete(self, url: str, request_id: str, page: FetchedPage) -> None: ...

    async def expire_leases(self, now: datetime) -> list[Request]:
        """Claims whose lease ended before ``now``: back to QUEUED (a stored result stays readable) with
        ``lease_expired`` recorded, each returned to exactly one caller, which publishes it again."""
        ...

    async def requeue_lost(self, older_than: timedelta) -> list[Request]:
        """Records waiting for a fetch (QUEUED, FAILED_RETRYABLE) without a claim and untouched for
        ``older_than``, whose message may be lost (a retry tier expiring into a full work queue): each handed to
        exactly one caller (which touches it) for re-publishing."""
        ...

    async def fail(
        self,
        url: str,
        request_id: str,
        *,
        code: str,
        detail: str,
        permanent: bool,
        http_status: int | None = None,
    ) -> None: ...


# -- sites (PUT /sites, the embedded scheduler) -----------------------------------------------------------


class SiteStore(Protocol):
    async def put(self, namespace: str, name: str, spec: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        """Create or replace; True when it was created."""
        ...

    async def get(self, namespace: str, name: str) -> dict[str, Any] | None: ...

    async def delete(self, namespace: str, name: str) -> bool: ...

    async def list(self) -> list[dict[str, Any]]: ...


# -- crawls: lifecycle, frontier, hosts -------------------------------------------------------------------


class HostStore(Protocol):
    """Per crawl and host: robots.txt fetched once, request times spaced across every worker."""

    async def claim_robots(
        self, crawl_id: str, host: str, *, lease: timedelta, now: datetime | None = None
    ) -> tuple[bool, HostState]:
        """True for the one caller that must fetch the host's robots.txt (then ``set_robots``) before ``now +
        lease``: the first caller, or the first after the last claim's lease or the stored result ran out (as of
        ``now``, the current time when not given); else False and the host's state."""
        ...

    async def set_robots(
        self,
        crawl_id: str,
        host: str,
        robots_txt: str | None,
        crawl_delay: float | None,
        *,
        expires_at: datetime | None = None,
    ) -> None:
        """The claimer's result: the host's robots.txt is READY for every worker (until ``expires_at``, when
        given: then the next ``claim_robots`` fetches it again)."""
        ...

    async def reserve_slot(self, crawl_id: str, host: str, *, hold: timedelta) -> HostTurn | None:
        """Take the host's turn for one request, across every worker: None while another request holds it (not
        released, its hold not over); else the wait for the host's next free time (the spacing after the last
        answer, a Retry-After pause), and the host is held until ``release_slot`` or ``hold`` after that time."""
        ...

    async def release_slot(self, crawl_id: str, host: str, turn: HostTurn, spacing: float) -> None:
        """The turn's request was answered (or failed): the host's next request no sooner than ``spacing`` seconds
        from now (never shortening a pause), and the turn ends unless its hold already ran out (then another
        caller may hold the host, and keeps it)."""
        ...

    async def pause(self, crawl_id: str, host: str, until: datetime) -> None:
        """429/503 Retry-After: no worker fetches from this host before ``until`` (never shortens a pause)."""
        ...


class CrawlStore(Protocol):
    @property
    def hosts(self) -> HostStore: ...

    async def create(
        self,
        namespace: str,
        name: str,
        *,
        trigger: str,
        idempotency_key: str | None,
        config: dict[str, Any],
        seeds: Sequence[str],
        started_by: str | None = None,
    ) -> tuple[Crawl, bool, list[PageRef]]:
        """Create a crawl with its seed pages and open its window (→ the pages to publish); or return the crawl
        already holding ``idempotency_key`` (created False, nothing to publish). ``started_by``: who the crawl
        counts against (:meth:`active_started_by`)."""
        ...

    async def active_started_by(self, started_by: str, *, limit: int) -> list[Crawl]:
        """At most ``limit`` crawls created with ``started_by`` that are not finished (QUEUED or RUNNING): the
        per-identity limit of concurrent crawls (docs/security.md, "Crawl quotas")."""
        ...

    async def get(self, crawl_id: str) -> Crawl | None: ...

    async def list_for_site(self, namespace: str, name: str, *, limit: int) -> list[Crawl]:
        """The site's crawls, newest first."""
        ...

    async def pages(
        self,
        crawl_id: str,
        *,
        limit: int,
        after_id: int = 0,
        state: CrawlPageState | None = None,
        changed: bool | None = None,
    ) -> list[CrawlPage]: ...

    async def outcomes_since(self, crawl_id: str, seq: int, *, limit: int = 500) -> list[CrawlPage]:
        """Pages settled after event ``seq``, in ``seq`` order (SSE resume with Last-Event-ID)."""
        ...

    async def count_pages(self, crawl_id: str) -> int: ...

    async def cancel(self, crawl_id: str) -> Crawl | None:
        """An active crawl becomes CANCELLED; a finished one is returned unchanged; None if there is none."""
        ...

    async def release(self, crawl_id: str, refs: Sequence[PageRef]) -> None:
        """Undo a refill whose publish failed: the pages go back to PENDING and leave the window."""
        ...

    async def reopen_window(self, crawl_id: str) -> list[PageRef]:
        """Refill the window of an active crawl that has nothing in flight (its earlier publish failed)."""
        ...

    async def stalled(self) -> list[str]:
        """Active crawls with nothing in flight (``reopen_window`` moves them on)."""
        ...

    async def queued_pages(self, crawl_id: str) -> list[PageRef]:
        """The window's pages that wait for a worker (QUEUED) while the crawl is active."""
        ...

    async def requeue_lost(self, older_than: timedelta) -> list[tuple[str, PageRef]]:
        """QUEUED pages untouched for ``older_than``, each handed to exactly one caller for re-publishing."""
        ...

    async def expire_leases(self, now: datetime) -> list[tuple[str, PageRef]]:
        """FETCHING pages whose lease ended before ``now``: QUEUED again (still in the window, the attempt
        counted) with ``lease_expired`` recorded, each handed to exactly one caller for re-publishing."""
        ...

    async def begin_page(self, crawl_id: str, page_id: int) -> PageStart | None:
        """Mark the page FETCHING (one more attempt, a new lease) and return what fetching it needs; None if
        settled."""
        ...

    async def retry_page(self, page_id: int, *, code: str, error: str) -> None:
        """A transient failure: the FETCHING page waits for its retry inside the window (QUEUED); the failure
        is its ``last_failure`` too."""
        ...

    async def finish_page(self, crawl_id: str, page_id: int, outcome: PageOutcome) -> FinishResult | None:
        """Record the outcome of a FETCHING page, grow the frontier, refill the window, detect completion, as one
        step; None if the page was already settled (a duplicate delivery)."""
        ...


@dataclass(frozen=True, slots=True)
class Stores:
    """One database's stores, built together by its opener."""

    pages: PageMetadataStore
    sites: SiteStore
    crawls: CrawlStore

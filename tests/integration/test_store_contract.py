"""The store contract (store/contract.py), proved on every backend through the contract alone.

Each test takes ``stores`` and runs once per backend of tests/support/stores.py (PostgreSQL, SQLite, MongoDB on
FerretDB). Nothing here touches SQL: a backend passes by keeping the promises
written on the Protocols, whatever its database's way of keeping them.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from kubecrawl.core.clock import utcnow
from kubecrawl.core.models import CrawlPageState, CrawlState, FetchedPage, PageStatus
from kubecrawl.core.sites import CrawlSiteSpec
from kubecrawl.store.contract import CrawlStore, PageOutcome, PageRef, Stores
from tests.support.stores import BACKENDS, Backend, Place

DONE, FAILED = CrawlPageState.DONE, CrawlPageState.FAILED
_ROBOTS_LEASE = timedelta(seconds=30)
_TURN_HOLD = timedelta(seconds=30)


@pytest.fixture(params=sorted(BACKENDS))
def place(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[Backend, Place]:
    backend = BACKENDS[request.param]
    return backend, Place({name: request.getfixturevalue(name) for name in backend.fixtures}, tmp_path)


@pytest.fixture
async def stores(place: tuple[Backend, Place]) -> AsyncIterator[Stores]:
    backend, where = place
    async with backend.open(where) as opened:
        yield opened


def _config(*, max_pages: int = 100, max_concurrency: int = 4) -> dict[str, Any]:
    spec = {
        "url": "http://site.test/",
        "scope": {"maxPages": max_pages},
        "politeness": {"maxConcurrency": max_concurrency, "respectRobotsTxt": False},
    }
    return CrawlSiteSpec.model_validate(spec).model_dump(mode="json", by_alias=True)


async def _crawl(
    crawls: CrawlStore, seeds: Sequence[str] = ("http://site.test/",), *, name: str = "site", **config: int
) -> tuple[str, list[PageRef]]:
    crawl, created, refs = await crawls.create(
        "default", name, trigger="manual", idempotency_key=None, config=_config(**config), seeds=seeds
    )
    assert created
    return crawl.id, refs


async def _fetch(crawls: CrawlStore, crawl_id: str, ref: PageRef, outcome: PageOutcome) -> list[PageRef]:
    """One page through a worker's two steps; the pages its outcome let into the window."""
    assert await crawls.begin_page(crawl_id, ref.page_id) is not None
    result = await crawls.finish_page(crawl_id, ref.page_id, outcome)
    assert result is not None
    return result.to_publish


def _fetched(title: str) -> FetchedPage:
    return FetchedPage(
        http_status=200, final_url="http://a.test/", redirects=[], response_headers=[], cookies=[], title=title
    )


# -- page metadata ------------------------------------------------------------------------------------------


async def test_a_miss_is_enqueued_by_exactly_one_of_many_concurrent_callers(stores: Stores) -> None:
    inserted = await asyncio.gather(*(stores.pages.enqueue_if_missing("http://a.test/", f"r{i}") for i in range(8)))
    assert sorted(inserted) == [False] * 7 + [True]
    record = await stores.pages.get("http://a.test/")
    assert record is not None
    assert record.status is PageStatus.QUEUED


async def test_a_stored_result_stays_readable_through_a_refresh_and_a_failed_retry(stores: Stores) -> None:
    pages, url = stores.pages, "http://a.test/"
    await pages.enqueue_if_missing(url, "r1")
    assert (await pages.begin_attempt(url, "r1")).attempts == 1
    await pages.complete(url, "r1", _fetched("first"))
    stale_before, stuck_before = utcnow() + timedelta(hours=1), utcnow() - timedelta(hours=1)
    refreshed = await asyncio.gather(
        *(
            pages.request_refresh(url, f"r{i}", stale_before=stale_before, stuck_before=stuck_before)
            for i in range(2, 6)
        )
    )
    assert sorted(refreshed) == [False, False, False, True]
    await pages.fail(url, "r2", code="timeout", detail="timed out", permanent=False)
    record = await pages.get(url)
    assert record is not None
    assert (record.status, record.title, record.last_error_code) == (PageStatus.COMPLETED, "first", "timeout")


async def test_a_redelivered_message_whose_result_is_written_is_already_done(stores: Stores) -> None:
    pages, url = stores.pages, "http://a.test/"
    await pages.enqueue_if_missing(url, "r1")
    await pages.begin_attempt(url, "r1")
    await pages.complete(url, "r1", _fetched("t"))
    assert (await pages.begin_attempt(url, "r1")).already_done


async def test_records_completed_together_are_each_stored_and_a_refused_value_fails_only_its_own(
    stores: Stores,
) -> None:
    pages = stores.pages
    urls = [f"http://a.test/{i}" for i in range(8)]
    titles = [f"title {i}" for i in range(8)]
    titles[3] = "a NUL \x00 byte"  # PostgreSQL refuses it in text; other databases may store it
    for url in urls:
        await pages.enqueue_if_missing(url, "r1")
    results = await asyncio.gather(
        *(pages.complete(url, "r1", _fetched(title)) for url, title in zip(urls, titles, strict=True)),
        return_exceptions=True,
    )
    for index, (url, result) in enumerate(zip(urls, results, strict=True)):
        if index == 3:
            continue
        assert result is None
        record = await pages.get(url)
        assert record is not None
        assert (record.status, record.title) == (PageStatus.COMPLETED, titles[index])


async def test_claims_made_together_each_count_their_own_attempt_and_a_written_result_is_already_done(
    stores: Stores,
) -> None:
    pages = stores.pages
    urls = [f"http://a.test/{i}" for i in range(5)]
    for url in urls:
        await pages.enqueue_if_missing(url, "r1")
    await pages.begin_attempt(urls[0], "r1")
    await pages.complete(urls[0], "r1", _fetched("done"))
    # urls[1] twice: a duplicate delivery claimed at the same moment counts a second attempt.
    claims = [*urls, urls[1]]
    starts = await asyncio.gather(*(pages.begin_attempt(url, "r1") for url in claims))
    assert starts[0].already_done
    assert not any(start.already_done for start in starts[1:])
    assert sorted([starts[1].attempts, starts[5].attempts]) == [1, 2]
    assert [start.attempts for start in starts[2:5]] == [1, 1, 1]
    for url in urls[1:]:
        record = await pages.get(url)
        assert record is not None
        assert record.status is PageStatus.IN_PROGRESS


async def test_a_permanent_failure_is_a_readable_result(stores: Stores) -> None:
    pages, url = stores.pages, "http://a.test/"
    await pages.enqueue_if_missing(url, "r1")
    await pages.begin_attempt(url, "r1")
    await pages.fail(url, "r1", code="http_404", detail="not found", permanent=True, http_status=404)
    record = await pages.get(url)
    assert record is not None
    assert (record.status, record.http_status, record.fetched_at is not None) == (
        PageStatus.FAILED_PERMANENT,
        404,
        True,
    )


async def test_a_failed_publish_is_released_unless_a_later_request_holds_the_record(stores: Stores) -> None:
    pages = stores.pages
    await pages.enqueue_if_missing("http://a.test/", "r1")
    await pages.release_request("http://a.test/", "r1")
    assert await pages.get("http://a.test/") is None
    await pages.enqueue_if_missing("http://b.test/", "r1")
    writer = await pages.request_writer()
    try:
        await writer.record([("http://b.test/", "r2")])
    finally:
        await writer.close()
    await pages.release_requests([("http://b.test/", "r1")])
    record = await pages.get("http://b.test/")
    assert record is not None
    assert record.last_request_id == "r2"


async def test_a_request_batch_queues_each_url_for_its_last_request(stores: Stores) -> None:
    writer = await stores.pages.request_writer()
    try:
        await writer.record([("http://a.test/", "r1"), ("http://b.test/", "r2"), ("http://a.test/", "r3")])
    finally:
        await writer.close()
    assert writer.closed
    a, b = await stores.pages.get("http://a.test/"), await stores.pages.get("http://b.test/")
    assert a is not None
    assert b is not None
    assert (a.status, a.last_request_id, b.last_request_id) == (PageStatus.QUEUED, "r3", "r2")


# -- sites ----------------------------------------------------------------------------------------------------


async def test_a_record_is_in_progress_while_claimed_and_failed_retryable_after_a_transient_failure(
    stores: Stores,
) -> None:
    pages, url = stores.pages, "http://a.test/"
    await pages.enqueue_if_missing(url, "r1")
    assert (await pages.get(url)).status is PageStatus.QUEUED  # type: ignore[union-attr]
    await pages.begin_attempt(url, "r1")
    assert (await pages.get(url)).status is PageStatus.IN_PROGRESS  # type: ignore[union-attr]
    await pages.fail(url, "r1", code="timeout", detail="timed out", permanent=False)
    record = await pages.get(url)
    assert record is not None
    assert (record.status, record.last_error_code, record.last_failure_code) == (
        PageStatus.FAILED_RETRYABLE,
        "timeout",
        "timeout",
    )


async def test_an_expired_claim_of_a_record_is_queued_again_once_and_a_later_success_keeps_lease_expired(
    stores: Stores,
) -> None:
    pages, url = stores.pages, "http://a.test/"
    await pages.enqueue_if_missing(url, "r1")
    await pages.begin_attempt(url, "r1")
    assert await pages.expire_leases(utcnow()) == []  # the lease still holds
    later = utcnow() + timedelta(days=1)
    swept = await asyncio.gather(pages.expire_leases(later), pages.expire_leases(later))
    assert sorted(swept, key=len) == [[], [(url, "r1")]]  # handed to exactly one sweeper
    record = await pages.get(url)
    assert record is not None
    assert (record.status, record.attempts, record.last_error_code, record.last_failure_code) == (
        PageStatus.QUEUED,
        1,
        "lease_expired",
        "lease_expired",
    )
    assert (await pages.begin_attempt(url, "r1")).attempts == 2
    await pages.complete(url, "r1", _fetched("second try"))
    assert await pages.expire_leases(later) == []  # a settled record holds no lease
    record = await pages.get(url)
    assert record is not None
    assert (record.status, record.last_error_code, record.last_failure_code, record.attempts) == (
        PageStatus.COMPLETED,
        None,
        "lease_expired",
        2,
    )


async def test_a_waiting_record_whose_message_may_be_lost_is_handed_out_once_and_a_claimed_one_never(
    stores: Stores,
) -> None:
    pages = stores.pages
    await pages.enqueue_if_missing("http://a.test/queued", "r1")
    await pages.enqueue_if_missing("http://a.test/retrying", "r2")
    await pages.begin_attempt("http://a.test/retrying", "r2")
    await pages.fail("http://a.test/retrying", "r2", code="timeout", detail="timed out", permanent=False)
    await pages.enqueue_if_missing("http://a.test/claimed", "r3")
    await pages.begin_attempt("http://a.test/claimed", "r3")
    await pages.enqueue_if_missing("http://a.test/done", "r4")
    await pages.begin_attempt("http://a.test/done", "r4")
    await pages.complete("http://a.test/done", "r4", _fetched("t"))
    assert await pages.requeue_lost(timedelta(hours=1)) == []  # nothing is that old
    assert sorted(await pages.requeue_lost(timedelta(0))) == [
        ("http://a.test/queued", "r1"),
        ("http://a.test/retrying", "r2"),
    ]
    # Handing a record out touches it: other sweepers leave it alone for ``older_than``.
    later = await asyncio.gather(pages.requeue_lost(timedelta(hours=1)), pages.requeue_lost(timedelta(hours=1)))
    assert all(found == [] for found in later)


async def test_an_expired_refresh_of_a_stored_result_keeps_it_readable(stores: Stores) -> None:
    pages, url = stores.pages, "http://a.test/"
    await pages.enqueue_if_missing(url, "r1")
    await pages.begin_attempt(url, "r1")
    await pages.complete(url, "r1", _fetched("first"))
    await pages.request_refresh(url, "r2", stale_before=utcnow() + timedelta(hours=1), stuck_before=utcnow())
    await pages.begin_attempt(url, "r2")
    assert await pages.expire_leases(utcnow() + timedelta(days=1)) == [(url, "r2")]
    record = await pages.get(url)
    assert record is not None
    assert (record.status, record.title, record.last_failure_code) == (PageStatus.COMPLETED, "first", "lease_expired")


async def test_a_site_is_created_replaced_listed_and_deleted(stores: Stores) -> None:
    sites = stores.sites
    assert (await sites.put("ns", "b", {"url": "http://b.test/"}))[1]
    assert (await sites.put("ns", "a", {"url": "http://a.test/"}))[1]
    replaced, created = await sites.put("ns", "a", {"url": "http://a2.test/"})
    assert not created
    assert replaced["spec"] == {"url": "http://a2.test/"}
    assert [(s["name"], s["spec"]["url"]) for s in await sites.list()] == [
        ("a", "http://a2.test/"),
        ("b", "http://b.test/"),
    ]
    assert await sites.delete("ns", "a")
    assert not await sites.delete("ns", "a")
    assert await sites.get("ns", "a") is None


# -- crawls ---------------------------------------------------------------------------------------------------


async def test_concurrent_triggers_with_one_idempotency_key_create_one_crawl(stores: Stores) -> None:
    key = f"k-{uuid.uuid4().hex}"
    results = await asyncio.gather(
        *(
            stores.crawls.create(
                "default", "site", trigger="cron", idempotency_key=key, config=_config(), seeds=["http://site.test/"]
            )
            for _ in range(5)
        )
    )
    assert sorted(created for _, created, _ in results) == [False] * 4 + [True]
    assert len({crawl.id for crawl, _, _ in results}) == 1
    assert sorted(len(refs) for _, _, refs in results) == [0] * 4 + [1]


async def test_the_window_holds_at_most_max_concurrency_pages_in_flight(stores: Stores) -> None:
    crawls = stores.crawls
    seeds = [f"http://site.test/{i}" for i in range(5)]
    crawl_id, window = await _crawl(crawls, seeds, max_concurrency=2)
    assert [ref.url for ref in window] == seeds[:2]
    states = {page.url: page.state for page in await crawls.pages(crawl_id, limit=10)}
    assert states == {url: CrawlPageState.QUEUED if url in seeds[:2] else CrawlPageState.PENDING for url in seeds}
    links = [f"http://site.test/new/{i}" for i in range(3)]
    refilled = await _fetch(crawls, crawl_id, window[0], PageOutcome(DONE, new_links=links))
    assert len(refilled) == 1  # one page left the window, one came in: the shallowest PENDING
    assert refilled[0].url == seeds[2]
    crawl = await crawls.get(crawl_id)
    assert crawl is not None
    assert (crawl.in_flight, crawl.counters.discovered, crawl.counters.queued) == (2, 8, 3)


async def test_max_pages_caps_the_frontier(stores: Stores) -> None:
    crawls = stores.crawls
    crawl_id, (seed,) = await _crawl(crawls, max_pages=3)
    links = [f"http://site.test/{i}" for i in range(10)]
    await _fetch(crawls, crawl_id, seed, PageOutcome(DONE, new_links=links))
    assert await crawls.count_pages(crawl_id) == 3


async def test_a_crawl_completes_once_with_its_counters_and_a_gapless_event_sequence(stores: Stores) -> None:
    crawls = stores.crawls
    crawl_id, (seed,) = await _crawl(crawls)
    window = await _fetch(
        crawls, crawl_id, seed, PageOutcome(DONE, new_links=["http://site.test/a", "http://site.test/b"])
    )
    outcomes = [PageOutcome(DONE, changed=True), PageOutcome(FAILED, error_code="http_500", error="boom")]
    results = await asyncio.gather(
        *(crawls.begin_page(crawl_id, ref.page_id) for ref in window),
    )
    assert all(start is not None for start in results)
    finished = await asyncio.gather(
        *(crawls.finish_page(crawl_id, ref.page_id, outcome) for ref, outcome in zip(window, outcomes, strict=True))
    )
    assert [result is not None and result.completed_now for result in finished].count(True) == 1
    crawl = await crawls.get(crawl_id)
    assert crawl is not None
    assert crawl.state is CrawlState.COMPLETED
    assert crawl.finished_at is not None
    counters = crawl.counters
    assert (counters.discovered, counters.fetched, counters.failed, counters.changed) == (3, 2, 1, 1)
    assert (crawl.in_flight, crawl.version) == (0, 3)
    settled = await crawls.outcomes_since(crawl_id, 0)
    assert [page.seq for page in settled] == [1, 2, 3]
    assert [page.seq for page in await crawls.outcomes_since(crawl_id, 2)] == [3]
    assert len(await crawls.pages(crawl_id, limit=10, state=FAILED)) == 1


async def test_a_crawls_pages_are_listed_in_order_after_an_id_and_filtered_by_state_and_change(stores: Stores) -> None:
    crawls = stores.crawls
    crawl_id, window = await _crawl(crawls, [f"http://site.test/{i}" for i in range(4)])
    outcomes = [
        PageOutcome(DONE, changed=True),
        PageOutcome(DONE, changed=False),
        PageOutcome(FAILED, error_code="http_500", error="boom"),
    ]
    for ref, outcome in zip(window, outcomes, strict=False):
        await _fetch(crawls, crawl_id, ref, outcome)
    listed = await crawls.pages(crawl_id, limit=10)
    assert [page.url for page in listed] == [ref.url for ref in window]
    assert [page.url for page in await crawls.pages(crawl_id, limit=2, after_id=listed[0].id)] == [
        window[1].url,
        window[2].url,
    ]
    assert [page.url for page in await crawls.pages(crawl_id, limit=10, changed=True)] == [window[0].url]
    assert [page.url for page in await crawls.pages(crawl_id, limit=10, state=FAILED)] == [window[2].url]
    queued = await crawls.pages(crawl_id, limit=10, state=CrawlPageState.QUEUED)
    assert [page.url for page in queued] == [window[3].url]
    assert [page.seq for page in await crawls.outcomes_since(crawl_id, 0, limit=2)] == [1, 2]


async def test_a_settled_page_is_not_begun_again_and_a_second_outcome_changes_nothing(stores: Stores) -> None:
    crawls = stores.crawls
    crawl_id, (first, second) = await _crawl(crawls, ["http://site.test/", "http://site.test/2"])
    await _fetch(crawls, crawl_id, first, PageOutcome(DONE, title="kept"))
    assert await crawls.begin_page(crawl_id, first.page_id) is None
    assert await crawls.finish_page(crawl_id, first.page_id, PageOutcome(FAILED, error="late")) is None
    (page,) = await crawls.pages(crawl_id, limit=1)
    assert (page.state, page.title) == (DONE, "kept")
    crawl = await crawls.get(crawl_id)
    assert crawl is not None
    assert (crawl.counters.fetched, crawl.counters.failed, crawl.version, crawl.in_flight) == (1, 0, 1, 1)
    del second


async def test_a_retried_page_waits_in_the_window_and_counts_its_attempts(stores: Stores) -> None:
    crawls = stores.crawls
    crawl_id, (seed,) = await _crawl(crawls)
    await crawls.begin_page(crawl_id, seed.page_id)
    await crawls.retry_page(seed.page_id, code="timeout", error="timed out")
    assert [ref.page_id for ref in await crawls.queued_pages(crawl_id)] == [seed.page_id]
    (page,) = await crawls.pages(crawl_id, limit=1)
    assert (page.state, page.last_failure_code) == (CrawlPageState.QUEUED, "timeout")
    start = await crawls.begin_page(crawl_id, seed.page_id)
    assert start is not None
    assert (start.attempts, start.crawl_state) == (2, CrawlState.RUNNING)


async def test_a_page_is_fetching_while_claimed_and_queued_again_once_its_lease_expired(stores: Stores) -> None:
    crawls = stores.crawls
    crawl_id, (seed,) = await _crawl(crawls)
    await crawls.begin_page(crawl_id, seed.page_id)
    assert [p.state for p in await crawls.pages(crawl_id, limit=5)] == [CrawlPageState.FETCHING]
    assert await crawls.expire_leases(utcnow()) == []  # the lease still holds
    later = utcnow() + timedelta(days=1)
    swept = await asyncio.gather(crawls.expire_leases(later), crawls.expire_leases(later))
    assert sorted(swept, key=len) == [[], [(crawl_id, seed)]]  # handed to exactly one sweeper
    (page,) = await crawls.pages(crawl_id, limit=5)
    assert (page.state, page.attempts, page.error_code, page.last_failure_code) == (
        CrawlPageState.QUEUED,
        1,
        "lease_expired",
        "lease_expired",
    )
    crawl = await crawls.get(crawl_id)
    assert crawl is not None
    assert (crawl.state, crawl.in_flight) == (CrawlState.RUNNING, 1)  # still in the window


async def test_a_crawl_whose_only_page_expired_completes_when_it_is_fetched_again_and_keeps_the_failure(
    stores: Stores,
) -> None:
    crawls = stores.crawls
    crawl_id, (seed,) = await _crawl(crawls)
    await crawls.begin_page(crawl_id, seed.page_id)
    await crawls.expire_leases(utcnow() + timedelta(days=1))
    # The hung worker's late outcome is not written: the page is no longer its to settle.
    assert await crawls.finish_page(crawl_id, seed.page_id, PageOutcome(DONE, title="late")) is None
    start = await crawls.begin_page(crawl_id, seed.page_id)
    assert start is not None
    assert start.attempts == 2
    result = await crawls.finish_page(crawl_id, seed.page_id, PageOutcome(DONE, title="second worker"))
    assert result is not None
    assert (result.completed_now, result.crawl_state) == (True, CrawlState.COMPLETED)
    (page,) = await crawls.pages(crawl_id, limit=5)
    assert (page.state, page.title, page.error_code, page.last_failure_code) == (
        DONE,
        "second worker",
        None,
        "lease_expired",
    )
    assert await crawls.expire_leases(utcnow() + timedelta(days=2)) == []  # a settled page holds no lease


async def test_a_released_window_stalls_the_crawl_until_it_is_reopened(stores: Stores) -> None:
    crawls = stores.crawls
    crawl_id, window = await _crawl(crawls, ["http://site.test/", "http://site.test/2"])
    await crawls.release(crawl_id, window)
    assert crawl_id in await crawls.stalled()
    assert await crawls.queued_pages(crawl_id) == []
    reopened = await crawls.reopen_window(crawl_id)
    assert reopened == window
    assert await crawls.reopen_window(crawl_id) == []  # something is in flight again
    assert crawl_id not in await crawls.stalled()


async def test_a_lost_page_is_handed_out_once_and_not_again_until_it_is_untouched_that_long(stores: Stores) -> None:
    crawls = stores.crawls
    crawl_id, window = await _crawl(crawls, [f"http://site.test/{i}" for i in range(3)])
    swept = await crawls.requeue_lost(timedelta(0))
    assert sorted(ref.page_id for _, ref in swept) == sorted(ref.page_id for ref in window)
    assert {crawl for crawl, _ in swept} == {crawl_id}
    # Handing a page out touches it: other sweepers leave it alone for ``older_than``.
    later = await asyncio.gather(crawls.requeue_lost(timedelta(hours=1)), crawls.requeue_lost(timedelta(hours=1)))
    assert all(found == [] for found in later)


async def test_cancel_ends_an_active_crawl_and_leaves_a_finished_one(stores: Stores) -> None:
    crawls = stores.crawls
    crawl_id, _ = await _crawl(crawls)
    cancelled = await crawls.cancel(crawl_id)
    assert cancelled is not None
    assert cancelled.state is CrawlState.CANCELLED
    again = await crawls.cancel(crawl_id)
    assert again is not None
    assert (again.state, again.version) == (CrawlState.CANCELLED, cancelled.version)
    assert await crawls.cancel(str(uuid.uuid4())) is None
    assert await crawls.get(str(uuid.uuid4())) is None


async def test_pages_of_many_crawls_started_and_finished_at_once_settle_each_crawl_on_its_own(stores: Stores) -> None:
    """A worker's calls for many crawls at once (one crawl per host): each crawl's window, counters, event
    sequence and completion are its own, however the store batches them."""
    crawls = stores.crawls
    started = [
        await _crawl(crawls, [f"http://site.test/{n}/a", f"http://site.test/{n}/b"], name=f"site-{n}") for n in range(6)
    ]
    pages = [(crawl_id, ref) for crawl_id, refs in started for ref in refs]
    starts = await asyncio.gather(*(crawls.begin_page(crawl_id, ref.page_id) for crawl_id, ref in pages))
    assert [start is not None and start.url == ref.url for start, (_, ref) in zip(starts, pages, strict=True)] == [
        True
    ] * len(pages)
    # Each crawl's first page finds a link, its second fails: the link is the crawl's third and last page.
    outcomes = [
        PageOutcome(DONE, new_links=[ref.url + "/c"]) if index % 2 == 0 else PageOutcome(FAILED, error_code="http_500")
        for index, (_, ref) in enumerate(pages)
    ]
    finished = await asyncio.gather(
        *(
            crawls.finish_page(crawl_id, ref.page_id, outcome)
            for (crawl_id, ref), outcome in zip(pages, outcomes, strict=True)
        )
    )
    assert all(result is not None and not result.completed_now for result in finished)
    links = {
        crawl_id: [ref for result in finished[2 * n : 2 * n + 2] if result for ref in result.to_publish]
        for n, (crawl_id, _) in enumerate(started)
    }
    assert [len(refs) for refs in links.values()] == [1] * len(started)
    last = [(crawl_id, ref) for crawl_id, refs in links.items() for ref in refs]
    assert all(await asyncio.gather(*(crawls.begin_page(crawl_id, ref.page_id) for crawl_id, ref in last)))
    completed = await asyncio.gather(
        *(crawls.finish_page(crawl_id, ref.page_id, PageOutcome(DONE)) for crawl_id, ref in last)
    )
    assert all(result is not None and result.completed_now for result in completed)
    for crawl_id, _ in started:
        crawl = await crawls.get(crawl_id)
        assert crawl is not None
        assert crawl.state is CrawlState.COMPLETED
        assert (crawl.counters.discovered, crawl.counters.fetched, crawl.counters.failed) == (3, 2, 1)
        assert (crawl.in_flight, crawl.version) == (0, 3)
        assert [page.seq for page in await crawls.outcomes_since(crawl_id, 0)] == [1, 2, 3]


async def test_a_cancelled_crawls_outcomes_finished_with_another_crawls_do_not_fail_them(stores: Stores) -> None:
    crawls = stores.crawls
    cancelled_id, (cancelled_ref,) = await _crawl(crawls, name="cancelled")
    other_id, (other_ref,) = await _crawl(crawls, name="other")
    assert await crawls.begin_page(cancelled_id, cancelled_ref.page_id) is not None
    assert await crawls.begin_page(other_id, other_ref.page_id) is not None
    await crawls.cancel(cancelled_id)
    late, other = await asyncio.gather(
        crawls.finish_page(cancelled_id, cancelled_ref.page_id, PageOutcome(DONE, new_links=["http://site.test/x"])),
        crawls.finish_page(other_id, other_ref.page_id, PageOutcome(DONE)),
    )
    assert late is not None
    assert (late.crawl_state, late.completed_now, late.to_publish) == (CrawlState.CANCELLED, False, [])
    assert other is not None
    assert other.completed_now
    cancelled, completed = await crawls.get(cancelled_id), await crawls.get(other_id)
    assert cancelled is not None
    assert completed is not None
    assert (cancelled.state, cancelled.counters.discovered) == (CrawlState.CANCELLED, 1)
    assert (completed.state, completed.counters.fetched) == (CrawlState.COMPLETED, 1)


async def test_a_value_refused_in_one_crawls_outcome_fails_no_other_crawls_outcome_finished_with_it(
    stores: Stores,
) -> None:
    crawls = stores.crawls
    refused_id, (refused_ref,) = await _crawl(crawls, name="refused")
    other_id, (other_ref,) = await _crawl(crawls, name="other")
    assert await crawls.begin_page(refused_id, refused_ref.page_id) is not None
    assert await crawls.begin_page(other_id, other_ref.page_id) is not None
    _, other = await asyncio.gather(
        # PostgreSQL refuses a NUL byte in text; other databases may store it.
        crawls.finish_page(refused_id, refused_ref.page_id, PageOutcome(DONE, title="a NUL \x00 byte")),
        crawls.finish_page(other_id, other_ref.page_id, PageOutcome(DONE, title="fine")),
        return_exceptions=True,
    )
    assert not isinstance(other, BaseException)
    assert other is not None
    assert other.completed_now
    completed = await crawls.get(other_id)
    assert completed is not None
    assert (completed.state, completed.counters.fetched) == (CrawlState.COMPLETED, 1)


async def test_a_page_is_started_only_under_its_own_crawls_id(stores: Stores) -> None:
    crawls = stores.crawls
    first_id, (first_ref,) = await _crawl(crawls, name="first")
    second_id, (second_ref,) = await _crawl(crawls, name="second")
    wrong, right = await asyncio.gather(
        crawls.begin_page(second_id, first_ref.page_id), crawls.begin_page(second_id, second_ref.page_id)
    )
    assert wrong is None
    assert right is not None
    assert right.url == second_ref.url
    assert await crawls.begin_page(first_id, first_ref.page_id) is not None


async def test_an_identitys_active_crawls_are_the_unfinished_ones_it_started_and_carry_their_max_pages(
    stores: Stores,
) -> None:
    crawls = stores.crawls

    async def start(who: str | None, name: str) -> str:
        crawl, created, _ = await crawls.create(
            "default",
            name,
            trigger="manual",
            idempotency_key=None,
            config=_config(max_pages=7),
            seeds=["http://a.t/"],
            started_by=who,
        )
        assert created
        assert crawl.max_pages == 7
        return crawl.id

    first, second = await start("key:a", "one"), await start("key:a", "two")
    await start("key:b", "one")
    await start(None, "one")
    assert sorted(c.id for c in await crawls.active_started_by("key:a", limit=10)) == sorted([first, second])
    assert len(await crawls.active_started_by("key:a", limit=1)) == 1
    await crawls.cancel(first)
    assert [c.id for c in await crawls.active_started_by("key:a", limit=10)] == [second]
    assert await crawls.active_started_by("key:nobody", limit=10) == []


async def test_a_sites_crawls_are_listed_newest_first_and_a_later_crawl_sees_the_previous_one(stores: Stores) -> None:
    crawls = stores.crawls
    first_id, (seed,) = await _crawl(crawls)
    await _fetch(crawls, first_id, seed, PageOutcome(DONE, content_hash="h1", etag='"e1"'))
    second_id, (again,) = await _crawl(crawls)
    assert [crawl.id for crawl in await crawls.list_for_site("default", "site", limit=5)] == [second_id, first_id]
    start = await crawls.begin_page(second_id, again.page_id)
    assert start is not None
    assert start.has_previous_crawl
    assert start.previous is not None
    assert (start.previous["content_hash"], start.previous["etag"]) == ("h1", '"e1"')


# -- hosts ----------------------------------------------------------------------------------------------------


async def test_one_caller_claims_a_hosts_robots_txt_and_the_others_read_it_when_ready(stores: Stores) -> None:
    crawl_id, _ = await _crawl(stores.crawls)
    hosts = stores.crawls.hosts
    claims = await asyncio.gather(*(hosts.claim_robots(crawl_id, "site.test", lease=_ROBOTS_LEASE) for _ in range(4)))
    assert sorted(claimed for claimed, _ in claims) == [False, False, False, True]
    assert all(state.robots_state == "PENDING" for _, state in claims)
    await hosts.set_robots(crawl_id, "site.test", "User-agent: *\nDisallow: /x", 2.0)
    claimed, state = await hosts.claim_robots(crawl_id, "site.test", lease=_ROBOTS_LEASE)
    assert (claimed, state.robots_state, state.robots_txt) == (False, "READY", "User-agent: *\nDisallow: /x")


async def test_a_robots_claim_whose_lease_ran_out_is_taken_over_by_exactly_one_caller(stores: Stores) -> None:
    # The claimer was killed (or hangs) between its claim and its result: the host must not stay PENDING.
    crawl_id, _ = await _crawl(stores.crawls)
    hosts = stores.crawls.hosts
    assert (await hosts.claim_robots(crawl_id, "site.test", lease=_ROBOTS_LEASE))[0]
    assert not (await hosts.claim_robots(crawl_id, "site.test", lease=_ROBOTS_LEASE))[0]  # the lease holds
    later = utcnow() + 2 * _ROBOTS_LEASE
    claims = await asyncio.gather(
        *(hosts.claim_robots(crawl_id, "site.test", lease=_ROBOTS_LEASE, now=later) for _ in range(4))
    )
    assert sorted(claimed for claimed, _ in claims) == [False, False, False, True]
    await hosts.set_robots(crawl_id, "site.test", "", None)
    claimed, state = await hosts.claim_robots(crawl_id, "site.test", lease=_ROBOTS_LEASE, now=later + _ROBOTS_LEASE)
    assert (claimed, state.robots_state, state.robots_txt, state.expires_at) == (False, "READY", "", None)


async def test_a_robots_result_that_expires_is_claimed_again_after_it(stores: Stores) -> None:
    # An unreachable robots.txt disallows the host for a while, then the next page fetches robots.txt again.
    crawl_id, _ = await _crawl(stores.crawls)
    hosts = stores.crawls.hosts
    await hosts.claim_robots(crawl_id, "site.test", lease=_ROBOTS_LEASE)
    expires = utcnow() + timedelta(minutes=10)
    await hosts.set_robots(crawl_id, "site.test", "User-agent: *\nDisallow: /\n", None, expires_at=expires)
    claimed, state = await hosts.claim_robots(crawl_id, "site.test", lease=_ROBOTS_LEASE)
    assert (claimed, state.robots_state, state.expires_at) == (False, "READY", expires)
    after = expires + timedelta(seconds=1)
    claimed, state = await hosts.claim_robots(crawl_id, "site.test", lease=_ROBOTS_LEASE, now=after)
    assert (claimed, state.robots_state) == (True, "PENDING")


async def test_a_spaced_host_takes_one_turn_at_a_time_and_the_next_is_spaced_from_its_release(stores: Stores) -> None:
    crawl_id, _ = await _crawl(stores.crawls)
    hosts = stores.crawls.hosts
    for host in ("site.test", "other.test"):
        await hosts.claim_robots(crawl_id, host, lease=_ROBOTS_LEASE)
    turns = await asyncio.gather(*(hosts.reserve_slot(crawl_id, "site.test", hold=_TURN_HOLD) for _ in range(4)))
    (turn,) = [turn for turn in turns if turn is not None]  # exactly one of concurrent callers holds the host
    assert turn.wait == 0.0
    assert await hosts.reserve_slot(crawl_id, "site.test", hold=_TURN_HOLD) is None  # held until its release
    other = await hosts.reserve_slot(crawl_id, "other.test", hold=_TURN_HOLD)  # another host: its own turns
    assert other is not None
    await hosts.release_slot(crawl_id, "site.test", turn, 10.0)
    after = await hosts.reserve_slot(crawl_id, "site.test", hold=_TURN_HOLD)
    # Spaced from the release (the answer), measured from this call's own "now" (MongoDB rounds up to a millisecond).
    assert after is not None
    assert 9.0 < after.wait <= 10.001


async def test_a_turn_whose_hold_ran_out_passes_on_and_its_late_release_leaves_the_next_turn(stores: Stores) -> None:
    """A holder that died or hung holds the host until its hold ends; if it answers after that, its release spaces
    the host but does not end the turn another caller holds by then."""
    crawl_id, _ = await _crawl(stores.crawls)
    hosts = stores.crawls.hosts
    await hosts.claim_robots(crawl_id, "site.test", lease=_ROBOTS_LEASE)
    hung = await hosts.reserve_slot(crawl_id, "site.test", hold=timedelta(milliseconds=1))
    assert hung is not None
    await asyncio.sleep(0.01)  # past its hold
    taken = await hosts.reserve_slot(crawl_id, "site.test", hold=_TURN_HOLD)
    assert taken is not None
    await hosts.release_slot(crawl_id, "site.test", hung, 0.0)
    assert await hosts.reserve_slot(crawl_id, "site.test", hold=_TURN_HOLD) is None


async def test_a_pause_holds_the_host_and_neither_a_pause_nor_a_release_shortens_it(stores: Stores) -> None:
    crawl_id, (seed,) = await _crawl(stores.crawls)
    hosts = stores.crawls.hosts
    await hosts.claim_robots(crawl_id, "site.test", lease=_ROBOTS_LEASE)
    turn = await hosts.reserve_slot(crawl_id, "site.test", hold=_TURN_HOLD)
    assert turn is not None
    until = utcnow() + timedelta(seconds=100)
    await hosts.pause(crawl_id, "site.test", until)
    await hosts.pause(crawl_id, "site.test", until - timedelta(seconds=50))  # never shortens a pause
    await hosts.release_slot(crawl_id, "site.test", turn, 1.0)  # nor does the answer's spacing
    after = await hosts.reserve_slot(crawl_id, "site.test", hold=_TURN_HOLD)
    assert after is not None
    assert 99.0 < after.wait <= 100.0
    start = await stores.crawls.begin_page(crawl_id, seed.page_id)
    assert start is not None
    # Within a millisecond: MongoDB stores times to the millisecond, SQL to the microsecond.
    assert list(start.held_until) == ["site.test"]
    assert abs(start.held_until["site.test"] - until) < timedelta(milliseconds=1)

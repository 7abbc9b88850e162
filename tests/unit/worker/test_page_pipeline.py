"""The crawl page pipeline without servers: what a page's fetch writes to the crawl store, and how its message
is settled (acked, retried through a delay tier, or dead-lettered with the page FAILED)."""

from __future__ import annotations

from typing import Any

from kubecrawl.core.contracts import PageTask
from kubecrawl.core.errors import FetchTransient
from kubecrawl.core.models import CrawlPageState, CrawlState, PageReport
from kubecrawl.core.settings import FetchSettings, RetrySettings
from kubecrawl.fetch.fetching import FetchResult
from kubecrawl.store.contract import PageStart
from kubecrawl.worker.crawling import PagePipeline
from tests.support.fakes import FakeCrawls, FakeDelivery, FakeFetcher, FakePublisher

URL = "https://example.com/a"
SITE = {"url": "https://example.com/", "politeness": {"respectRobotsTxt": False}, "scope": {"maxDepth": 2}}


def start(attempts: int = 1, **changes: Any) -> PageStart:
    fields: dict[str, Any] = {
        "url": URL,
        "depth": 1,
        "attempts": attempts,
        "crawl_state": CrawlState.RUNNING,
        "config": SITE,
        "has_previous_crawl": False,
        "previous": None,
    }
    return PageStart(**(fields | changes))


def page_delivery() -> FakeDelivery:
    task = PageTask(crawl_id="c1", page_id=7, url=URL, depth=1)
    return FakeDelivery(task.model_dump_json().encode(), queue="kubecrawl.pages", message_id="c1:7")


def html(body: str, status: int = 200) -> FetchResult:
    return FetchResult(
        url=URL,
        final_url=URL,
        status_code=status,
        headers=[("content-type", "text/html")],
        body=body.encode(),
        content_type="text/html",
        content_length=len(body),
        truncated=False,
    )


def pipeline(
    crawls: FakeCrawls, publisher: FakePublisher, fetcher: FakeFetcher, reports: list[PageReport] | None = None
) -> PagePipeline:
    return PagePipeline(
        crawls=crawls,  # type: ignore[arg-type]
        fetcher=fetcher,  # type: ignore[arg-type]
        publisher=publisher,
        retry=RetrySettings(max_attempts=3, base_delay_seconds=1, max_delay_seconds=1),
        fetch=FetchSettings(),
        on_page=None if reports is None else reports.append,
    )


async def test_a_fetched_page_is_finished_with_its_metadata_and_in_scope_links_then_acked() -> None:
    crawls, publisher, delivery = FakeCrawls(start()), FakePublisher(), page_delivery()
    body = "<html><head><title>A</title></head><body><a href='/b'>b</a><a href='https://other.example/'>x</a></body>"
    await pipeline(crawls, publisher, FakeFetcher(html(body))).handle(delivery)
    [outcome] = crawls.finished
    assert (outcome.state, outcome.http_status, outcome.title) == (CrawlPageState.DONE, 200, "A")
    assert list(outcome.new_links) == ["https://example.com/b"]
    assert delivery.settled == ["ack"]
    assert publisher.published == []


async def test_a_transient_failure_with_attempts_left_is_retried_through_a_delay_tier_without_finishing() -> None:
    crawls, publisher, delivery = FakeCrawls(start(attempts=1)), FakePublisher(), page_delivery()
    error = FetchTransient("connection refused", code="connect_error")
    await pipeline(crawls, publisher, FakeFetcher(error)).handle(delivery)
    assert crawls.retried == [(7, "connect_error", "connection refused")]
    assert crawls.finished == []
    [(queue, headers)] = publisher.published
    assert queue.startswith("kubecrawl.pages.retry.")
    assert headers["x-kubecrawl-attempt"] == 1
    assert delivery.settled == ["ack"]


async def test_the_last_attempt_finishes_the_page_failed_reports_it_and_dead_letters_the_message() -> None:
    crawls, publisher, delivery, reports = FakeCrawls(start(attempts=3)), FakePublisher(), page_delivery(), []
    error = FetchTransient("connection refused", code="connect_error")
    await pipeline(crawls, publisher, FakeFetcher(error), reports).handle(delivery)
    [outcome] = crawls.finished
    assert (outcome.state, outcome.error_code) == (CrawlPageState.FAILED, "connect_error")
    assert outcome.error == "connection refused (gave up after 3 attempts)"
    assert crawls.retried == []
    [(queue, headers)] = publisher.published
    assert (queue, headers["x-kubecrawl-code"]) == ("kubecrawl.dead", "connect_error")
    assert [report.url for report in reports] == [URL]
    assert delivery.settled == ["ack"]


async def test_a_permanent_http_error_fails_the_page_at_once_with_its_status() -> None:
    crawls, publisher, delivery = FakeCrawls(start(attempts=1)), FakePublisher(), page_delivery()
    await pipeline(crawls, publisher, FakeFetcher(html("gone", status=404))).handle(delivery)
    [outcome] = crawls.finished
    assert (outcome.state, outcome.http_status, outcome.error_code) == (CrawlPageState.FAILED, 404, "http_404")
    assert publisher.published[0][0] == "kubecrawl.dead"


async def test_a_page_of_a_finished_crawl_is_acked_without_fetching() -> None:
    crawls, publisher, delivery = FakeCrawls(start(crawl_state=CrawlState.CANCELLED)), FakePublisher(), page_delivery()
    fetcher = FakeFetcher(AssertionError("must not fetch"))
    await pipeline(crawls, publisher, fetcher).handle(delivery)
    assert fetcher.calls == 0
    assert delivery.settled == ["ack"]

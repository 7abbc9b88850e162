"""The page report a crawl's observer gets (``kubecrawl crawl -o``), built from a page's outcome and fetch."""

from __future__ import annotations

from kubecrawl.core.models import CrawlPageState, CrawlState
from kubecrawl.fetch.extracting import PageMeta
from kubecrawl.fetch.fetching import FetchResult
from kubecrawl.store.contract import PageOutcome, PageStart
from kubecrawl.worker.crawling import Fetched, page_report

START = PageStart(
    url="https://e.com/a",
    depth=2,
    attempts=2,
    crawl_state=CrawlState.RUNNING,
    config={},
    has_previous_crawl=True,
    previous=None,
)


def fetched(status: int, meta: PageMeta | None) -> Fetched:
    headers = [("Content-Type", "text/html"), ("Set-Cookie", "a=1"), ("set-cookie", "b=2")]
    result = FetchResult(
        url=START.url,
        final_url="https://e.com/a/",
        status_code=status,
        headers=headers,
        body=b"<html></html>",
        content_type="text/html",
        content_length=13,
        truncated=False,
        timings={"total_ms": 3.5},
    )
    return Fetched(result, meta)


def test_a_fetched_page_reports_its_metadata_headers_and_timings() -> None:
    meta = PageMeta(is_html=True, language="de", opengraph={"og:title": "T"}, twitter={"twitter:card": "summary"})
    outcome = PageOutcome(CrawlPageState.DONE, http_status=200, changed=True, title="T", canonical="https://e.com/a/")
    report = page_report(START, outcome, fetched(200, meta))
    assert (report.url, report.final_url, report.depth, report.attempts) == (START.url, "https://e.com/a/", 2, 2)
    assert (report.status, report.changed, report.title, report.lang) == (200, True, "T", "de")
    assert report.opengraph == {"og:title": "T"}
    assert report.twitter == {"twitter:card": "summary"}
    assert report.headers == {"content-type": "text/html", "set-cookie": "a=1, b=2"}
    assert (report.timings, report.bytes, report.content_type) == ({"total_ms": 3.5}, 13, "text/html")
    assert report.fetched_at is not None


def test_a_not_modified_page_reports_no_metadata_of_its_own() -> None:
    outcome = PageOutcome(CrawlPageState.DONE, http_status=304, changed=False)
    report = page_report(START, outcome, fetched(304, None))
    assert (report.status, report.changed, report.lang, report.opengraph) == (304, False, None, {})


def test_a_failed_page_reports_why() -> None:
    outcome = PageOutcome(CrawlPageState.FAILED, http_status=404, error_code="http_404", error="HTTP 404")
    report = page_report(START, outcome, None)
    assert (report.state, report.status, report.error_code, report.error) == ("FAILED", 404, "http_404", "HTTP 404")
    assert (report.headers, report.bytes, report.fetched_at) == ({}, 0, None)

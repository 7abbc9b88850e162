"""``kubecrawl crawl``'s stats and page files (pure)."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from kubecrawl.core.models import Crawl, CrawlCounters, CrawlPageState, CrawlState, PageReport
from kubecrawl.reporting import CrawlStats, PageWriter, finish_reason, format_for


def crawl(state: CrawlState = CrawlState.COMPLETED, *, discovered: int = 3, fetched: int = 2) -> Crawl:
    now = datetime.now(UTC)
    counters = CrawlCounters(discovered=discovered, fetched=fetched)
    return Crawl(
        id="c1", site="cli/x", state=state, trigger="manual", idempotency_key=None, counters=counters,
        in_flight=0, version=1, created_at=now,
    )  # fmt: skip


REPORTS = [
    PageReport(url="https://e.com/", depth=0, state=CrawlPageState.DONE, status=200, bytes=100, attempts=1),
    PageReport(url="https://e.com/b", depth=1, state=CrawlPageState.DONE, status=200, bytes=50, attempts=3),
    PageReport(
        url="https://e.com/x", depth=1, state=CrawlPageState.FAILED, status=404, error_code="http_404", attempts=1
    ),
    PageReport(url="https://e.com/p", depth=1, state=CrawlPageState.SKIPPED, error_code="robots_disallowed"),
]


@pytest.mark.parametrize(
    ("path", "fmt", "expected"),
    [
        (Path("p.jsonl"), None, "jsonl"),
        (Path("p.NDJSON"), None, "jsonl"),
        (Path("p.json"), None, "json"),
        (Path("p.csv"), None, "csv"),
        (Path("p.csv"), "json", "json"),
        (None, None, "jsonl"),
    ],
)
def test_the_format_is_the_one_asked_for_else_the_files_suffix(
    path: Path | None, fmt: str | None, expected: str
) -> None:
    assert format_for(path, fmt) == expected  # type: ignore[arg-type]


def test_a_suffix_that_names_no_format_is_refused() -> None:
    with pytest.raises(ValueError, match=r"p\.txt"):
        format_for(Path("p.txt"), None)


def test_stats_count_status_codes_failures_skips_retries_and_bytes() -> None:
    stats = CrawlStats()
    for report in REPORTS:
        stats.add(report)
    summary = stats.summary(crawl(), duration=2.0, max_pages=100)
    assert summary["status_codes"] == {"200": 2, "404": 1}
    assert summary["failures"] == {"http_404": 1}
    assert summary["skipped"] == {"robots_disallowed": 1}
    assert (summary["retries"], summary["bytes"], summary["pages_per_second"]) == (2, 150, 1.0)
    assert [page.url for page in stats.failed_pages] == ["https://e.com/x"]


@pytest.mark.parametrize(
    ("state", "discovered", "reason"),
    [
        (CrawlState.COMPLETED, 3, "finished"),
        (CrawlState.COMPLETED, 100, "max_pages"),
        (CrawlState.CANCELLED, 3, "cancelled"),
        (CrawlState.FAILED, 3, "failed"),
    ],
)
def test_finish_reason(state: CrawlState, discovered: int, reason: str) -> None:
    assert finish_reason(crawl(state, discovered=discovered), max_pages=100) == reason


@pytest.mark.parametrize("fmt", ["json", "jsonl", "csv"])
def test_an_empty_crawl_still_writes_a_valid_file(fmt: str) -> None:
    stream = io.StringIO()
    PageWriter(stream, fmt).close()  # type: ignore[arg-type]
    text = stream.getvalue()
    if fmt == "json":
        assert json.loads(text) == []
    elif fmt == "jsonl":
        assert text == ""
    else:
        assert text.splitlines()[0].startswith("url,depth,state,status")


def test_json_and_jsonl_hold_the_same_pages() -> None:
    as_json, as_jsonl = io.StringIO(), io.StringIO()
    for stream, fmt in ((as_json, "json"), (as_jsonl, "jsonl")):
        writer = PageWriter(stream, fmt)  # type: ignore[arg-type]
        for report in REPORTS:
            writer.write(report)
        writer.close()
    assert json.loads(as_json.getvalue()) == [json.loads(line) for line in as_jsonl.getvalue().splitlines()]

"""What ``kubecrawl crawl`` reports: the crawl's stats (as Scrapy prints them at the end) and its pages as a file.

Both are fed page by page from the page pipeline's reports (``PageReport``), so a large crawl's pages go to the
file as they settle instead of piling up in memory; only counters are kept.
"""

from __future__ import annotations

import csv
import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Literal

from kubecrawl.core.models import Crawl, CrawlPageState, CrawlState, PageReport

Format = Literal["json", "jsonl", "csv"]
FORMATS: tuple[Format, ...] = ("json", "jsonl", "csv")
_SUFFIXES: dict[str, Format] = {".json": "json", ".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv"}
# CSV has no nesting: these columns hold JSON objects.
_NESTED = ("opengraph", "twitter", "headers", "timings")
COLUMNS = tuple(PageReport.model_fields)
# Failed pages whose reason the summary lists one by one; the rest are counted (and all are in the -o file).
FAILURES_SHOWN = 10


def format_for(path: Path | None, fmt: Format | None) -> Format:
    """The output format: the one asked for, else the file's suffix; ``ValueError`` when neither says."""
    if fmt is not None:
        return fmt
    if path is not None and path.suffix.lower() in _SUFFIXES:
        return _SUFFIXES[path.suffix.lower()]
    if path is None:
        return "jsonl"
    raise ValueError(f"cannot tell the format of {path} from its suffix")


class PageWriter:
    """Writes page reports as JSON Lines, one JSON array, or CSV (nested fields as JSON), as they come."""

    def __init__(self, stream: IO[str], fmt: Format) -> None:
        self._stream = stream
        self._format = fmt
        self._count = 0
        self._csv: csv.DictWriter[str] | None = None
        if fmt == "csv":
            self._csv = csv.DictWriter(stream, fieldnames=COLUMNS)
            self._csv.writeheader()
        elif fmt == "json":
            stream.write("[")

    def write(self, report: PageReport) -> None:
        row = report.model_dump(mode="json")
        if self._csv is not None:
            self._csv.writerow(
                {key: json.dumps(value, ensure_ascii=False) if key in _NESTED else value for key, value in row.items()}
            )
        elif self._format == "json":
            self._stream.write(("," if self._count else "") + "\n" + json.dumps(row, ensure_ascii=False))
        else:
            self._stream.write(json.dumps(row, ensure_ascii=False) + "\n")
        self._count += 1

    def close(self) -> None:
        if self._format == "json":
            self._stream.write("\n]\n" if self._count else "]\n")
        self._stream.flush()


@dataclass
class CrawlStats:
    """Counters over the settled pages of one crawl."""

    status_codes: Counter[int] = field(default_factory=Counter)
    failures: Counter[str] = field(default_factory=Counter)
    skipped: Counter[str] = field(default_factory=Counter)
    retries: int = 0
    bytes: int = 0
    failed_pages: list[PageReport] = field(default_factory=list)

    def add(self, report: PageReport) -> None:
        if report.status is not None:
            self.status_codes[report.status] += 1
        if report.state is CrawlPageState.FAILED:
            self.failures[report.error_code or "unknown"] += 1
            if len(self.failed_pages) < FAILURES_SHOWN:
                self.failed_pages.append(report)
        elif report.state is CrawlPageState.SKIPPED:
            self.skipped[report.error_code or "unknown"] += 1
        self.retries += max(report.attempts - 1, 0)
        self.bytes += report.bytes

    def summary(self, crawl: Crawl, *, duration: float, max_pages: int) -> dict[str, Any]:
        """The stats as ``--json`` prints them (and the table shows them)."""
        return {
            "finish_reason": finish_reason(crawl, max_pages=max_pages),
            "pages": crawl.counters.fetched,
            "status_codes": {str(code): count for code, count in sorted(self.status_codes.items())},
            "failures": dict(self.failures.most_common()),
            "skipped": dict(self.skipped.most_common()),
            "retries": self.retries,
            "bytes": self.bytes,
            "duration_seconds": round(duration, 3),
            "pages_per_second": round(crawl.counters.fetched / duration, 2) if duration > 0 else None,
        }


def finish_reason(crawl: Crawl, *, max_pages: int) -> str:
    """Why the crawl stopped, in Scrapy's words where they fit: ``finished``, ``max_pages`` (its page budget
    spent: more pages were linked), ``cancelled`` or ``failed``."""
    if crawl.state is CrawlState.COMPLETED:
        return "max_pages" if crawl.counters.discovered >= max_pages else "finished"
    return crawl.state.value.lower()

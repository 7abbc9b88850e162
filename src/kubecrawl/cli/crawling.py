"""``kubecrawl crawl URL``: one site in-process (SQLite, the in-process broker) under a progress bar, then its
stats as a table or JSON, and every page to ``-o FILE`` (docs/cli.md).

The first request leaves about as soon as an interpreter with an HTTP client could send it (docs/crawls.md,
"Start-up"): the embedded runtime, rich's progress bar and the reporting are imported in the command's body.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from kubecrawl.cli import starting
from kubecrawl.cli.exiting import ExitCode, expected_failures, fail

if TYPE_CHECKING:
    from rich.console import Console

    from kubecrawl.core.models import Crawl, PageReport
    from kubecrawl.core.settings import Settings
    from kubecrawl.core.sites import CrawlSiteSpec
    from kubecrawl.reporting import CrawlStats, Format, PageWriter

# The crawl options as the spec names them, to name the option a user got wrong.
_CRAWL_OPTIONS: dict[tuple[int | str, ...], str] = {
    ("url",): "URL",
    ("scope", "maxPages"): "--max-pages",
    ("scope", "maxDepth"): "--max-depth",
    ("politeness", "maxConcurrency"): "--concurrency",
}


def crawl(
    url: Annotated[str, typer.Argument(help="the site's start URL")],
    max_pages: Annotated[int, typer.Option(help="stop discovering after this many pages")] = 100,
    max_depth: Annotated[int, typer.Option(help="links followed at most this deep from the start page")] = 3,
    concurrency: Annotated[int, typer.Option(help="pages fetched at once")] = 8,
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="write every page to FILE (.jsonl, .json or .csv; - for stdout)"),
    ] = None,
    fmt: Annotated[str | None, typer.Option("--format", help="json, jsonl or csv; default: from the -o suffix")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the finished crawl and its stats as JSON")] = False,
    db: Annotated[Path, typer.Option(help="SQLite file (kept, so the next crawl reports changes)")] = Path(
        "kubecrawl.db"
    ),
) -> None:
    """Crawl one site and print its stats.

    Runs in-process (SQLite, in-process broker) with a progress bar; -o FILE writes every page. Exits 1
    when the crawl did not complete or fetched no page (docs/cli.md lists every exit code)."""
    import json
    import time

    from rich.console import Console

    from kubecrawl.core.models import CrawlState
    from kubecrawl.core.urls import normalise_url
    from kubecrawl.embedded import sqlite_url
    from kubecrawl.reporting import CrawlStats

    to_stdout = output == Path("-") or (output is None and fmt is not None)
    page_format = _page_format(output, fmt, to_stdout=to_stdout, as_json=as_json)
    spec = _crawl_spec(url, max_pages=max_pages, max_depth=max_depth, concurrency=concurrency)
    starting.check_db_path(db)
    # Progress and stats own the terminal (a failed page is listed with its reason); logs only for errors.
    settings = starting.settings("crawl", database_url=sqlite_url(db), log_format="console", log_level="ERROR")
    with expected_failures(json_logs=False):
        settings.target_policy().check_literal(normalise_url(spec.url))  # refused before anything is drawn
    console = Console(stderr=as_json or to_stdout)
    stats = CrawlStats()
    started = time.perf_counter()
    with contextlib.ExitStack() as files:
        writer = None
        if to_stdout or output is not None:
            writer = _page_writer(files, None if to_stdout else output, page_format)
        result = _crawl_with_progress(settings, spec, console, stats, writer)
    elapsed = time.perf_counter() - started
    summary = stats.summary(result, duration=elapsed, max_pages=max_pages)
    if as_json:
        body = result.model_dump(mode="json") | {"elapsed_seconds": round(elapsed, 3), "stats": summary}
        typer.echo(json.dumps(body, indent=2))
    else:
        _print_stats(console, result, summary, stats, output=None if to_stdout else output)
    counters = result.counters
    # A crawl that completed without fetching a single page (start URL refused, site down) is a failure too.
    if result.state is not CrawlState.COMPLETED or (counters.fetched == 0 and counters.failed > 0):
        raise typer.Exit(ExitCode.FAILED)


def _page_format(output: Path | None, fmt: str | None, *, to_stdout: bool, as_json: bool) -> Format:
    from kubecrawl.reporting import FORMATS, format_for

    if as_json and to_stdout:
        fail(ExitCode.USAGE, "--json and the pages would both go to stdout", "write the pages to a file: -o FILE")
    if fmt is not None and fmt not in FORMATS:
        fail(ExitCode.USAGE, f"unknown --format {fmt!r}", "use --format json, jsonl or csv")
    try:
        return format_for(None if to_stdout else output, fmt)
    except ValueError as exc:
        fail(ExitCode.USAGE, str(exc), "name the file .jsonl, .json or .csv, or pass --format")


def _crawl_spec(url: str, *, max_pages: int, max_depth: int, concurrency: int) -> CrawlSiteSpec:
    """The CrawlSiteSpec of ``kubecrawl crawl``'s options, or one line naming the option out of range."""
    from pydantic import ValidationError

    from kubecrawl.core.sites import CrawlSiteSpec

    try:
        return CrawlSiteSpec.model_validate(
            {
                "url": url,
                "scope": {"maxPages": max_pages, "maxDepth": max_depth},
                "politeness": {"maxConcurrency": concurrency},
            }
        )
    except ValidationError as exc:
        error = exc.errors()[0]
        option = _CRAWL_OPTIONS.get(tuple(error["loc"]), ".".join(map(str, error["loc"])))
        cause = f"{option}: {error['msg'][:1].lower()}{error['msg'][1:]} (got {error['input']!r})"
        fail(ExitCode.USAGE, cause, "see kubecrawl crawl --help")


def _page_writer(files: contextlib.ExitStack, output: Path | None, page_format: Format) -> PageWriter:
    """A writer of the pages to ``output`` (stdout for None); an unwritable file is one line and exit 5."""
    import sys

    from kubecrawl.reporting import PageWriter

    if output is None:
        return PageWriter(sys.stdout, page_format)
    try:
        stream = files.enter_context(output.open("w", encoding="utf-8", newline=""))
    except OSError as exc:
        fail(ExitCode.OUTPUT, f"cannot write {output}: {exc.strerror}", "pass -o FILE in a folder you can write to")
    files.callback(PageWriter.close, writer := PageWriter(stream, page_format))
    return writer


def _crawl_with_progress(
    settings: Settings, spec: CrawlSiteSpec, console: Console, stats: CrawlStats, writer: PageWriter | None
) -> Crawl:
    """Run the crawl under a progress bar; every settled page goes into the stats and the output file."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from kubecrawl.embedded import crawl_once

    def settled(report: PageReport) -> None:
        stats.add(report)
        if writer is not None:
            writer.write(report)

    # transient: the bar is gone when the crawl ends or fails, leaving the stats (or the one error line)
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("failed {task.fields[failed]}"),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    ) as progress:
        task = progress.add_task(spec.url, total=1, failed=0)

        def show(current: Crawl) -> None:
            counters = current.counters
            finished = counters.fetched + counters.failed + counters.skipped_robots
            progress.update(task, completed=finished, total=max(counters.discovered, 1), failed=counters.failed)

        with expected_failures(json_logs=False):
            return starting.run(crawl_once(settings, spec, on_progress=show, on_page=settled))


def _print_stats(
    console: Console, crawl: Crawl, summary: dict[str, Any], stats: CrawlStats, *, output: Path | None
) -> None:
    """The stats as Scrapy prints them at the end, then why each failed page failed (the first few)."""
    from rich.table import Table

    table = Table(title=f"crawl {crawl.state.value}: {summary['finish_reason']}", show_header=False)
    table.add_column("stat")
    table.add_column("value", justify="right")
    counters = crawl.counters
    table.add_row("crawl", crawl.id)
    table.add_row("pages fetched", str(counters.fetched))
    table.add_row("changed / unchanged", f"{counters.changed} / {counters.unchanged}")
    for code, count in summary["status_codes"].items():
        table.add_row(f"status {code}", str(count))
    for reason, count in summary["failures"].items():
        table.add_row(f"failed: {reason}", str(count))
    for reason, count in summary["skipped"].items():
        table.add_row(f"skipped: {reason}", str(count))
    table.add_row("retries", str(summary["retries"]))
    table.add_row("bytes", f"{summary['bytes']:,}")
    table.add_row("duration", f"{summary['duration_seconds']:.1f} s")
    table.add_row("pages/s", f"{summary['pages_per_second'] or 0:.1f}")
    if output is not None:
        table.add_row("pages written to", str(output))
    console.print(table)
    for page in stats.failed_pages:
        console.print(f"failed {page.url}: {page.error_code}: {page.error}", highlight=False, markup=False)
    more = sum(summary["failures"].values()) - len(stats.failed_pages)
    if more > 0:
        console.print(f"… and {more} more failed pages, each with its reason in -o FILE", highlight=False)

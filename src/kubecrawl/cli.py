"""The ``kubecrawl`` command: one image, one entry point per role.

Each command builds ``Settings`` from the environment, configures logging once, and passes both down. Expected
failures (a database or broker that cannot be reached, a refused URL, a bad option or setting) end the command with
ONE line and a documented exit code (``ExitCode``, docs/cli.md): ``error: <cause>; <what to do>`` on stderr, or,
for a command that logs JSON, one last JSON log event ``command_failed`` — never a traceback. This is the one place
errors map to exit codes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Coroutine, Iterator
from enum import IntEnum
from importlib.metadata import version as package_version
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, TypeVar

import typer
import uvicorn
from pydantic import ValidationError

from kubecrawl import keys
from kubecrawl.core.errors import BlockedTarget, ConnectionLost, InvalidUrl, PublisherNotReady, StoreUnavailable
from kubecrawl.core.logging import configure_logging, get_logger
from kubecrawl.core.settings import Settings

if TYPE_CHECKING:
    from rich.console import Console

    from kubecrawl.core.models import Crawl, PageReport
    from kubecrawl.core.sites import CrawlSiteSpec
    from kubecrawl.reporting import CrawlStats, Format, PageWriter

HELP = """\
kubecrawl fetches web page metadata and crawls whole sites.

\b
Crawl one site, no servers needed:
  kubecrawl crawl https://example.com/ -o pages.jsonl
Run the whole product (API, worker, schedules) on this machine:
  kubecrawl standalone --sites examples/

On Kubernetes the same image runs the api, worker, operator, migrate and trigger commands. Settings come from
KUBECRAWL_* environment variables; `kubecrawl COMMAND --help` shows a command's options.

\b
Exit codes: 0 done; 1 the crawl or trigger failed; 2 a bad option, setting or URL;
3 the database cannot be reached; 4 RabbitMQ cannot be reached;
5 the output file cannot be written. An expected failure prints one line.
"""

app = typer.Typer(no_args_is_help=True, add_completion=False, help=HELP, rich_markup_mode=None)
app.add_typer(keys.app, name="keys")
log = get_logger("kubecrawl.cli")
T = TypeVar("T")


class ExitCode(IntEnum):
    """What ``kubecrawl`` exits with (docs/cli.md)."""

    OK = 0
    FAILED = 1  # the work failed: a crawl fetched no page or did not complete, a trigger was refused
    USAGE = 2  # a bad option, argument, setting or URL (click's own code for usage errors)
    DATABASE = 3  # the database cannot be opened or reached
    BROKER = 4  # RabbitMQ cannot be reached
    OUTPUT = 5  # the output file cannot be written


def _fail(code: ExitCode, cause: str, todo: str, *, json_logs: bool = False) -> NoReturn:
    """End the command with one line: a JSON log event where the logs are JSON, else ``error: …`` on stderr."""
    cause = " ".join(cause.split())  # one line, whatever the underlying message held
    if json_logs:
        log.error("command_failed", error=cause, hint=todo, exit_code=int(code))
    else:
        typer.echo(f"error: {cause}; {todo}", err=True)
    raise typer.Exit(int(code))


def _database_cause(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None)  # SQLAlchemy's DBAPIError: the driver's own message, without SQL or links
    if orig is not None:
        return f"{type(orig).__name__}: {orig}"
    detail = getattr(exc, "detail", None)
    return str(detail) if detail else f"{type(exc).__name__}: {exc}"


def _expected(exc: Exception, *, os_errors: ExitCode | None) -> tuple[ExitCode, str, str] | None:
    """The exit code, cause and what to do for a failure a user can fix; ``None`` for a bug."""
    from sqlalchemy.exc import SQLAlchemyError

    if isinstance(exc, StoreUnavailable | SQLAlchemyError) or (
        os_errors is ExitCode.DATABASE and isinstance(exc, OSError)
    ):
        cause = f"cannot use the database: {_database_cause(exc)}"
        return (
            ExitCode.DATABASE,
            cause,
            "check KUBECRAWL_DATABASE_URL (or --db) and that the database is up and reachable",
        )
    if isinstance(exc, ConnectionLost | PublisherNotReady):
        cause = f"cannot reach RabbitMQ: {exc.detail}"
        return ExitCode.BROKER, cause, "check KUBECRAWL_RABBITMQ_URL and that the broker is up and reachable"
    if isinstance(exc, InvalidUrl):
        return ExitCode.USAGE, f"{exc.code}: {exc.detail}", "give an http(s) URL"
    if isinstance(exc, BlockedTarget):
        todo = "to crawl a private address set KUBECRAWL_ALLOWED_PRIVATE_NETWORKS (or KUBECRAWL_ALLOW_PRIVATE_TARGETS)"
        return ExitCode.USAGE, f"{exc.code}: {exc.detail}", todo
    return None


@contextlib.contextmanager
def _expected_failures(*, json_logs: bool, os_errors: ExitCode | None = None) -> Iterator[None]:
    """Turn the failures a user can fix into ``_fail``; ``os_errors`` names the service an ``OSError`` came from
    (a refused connection to the database during ``migrate``). Anything else is a bug: its traceback stays."""
    try:
        yield
    except Exception as exc:
        failure = _expected(exc, os_errors=os_errors)
        if failure is None:
            raise
        _fail(*failure, json_logs=json_logs)


def _settings(service: str, **overrides: object) -> Settings:
    try:
        settings = Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        error = exc.errors()[0]
        name = "KUBECRAWL_" + "__".join(str(part) for part in error["loc"]).upper()
        _fail(ExitCode.USAGE, f"invalid setting {name}: {error['msg']}", f"fix {name} in the environment")
    settings = settings.model_copy(update={"service_name": f"kubecrawl-{service}"})
    configure_logging(settings.service_name, log_format=settings.log_format, level=settings.log_level)
    return settings


def _version(value: bool) -> None:
    if value:
        typer.echo(f"kubecrawl {package_version('kubecrawl')}")
        raise typer.Exit


@app.callback()
def _main(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="print the version and exit")
    ] = False,
) -> None:
    del version


def _run(main: Coroutine[Any, Any, T]) -> T:
    """Run a process's main coroutine on uvloop, as uvicorn already runs the API (``uvicorn[standard]``): its event
    loop, in C, took about 5 % off the embedded crawl's time (1-18 % over five paired runs of 2,000 pages; the
    raw loop gains as much, bench/crawl_vs_scrapy.py). Plain asyncio where uvloop does not exist (Windows)."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - a platform without uvloop
        return asyncio.run(main)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main)


def _loopback(host: str) -> bool:
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@app.command()
def api(
    host: Annotated[str, typer.Option(help="address to listen on")] = "0.0.0.0",  # noqa: S104 - a pod listens on all
    port: Annotated[int, typer.Option(help="port to listen on")] = 8000,
) -> None:
    """Serve the HTTP API.

    Publishes to RabbitMQ and reads and writes the database (KUBECRAWL_RABBITMQ_URL, KUBECRAWL_DATABASE_URL)."""
    from kubecrawl.api.app import create_app
    from kubecrawl.broker.publishing import RabbitPublisher
    from kubecrawl.store.opening import open_database

    settings = _settings("api")
    database = open_database(settings.database_url.get_secret_value(), pool_size=settings.db_pool_size)
    publisher = RabbitPublisher(
        settings.rabbitmq_url.get_secret_value(),
        settings.publisher,
        metadata_max_length=settings.metadata_queue_max_length,
        pages_max_length=settings.pages_queue_max_length,
        queue_type=settings.queue_type,
        connection_name=f"{settings.pod_name or 'kubecrawl-api'}-publisher",
    )
    from kubecrawl.api.serving import serve

    serve(
        create_app(settings, publisher=publisher, database=database),
        host=host,
        port=port,
        delay=settings.api_shutdown_delay_seconds,
        timeout=settings.api_shutdown_timeout_seconds,
    )


@app.command()
def openapi() -> None:
    """Print the API's OpenAPI document as JSON (for the settings of the environment: KUBECRAWL_AUTH decides
    whether it declares the bearer scheme). Connects to nothing."""
    from kubecrawl.api.app import openapi_document

    typer.echo(json.dumps(openapi_document(_settings("api")), indent=2, ensure_ascii=False))


@app.command()
def worker(
    metrics_port: Annotated[int, typer.Option(help="port of /metrics, /health/live, /health/ready; 0 disables")] = 9100,
) -> None:
    """Fetch the pages queued in RabbitMQ.

    Stores the results in the database; finishes the pages in hand on SIGTERM. Exits 3 or 4 when the database or
    RabbitMQ cannot be reached at start-up (after its retries)."""
    from kubecrawl.worker.runtime import run_worker

    settings = _settings("worker")
    with _expected_failures(json_logs=settings.log_format == "json"):
        _run(run_worker(settings, metrics_port=metrics_port or None))


@app.command()
def migrate(revision: Annotated[str, typer.Argument(help="target revision")] = "head") -> None:
    """Create or upgrade the database tables (MongoDB: the indexes).

    Applies the migrations to KUBECRAWL_DATABASE_URL; exits 3 when the database cannot be reached."""
    from kubecrawl.store.opening import migrate as migrate_database

    settings = _settings("migrate")
    with _expected_failures(json_logs=settings.log_format == "json", os_errors=ExitCode.DATABASE):
        reached = migrate_database(settings.database_url.get_secret_value(), revision)
    log.info("migrations_applied", revision=reached)


@app.command()
def standalone(
    host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port to listen on")] = 8000,
    db: Annotated[Path, typer.Option(help="SQLite file for the embedded store")] = Path("kubecrawl.db"),
    sites: Annotated[
        Path | None,
        typer.Option(help="folder of CrawlSite YAML files to schedule in-process", exists=True, file_okay=False),
    ] = None,
    insecure_no_auth: Annotated[
        bool, typer.Option("--insecure-no-auth", help="listen on a non-loopback address without authentication")
    ] = False,
) -> None:
    """Run the whole product on this machine.

    API, worker and scheduler in one process with SQLite and an in-process broker: no servers needed."""
    from kubecrawl.api.app import create_app
    from kubecrawl.embedded import embedded_runtime, sqlite_url
    from kubecrawl.scheduling import Scheduler, load_sites

    _check_db_path(db)
    settings = _settings("standalone", database_url=sqlite_url(db))
    if settings.auth == "none" and not _loopback(host):
        if not insecure_no_auth:
            raise typer.BadParameter(
                f"{host} is reachable from other machines and the API has no authentication: set "
                "KUBECRAWL_AUTH=api_keys (keys from `kubecrawl keys create`) or pass --insecure-no-auth",
                param_hint="--host",
            )
        log.warning("standalone_listening_without_auth", host=host)
    site_files = load_sites(sites) if sites is not None else []

    async def main() -> None:
        async with embedded_runtime(settings) as runtime:
            fastapi_app = create_app(
                settings, publisher=runtime.broker, database=runtime.database, manage_lifecycle=False
            )
            config = uvicorn.Config(fastapi_app, host=host, port=port, log_config=None, access_log=False, lifespan="on")
            scheduler = Scheduler(runtime.stores.sites, runtime.stores.crawls, runtime.broker)
            await scheduler.register(site_files)
            schedules = asyncio.create_task(scheduler.run(site_files))
            log.info("standalone_listening", url=f"http://{host}:{port}", database=str(db), sites=len(site_files))
            try:
                await uvicorn.Server(config).serve()
            finally:
                schedules.cancel()

    with _expected_failures(json_logs=settings.log_format == "json"):
        _run(main())


def _check_db_path(db: Path) -> None:
    """SQLite creates the file but not its folder: say so before anything starts."""
    folder = db.expanduser().resolve().parent
    if not folder.is_dir():
        _fail(
            ExitCode.DATABASE,
            f"cannot open the database {db}: there is no folder {folder}",
            "pass --db FILE in a folder that exists",
        )


# The crawl options as the spec names them, to name the option a user got wrong.
_CRAWL_OPTIONS: dict[tuple[int | str, ...], str] = {
    ("url",): "URL",
    ("scope", "maxPages"): "--max-pages",
    ("scope", "maxDepth"): "--max-depth",
    ("politeness", "maxConcurrency"): "--concurrency",
}


@app.command()
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
    _check_db_path(db)
    # Progress and stats own the terminal (a failed page is listed with its reason); logs only for errors.
    settings = _settings("crawl", database_url=sqlite_url(db), log_format="console", log_level="ERROR")
    with _expected_failures(json_logs=False):
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
        _fail(ExitCode.USAGE, "--json and the pages would both go to stdout", "write the pages to a file: -o FILE")
    if fmt is not None and fmt not in FORMATS:
        _fail(ExitCode.USAGE, f"unknown --format {fmt!r}", "use --format json, jsonl or csv")
    try:
        return format_for(None if to_stdout else output, fmt)
    except ValueError as exc:
        _fail(ExitCode.USAGE, str(exc), "name the file .jsonl, .json or .csv, or pass --format")


def _crawl_spec(url: str, *, max_pages: int, max_depth: int, concurrency: int) -> CrawlSiteSpec:
    """The CrawlSiteSpec of ``kubecrawl crawl``'s options, or one line naming the option out of range."""
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
        _fail(ExitCode.USAGE, cause, "see kubecrawl crawl --help")


def _page_writer(files: contextlib.ExitStack, output: Path | None, page_format: Format) -> PageWriter:
    """A writer of the pages to ``output`` (stdout for None); an unwritable file is one line and exit 5."""
    import sys

    from kubecrawl.reporting import PageWriter

    if output is None:
        return PageWriter(sys.stdout, page_format)
    try:
        stream = files.enter_context(output.open("w", encoding="utf-8", newline=""))
    except OSError as exc:
        _fail(ExitCode.OUTPUT, f"cannot write {output}: {exc.strerror}", "pass -o FILE in a folder you can write to")
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

        with _expected_failures(json_logs=False):
            return _run(crawl_once(settings, spec, on_progress=show, on_page=settled))


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


@app.command()
def operator(
    namespace: Annotated[
        list[str] | None, typer.Option("--namespace", "-n", help="watch only this namespace (repeatable); default all")
    ] = None,
    liveness: Annotated[
        str, typer.Option(help="liveness endpoint URL (kopf's /healthz); empty disables")
    ] = "http://0.0.0.0:8080/healthz",
    peering: Annotated[
        str | None, typer.Option(help="kopf peering name for active/standby replicas; default standalone")
    ] = None,
    priority: Annotated[int, typer.Option(help="peering priority: the highest-priority replica is active")] = 0,
    metrics_port: Annotated[int, typer.Option(help="Prometheus /metrics port; 0 disables")] = 9100,
) -> None:
    """Run the Kubernetes operator.

    CrawlSite → CronJob, site specs synced to the API, CrawlWorkerPool scaling."""
    from prometheus_client import start_http_server

    from kubecrawl.operator.main import run
    from kubecrawl.operator.settings import OperatorSettings

    settings = _settings("operator")
    if metrics_port:
        start_http_server(metrics_port)
    run(
        settings,
        OperatorSettings(),
        namespaces=namespace or (),
        liveness_endpoint=liveness or None,
        peering=peering,
        priority=priority,
    )


@app.command()
def trigger(
    site: Annotated[str, typer.Option(help="the CrawlSite, NAMESPACE/NAME")],
    job_name: Annotated[
        str | None, typer.Option(envvar="JOB_NAME", help="the Job running this pod (downward API)")
    ] = None,
    cronjob: Annotated[
        str | None, typer.Option(envvar="KUBECRAWL_CRONJOB_NAME", help="the CronJob that makes those Jobs")
    ] = None,
    job_uid: Annotated[str | None, typer.Option(envvar="JOB_UID", help="the Job's uid (downward API)")] = None,
) -> None:
    """Start one crawl of a site through the API.

    What a CrawlSite's CronJob runs. Exits 1 on failure."""
    from kubecrawl.operator.crawlsite.syncing import SiteApi
    from kubecrawl.operator.crawlsite.triggering import (
        REQUEST_TIMEOUT_SECONDS,
        RETRY_DELAYS,
        run_trigger,
        trigger_request,
    )

    settings = _settings("trigger")
    try:
        request = trigger_request(site, job_name=job_name, cronjob=cronjob, job_uid=job_uid)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--site") from exc
    api_key = settings.api_key.get_secret_value() if settings.api_key else None
    api = SiteApi(
        settings.api_url,
        timeout=REQUEST_TIMEOUT_SECONDS,
        retry_delays=RETRY_DELAYS,
        api_key=api_key,
        token_file=settings.api_token_file,
    )
    raise typer.Exit(_run(run_trigger(api, request)))


def main() -> None:
    app()


if __name__ == "__main__":
    main()

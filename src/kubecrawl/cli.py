"""The ``kubecrawl`` command: one image, one entry point per role.

Each command builds ``Settings`` from the environment, configures logging once, and passes both down.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
import uvicorn

from kubecrawl import keys
from kubecrawl.core.logging import configure_logging, get_logger
from kubecrawl.core.settings import Settings

app = typer.Typer(no_args_is_help=True, add_completion=False, help=__doc__)
app.add_typer(keys.app, name="keys")
log = get_logger("kubecrawl.cli")
T = TypeVar("T")


def _settings(service: str, **overrides: object) -> Settings:
    settings = Settings(**overrides)  # type: ignore[arg-type]
    settings = settings.model_copy(update={"service_name": f"kubecrawl-{service}"})
    configure_logging(settings.service_name, log_format=settings.log_format, level=settings.log_level)
    return settings


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


def _serve(app_: object, host: str, port: int) -> None:
    # log_config=None keeps our structlog bridge in charge of uvicorn's loggers.
    uvicorn.run(app_, host=host, port=port, log_config=None, access_log=False, lifespan="on")  # type: ignore[arg-type]


@app.command()
def api(
    host: Annotated[str, typer.Option(help="address to listen on")] = "0.0.0.0",  # noqa: S104 - a pod listens on all
    port: Annotated[int, typer.Option(help="port to listen on")] = 8000,
) -> None:
    """Run the HTTP API (RabbitMQ publisher + PostgreSQL)."""
    from kubecrawl.api.app import create_app
    from kubecrawl.broker.publishing import RabbitPublisher
    from kubecrawl.store.database import create_engine

    settings = _settings("api")
    engine = create_engine(settings.database_url.get_secret_value(), pool_size=settings.db_pool_size)
    publisher = RabbitPublisher(
        settings.rabbitmq_url.get_secret_value(),
        settings.publisher,
        metadata_max_length=settings.metadata_queue_max_length,
        pages_max_length=settings.pages_queue_max_length,
        connection_name=f"{settings.pod_name or 'kubecrawl-api'}-publisher",
    )
    _serve(create_app(settings, publisher=publisher, engine=engine), host, port)


@app.command()
def worker(
    metrics_port: Annotated[int, typer.Option(help="Prometheus /metrics port; 0 disables")] = 9100,
) -> None:
    """Run a worker: consume RabbitMQ, fetch pages, store results; drains on SIGTERM."""
    from kubecrawl.worker.runtime import run_worker

    settings = _settings("worker")
    _run(run_worker(settings, metrics_port=metrics_port or None))


@app.command()
def migrate(revision: Annotated[str, typer.Argument(help="target revision")] = "head") -> None:
    """Apply the database migrations to KUBECRAWL_DATABASE_URL."""
    from kubecrawl.store.migrating import upgrade

    settings = _settings("migrate")
    upgrade(settings.database_url.get_secret_value(), revision)
    log.info("migrations_applied", revision=revision)


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
    """Run API + worker + scheduler in one process with SQLite and an in-process broker: no servers needed."""
    from kubecrawl.api.app import create_app
    from kubecrawl.embedded import embedded_runtime, sqlite_url
    from kubecrawl.scheduling import Scheduler, load_sites
    from kubecrawl.store.crawls import CrawlStore
    from kubecrawl.store.sites import SiteStore

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
            fastapi_app = create_app(settings, publisher=runtime.broker, engine=runtime.engine, manage_lifecycle=False)
            config = uvicorn.Config(fastapi_app, host=host, port=port, log_config=None, access_log=False, lifespan="on")
            scheduler = Scheduler(SiteStore(runtime.engine), CrawlStore(runtime.engine), runtime.broker)
            await scheduler.register(site_files)
            schedules = asyncio.create_task(scheduler.run(site_files))
            log.info("standalone_listening", url=f"http://{host}:{port}", database=str(db), sites=len(site_files))
            try:
                await uvicorn.Server(config).serve()
            finally:
                schedules.cancel()

    _run(main())


@app.command()
def crawl(
    url: Annotated[str, typer.Argument(help="the site's start URL")],
    max_pages: Annotated[int, typer.Option(help="stop discovering after this many pages")] = 100,
    max_depth: Annotated[int, typer.Option(help="links followed at most this deep from the start page")] = 3,
    concurrency: Annotated[int, typer.Option(help="pages fetched at once")] = 8,
    as_json: Annotated[bool, typer.Option("--json", help="print the finished crawl as JSON")] = False,
    db: Annotated[Path, typer.Option(help="SQLite file (kept, so the next crawl reports changes)")] = Path(
        "kubecrawl.db"
    ),
) -> None:
    """Crawl one site in-process (SQLite, in-process broker) with a progress bar and a summary."""
    import json
    import time

    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
    from rich.table import Table

    from kubecrawl.core.errors import KubecrawlError
    from kubecrawl.core.models import Crawl, CrawlState
    from kubecrawl.core.sites import CrawlSiteSpec, PolitenessSpec, ScopeSpec
    from kubecrawl.embedded import crawl_once, sqlite_url

    # Progress and summary own the terminal; logs only when something is wrong.
    settings = _settings("crawl", database_url=sqlite_url(db), log_format="console", log_level="WARNING")
    console = Console(stderr=as_json)
    try:
        spec = CrawlSiteSpec(
            url=url,
            scope=ScopeSpec(max_pages=max_pages, max_depth=max_depth),
            politeness=PolitenessSpec(max_concurrency=concurrency),
        )
    except ValueError as exc:
        console.print(f"[red]invalid crawl options:[/red] {exc}")
        raise typer.Exit(2) from exc
    started = time.perf_counter()
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("failed {task.fields[failed]}"),
        TimeElapsedColumn(),
        console=console,
        transient=as_json,
    ) as progress:
        task = progress.add_task(url, total=1, failed=0)

        def show(current: Crawl) -> None:
            counters = current.counters
            finished = counters.fetched + counters.failed + counters.skipped_robots
            progress.update(task, completed=finished, total=max(counters.discovered, 1), failed=counters.failed)

        try:
            result = _run(crawl_once(settings, spec, on_progress=show))
        except KubecrawlError as exc:
            console.print(f"[red]{exc.code}:[/red] {exc.detail}")
            raise typer.Exit(2) from exc
    elapsed = time.perf_counter() - started
    counters = result.counters
    if as_json:
        body = result.model_dump(mode="json") | {"elapsed_seconds": round(elapsed, 3)}
        typer.echo(json.dumps(body, indent=2))
    else:
        table = Table(title=f"crawl {result.id} {result.state.value}")
        for column in ("pages", "failed", "changed", "unchanged", "robots skipped", "time", "pages/s"):
            table.add_column(column, justify="right")
        table.add_row(
            str(counters.fetched),
            str(counters.failed),
            str(counters.changed),
            str(counters.unchanged),
            str(counters.skipped_robots),
            f"{elapsed:.1f}s",
            f"{counters.fetched / elapsed:.1f}" if elapsed > 0 else "-",
        )
        console.print(table)
    # A crawl that completed without fetching a single page (start URL refused, site down) is a failure too.
    if result.state is not CrawlState.COMPLETED or (counters.fetched == 0 and counters.failed > 0):
        raise typer.Exit(1)


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
    """Run the operator: CrawlSite → CronJob, site specs synced to the API, CrawlWorkerPool scaling."""
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
    """Start one crawl of a site through the API; what a CrawlSite's CronJob runs. Exits 1 on failure."""
    from kubecrawl.operator.syncing import SiteApi
    from kubecrawl.operator.triggering import REQUEST_TIMEOUT_SECONDS, RETRY_DELAYS, run_trigger, trigger_request

    settings = _settings("trigger")
    try:
        request = trigger_request(site, job_name=job_name, cronjob=cronjob, job_uid=job_uid)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--site") from exc
    api_key = settings.api_key.get_secret_value() if settings.api_key else None
    api = SiteApi(settings.api_url, timeout=REQUEST_TIMEOUT_SECONDS, retry_delays=RETRY_DELAYS, api_key=api_key)
    raise typer.Exit(_run(run_trigger(api, request)))


def main() -> None:
    app()


if __name__ == "__main__":
    main()

"""``kubecrawl api|openapi|worker|migrate|standalone|operator``: the processes of a deployment, and the whole
product in one process. Each command imports its role's modules in its body."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from kubecrawl.cli import starting
from kubecrawl.cli.exiting import LOGGER, ExitCode, expected_failures


def _loopback(host: str) -> bool:
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def api(
    host: Annotated[str, typer.Option(help="address to listen on")] = "0.0.0.0",  # noqa: S104 - a pod listens on all
    port: Annotated[int, typer.Option(help="port to listen on")] = 8000,
) -> None:
    """Serve the HTTP API.

    Publishes to RabbitMQ and reads and writes the database (KUBECRAWL_RABBITMQ_URL, KUBECRAWL_DATABASE_URL)."""
    from kubecrawl.api.app import create_app
    from kubecrawl.api.serving import serve
    from kubecrawl.broker.publishing import RabbitPublisher
    from kubecrawl.store.opening import open_database

    settings = starting.settings("api")
    database = open_database(settings.database_url.get_secret_value(), pool_size=settings.db_pool_size)
    publisher = RabbitPublisher.from_settings(
        settings, connection_name=f"{settings.pod_name or 'kubecrawl-api'}-publisher"
    )
    serve(
        create_app(settings, publisher=publisher, database=database),
        host=host,
        port=port,
        delay=settings.api_shutdown_delay_seconds,
        timeout=settings.api_shutdown_timeout_seconds,
    )


def openapi() -> None:
    """Print the API's OpenAPI document as JSON (for the settings of the environment: KUBECRAWL_AUTH decides
    whether it declares the bearer scheme). Connects to nothing."""
    from kubecrawl.api.app import openapi_document

    typer.echo(json.dumps(openapi_document(starting.settings("api")), indent=2, ensure_ascii=False))


def worker(
    metrics_port: Annotated[int, typer.Option(help="port of /metrics, /health/live, /health/ready; 0 disables")] = 9100,
) -> None:
    """Fetch the pages queued in RabbitMQ.

    Stores the results in the database; finishes the pages in hand on SIGTERM. Exits 3 or 4 when the database or
    RabbitMQ cannot be reached at start-up (after its retries)."""
    from kubecrawl.worker.runtime import run_worker

    settings = starting.settings("worker")
    with expected_failures(json_logs=settings.log_format == "json"):
        starting.run(run_worker(settings, metrics_port=metrics_port or None))


def migrate(revision: Annotated[str, typer.Argument(help="target revision")] = "head") -> None:
    """Create or upgrade the database tables (MongoDB: the indexes).

    Applies the migrations to KUBECRAWL_DATABASE_URL; exits 3 when the database cannot be reached."""
    from kubecrawl.core.logging import get_logger
    from kubecrawl.store.opening import migrate as migrate_database

    settings = starting.settings("migrate")
    with expected_failures(json_logs=settings.log_format == "json", os_errors=ExitCode.DATABASE):
        reached = migrate_database(settings.database_url.get_secret_value(), revision)
    get_logger(LOGGER).info("migrations_applied", revision=reached)


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
    import asyncio

    from kubecrawl.api.app import create_app
    from kubecrawl.api.serving import draining_server
    from kubecrawl.core.logging import get_logger
    from kubecrawl.embedded import embedded_runtime, sqlite_url
    from kubecrawl.scheduling import Scheduler, load_sites

    starting.check_db_path(db)
    settings = starting.settings("standalone", database_url=sqlite_url(db))
    log = get_logger(LOGGER)
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
            server = draining_server(
                fastapi_app,
                host=host,
                port=port,
                delay=settings.api_shutdown_delay_seconds,
                timeout=settings.api_shutdown_timeout_seconds,
            )
            scheduler = Scheduler(runtime.stores.sites, runtime.stores.crawls, runtime.broker)
            await scheduler.register(site_files)
            schedules = asyncio.create_task(scheduler.run(site_files))
            log.info("standalone_listening", url=f"http://{host}:{port}", database=str(db), sites=len(site_files))
            try:
                await server.serve()
            finally:
                schedules.cancel()

    with expected_failures(json_logs=settings.log_format == "json"):
        starting.run(main())


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

    from kubecrawl.operator.main import run as run_operator
    from kubecrawl.operator.settings import OperatorSettings

    settings = starting.settings("operator")
    if metrics_port:
        start_http_server(metrics_port)
    run_operator(
        settings,
        OperatorSettings(),
        namespaces=namespace or (),
        liveness_endpoint=liveness or None,
        peering=peering,
        priority=priority,
    )

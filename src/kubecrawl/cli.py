"""The ``kubecrawl`` command: one image, one entry point per role.

Each command builds ``Settings`` from the environment, configures logging once, and passes both down.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

import typer
import uvicorn

from kubecrawl.core.logging import configure_logging, get_logger
from kubecrawl.core.settings import Settings

app = typer.Typer(no_args_is_help=True, add_completion=False, help=__doc__)
log = get_logger("kubecrawl.cli")


def _settings(service: str, **overrides: object) -> Settings:
    settings = Settings(**overrides)  # type: ignore[arg-type]
    settings = settings.model_copy(update={"service_name": f"kubecrawl-{service}"})
    configure_logging(settings.service_name, log_format=settings.log_format, level=settings.log_level)
    return settings


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
    asyncio.run(run_worker(settings, metrics_port=metrics_port or None))


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
) -> None:
    """Run API + worker in one process with SQLite and an in-process broker: no servers needed."""
    from kubecrawl.api.app import create_app
    from kubecrawl.embedded import embedded_runtime, sqlite_url

    settings = _settings("standalone", database_url=sqlite_url(db))

    async def main() -> None:
        async with embedded_runtime(settings) as runtime:
            fastapi_app = create_app(settings, publisher=runtime.broker, engine=runtime.engine, manage_lifecycle=False)
            config = uvicorn.Config(fastapi_app, host=host, port=port, log_config=None, access_log=False, lifespan="on")
            log.info("standalone_listening", url=f"http://{host}:{port}", database=str(db))
            await uvicorn.Server(config).serve()

    asyncio.run(main())


def main() -> None:
    app()


if __name__ == "__main__":
    main()

"""Per-test isolation on the session's real servers: a fresh RabbitMQ vhost and a fresh migrated database."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI

from kubecrawl.api.app import create_app
from kubecrawl.broker.publishing import RabbitPublisher
from kubecrawl.core.settings import PublisherSettings, RetrySettings, Settings
from kubecrawl.store.migrating import upgrade
from kubecrawl.store.opening import migrate, open_database
from tests.support.guarded import allowed_site, guarded_settings, guarded_worker  # noqa: F401 - fixtures
from tests.support.servers import PostgresServer, RabbitServer, wait_for
from tests.support.sites import Site

TEMPLATE_DB = "kubecrawl_template"


@pytest.fixture(scope="session")
def migrated_template(postgres: PostgresServer) -> str:
    upgrade(postgres.create_database(TEMPLATE_DB))
    return TEMPLATE_DB


@pytest.fixture
def database_url(request: pytest.FixtureRequest, postgres: PostgresServer, migrated_template: str) -> str:
    """A fresh, migrated PostgreSQL database; or, for a test parametrised with ``ON_EVERY_DATABASE``
    (tests/support/stores.py), a fresh MongoDB database on the session's FerretDB, migrated the same way."""
    if getattr(request, "param", "postgresql") == "mongodb":
        url = request.getfixturevalue("ferretdb").database()
        migrate(url)
        return url
    name = "t_" + uuid.uuid4().hex[:12]
    return postgres.create_database(name, template=migrated_template)


@pytest.fixture
def vhost(rabbit: RabbitServer) -> str:
    name = "t_" + uuid.uuid4().hex[:12]
    rabbit.add_vhost(name)
    return name


@pytest.fixture
def settings(database_url: str, rabbit: RabbitServer, vhost: str) -> Settings:
    return Settings(
        database_url=database_url,  # type: ignore[arg-type]
        rabbitmq_url=rabbit.url(vhost),  # type: ignore[arg-type]
        allow_private_targets=True,  # the test sites live on 127.0.0.1
        log_format="console",
        metadata_queue_max_length=1000,
        # quick reconnects so broker-restart tests finish in seconds, same state machine as production
        publisher=PublisherSettings(initial_backoff_seconds=0.2, max_backoff_seconds=1.0, max_connection_attempts=3),
        retry=RetrySettings(max_attempts=3, base_delay_seconds=0.5, max_delay_seconds=1.0),
        prefetch_count=4,
    )


def env_for(settings: Settings) -> dict[str, str]:
    """The same settings as environment variables, for subprocesses (`kubecrawl api|worker`)."""
    env = dict(os.environ)
    env.update(
        KUBECRAWL_DATABASE_URL=settings.database_url.get_secret_value(),
        KUBECRAWL_RABBITMQ_URL=settings.rabbitmq_url.get_secret_value(),
        KUBECRAWL_ALLOW_PRIVATE_TARGETS=str(settings.allow_private_targets).lower(),
        KUBECRAWL_LOG_FORMAT="json",
        KUBECRAWL_METADATA_QUEUE_MAX_LENGTH=str(settings.metadata_queue_max_length),
        KUBECRAWL_PREFETCH_COUNT=str(settings.prefetch_count),
        KUBECRAWL_DRAIN_TIMEOUT_SECONDS=str(settings.drain_timeout_seconds),
        KUBECRAWL_PUBLISHER__INITIAL_BACKOFF_SECONDS=str(settings.publisher.initial_backoff_seconds),
        KUBECRAWL_PUBLISHER__MAX_BACKOFF_SECONDS=str(settings.publisher.max_backoff_seconds),
        KUBECRAWL_RETRY__MAX_ATTEMPTS=str(settings.retry.max_attempts),
        KUBECRAWL_RETRY__BASE_DELAY_SECONDS=str(settings.retry.base_delay_seconds),
        KUBECRAWL_RETRY__MAX_DELAY_SECONDS=str(settings.retry.max_delay_seconds),
        KUBECRAWL_SWEEP_INTERVAL_SECONDS=str(settings.sweep_interval_seconds),
    )
    if settings.lease_seconds is not None:
        env["KUBECRAWL_LEASE_SECONDS"] = str(settings.lease_seconds)
    return env


@dataclass
class ApiHandle:
    app: FastAPI
    client: httpx.AsyncClient
    publisher: RabbitPublisher


@contextlib.asynccontextmanager
async def running_api(settings: Settings) -> AsyncIterator[ApiHandle]:
    """The API app with its real publisher and database, started and stopped like a process would."""
    database = open_database(settings.database_url.get_secret_value())
    publisher = RabbitPublisher(
        settings.rabbitmq_url.get_secret_value(),
        settings.publisher,
        metadata_max_length=settings.metadata_queue_max_length,
        pages_max_length=settings.pages_queue_max_length,
        queue_type=settings.queue_type,
    )
    app = create_app(settings, publisher=publisher, database=database)
    async with (
        LifespanManager(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api.test") as client,
    ):
        yield ApiHandle(app, client, publisher)


@pytest.fixture
async def api(settings: Settings) -> AsyncIterator[ApiHandle]:
    async with running_api(settings) as handle:
        yield handle


@pytest.fixture
async def site() -> AsyncIterator[Site]:
    s = Site()
    await s.start()
    yield s
    await s.stop()


@pytest.fixture
async def worker(settings: Settings) -> AsyncIterator[None]:
    """An in-process worker (same code as `kubecrawl worker`) that stops when the test ends."""
    from kubecrawl.worker.runtime import run_worker

    stop = asyncio.Event()
    task = asyncio.create_task(run_worker(settings, stop=stop))
    yield
    stop.set()
    await asyncio.wait_for(task, 30)


class WorkerProcess:
    """`kubecrawl worker` as a real process, for signal tests."""

    def __init__(self, settings: Settings, log_path: Path) -> None:
        self.log_path = log_path
        self._log = log_path.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "kubecrawl.cli", "worker", "--metrics-port", "0"],
            env=env_for(settings),
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_started(self, timeout: float = 60) -> None:
        def started() -> bool:
            if self.proc.poll() is not None:
                raise RuntimeError(f"worker exited early:\n{self.output()}")
            return "worker_started" in self.output()

        wait_for(started, timeout=timeout, what="worker_started")

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self._log.close()


@pytest.fixture
def worker_process(settings: Settings, tmp_path: Path) -> Iterator[WorkerProcess]:
    procs: list[WorkerProcess] = []

    def start(**overrides: object) -> WorkerProcess:
        proc = WorkerProcess(settings.model_copy(update=overrides), tmp_path / f"worker-{len(procs)}.log")
        procs.append(proc)
        proc.wait_started()
        return proc

    yield start  # type: ignore[misc]
    for proc in procs:
        proc.close()

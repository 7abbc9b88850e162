"""Per-test isolation on the session's real servers: a fresh RabbitMQ vhost and a fresh migrated database, the
settings that point at them, and the API, worker and local site built on those settings.

A pytest plugin (``pytest_plugins`` in tests/conftest.py) rather than a conftest, so that tests/integration and
tests/security share ONE set of fixtures (a session fixture imported into two conftests is two fixtures, and both
would create the same template database) and no test module imports a conftest.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

from kubecrawl.core.settings import PublisherSettings, RetrySettings, Settings
from kubecrawl.store.migrating import upgrade
from kubecrawl.store.opening import migrate
from tests.support.api import ApiHandle, running_api
from tests.support.servers import PostgresServer, RabbitServer
from tests.support.sites import Site
from tests.support.workers import WorkerProcess

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


@pytest.fixture
def worker_process(settings: Settings, tmp_path: Path) -> Iterator[Callable[..., WorkerProcess]]:
    procs: list[WorkerProcess] = []

    def start(**overrides: object) -> WorkerProcess:
        proc = WorkerProcess(settings.model_copy(update=overrides), tmp_path / f"worker-{len(procs)}.log")
        procs.append(proc)
        proc.wait_started()
        return proc

    yield start
    for proc in procs:
        proc.close()

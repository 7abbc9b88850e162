"""Start-up (docs/crawls.md, "Start-up"): what the short-lived commands load, and the embedded database's migration.

Structural, not timed (bench/startup.py times them): each command runs for real through the console script's
``main()``, and the modules loaded by the time it exits are listed; the heavy ones its work never needs must be
absent. ``kubecrawl trigger`` (every CronJob run) is an HTTP client; ``kubecrawl crawl`` runs the embedded
product, but neither RabbitMQ's client, the API server, MongoDB's driver nor, on an up-to-date file, Alembic.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import sys
from pathlib import Path

import httpx
import pytest

from kubecrawl import embedded
from kubecrawl.core.models import CrawlState
from kubecrawl.core.settings import Settings
from kubecrawl.core.sites import CrawlSiteSpec
from kubecrawl.store.database import create_engine
from kubecrawl.store.migrating import HEAD_REVISION, behind_head
from kubecrawl.store.opening import migrate
from tests.support.apiprocess import ApiProcess
from tests.support.cli import TIMEOUT_SECONDS, Run
from tests.support.polling import eventually
from tests.support.servers import PostgresServer
from tests.support.sites import Site

OPEN = {"KUBECRAWL_ALLOW_PRIVATE_TARGETS": "true"}  # the test sites live on loopback
# The console script's main(), with the loaded modules written to a file by an exit handler (main() runs them),
# and the garbage collector's state beside it (LISTING.gc: enabled, objects frozen).
LISTING = (
    "import atexit, gc, sys\n"
    "listing = sys.argv.pop(1)\n"
    "atexit.register(lambda: open(listing, 'w').write('\\n'.join(sorted(n for n, m in sys.modules.items() if m))))\n"
    "atexit.register(lambda: open(listing + '.gc', 'w').write(f'{gc.isenabled()} {gc.get_freeze_count()}'))\n"
    "sys.argv[0] = 'kubecrawl'\n"
    "from kubecrawl.cli import main\n"
    "main()\n"
)
# Never needed by a crawl or a trigger: RabbitMQ's client, the API server, the operator, MongoDB, the scheduler's
# cron parser and YAML.
NEVER = {
    "aio_pika",
    "aiormq",
    "pamqp",
    "uvicorn",
    "fastapi",
    "starlette",
    "kopf",
    "kubernetes_asyncio",
    "pymongo",
    "bson",
    "croniter",
    "yaml",
    "asyncpg",  # PostgreSQL's driver: loaded by a PostgreSQL engine, never by SQLite's (store/database.py)
    "kubecrawl.api",
    "kubecrawl.operator.main",
    "kubecrawl.scheduling",
}
# ...and on SQLite, SQLAlchemy's asyncio package, the ORM it imports and aiosqlite: the SQLite engine is the
# synchronous one behind coroutines (store/sqlite_engine.py), which spares their start-up. greenlet is not among
# them: structlog imports it (structlog.threadlocal, 26.1) whenever it is installed, as it is for PostgreSQL's
# engine; SQLAlchemy no longer runs anything through it on SQLite. Nor is sqlalchemy.connectors.asyncio: the
# SQLite dialect's package imports it with its aiosqlite module, whichever driver is used.
NEVER_ON_SQLITE = NEVER | {"sqlalchemy.ext.asyncio", "sqlalchemy.orm", "aiosqlite"}
# ...and a trigger needs no store, broker, fetcher or database driver either: one POST over httpx.
NEVER_IN_TRIGGER = NEVER | {
    "alembic",
    "sqlalchemy",
    "aiosqlite",
    "aiohttp",
    "selectolax",
    "prometheus_client",
    "kubecrawl.store",
    "kubecrawl.broker",
    "kubecrawl.fetch",
    "kubecrawl.worker",
    "kubecrawl.embedded",
    "kubecrawl.core.sites",  # the CrawlSite spec's models: the trigger needs a schedule's key (core/schedules.py)
}


def loaded_modules(listing: Path) -> set[str]:
    """The modules a listing names, each also as every package above it ("sqlalchemy.orm" counts as
    "sqlalchemy" too)."""
    names = [name.split(".") for name in listing.read_text().splitlines()]
    return {".".join(parts[:depth]) for parts in names for depth in range(1, len(parts) + 1)}


async def kubecrawl_listing(tmp_path: Path, *args: str, env: dict[str, str]) -> tuple[Run, set[str]]:
    """Run ``kubecrawl ARGS``; its result and the modules it had loaded (``loaded_modules``)."""
    listing = tmp_path / f"modules-{len(list(tmp_path.glob('modules-*')))}.txt"
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        LISTING,
        str(listing),
        *args,
        env=dict(os.environ, **env),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), TIMEOUT_SECONDS)
    assert proc.returncode is not None
    return Run(proc.returncode, out.decode(), err.decode()), loaded_modules(listing)


async def test_a_crawl_loads_no_broker_client_api_server_mongodb_driver_scheduler_or_async_sqlalchemy(
    site: Site, tmp_path: Path
) -> None:
    site.html("/", title="home", body="<a href='/a'>a</a>")
    site.html("/a", title="a")
    run, loaded = await kubecrawl_listing(tmp_path, "crawl", site.url("/"), "--db", str(tmp_path / "k.db"), env=OPEN)
    assert run.code == 0, run.err
    assert "pages fetched" in run.out
    # the listing sees what the crawl uses
    assert {"kubecrawl.embedded", "sqlalchemy.dialects.sqlite", "aiohttp", "alembic"} <= loaded  # a new file
    assert loaded & NEVER_ON_SQLITE == set()
    # the progress bar's rich, not what httpx's CLI and structlog import of it (pygments: Alembic's, a new file)
    assert "rich.progress" in loaded
    assert loaded & {"httpx._main", "rich.traceback", "rich.syntax"} == set()


async def test_a_crawl_collects_garbage_again_once_started_having_frozen_what_start_up_built(
    site: Site, tmp_path: Path
) -> None:
    site.html("/", title="home")
    run, _ = await kubecrawl_listing(tmp_path, "crawl", site.url("/"), "--db", str(tmp_path / "k.db"), env=OPEN)
    assert run.code == 0, run.err
    enabled, frozen = (tmp_path / "modules-0.txt.gc").read_text().split()
    assert enabled == "True"  # cli.main turned it off for the imports, starting.settings back on
    assert int(frozen) > 0


async def test_a_crawl_on_an_up_to_date_database_loads_neither_alembic_nor_postgresql_dialect(
    site: Site, tmp_path: Path
) -> None:
    site.html("/", title="home")
    db = tmp_path / "k.db"
    first, loaded_first = await kubecrawl_listing(tmp_path, "crawl", site.url("/"), "--db", str(db), env=OPEN)
    assert first.code == 0, first.err
    assert "alembic" in loaded_first  # a new file is migrated
    second, loaded_second = await kubecrawl_listing(tmp_path, "crawl", site.url("/"), "--db", str(db), env=OPEN)
    assert second.code == 0, second.err
    # The migration scripts name PostgreSQL's types; the stores ask for its dialect only on a PostgreSQL engine.
    assert loaded_second & ({"alembic", "sqlalchemy.dialects.postgresql"} | NEVER_ON_SQLITE) == set()
    assert "unchanged" in second.out


async def test_a_crawl_migrates_a_database_an_older_kubecrawl_made(site: Site, tmp_path: Path) -> None:
    site.html("/", title="home")
    db = tmp_path / "old.db"
    await asyncio.to_thread(migrate, f"sqlite:///{db}", "0005")  # the schema before leases (0006)
    run, loaded = await kubecrawl_listing(tmp_path, "crawl", site.url("/"), "--db", str(db), env=OPEN)
    assert run.code == 0, run.err
    assert "alembic" in loaded
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT version_num FROM alembic_version").fetchall() == [(HEAD_REVISION,)]
        columns = {row[1] for row in conn.execute("PRAGMA table_info(crawl_pages)")}
    assert "lease_until" in columns


async def test_a_crawl_returns_when_its_last_page_settles_not_at_the_next_progress_tick(
    site: Site, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(embedded, "_PROGRESS_SECONDS", 3600.0)  # a tick that would outlast the test's deadline
    site.html("/", title="home", body="<a href='/a'>a</a><a href='/b'>b</a>")
    site.html("/a", title="a", body="<a href='/c'>c</a>")
    site.html("/b", title="b")
    site.html("/c", title="c")
    settings = Settings(database_url=embedded.sqlite_url(tmp_path / "k.db"), allow_private_targets=True)  # type: ignore[arg-type]
    progress: list[int] = []
    crawl = await asyncio.wait_for(
        embedded.crawl_once(
            settings,
            CrawlSiteSpec.model_validate({"url": site.url("/")}),
            on_progress=lambda current: progress.append(current.counters.fetched),
        ),
        TIMEOUT_SECONDS,
    )
    assert (crawl.state, crawl.counters.fetched) == (CrawlState.COMPLETED, 4)
    assert progress[-1] == 4


@pytest.mark.parametrize("revision", [None, "0005", "head"])
async def test_the_stored_revision_tells_whether_postgresql_is_behind(
    postgres: PostgresServer, revision: str | None
) -> None:
    url = postgres.create_database(f"revision_{revision or 'none'}")
    if revision is not None:
        await asyncio.to_thread(migrate, url, revision)
    engine = create_engine(url)
    try:
        assert await behind_head(engine) is (revision != "head")
    finally:
        await engine.dispose()


async def test_a_worker_on_postgresql_loads_no_migrations_mongodb_driver_or_api_server(
    settings: Settings, tmp_path: Path
) -> None:
    listing, log = tmp_path / "modules.txt", tmp_path / "worker.log"
    env = {
        "KUBECRAWL_DATABASE_URL": settings.database_url.get_secret_value(),
        "KUBECRAWL_RABBITMQ_URL": settings.rabbitmq_url.get_secret_value(),
        "KUBECRAWL_LOG_FORMAT": "json",
    }
    with log.open("wb") as output:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            LISTING,
            str(listing),
            "worker",
            "--metrics-port",
            "0",
            env=dict(os.environ, **env),
            stdout=output,
            stderr=output,
        )
        try:
            await eventually(lambda: "worker_started" in log.read_text(), timeout=60, what="worker_started")
            proc.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(proc.wait(), TIMEOUT_SECONDS) == 0
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
    loaded = loaded_modules(listing)
    assert {"aio_pika", "sqlalchemy", "kubecrawl.worker"} <= loaded  # the listing sees what the worker uses
    never = {"alembic", "pymongo", "bson", "uvicorn", "fastapi", "starlette", "kopf", "kubernetes_asyncio", "yaml"}
    assert loaded & (never | {"croniter", "kubecrawl.api", "kubecrawl.embedded", "kubecrawl.operator"}) == set()
    # neither httpx's command-line client nor structlog's rich tracebacks (kubecrawl/__init__.py, core/logging.py)
    assert loaded & {"httpx._main", "rich", "pygments"} == set()


async def test_a_trigger_loads_an_http_client_and_no_store_broker_or_server(settings: Settings, tmp_path: Path) -> None:
    servers = {
        "KUBECRAWL_DATABASE_URL": settings.database_url.get_secret_value(),
        "KUBECRAWL_RABBITMQ_URL": settings.rabbitmq_url.get_secret_value(),
    }
    api = ApiProcess(dict(os.environ, **servers), tmp_path / "api.log")
    try:
        await api.wait_ready()
        async with httpx.AsyncClient(base_url=api.url) as client:
            put = await client.put("/sites/team/docs", json={"url": "https://example.com/"})
            assert put.status_code in (200, 201), put.text
        env = {"KUBECRAWL_API_URL": api.url, "KUBECRAWL_LOG_FORMAT": "json"}
        run, loaded = await kubecrawl_listing(tmp_path, "trigger", "--site", "team/docs", env=env)
    finally:
        api.close()
    assert run.code == 0, run.err
    assert '"event":"crawl_triggered"' in run.err
    assert {"httpx", "kubecrawl.operator"} <= loaded  # the listing sees what the trigger uses
    assert loaded & NEVER_IN_TRIGGER == set()
    assert loaded & {"httpx._main", "rich", "pygments"} == set()  # as for the worker

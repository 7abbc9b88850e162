"""Apply Alembic migrations (``kubecrawl migrate``; the embedded default at start-up, when its file is behind).

Alembic took 0.13-0.3 s to import, read its scripts and find nothing to do, on every start of ``kubecrawl
crawl`` and ``standalone`` (docs/crawls.md, "Start-up"). An up-to-date database needs none of it: ``behind_head``
reads the stored revision with one SELECT of ``alembic_version`` and compares it with ``HEAD_REVISION``, the newest
migration's id, kept here as a constant (tests/unit/store/test_migrating.py checks it against the scripts). Only a
database behind it (new, or made by an older kubecrawl), or ahead of it (made by a newer one: Alembic refuses it
with its own error), imports Alembic.
"""

from __future__ import annotations

import asyncio
from importlib.resources import files
from typing import TYPE_CHECKING

from sqlalchemy import inspect, text

if TYPE_CHECKING:
    from alembic.config import Config
    from sqlalchemy.engine import Connection

    from kubecrawl.store.engines import SqlEngine

# The revision of the newest script in migrations/versions: bump it with every new migration.
HEAD_REVISION = "0009"
VERSION_TABLE = "alembic_version"  # Alembic's default, which migrations/env.py keeps


def alembic_config(database_url: str) -> Config:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(files("kubecrawl.store") / "migrations"))
    # ConfigParser interpolation: a literal % in a password must be doubled.
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return config


def upgrade(database_url: str, revision: str = "head") -> None:
    from alembic import command

    command.upgrade(alembic_config(database_url), revision)


async def upgrade_async(database_url: str, revision: str = "head") -> None:
    """Alembic's env runs its own event loop, so run it in a worker thread."""
    await asyncio.to_thread(upgrade, database_url, revision)


def _stored_revisions(conn: Connection) -> set[str]:
    if not inspect(conn).has_table(VERSION_TABLE):
        return set()
    return {str(row[0]) for row in conn.execute(text(f"SELECT version_num FROM {VERSION_TABLE}"))}  # noqa: S608 - a constant


async def behind_head(engine: SqlEngine) -> bool:
    """True unless the database's stored revision is ``HEAD_REVISION`` (a database without tables is behind)."""
    async with engine.connect() as conn:
        return await conn.run_sync(_stored_revisions) != {HEAD_REVISION}


async def upgrade_if_behind(engine: SqlEngine, database_url: str) -> bool:
    """Migrate ``database_url`` (which ``engine`` opens) to head unless it is there; True when migrations ran."""
    if not await behind_head(engine):
        return False
    await upgrade_async(database_url)
    return True

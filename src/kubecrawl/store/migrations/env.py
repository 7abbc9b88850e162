"""Alembic environment: runs migrations over ``store/database.py``'s engine for the configured URL (PostgreSQL's
``AsyncEngine``, or SQLite's synchronous engine behind its async interface), through ``run_sync``."""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy.engine import Connection

from kubecrawl.store.database import create_engine
from kubecrawl.store.schema import add_partial_indexes, metadata

config = context.config
add_partial_indexes()  # the whole schema, as autogenerate compares it with a database


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


async def _run_async() -> None:
    engine = create_engine(config.get_main_option("sqlalchemy.url") or "")
    async with engine.connect() as connection:
        await connection.run_sync(_run)
        await connection.commit()
    await engine.dispose()


asyncio.run(_run_async())

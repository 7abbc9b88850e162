"""SQLite's engine on a file (store/sqlite_engine.py): every connection gets the PRAGMAs, and the pool never makes
the loop's thread wait for a connection."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import text

from kubecrawl.embedded import sqlite_url
from kubecrawl.store.database import create_engine
from kubecrawl.store.engines import SqlConnection


async def test_every_connection_runs_in_wal_mode_with_foreign_keys_and_a_busy_timeout(tmp_path: Path) -> None:
    engine = create_engine(sqlite_url(tmp_path / "k.db"))
    try:
        async with engine.connect() as conn:
            pragmas = [
                (await conn.execute(text(f"PRAGMA {name}"))).scalar()
                for name in ("journal_mode", "synchronous", "busy_timeout", "foreign_keys")
            ]
        assert pragmas == ["wal", 1, 5000, 1]  # synchronous 1: NORMAL
    finally:
        await engine.dispose()


async def test_connections_held_beyond_the_pool_size_never_make_a_checkout_wait(tmp_path: Path) -> None:
    """A synchronous pool at its limit would block the loop's thread, and with it the tasks holding connections."""
    engine = create_engine(sqlite_url(tmp_path / "k.db"), pool_size=1)
    held: list[SqlConnection] = []
    try:
        for _ in range(4):  # a bounded pool would wait its pool_timeout here, then raise
            conn = await engine.connect()
            held.append(conn)
            assert (await conn.execute(text("SELECT 1"))).scalar() == 1
    finally:
        for conn in held:
            await conn.close()
        await engine.dispose()

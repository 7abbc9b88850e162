"""The database errors a caller catches: asyncpg's only once asyncpg is loaded, which a PostgreSQL engine does."""

from __future__ import annotations

import sys

import asyncpg  # type: ignore[import-untyped]  # no stubs
import pytest
from sqlalchemy.exc import DBAPIError

from kubecrawl.store.database import create_engine, database_errors


def test_database_errors_include_asyncpg_errors_once_asyncpg_is_loaded() -> None:
    errors = database_errors()
    assert {asyncpg.PostgresError, asyncpg.InterfaceError, DBAPIError, OSError} <= set(errors)


def test_database_errors_do_not_load_asyncpg(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(sys.modules, "asyncpg")
    errors = database_errors()
    assert "asyncpg" not in sys.modules
    assert DBAPIError in errors
    assert asyncpg.PostgresError not in errors


def test_a_postgresql_engine_loads_asyncpg_before_it_can_raise_its_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(sys.modules, "asyncpg")
    create_engine("postgresql+asyncpg://kubecrawl@127.0.0.1:1/none")  # never connected
    assert "asyncpg" in sys.modules
    assert sys.modules["asyncpg"].PostgresError in database_errors()

"""The database errors a caller catches (asyncpg's only once asyncpg is loaded, which a PostgreSQL engine does), and
what one blames: a refused value, a broken deadlock, or neither (an outage)."""

from __future__ import annotations

import sys

import asyncpg  # type: ignore[import-untyped]  # no stubs
import pytest
from sqlalchemy.exc import DBAPIError

from kubecrawl.store.crawls import blames_one_crawl
from kubecrawl.store.database import broke_a_deadlock, create_engine, database_errors, refused_value


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


class DriverError(Exception):
    def __init__(self, sqlstate: str) -> None:
        super().__init__(sqlstate)
        self.sqlstate = sqlstate


class Wrapped(Exception):
    """SQLAlchemy's wrapper: the driver's error is ``orig``."""

    def __init__(self, orig: Exception) -> None:
        super().__init__(str(orig))
        self.orig = orig


@pytest.mark.parametrize(
    ("sqlstate", "refused", "deadlock"),
    [("22P05", True, False), ("23505", True, False), ("40P01", False, True), ("08006", False, False)],
)
def test_an_error_is_blamed_on_a_value_a_deadlock_or_neither(sqlstate: str, refused: bool, deadlock: bool) -> None:
    for exc in (DriverError(sqlstate), Wrapped(DriverError(sqlstate))):
        assert (refused_value(exc), broke_a_deadlock(exc)) == (refused, deadlock)
        # A batch of several crawls is split for either: one crawl's part may have caused it.
        assert blames_one_crawl(exc) is (refused or deadlock)


def test_an_error_without_a_sqlstate_blames_no_crawl() -> None:
    assert not blames_one_crawl(ConnectionResetError("gone"))

"""What a database error blames: a refused value, a broken deadlock, or neither (an outage)."""

from __future__ import annotations

import pytest

from kubecrawl.store.crawls import blames_one_crawl
from kubecrawl.store.database import broke_a_deadlock, refused_value


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

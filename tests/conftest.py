"""Session-wide real servers (started once per run; a missing server fails the run, never a skip), the shared
fixtures (tests/support/fixtures.py, tests/support/guarded.py), and the markers each directory's tests carry, so
``-m 'not e2e'`` or ``-m integration`` select by what a test needs."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TypeVar

import pytest

from tests.support.ferretdb import FerretServer
from tests.support.servers import PostgresServer, RabbitServer

pytest_plugins = ["tests.support.fixtures", "tests.support.guarded"]

TESTS = Path(__file__).parent
# What a test under each directory needs, as the markers pyproject.toml declares.
MARKERS = {
    "integration": ("integration",),
    "security": ("integration", "security"),
    "e2e": ("e2e",),
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        directory = item.path.relative_to(TESTS).parts[0] if item.path.is_relative_to(TESTS) else ""
        for marker in MARKERS.get(directory, ()):
            item.add_marker(marker)


ServerT = TypeVar("ServerT", RabbitServer, PostgresServer, FerretServer)


def running(server: ServerT) -> Iterator[ServerT]:
    """Start a session's server, hand it out, stop it at the end of the session."""
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def rabbit(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RabbitServer]:
    yield from running(RabbitServer(Path(tmp_path_factory.mktemp("rabbitmq"))))


@pytest.fixture(scope="session")
def postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PostgresServer]:
    yield from running(PostgresServer(Path(tmp_path_factory.mktemp("postgres"))))


@pytest.fixture(scope="session")
def ferretdb(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FerretServer]:
    """The tests' MongoDB: FerretDB on SQLite (tests/support/ferretdb.py)."""
    yield from running(FerretServer(Path(tmp_path_factory.mktemp("ferretdb"))))

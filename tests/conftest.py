"""Session-wide real servers. Started once per run; a missing server fails the run (never a skip)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.ferretdb import FerretServer
from tests.support.servers import PostgresServer, RabbitServer


@pytest.fixture(scope="session")
def rabbit(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RabbitServer]:
    server = RabbitServer(Path(tmp_path_factory.mktemp("rabbitmq")))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PostgresServer]:
    server = PostgresServer(Path(tmp_path_factory.mktemp("postgres")))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def ferretdb(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FerretServer]:
    """The tests' MongoDB: FerretDB on SQLite (tests/support/ferretdb.py)."""
    server = FerretServer(Path(tmp_path_factory.mktemp("ferretdb")))
    server.start()
    yield server
    server.stop()

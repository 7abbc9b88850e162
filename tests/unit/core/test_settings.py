"""KUBECRAWL_DATABASE_URL: the URL forms accepted and the driver URL the store is given."""

from __future__ import annotations

import pytest

from kubecrawl.core.settings import Settings


def database_url(url: str) -> str:
    return Settings(database_url=url).database_url.get_secret_value()


@pytest.mark.parametrize(
    ("given", "opened"),
    [
        # CloudNativePG's <cluster>-app Secret, key `uri`.
        ("postgresql://app:s3cr%40t@pg-rw.db.svc:5432/app", "postgresql+asyncpg://app:s3cr%40t@pg-rw.db.svc:5432/app"),
        ("postgres://app:pw@pg:5432/app", "postgresql+asyncpg://app:pw@pg:5432/app"),
        ("postgresql://app@pg/app?sslmode=require", "postgresql+asyncpg://app@pg/app?ssl=require"),
        (
            "postgresql://app@pg/app?sslmode=verify-full&application_name=kc",
            "postgresql+asyncpg://app@pg/app?ssl=verify-full&application_name=kc",
        ),
        ("postgresql+asyncpg://app@pg/app", "postgresql+asyncpg://app@pg/app"),
        ("sqlite:///./kubecrawl.db", "sqlite:///./kubecrawl.db"),
        # the name earlier releases used: the same file, run by sqlite3 as every SQLite URL is
        ("sqlite+aiosqlite:///./kubecrawl.db", "sqlite:///./kubecrawl.db"),
        ("sqlite+aiosqlite:///:memory:", "sqlite:///:memory:"),
    ],
)
def test_libpq_urls_are_mapped_to_the_asyncpg_driver(given: str, opened: str) -> None:
    assert database_url(given) == opened


@pytest.mark.parametrize("url", ["mysql://app@db/app", "postgresql+psycopg2://app@db/app", "pg://app@db/app"])
def test_other_database_urls_are_refused(url: str) -> None:
    with pytest.raises(ValueError, match="database_url must be"):
        database_url(url)

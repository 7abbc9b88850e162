"""Settings: which database URLs are accepted."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from kubecrawl.core.settings import Settings


@pytest.mark.parametrize(
    "url",
    [
        "postgresql+asyncpg://u:p@db/kubecrawl",
        "sqlite:///./kubecrawl.db",
        "mongodb://u:p@db:27017/kubecrawl",
        "mongodb+srv://u:p@cluster.example/kubecrawl",
    ],
)
def test_a_postgresql_sqlite_or_mongodb_url_is_accepted(url: str) -> None:
    assert Settings(database_url=url).database_url.get_secret_value() == url  # type: ignore[arg-type]


def test_another_database_url_is_refused_naming_the_accepted_ones() -> None:
    with pytest.raises(ValidationError, match="mongodb://"):
        Settings(database_url="mysql://u:p@db/kubecrawl")  # type: ignore[arg-type]

"""The security suite runs on the same real servers as tests/integration: the same per-test vhost and database.

The migrated template database is this package's own (a session fixture imported into two conftests is two
fixtures, and both would create the same template).
"""

import pytest

from kubecrawl.store.migrating import upgrade
from tests.integration.conftest import (  # noqa: F401 - fixtures
    api,
    database_url,
    settings,
    site,
    vhost,
    worker,
)
from tests.support.guarded import allowed_site, guarded_settings, guarded_worker  # noqa: F401 - fixtures
from tests.support.servers import PostgresServer

TEMPLATE_DB = "kubecrawl_security_template"


@pytest.fixture(scope="session")
def migrated_template(postgres: PostgresServer) -> str:
    upgrade(postgres.create_database(TEMPLATE_DB))
    return TEMPLATE_DB

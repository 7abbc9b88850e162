"""The security suite runs on the same real servers as tests/integration: the same per-test vhost and database."""

from tests.integration.conftest import (  # noqa: F401 - fixtures
    api,
    database_url,
    migrated_template,
    settings,
    site,
    vhost,
    worker,
)
from tests.support.guarded import allowed_site, guarded_settings, guarded_worker  # noqa: F401 - fixtures

"""Crawl quotas (docs/security.md, "Crawl quotas"): ``crawls.started_by`` names who a crawl counts against (an API
key, a Kubernetes user, or the site for a scheduled run), indexed with the state so the API counts an identity's
active crawls from the index alone; ``api_keys.max_concurrent_crawls`` and ``max_pages`` override the API's
settings for one key (null: the settings).

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("crawls", sa.Column("started_by", sa.String(320)))
    op.create_index("ix_crawls_started_by_state", "crawls", ["started_by", "state"])
    op.add_column("api_keys", sa.Column("max_concurrent_crawls", sa.Integer))
    op.add_column("api_keys", sa.Column("max_pages", sa.Integer))


def downgrade() -> None:
    op.drop_column("api_keys", "max_pages")
    op.drop_column("api_keys", "max_concurrent_crawls")
    op.drop_index("ix_crawls_started_by_state", table_name="crawls")
    op.drop_column("crawls", "started_by")

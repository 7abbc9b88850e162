"""Site crawls: sites, crawls, the crawl frontier (crawl_pages) and per-host politeness state.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

Json = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "sites",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("namespace", sa.String(253), nullable=False),
        sa.Column("name", sa.String(253), nullable=False),
        sa.Column("spec", Json, nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_sites"),
        sa.UniqueConstraint("namespace", "name", name="uq_sites_namespace_name"),
    )
    counters = [
        sa.Column(name, sa.Integer, nullable=False, server_default="0")
        for name in (
            "discovered",
            "queued",
            "fetched",
            "failed",
            "changed",
            "unchanged",
            "skipped_robots",
            "in_flight",
            "version",
        )
    ]
    op.create_table(
        "crawls",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("site_namespace", sa.String(253), nullable=False),
        sa.Column("site_name", sa.String(253), nullable=False),
        sa.Column("trigger", sa.String(16), nullable=False),
        sa.Column("idempotency_key", sa.String(512)),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("config", Json, nullable=False),
        sa.Column("previous_crawl_id", sa.String(36)),
        *counters,
        sa.Column("error", sa.Text),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("started_at", TS),
        sa.Column("finished_at", TS),
        sa.PrimaryKeyConstraint("id", name="pk_crawls"),
        sa.UniqueConstraint("idempotency_key", name="uq_crawls_idempotency_key"),
    )
    op.create_index("ix_crawls_site_created", "crawls", ["site_namespace", "site_name", "created_at"])
    op.create_table(
        "crawl_pages",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("crawl_id", sa.String(36), sa.ForeignKey("crawls.id", ondelete="CASCADE"), nullable=False),
        sa.Column("url", sa.Text, nullable=False),
        sa.Column("depth", sa.Integer, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("http_status", sa.Integer),
        sa.Column("content_hash", sa.String(64)),
        sa.Column("changed", sa.Boolean),
        sa.Column("etag", sa.Text),
        sa.Column("last_modified", sa.Text),
        sa.Column("title", sa.Text),
        sa.Column("description", sa.Text),
        sa.Column("canonical", sa.Text),
        sa.Column("noindex", sa.Boolean),
        sa.Column("nofollow", sa.Boolean),
        sa.Column("links", sa.Integer),
        # In-scope links found on the page: a later crawl that gets 304 Not Modified follows these.
        sa.Column("outlinks", Json),
        sa.Column("error_code", sa.String(64)),
        sa.Column("error", sa.Text),
        sa.Column("seq", sa.Integer),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.Column("fetched_at", TS),
        sa.PrimaryKeyConstraint("id", name="pk_crawl_pages"),
        sa.UniqueConstraint("crawl_id", "url", name="uq_crawl_pages_crawl_id_url"),
    )
    op.create_index("ix_crawl_pages_crawl_state", "crawl_pages", ["crawl_id", "state", "depth", "id"])
    op.create_index("ix_crawl_pages_crawl_seq", "crawl_pages", ["crawl_id", "seq"])
    op.create_table(
        "crawl_hosts",
        sa.Column("crawl_id", sa.String(36), sa.ForeignKey("crawls.id", ondelete="CASCADE"), nullable=False),
        sa.Column("host", sa.String(300), nullable=False),
        sa.Column("robots_state", sa.String(16), nullable=False),
        sa.Column("robots_txt", sa.Text),
        sa.Column("crawl_delay", sa.Float),
        sa.Column("next_fetch_at", TS),
        sa.PrimaryKeyConstraint("crawl_id", "host", name="pk_crawl_hosts"),
    )


def downgrade() -> None:
    op.drop_table("crawl_hosts")
    op.drop_index("ix_crawl_pages_crawl_seq", table_name="crawl_pages")
    op.drop_index("ix_crawl_pages_crawl_state", table_name="crawl_pages")
    op.drop_table("crawl_pages")
    op.drop_index("ix_crawls_site_created", table_name="crawls")
    op.drop_table("crawls")
    op.drop_table("sites")

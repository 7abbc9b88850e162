"""page_metadata: one row per normalised URL.

Revision ID: 0001
Revises:
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

Json = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "page_metadata",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("url", sa.Text, nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("http_status", sa.Integer),
        sa.Column("final_url", sa.Text),
        sa.Column("redirects", Json),
        sa.Column("response_headers", Json),
        sa.Column("cookies", Json),
        sa.Column("title", sa.Text),
        sa.Column("description", sa.Text),
        sa.Column("canonical", sa.Text),
        sa.Column("language", sa.String(64)),
        sa.Column("robots", sa.Text),
        sa.Column("opengraph", Json),
        sa.Column("twitter", Json),
        sa.Column("content_type", sa.Text),
        sa.Column("content_length", sa.BigInteger),
        sa.Column("content_hash", sa.String(64)),
        sa.Column("charset", sa.String(64)),
        sa.Column("body_bytes", sa.BigInteger),
        sa.Column("truncated", sa.Boolean),
        sa.Column("page_source", sa.Text),
        sa.Column("timings", Json),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("last_error", sa.Text),
        sa.Column("last_error_code", sa.String(64)),
        sa.Column("last_request_id", sa.String(64)),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("queued_at", sa.DateTime(timezone=True)),
        sa.Column("fetched_at", sa.DateTime(timezone=True)),
        sa.PrimaryKeyConstraint("id", name="pk_page_metadata"),
        sa.UniqueConstraint("url", name="uq_page_metadata_url"),
    )
    op.create_index("ix_page_metadata_created_at", "page_metadata", ["created_at"])


def downgrade() -> None:
    op.drop_index("ix_page_metadata_created_at", table_name="page_metadata")
    op.drop_table("page_metadata")

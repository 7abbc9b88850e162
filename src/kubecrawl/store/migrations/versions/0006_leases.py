"""Leases (docs/crawls.md, "Leases"): a claimed crawl page or metadata record holds its claim until
``lease_until``; the sweep gives expired claims back to the queue. ``last_failure_code``/``last_failure`` keep the
latest failure of a page or record (``lease_expired`` among them), which a later success does not erase.

A host's robots.txt claim is a lease too: ``crawl_hosts.robots_claimed_until`` (another worker takes over a claim
whose worker died or hung), and ``robots_expires_at`` ends a complete disallow after a while (an unreachable
robots.txt, RFC 9309 section 2.3.1.4), when the next page fetches robots.txt again.

The partial indexes hold only claimed rows (FETCHING pages, records with a lease) and records waiting for a fetch
(the lost-record sweep), so the sweep reads a handful of entries however large the tables grow.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

FETCHING = sa.text("state = 'FETCHING'")
LEASED = sa.text("lease_until IS NOT NULL")
WAITING = sa.text("status IN ('QUEUED', 'FAILED_RETRYABLE')")


def upgrade() -> None:
    for table in ("crawl_pages", "page_metadata"):
        op.add_column(table, sa.Column("lease_until", sa.DateTime(timezone=True)))
        op.add_column(table, sa.Column("last_failure_code", sa.String(64)))
        op.add_column(table, sa.Column("last_failure", sa.Text))
    op.add_column("crawl_hosts", sa.Column("robots_claimed_until", sa.DateTime(timezone=True)))
    op.add_column("crawl_hosts", sa.Column("robots_expires_at", sa.DateTime(timezone=True)))
    op.create_index(
        "ix_crawl_pages_leases", "crawl_pages", ["lease_until"], postgresql_where=FETCHING, sqlite_where=FETCHING
    )
    op.create_index(
        "ix_page_metadata_leases", "page_metadata", ["lease_until"], postgresql_where=LEASED, sqlite_where=LEASED
    )
    op.create_index(
        "ix_page_metadata_waiting", "page_metadata", ["updated_at"], postgresql_where=WAITING, sqlite_where=WAITING
    )


def downgrade() -> None:
    op.drop_index("ix_page_metadata_waiting", table_name="page_metadata")
    op.drop_index("ix_page_metadata_leases", table_name="page_metadata")
    op.drop_index("ix_crawl_pages_leases", table_name="crawl_pages")
    op.drop_column("crawl_hosts", "robots_expires_at")
    op.drop_column("crawl_hosts", "robots_claimed_until")
    for table in ("page_metadata", "crawl_pages"):
        for column in ("last_failure", "last_failure_code", "lease_until"):
            op.drop_column(table, column)

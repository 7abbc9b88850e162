"""Frontier indexes that keep the per-page statements on index look-ups whatever the planner's statistics say.

Seen with auto_explain on a first crawl (bench/crawl_vs_scrapy.py): with statistics from before the crawl (an
empty table, or a new crawl_id), the planner took ``crawl_id = $1`` for a few rows and answered "these page ids of
this crawl" and "the shallowest PENDING pages" by walking every page of the crawl through ix_crawl_pages_crawl_seq,
the smallest index that starts with crawl_id: 1-3 ms per batch on 2,000 pages, and growing with the crawl.

- ix_crawl_pages_crawl_seq covers settled pages only (``seq IS NOT NULL``), which is all the SSE resume reads:
  it no longer offers a path to every page of a crawl, and a page's three earlier row versions add no entry.
- ix_crawl_pages_pending ((crawl_id, depth, id) WHERE state = 'PENDING') is the refill's exact order: the window
  is filled from its first entries, without a sort, however large the crawl.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

SETTLED = sa.text("seq IS NOT NULL")
PENDING = sa.text("state = 'PENDING'")


def upgrade() -> None:
    op.drop_index("ix_crawl_pages_crawl_seq", table_name="crawl_pages")
    op.create_index(
        "ix_crawl_pages_crawl_seq",
        "crawl_pages",
        ["crawl_id", "seq"],
        postgresql_where=SETTLED,
        sqlite_where=SETTLED,
    )
    op.create_index(
        "ix_crawl_pages_pending",
        "crawl_pages",
        ["crawl_id", "depth", "id"],
        postgresql_where=PENDING,
        sqlite_where=PENDING,
    )


def downgrade() -> None:
    op.drop_index("ix_crawl_pages_pending", table_name="crawl_pages")
    op.drop_index("ix_crawl_pages_crawl_seq", table_name="crawl_pages")
    op.create_index("ix_crawl_pages_crawl_seq", "crawl_pages", ["crawl_id", "seq"])

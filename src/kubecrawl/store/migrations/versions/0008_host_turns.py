"""Host turns (docs/crawls.md, "Politeness"): a spaced host (``delaySeconds``, Crawl-delay) takes one request at a
time across every worker. ``crawl_hosts.turn_until`` is the turn of the request in flight, a lease (its worker may
die or hang): the answer ends it and sets ``next_fetch_at`` to the spacing after the answer.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("crawl_hosts", sa.Column("turn_until", sa.DateTime(timezone=True)))


def downgrade() -> None:
    op.drop_column("crawl_hosts", "turn_until")

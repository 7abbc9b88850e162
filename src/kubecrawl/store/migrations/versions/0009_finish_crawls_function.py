"""PostgreSQL: settle the page outcomes of several crawls in one statement (``kubecrawl_finish_crawls``).

A worker's batch of outcomes holds every crawl's (docs/crawls.md, "Group commit"): with 200 small crawls at
once, one per host, a batch per crawl held about one page, and each page paid a call of ``kubecrawl_finish_pages``
of its own (docs/scaling.md, "Many hosts"). This function settles each crawl's part with
``kubecrawl_finish_pages`` (migration 0003), unchanged, in one transaction, in crawl-id order: every writer that
locks several crawl rows locks them in that order (two workers' batches, the lease sweeper), so none waits for
another in a circle.

p_batches: a JSON array of {"crawl_id", "outcomes"}, ``outcomes`` as ``kubecrawl_finish_pages`` takes them.
Returns {crawl id: what ``kubecrawl_finish_pages`` returned for it} (JSON null for a crawl that does not exist).
If one crawl's part fails (a value refused), the whole call rolls back; the worker writes the batch again one
crawl at a time (``GroupCommit``'s ``split_on``, store/batching.py).

This text is history: a change of behaviour is a new migration, never an edit of this one.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-06
"""

from __future__ import annotations

from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

FINISH_CRAWLS = r"""
CREATE OR REPLACE FUNCTION kubecrawl_finish_crawls(p_batches jsonb, p_now timestamptz)
RETURNS jsonb
LANGUAGE plpgsql
AS $fn$
DECLARE
    v_batch jsonb;
    v_results jsonb := '{}';
BEGIN
    FOR v_batch IN
        SELECT b.doc FROM jsonb_array_elements(p_batches) AS b(doc)
        ORDER BY (b.doc ->> 'crawl_id')::varchar
    LOOP
        v_results := v_results || jsonb_build_object(
            v_batch ->> 'crawl_id',
            kubecrawl_finish_pages((v_batch ->> 'crawl_id')::varchar, v_batch -> 'outcomes', p_now)
        );
    END LOOP;
    RETURN v_results;
END;
$fn$;
"""


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(FINISH_CRAWLS)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP FUNCTION IF EXISTS kubecrawl_finish_crawls(jsonb, timestamptz)")

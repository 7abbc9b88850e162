"""PostgreSQL: settle a batch of page outcomes in one statement (``kubecrawl_finish_pages``).

A batch's transaction holds the crawl row's lock (the window, the counters, the SSE sequence and completion all
hang on it). Run from the worker as eight statements, the lock stayed held for eight round trips, each resumed
only when the worker's busy event loop came back to it: about 8 ms per batch, 70 % of the time with one worker
and 90 % with two, so a crawl could not go faster however many workers it had (bench/crawl_vs_scrapy.py). As one
function call in its own transaction the lock is held for the server-side work only.

The function does what ``FinishInProcess`` (store/finishing.py, SQLite) does statement by statement;
tests/integration/test_crawl_store.py runs the same cases on both, and tests/unit/store/test_outcomes.py checks
that the columns it writes are the ones ``PageOutcome`` stores (store/outcomes.py). This text is history: a
change of behaviour is a new migration, never an edit of this one.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26
"""

from __future__ import annotations

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

# p_outcomes: a JSON array, one object per delivered outcome in arrival order: the crawl_pages columns an outcome
# writes (id, state, http_status, …, outlinks), "counted", the crawl counters it moves ({"fetched": 1, …}), and
# "new_links", the links to add to the frontier: its in-scope links less those the worker already knows to be in
# the frontier (``CrawlMemo``, store/frontier.py), so that the 25 links of a typical page cost no index probe each.
# Only the first outcome of a page still FETCHING is settled. Returns NULL when the crawl does not exist, else
# {"state", "previous_state", "settled": [page ids], "publish": [[id, url, depth], …]}.
FINISH_PAGES = r"""
CREATE OR REPLACE FUNCTION kubecrawl_finish_pages(p_crawl_id varchar, p_outcomes jsonb, p_now timestamptz)
RETURNS jsonb
LANGUAGE plpgsql
AS $fn$
DECLARE
    v_crawl record;
    v_settled jsonb;
    v_settled_ids bigint[];
    v_count int;
    v_fetched int;
    v_failed int;
    v_changed int;
    v_unchanged int;
    v_skipped_robots int;
    v_state varchar := NULL;
    v_in_flight int;
    v_remaining int;
    v_room int;
    v_added int := 0;
    v_urls text[];
    v_depths int[];
    v_i int;
    v_taken int := 0;
    v_publish jsonb := '[]';
    v_finished timestamptz := NULL;
BEGIN
    SELECT id, state, version, discovered, in_flight, config INTO v_crawl
    FROM crawls WHERE id = p_crawl_id FOR UPDATE;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;

    -- The pages still FETCHING, locked (a concurrent retry_page of a redelivered copy waits), looked up by their
    -- primary key alone: a condition on crawl_id would let stale statistics walk the crawl's every page.
    SELECT coalesce(array_agg(locked.id), '{}') INTO v_settled_ids
    FROM (
        SELECT p.id FROM crawl_pages p
        WHERE p.id = ANY (ARRAY(SELECT (e.doc ->> 'id')::bigint FROM jsonb_array_elements(p_outcomes) AS e(doc)))
          AND p.state = 'FETCHING'
        FOR UPDATE
    ) AS locked;

    -- The first outcome of each of those pages, numbered in arrival order: the SSE sequence.
    WITH outcome AS (
        SELECT DISTINCT ON (r.id) r.*, e.doc, e.ord
        FROM jsonb_array_elements(p_outcomes) WITH ORDINALITY AS e(doc, ord),
             LATERAL jsonb_populate_record(NULL::crawl_pages, e.doc) AS r
        ORDER BY r.id, e.ord
    ), fetching AS (
        SELECT o.*, row_number() OVER (ORDER BY o.ord) AS n
        FROM outcome o
        WHERE o.id = ANY (v_settled_ids)
    ), settled AS (
        UPDATE crawl_pages p SET
            state = f.state, seq = v_crawl.version + f.n, fetched_at = p_now, updated_at = p_now,
            outlinks = f.outlinks, http_status = f.http_status, content_hash = f.content_hash,
            changed = f.changed, etag = f.etag, last_modified = f.last_modified, title = f.title,
            description = f.description, canonical = f.canonical, noindex = f.noindex, nofollow = f.nofollow,
            links = f.links, error_code = f.error_code, error = f.error
        FROM fetching f
        WHERE p.id = f.id
        RETURNING p.id, p.depth, coalesce(f.doc -> 'new_links', '[]') AS new_links, f.doc -> 'counted' AS counted, f.n
    )
    SELECT coalesce(jsonb_agg(jsonb_build_object('depth', s.depth, 'links', s.new_links, 'n', s.n)), '[]'),
           coalesce(array_agg(s.id ORDER BY s.n), '{}'),
           count(*),
           coalesce(sum((s.counted ->> 'fetched')::int), 0),
           coalesce(sum((s.counted ->> 'failed')::int), 0),
           coalesce(sum((s.counted ->> 'changed')::int), 0),
           coalesce(sum((s.counted ->> 'unchanged')::int), 0),
           coalesce(sum((s.counted ->> 'skipped_robots')::int), 0)
    INTO v_settled, v_settled_ids, v_count, v_fetched, v_failed, v_changed, v_unchanged, v_skipped_robots
    FROM settled s;
    IF v_count = 0 THEN
        RETURN jsonb_build_object('state', v_crawl.state, 'previous_state', v_crawl.state,
                                  'settled', '[]'::jsonb, 'publish', '[]'::jsonb);
    END IF;

    v_state := v_crawl.state;
    v_in_flight := v_crawl.in_flight - v_count;
    IF v_crawl.state IN ('QUEUED', 'RUNNING') THEN
        v_remaining := greatest(0, (v_crawl.config -> 'scope' ->> 'maxPages')::int - v_crawl.discovered);
        IF v_remaining > 0 THEN
            -- New links, deduplicated, in the order they were found; each at its finder's depth + 1.
            SELECT coalesce(array_agg(c.url ORDER BY c.n, c.k), '{}'),
                   coalesce(array_agg(c.depth ORDER BY c.n, c.k), '{}')
            INTO v_urls, v_depths
            FROM (
                SELECT DISTINCT ON (l.url) l.url, (s.depth + 1) AS depth, s.n, l.k
                FROM jsonb_to_recordset(v_settled) AS s(depth int, links jsonb, n int),
                     LATERAL jsonb_array_elements_text(s.links) WITH ORDINALITY AS l(url, k)
                ORDER BY l.url, s.n, l.k
            ) AS c;
            -- The unique key decides what is new: a probe per link, never a join with the crawl's pages (with a
            -- first crawl's stale statistics the planner chose to read them all, per batch).
            IF cardinality(v_urls) <= v_remaining THEN
                WITH inserted AS (
                    INSERT INTO crawl_pages (crawl_id, url, depth, state, attempts, created_at, updated_at)
                    SELECT p_crawl_id, u.url, u.depth, 'PENDING', 0, p_now, p_now
                    FROM unnest(v_urls, v_depths) WITH ORDINALITY AS u(url, depth, i)
                    ORDER BY u.i
                    ON CONFLICT (crawl_id, url) DO NOTHING
                    RETURNING 1
                )
                SELECT count(*) INTO v_added FROM inserted;
            ELSE  -- more links than maxPages admits: the first new ones, in order
                FOR v_i IN 1 .. cardinality(v_urls) LOOP
                    EXIT WHEN v_added >= v_remaining;
                    INSERT INTO crawl_pages (crawl_id, url, depth, state, attempts, created_at, updated_at)
                    VALUES (p_crawl_id, v_urls[v_i], v_depths[v_i], 'PENDING', 0, p_now, p_now)
                    ON CONFLICT (crawl_id, url) DO NOTHING;
                    IF FOUND THEN
                        v_added := v_added + 1;
                    END IF;
                END LOOP;
            END IF;
        END IF;

        v_room := (v_crawl.config -> 'politeness' ->> 'maxConcurrency')::int - v_in_flight;
        IF v_room > 0 THEN
            -- PENDING → QUEUED for the shallowest pages, as many as the window has room for.
            WITH taken AS (
                UPDATE crawl_pages SET state = 'QUEUED', updated_at = p_now
                WHERE id IN (
                    SELECT id FROM crawl_pages
                    WHERE crawl_id = p_crawl_id AND state = 'PENDING'
                    ORDER BY depth, id
                    LIMIT v_room
                )
                RETURNING id, url, depth
            )
            SELECT coalesce(jsonb_agg(jsonb_build_array(t.id, t.url, t.depth) ORDER BY t.depth, t.id), '[]'),
                   count(*)
            INTO v_publish, v_taken
            FROM taken t;
            v_in_flight := v_in_flight + v_taken;
        END IF;
        IF v_in_flight = 0 THEN  -- nothing in flight and nothing PENDING left (the refill had room for it)
            v_state := 'COMPLETED';
            v_finished := p_now;
        END IF;
    END IF;

    UPDATE crawls SET
        fetched = fetched + v_fetched,
        failed = failed + v_failed,
        changed = changed + v_changed,
        unchanged = unchanged + v_unchanged,
        skipped_robots = skipped_robots + v_skipped_robots,
        discovered = discovered + v_added,
        queued = queued + v_taken,
        version = version + v_count,
        in_flight = v_in_flight,
        state = v_state,
        finished_at = coalesce(v_finished, finished_at)
    WHERE id = p_crawl_id;

    RETURN jsonb_build_object('state', v_state, 'previous_state', v_crawl.state,
                              'settled', to_jsonb(v_settled_ids), 'publish', v_publish);
END;
$fn$;
"""


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(FINISH_PAGES)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP FUNCTION IF EXISTS kubecrawl_finish_pages(varchar, jsonb, timestamptz)")

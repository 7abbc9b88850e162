"""One definition of a page outcome: the columns, the statements and migration 0003's PL/pgSQL agree with
``PageOutcome``. The migration is history (never edited), so these tests are what keeps a new outcome field from
being written by one settling path and dropped by the other."""

from __future__ import annotations

import dataclasses
import importlib.util
import re
from importlib.resources import files
from pathlib import Path

from kubecrawl.core.models import CrawlCounters, CrawlPage, CrawlPageState, CrawlState
from kubecrawl.store.contract import PageOutcome, PageRef
from kubecrawl.store.finishing import _SETTLE_PAGE
from kubecrawl.store.outcomes import (
    COUNTERS,
    OUTCOME_COLUMNS,
    RESULT_FIELDS,
    SettledBatch,
    counted,
    outcome_values,
    shared_out,
)
from kubecrawl.store.schema import crawl_pages, crawls


def _finish_pages_sql() -> str:
    path = Path(str(files("kubecrawl.store") / "migrations" / "versions" / "0003_finish_pages_function.py"))
    spec = importlib.util.spec_from_file_location("migration_0003", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    sql: str = module.FINISH_PAGES
    return sql


def _assignments(sql: str, start: str, end: str) -> set[str]:
    """The column names assigned (``name = …``) between ``start`` and ``end``."""
    block = sql[sql.index(start) + len(start) : sql.index(end, sql.index(start))]
    return set(re.findall(r"(?:^|,)\s*(\w+)\s*=", block))


def test_every_stored_outcome_field_is_a_crawl_pages_column() -> None:
    assert set(OUTCOME_COLUMNS) <= set(crawl_pages.c.keys())
    assert len(set(OUTCOME_COLUMNS)) == len(OUTCOME_COLUMNS)


def test_the_stored_fields_are_the_outcome_fields_but_state_the_robots_flag_and_the_links() -> None:
    names = [f.name for f in dataclasses.fields(PageOutcome)]
    assert list(RESULT_FIELDS) == [n for n in names if n not in {"state", "skipped_robots", "new_links"}]


def test_the_in_process_statement_writes_exactly_the_outcome_columns() -> None:
    bound = {name.removeprefix("b_") for name in _SETTLE_PAGE.statement.compile().params if name.startswith("b_")}
    assert bound - {"id"} == set(OUTCOME_COLUMNS)  # id: the page, in the WHERE clause


def test_the_sql_function_writes_exactly_the_outcome_columns() -> None:
    sql = _finish_pages_sql()
    assert _assignments(sql, "UPDATE crawl_pages p SET", "FROM fetching f") == set(OUTCOME_COLUMNS)


def test_the_sql_function_reads_every_value_it_writes_from_the_outcome_or_the_batch() -> None:
    """``f.<name>`` comes from ``jsonb_populate_record(crawl_pages, outcome)``: each must be a key the store sends."""
    sql = _finish_pages_sql()
    block = sql[sql.index("UPDATE crawl_pages p SET") : sql.index("FROM fetching f")]
    read = set(re.findall(r"\bf\.(\w+)", block)) - {"n"}  # n: the arrival number, computed by the function
    sent = set(outcome_values(PageOutcome(CrawlPageState.DONE)))
    assert read == sent


def test_the_sql_function_moves_every_counter_an_outcome_can_count() -> None:
    sql = _finish_pages_sql()
    summed = set(re.findall(r"s\.counted ->> '(\w+)'", sql))
    moved = _assignments(sql, "UPDATE crawls SET", "WHERE id = p_crawl_id")
    outcomes = [
        PageOutcome(CrawlPageState.DONE, changed=True),
        PageOutcome(CrawlPageState.DONE, changed=False),
        PageOutcome(CrawlPageState.DONE),
        PageOutcome(CrawlPageState.FAILED),
        PageOutcome(CrawlPageState.SKIPPED, skipped_robots=True),
    ]
    countable = {name for outcome in outcomes for name in counted(outcome)}
    assert countable == summed
    assert countable <= set(COUNTERS)
    assert set(COUNTERS) <= moved
    assert set(COUNTERS) <= set(crawls.c.keys())


def test_counters_are_the_api_models_counters() -> None:
    assert tuple(CrawlCounters.model_fields) == COUNTERS


def test_a_long_error_is_stored_cut_and_links_only_for_a_done_page() -> None:
    failed = outcome_values(PageOutcome(CrawlPageState.FAILED, error="x" * 5000, new_links=["http://a.test/"]))
    assert len(failed["error"]) == 2000
    assert failed["outlinks"] is None
    done = outcome_values(PageOutcome(CrawlPageState.DONE, new_links=["http://a.test/"]))
    assert done["outlinks"] == ["http://a.test/"]


def _batch(settled: list[int], publish: int, *, state: CrawlState, previous: CrawlState) -> SettledBatch:
    refs = [PageRef(100 + i, f"http://a.test/{i}", 1) for i in range(publish)]
    return SettledBatch(settled=settled, state=state, previous_state=previous, to_publish=refs)


def test_a_batch_is_shared_out_one_result_per_settled_page_and_none_for_duplicates() -> None:
    items = [(1, PageOutcome(CrawlPageState.DONE)), (2, PageOutcome(CrawlPageState.DONE))]
    items.append((1, PageOutcome(CrawlPageState.FAILED)))  # a second outcome for page 1: not settled
    results = shared_out(_batch([1, 2], 3, state=CrawlState.RUNNING, previous=CrawlState.RUNNING), items)
    first, second, duplicate = results
    assert first is not None
    assert second is not None
    assert duplicate is None
    # the refill goes round the settled pages, so their callers publish in parallel
    assert [ref.page_id for ref in first.to_publish] == [100, 102]
    assert [ref.page_id for ref in second.to_publish] == [101]
    assert not first.completed_now
    assert not second.completed_now


def test_exactly_one_caller_reports_the_completion_and_only_when_the_batch_completed_the_crawl() -> None:
    items = [(1, PageOutcome(CrawlPageState.DONE)), (2, PageOutcome(CrawlPageState.DONE))]
    completed = shared_out(_batch([1, 2], 0, state=CrawlState.COMPLETED, previous=CrawlState.RUNNING), items)
    assert [result is not None and result.completed_now for result in completed] == [True, False]
    already = shared_out(_batch([1, 2], 0, state=CrawlState.COMPLETED, previous=CrawlState.COMPLETED), items)
    assert not any(result is not None and result.completed_now for result in already)


def test_nothing_settled_gives_every_caller_none() -> None:
    assert shared_out(None, [(1, PageOutcome(CrawlPageState.DONE))] * 2) == [None, None]


def test_what_the_api_shows_of_a_crawl_page_is_the_page_itself_and_its_stored_outcome() -> None:
    page_itself = {"id", "url", "depth", "attempts", "seq", "fetched_at", "last_failure_code", "last_failure"}
    assert set(CrawlPage.model_fields) - page_itself <= {"state", *RESULT_FIELDS}
    assert set(CrawlPage.model_fields) <= set(crawl_pages.c.keys())

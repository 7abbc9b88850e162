"""Frontier invariants of ``CrawlStore``, under concurrency: on the real PostgreSQL (many connections), where a
batch of outcomes is settled by one call of ``kubecrawl_finish_crawls``, and on SQLite (the embedded default),
where the same steps run statement by statement: each case that takes ``engine`` runs on both."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest
from alembic import command
from prometheus_client import REGISTRY
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from kubecrawl.broker.memory import MemoryBroker, MemoryDelivery
from kubecrawl.broker.topology import CODE_HEADER, METADATA_QUEUE, PAGES_QUEUE
from kubecrawl.core.clock import utcnow
from kubecrawl.core.contracts import PageTask
from kubecrawl.core.models import CrawlPageState, CrawlState
from kubecrawl.core.settings import Settings
from kubecrawl.core.sites import CrawlSiteSpec
from kubecrawl.embedded import sqlite_url
from kubecrawl.fetch.fetching import Fetcher
from kubecrawl.store.contract import CrawlStore, PageOutcome
from kubecrawl.store.crawls import SqlCrawlStore
from kubecrawl.store.database import create_engine
from kubecrawl.store.dialects import as_utc
from kubecrawl.store.migrating import alembic_config, upgrade, upgrade_async
from kubecrawl.store.schema import crawl_hosts, crawl_pages
from kubecrawl.worker.crawling import PagePipeline
from kubecrawl.worker.sweeping import sweep_once
from tests.support.servers import PostgresServer, free_port
from tests.support.sites import Site


@pytest.fixture(params=["postgresql", "sqlite"])
async def engine(request: pytest.FixtureRequest, settings: Settings, tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    if request.param == "sqlite":
        url = sqlite_url(tmp_path / "crawls.db")
        await upgrade_async(url)
        engine = create_engine(url)
    else:
        engine = create_engine(settings.database_url.get_secret_value(), pool_size=20)
    yield engine
    await engine.dispose()


@dataclass
class Handled:
    delivery: MemoryDelivery
    published: list[str]  # URLs of the page messages the pipeline published
    dead: list[MemoryDelivery]


async def _handle_page(store: CrawlStore, settings: Settings, task: PageTask, *, redelivered: bool = False) -> Handled:
    """Run one page delivery through the real pipeline, on the in-process broker: what it settled and published."""
    broker = MemoryBroker(max_lengths={METADATA_QUEUE: 10, PAGES_QUEUE: 10}, concurrency=1)
    await broker.start()
    try:
        async with Fetcher(settings.fetch, settings.target_policy()) as fetcher:
            pipeline = PagePipeline(
                crawls=store, fetcher=fetcher, publisher=broker, retry=settings.retry, fetch=settings.fetch
            )
            body = task.model_dump_json().encode()
            delivery = MemoryDelivery(PAGES_QUEUE, body, {}, "m1", broker, redelivered=redelivered)
            await pipeline.handle(delivery)
        published = [PageTask.model_validate_json(d.body).url for d in broker.take(PAGES_QUEUE)]
        return Handled(delivery, published, list(broker.dead))
    finally:
        await broker.close()


async def _one_page_crawl(store: CrawlStore, name: str, url: str = "http://site.test/") -> tuple[str, PageTask]:
    """A crawl of one seed page (robots.txt not consulted); its id and the seed's page message."""
    config = CrawlSiteSpec.model_validate({"url": url, "politeness": {"respectRobotsTxt": False}}).model_dump(
        mode="json", by_alias=True
    )
    crawl, _, (seed,) = await store.create(
        "default", name, trigger="manual", idempotency_key=None, config=config, seeds=[url]
    )
    return crawl.id, PageTask(crawl_id=crawl.id, page_id=seed.page_id, url=seed.url, depth=0)


async def test_completion_is_detected_exactly_once_when_the_last_pages_finish_together(engine: AsyncEngine) -> None:
    store = SqlCrawlStore(engine)
    config = CrawlSiteSpec.model_validate({"url": "http://site.test/", "politeness": {"maxConcurrency": 8}}).model_dump(
        mode="json", by_alias=True
    )
    for round_ in range(10):
        seeds = [f"http://site.test/p{i}" for i in range(8)]
        crawl, created, window = await store.create(
            "default", f"race-{round_}", trigger="manual", idempotency_key=None, config=config, seeds=seeds
        )
        assert created
        assert len(window) == 8
        for ref in window:
            assert await store.begin_page(crawl.id, ref.page_id) is not None
        results = await asyncio.gather(
            *(store.finish_page(crawl.id, ref.page_id, PageOutcome(CrawlPageState.DONE)) for ref in window)
        )
        assert sum(1 for r in results if r is not None and r.completed_now) == 1
        final = await store.get(crawl.id)
        assert final is not None
        assert final.state is CrawlState.COMPLETED
        assert final.counters.fetched == 8
        assert final.in_flight == 0


async def test_a_duplicate_outcome_for_a_settled_page_changes_nothing(engine: AsyncEngine) -> None:
    store = SqlCrawlStore(engine)
    config = CrawlSiteSpec(url="http://site.test/").model_dump(mode="json", by_alias=True)
    crawl, _, window = await store.create(
        "default", "dup", trigger="manual", idempotency_key=None, config=config, seeds=["http://site.test/"]
    )
    (ref,) = window
    await store.begin_page(crawl.id, ref.page_id)
    first, second = await asyncio.gather(
        store.finish_page(crawl.id, ref.page_id, PageOutcome(CrawlPageState.DONE)),
        store.finish_page(crawl.id, ref.page_id, PageOutcome(CrawlPageState.DONE)),
    )
    assert [first is None, second is None].count(True) == 1
    assert await store.begin_page(crawl.id, ref.page_id) is None  # a redelivery finds it settled
    final = await store.get(crawl.id)
    assert final is not None
    assert final.counters.fetched == 1


async def test_two_workers_finishing_batches_at_once_complete_the_crawl_exactly_once(settings: Settings) -> None:
    """Two stores on two engines are two worker processes: each batches its own outcomes, and the crawl row
    lock still lets exactly one batch see the window empty."""
    engines = [create_engine(settings.database_url.get_secret_value(), pool_size=10) for _ in range(2)]
    try:
        stores = [SqlCrawlStore(engine) for engine in engines]
        config = CrawlSiteSpec.model_validate(
            {"url": "http://site.test/", "politeness": {"maxConcurrency": 16}}
        ).model_dump(mode="json", by_alias=True)
        for round_ in range(5):
            seeds = [f"http://site.test/p{i}" for i in range(16)]
            crawl, _, window = await stores[0].create(
                "default", f"two-{round_}", trigger="manual", idempotency_key=None, config=config, seeds=seeds
            )
            starts = await asyncio.gather(
                *(stores[i % 2].begin_page(crawl.id, ref.page_id) for i, ref in enumerate(window))
            )
            assert all(start is not None for start in starts)
            results = await asyncio.gather(
                *(
                    stores[i % 2].finish_page(crawl.id, ref.page_id, PageOutcome(CrawlPageState.DONE))
                    for i, ref in enumerate(window)
                )
            )
            assert all(result is not None for result in results)
            assert sum(1 for r in results if r is not None and r.completed_now) == 1
            final = await stores[1].get(crawl.id)
            assert final is not None
            assert final.state is CrawlState.COMPLETED
            assert (final.counters.fetched, final.in_flight) == (16, 0)
    finally:
        for engine in engines:
            await engine.dispose()


async def test_outcomes_in_one_batch_grow_the_frontier_once_and_refill_the_window_for_all(engine: AsyncEngine) -> None:
    store = SqlCrawlStore(engine)
    config = CrawlSiteSpec.model_validate(
        {"url": "http://site.test/", "politeness": {"maxConcurrency": 4}, "scope": {"maxPages": 10}}
    ).model_dump(mode="json", by_alias=True)
    seeds = [f"http://site.test/s{i}" for i in range(4)]
    crawl, _, window = await store.create(
        "default", "grow", trigger="manual", idempotency_key=None, config=config, seeds=seeds
    )
    await asyncio.gather(*(store.begin_page(crawl.id, ref.page_id) for ref in window))
    # Every page links to the same 8 new pages (and to a seed): 6 fit under maxPages, each inserted once.
    links = [f"http://site.test/n{i}" for i in range(8)] + ["http://site.test/s0"]
    results = await asyncio.gather(
        *(store.finish_page(crawl.id, ref.page_id, PageOutcome(CrawlPageState.DONE, new_links=links)) for ref in window)
    )
    published = [ref for result in results if result is not None for ref in result.to_publish]
    assert len(published) == 4  # the window (maxConcurrency 4) refilled once, shared among the callers
    assert len({ref.page_id for ref in published}) == 4
    assert all(ref.depth == 1 for ref in published)
    current = await store.get(crawl.id)
    assert current is not None
    assert (current.counters.discovered, current.counters.fetched, current.in_flight) == (10, 4, 4)
    assert await store.count_pages(crawl.id) == 10


async def test_two_outcomes_for_one_page_in_one_batch_settle_it_once(engine: AsyncEngine) -> None:
    store = SqlCrawlStore(engine)
    config = CrawlSiteSpec(url="http://site.test/").model_dump(mode="json", by_alias=True)
    crawl, _, (ref,) = await store.create(
        "default", "dup-batch", trigger="manual", idempotency_key=None, config=config, seeds=["http://site.test/"]
    )
    first, second = await asyncio.gather(
        store.begin_page(crawl.id, ref.page_id), store.begin_page(crawl.id, ref.page_id)
    )
    assert [first is None, second is None].count(True) == 1  # the second delivery finds the page being fetched
    outcomes = await asyncio.gather(
        store.finish_page(crawl.id, ref.page_id, PageOutcome(CrawlPageState.DONE, title="one")),
        store.finish_page(crawl.id, ref.page_id, PageOutcome(CrawlPageState.DONE, title="two")),
    )
    assert [outcome is None for outcome in outcomes].count(True) == 1
    (page,) = await store.pages(crawl.id, limit=10)
    assert page.title == "one"
    final = await store.get(crawl.id)
    assert final is not None
    assert (final.counters.fetched, final.state) == (1, CrawlState.COMPLETED)


async def test_a_redelivered_settled_page_republishes_the_window_its_lost_publish_left_queued(
    engine: AsyncEngine, settings: Settings
) -> None:
    """A worker that died after committing an outcome and before publishing the refill: the redelivered message
    finds its page settled, and publishes the QUEUED pages again instead of leaving them to the 15-minute sweep."""
    store = SqlCrawlStore(engine)
    crawl_id, seed = await _one_page_crawl(store, "lost-refill")
    await store.begin_page(crawl_id, seed.page_id)
    links = ["http://site.test/a", "http://site.test/b"]
    result = await store.finish_page(crawl_id, seed.page_id, PageOutcome(CrawlPageState.DONE, new_links=links))
    assert result is not None
    assert [ref.url for ref in result.to_publish] == links  # committed QUEUED; the "crash" publishes nothing

    handled = await _handle_page(store, settings, seed, redelivered=True)
    assert handled.delivery.settled
    assert handled.published == links


async def test_a_batch_writes_each_outcome_and_moves_every_counter(engine: AsyncEngine) -> None:
    """Every column an outcome writes, the SSE sequence (one per settled outcome, in arrival order, matching the
    crawl's version) and each counter: the same on both databases."""
    store = SqlCrawlStore(engine)
    config = CrawlSiteSpec.model_validate(
        {"url": "http://site.test/", "politeness": {"maxConcurrency": 5}, "scope": {"maxPages": 6}}
    ).model_dump(mode="json", by_alias=True)
    seeds = [f"http://site.test/s{i}" for i in range(5)]
    crawl, _, window = await store.create(
        "default", "columns", trigger="manual", idempotency_key=None, config=config, seeds=seeds
    )
    for ref in window:
        assert await store.begin_page(crawl.id, ref.page_id) is not None
    outcomes = {
        window[0].page_id: PageOutcome(
            CrawlPageState.DONE,
            http_status=200,
            content_hash="ab" * 32,
            changed=True,
            etag='"v1"',
            last_modified="Wed, 25 Nov 2026 10:00:00 GMT",
            title="Changed",
            description="d",
            canonical="http://site.test/s0",
            noindex=True,
            nofollow=False,
            links=3,
            new_links=["http://site.test/new", "http://site.test/s1"],
        ),
        window[1].page_id: PageOutcome(CrawlPageState.DONE, http_status=304, changed=False),
        window[2].page_id: PageOutcome(CrawlPageState.FAILED, http_status=404, error_code="http_404", error="gone"),
        window[3].page_id: PageOutcome(CrawlPageState.SKIPPED, skipped_robots=True, error_code="robots_disallowed"),
        window[4].page_id: PageOutcome(CrawlPageState.DONE, http_status=200, changed=True),
    }
    results = await asyncio.gather(
        *(store.finish_page(crawl.id, page_id, outcome) for page_id, outcome in outcomes.items())
    )
    assert all(result is not None for result in results)
    published = [ref for result in results if result is not None for ref in result.to_publish]
    assert [(ref.url, ref.depth) for ref in published] == [("http://site.test/new", 1)]

    current = await store.get(crawl.id)
    assert current is not None
    counters = current.counters
    assert (counters.discovered, counters.queued, counters.fetched, counters.failed) == (6, 6, 3, 1)
    assert (counters.changed, counters.unchanged, counters.skipped_robots) == (2, 1, 1)
    assert (current.state, current.in_flight, current.version) == (CrawlState.RUNNING, 1, 5)

    pages = {page.url: page for page in await store.pages(crawl.id, limit=10)}
    first = pages["http://site.test/s0"]
    assert (first.state, first.http_status, first.content_hash, first.changed) == (
        CrawlPageState.DONE,
        200,
        "ab" * 32,
        True,
    )
    assert (first.title, first.description) == ("Changed", "d")
    assert (first.canonical, first.noindex, first.nofollow, first.links) == ("http://site.test/s0", True, False, 3)
    assert (pages["http://site.test/s2"].error_code, pages["http://site.test/s2"].error) == ("http_404", "gone")
    assert pages["http://site.test/s3"].state is CrawlPageState.SKIPPED
    assert sorted(page.seq for page in pages.values() if page.seq is not None) == [1, 2, 3, 4, 5]
    assert pages["http://site.test/new"].state is CrawlPageState.QUEUED
    async with engine.connect() as conn:  # the validators and links a later crawl reads (not in the API model)
        row = (
            await conn.execute(
                select(crawl_pages.c.etag, crawl_pages.c.last_modified, crawl_pages.c.outlinks).where(
                    crawl_pages.c.id == first.id
                )
            )
        ).one()
    assert tuple(row) == ('"v1"', "Wed, 25 Nov 2026 10:00:00 GMT", ["http://site.test/new", "http://site.test/s1"])


def _sample(name: str, labels: dict[str, str] | None = None) -> float:
    return REGISTRY.get_sample_value(name, labels or {}) or 0.0


async def test_a_page_past_its_attempts_is_failed_dead_lettered_and_counted(
    engine: AsyncEngine, settings: Settings
) -> None:
    store = SqlCrawlStore(engine)
    crawl_id, seed = await _one_page_crawl(store, "attempts")
    for _ in range(settings.retry.max_attempts):  # deliveries that died mid-page (worker crashes)
        assert await store.begin_page(crawl_id, seed.page_id) is not None
    failed_before = _sample("kubecrawl_crawl_pages_total", {"state": "FAILED"})
    handled = await _handle_page(store, settings, seed, redelivered=True)
    (dead,) = handled.dead
    assert dead.headers[CODE_HEADER] == "max_attempts_exceeded"
    assert _sample("kubecrawl_crawl_pages_total", {"state": "FAILED"}) == failed_before + 1
    final = await store.get(crawl_id)
    assert final is not None
    assert (final.state, final.counters.failed) == (CrawlState.COMPLETED, 1)


async def test_a_crawl_page_fetch_is_timed_even_when_it_fails(engine: AsyncEngine, settings: Settings) -> None:
    """The fetch-duration histogram covers crawl pages as well as metadata requests (a refused connection here)."""
    store = SqlCrawlStore(engine)
    _, seed = await _one_page_crawl(store, "timed", f"http://127.0.0.1:{free_port()}/")  # nothing listens
    fetches_before = _sample("kubecrawl_fetch_duration_seconds_count")
    handled = await _handle_page(store, settings, seed)
    assert handled.delivery.settled  # retried later (connect_error is transient)
    assert _sample("kubecrawl_fetch_duration_seconds_count") == fetches_before + 1


async def test_a_spaced_host_is_held_for_the_spacing_from_the_answer_not_from_the_reserved_slot(
    engine: AsyncEngine, settings: Settings, site: Site
) -> None:
    """A request that reaches the host after its slot (a slow connect, a busy worker) must not let the next one,
    sent on time for its own slot, arrive closer than ``delaySeconds``: the host is held from the answer."""
    store = SqlCrawlStore(engine)
    site.html("/")
    site.delay = 0.5  # the answer comes half a second after the slot
    spec = {"url": site.url("/"), "politeness": {"respectRobotsTxt": False, "delaySeconds": 5}}
    config = CrawlSiteSpec.model_validate(spec).model_dump(mode="json", by_alias=True)
    crawl, _, (seed,) = await store.create(
        "default", "spaced", trigger="manual", idempotency_key=None, config=config, seeds=[site.url("/")]
    )
    before = utcnow()
    await _handle_page(store, settings, PageTask(crawl_id=crawl.id, page_id=seed.page_id, url=seed.url, depth=0))
    async with engine.connect() as conn:
        held = (await conn.execute(select(crawl_hosts.c.next_fetch_at))).scalar_one()
    # Reserved from the slot, the next request could go at before + 5 s, 4.5 s after this one reached the host.
    assert as_utc(held) >= before + timedelta(seconds=5.5)


async def test_a_crawl_page_whose_database_is_unreachable_is_retried_as_database_unavailable(
    settings: Settings,
) -> None:
    """Counted under the code the KubecrawlWorkerDatabaseUnavailable alert reads, not requeued as a bug."""
    unreachable = create_engine(f"postgresql+asyncpg://postgres@127.0.0.1:{free_port()}/kubecrawl")
    retries = {"queue": PAGES_QUEUE, "code": "database_unavailable"}
    before = _sample("kubecrawl_worker_retries_total", retries)
    try:
        task = PageTask(crawl_id="c1", page_id=1, url="http://site.test/", depth=0)
        handled = await _handle_page(SqlCrawlStore(unreachable), settings, task)
    finally:
        await unreachable.dispose()
    assert handled.delivery.settled  # acked once its retry was published
    assert _sample("kubecrawl_worker_retries_total", retries) == before + 1


async def test_the_sweep_resumes_a_crawl_whose_window_publish_failed(engine: AsyncEngine) -> None:
    """A crawl started without an idempotency key whose first publish failed (its window given back): no message
    and no retry of its trigger will ever move it, so the sweep reopens its window."""
    store = SqlCrawlStore(engine)
    config = CrawlSiteSpec.model_validate({"url": "http://site.test/", "politeness": {"maxConcurrency": 2}}).model_dump(
        mode="json", by_alias=True
    )
    seeds = ["http://site.test/a", "http://site.test/b", "http://site.test/c"]
    crawl, _, window = await store.create(
        "default", "stalled", trigger="manual", idempotency_key=None, config=config, seeds=seeds
    )
    await store.release(crawl.id, window)  # what publish_pages does when the broker refuses
    broker = MemoryBroker(max_lengths={METADATA_QUEUE: 10, PAGES_QUEUE: 10}, concurrency=1)
    await broker.start()
    try:
        assert await sweep_once(store, broker, lost_after=timedelta(minutes=15)) == 2
        published = [PageTask.model_validate_json(d.body).url for d in broker.take(PAGES_QUEUE)]
        assert await sweep_once(store, broker, lost_after=timedelta(minutes=15)) == 0  # in flight again: left alone
    finally:
        await broker.close()
    assert published == seeds[:2]
    current = await store.get(crawl.id)
    assert current is not None
    assert (current.state, current.in_flight) == (CrawlState.QUEUED, 2)


async def test_the_refill_reads_the_pending_index_under_a_first_crawls_stale_statistics(settings: Settings) -> None:
    """A first crawl: crawl_pages grows from empty with no statistics, so PostgreSQL guesses that a crawl_id matches
    a handful of rows. The refill must still take the shallowest PENDING pages from their own index, in order,
    never by walking every page of the crawl (auto_explain showed that at 1-3 ms per batch on 2,000 pages)."""
    engine = create_engine(settings.database_url.get_secret_value())
    try:
        store = SqlCrawlStore(engine)
        config = CrawlSiteSpec(url="http://site.test/").model_dump(mode="json", by_alias=True)
        crawl, _, _ = await store.create(
            "default", "stale", trigger="manual", idempotency_key=None, config=config, seeds=["http://site.test/"]
        )
        async with engine.begin() as conn:
            await conn.execute(
                text(
                    "INSERT INTO crawl_pages (crawl_id, url, depth, state, attempts, created_at, updated_at) "
                    "SELECT :crawl_id, 'http://site.test/p' || i, 1, 'PENDING', 0, now(), now() "
                    "FROM generate_series(1, 3000) AS i"
                ),
                {"crawl_id": crawl.id},
            )
            rows = await conn.execute(
                text(
                    "EXPLAIN SELECT id FROM crawl_pages WHERE crawl_id = :crawl_id AND state = 'PENDING' "
                    "ORDER BY depth, id LIMIT 16"
                ),
                {"crawl_id": crawl.id},
            )
            refill_plan = "\n".join(row[0] for row in rows)
    finally:
        await engine.dispose()
    assert "ix_crawl_pages_pending" in refill_plan, refill_plan
    assert "Sort" not in refill_plan, refill_plan


def _functions(url: str) -> set[str]:
    """The kubecrawl_* functions of the database at ``url``."""

    async def read() -> set[str]:
        engine = create_engine(url)
        try:
            async with engine.connect() as conn:
                rows = await conn.execute(text("SELECT proname FROM pg_proc WHERE proname LIKE 'kubecrawl_%'"))
                return {row.proname for row in rows}
        finally:
            await engine.dispose()

    return asyncio.run(read())


def test_migration_0009_adds_the_many_crawls_finish_function_and_its_downgrade_drops_only_that(
    postgres: PostgresServer,
) -> None:
    url = postgres.create_database("m_" + uuid.uuid4().hex[:12])
    upgrade(url)
    assert _functions(url) == {"kubecrawl_finish_pages", "kubecrawl_finish_crawls"}
    command.downgrade(alembic_config(url), "0008")
    assert _functions(url) == {"kubecrawl_finish_pages"}
    upgrade(url)
    assert _functions(url) == {"kubecrawl_finish_pages", "kubecrawl_finish_crawls"}

"""Frontier invariants of ``CrawlStore`` on the real PostgreSQL, under true concurrency (many connections)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from kubecrawl.broker.memory import MemoryBroker, MemoryDelivery
from kubecrawl.broker.topology import METADATA_QUEUE, PAGES_QUEUE
from kubecrawl.core.contracts import PageTask
from kubecrawl.core.models import CrawlPageState, CrawlState
from kubecrawl.core.settings import Settings
from kubecrawl.core.sites import CrawlSiteSpec
from kubecrawl.fetch.fetching import Fetcher
from kubecrawl.store.crawls import CrawlStore, PageOutcome
from kubecrawl.store.database import create_engine
from kubecrawl.worker.crawling import PagePipeline


@pytest.fixture
async def engine(settings: Settings) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(settings.database_url.get_secret_value(), pool_size=20)
    yield engine
    await engine.dispose()


async def test_completion_is_detected_exactly_once_when_the_last_pages_finish_together(engine: AsyncEngine) -> None:
    store = CrawlStore(engine)
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
    store = CrawlStore(engine)
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
        stores = [CrawlStore(engine) for engine in engines]
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
    store = CrawlStore(engine)
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
    store = CrawlStore(engine)
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
    store = CrawlStore(engine)
    config = CrawlSiteSpec.model_validate(
        {"url": "http://site.test/", "politeness": {"respectRobotsTxt": False}}
    ).model_dump(mode="json", by_alias=True)
    crawl, _, (seed,) = await store.create(
        "default", "lost-refill", trigger="manual", idempotency_key=None, config=config, seeds=["http://site.test/"]
    )
    await store.begin_page(crawl.id, seed.page_id)
    links = ["http://site.test/a", "http://site.test/b"]
    result = await store.finish_page(crawl.id, seed.page_id, PageOutcome(CrawlPageState.DONE, new_links=links))
    assert result is not None
    assert [ref.url for ref in result.to_publish] == links  # committed QUEUED; the "crash" publishes nothing

    broker = MemoryBroker(max_lengths={METADATA_QUEUE: 10, PAGES_QUEUE: 10}, concurrency=1)
    await broker.start()
    async with Fetcher(settings.fetch, settings.target_policy()) as fetcher:
        pipeline = PagePipeline(
            crawls=store, fetcher=fetcher, publisher=broker, retry=settings.retry, fetch=settings.fetch
        )
        body = PageTask(crawl_id=crawl.id, page_id=seed.page_id, url=seed.url, depth=0).model_dump_json().encode()
        delivery = MemoryDelivery(PAGES_QUEUE, body, {}, "m1", broker, redelivered=True)
        await pipeline.handle(delivery)
    assert delivery.settled
    republished = [PageTask.model_validate_json(d.body).url for d in broker.drain(PAGES_QUEUE)]
    assert republished == links
    await broker.close()

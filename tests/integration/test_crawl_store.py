"""Frontier invariants of ``CrawlStore`` on the real PostgreSQL, under true concurrency (many connections)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from kubecrawl.core.models import CrawlPageState, CrawlState
from kubecrawl.core.settings import Settings
from kubecrawl.core.sites import CrawlSiteSpec
from kubecrawl.store.crawls import CrawlStore, PageOutcome
from kubecrawl.store.database import create_engine


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

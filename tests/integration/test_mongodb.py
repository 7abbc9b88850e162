"""What only the MongoDB store has: ``kubecrawl migrate`` making its indexes, leases (store/mongo/locking.py),
the repair of a crawl whose lease holder was killed, and API keys kept in MongoDB. Everything else it shares with the SQL stores is proved
by tests/integration/test_store_contract.py and the ``ON_EVERY_DATABASE`` integration tests."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest

from kubecrawl.core.clock import utcnow
from kubecrawl.core.errors import InvalidValue
from kubecrawl.core.models import CrawlPageState
from kubecrawl.core.settings import Settings
from kubecrawl.store.contract import FinishResult, PageOutcome
from kubecrawl.store.mongo.crawls import MongoCrawlStore
from kubecrawl.store.mongo.database import SCHEMA_VERSION, Database, connect, database, ensure_indexes
from kubecrawl.store.mongo.locking import Leases
from kubecrawl.store.opening import MongoDatabase
from tests.support.api import running_api
from tests.support.cli import kubecrawl
from tests.support.ferretdb import FerretServer

DONE = CrawlPageState.DONE


@pytest.fixture
async def mongo(ferretdb: FerretServer) -> AsyncIterator[tuple[str, Database]]:
    url = ferretdb.database()
    client = connect(url)
    try:
        yield url, database(client)
    finally:
        await client.close()


async def test_migrate_creates_the_indexes_once_and_records_the_schema_version(mongo: tuple[str, Database]) -> None:
    url, db = mongo
    for _ in range(2):  # idempotent: the second run finds everything in place
        run = await kubecrawl("migrate", env={"KUBECRAWL_DATABASE_URL": url, "KUBECRAWL_LOG_FORMAT": "json"})
        assert run.code == 0, run.err
    names = {index["name"] async for index in await db.page_metadata.list_indexes()}
    assert {
        "url_unique",
        "created_at",
        "status",
        "attempts",
        "last_error",
        "processing_last_request_id",
        "lease_until",
        "status_updated",
    } <= names
    unique = {index["name"]: index.get("unique", False) async for index in await db.crawl_pages.list_indexes()}
    assert unique["crawl_url_unique"] is True
    assert "state_lease_until" in unique  # the sweep's FETCHING pages past their lease
    assert (await db.kubecrawl_meta.find_one({"_id": "schema"}) or {}).get("version") == SCHEMA_VERSION


async def test_a_lease_is_held_by_one_caller_at_a_time_and_a_lapsed_one_is_taken_over(
    mongo: tuple[str, Database],
) -> None:
    _, db = mongo
    leases = Leases(db)
    processes = [leases, Leases(db)]  # one process's callers queue in memory, the two processes on the lock document
    inside: list[int] = []
    most = 0

    async def step(number: int) -> None:
        nonlocal most
        async with processes[number % 2].hold("crawl:x"):
            inside.append(number)
            most = max(most, len(inside))
            await asyncio.sleep(0)  # let the others try while this one holds it
            inside.remove(number)

    await asyncio.gather(*(step(i) for i in range(6)))
    assert most == 1
    async with leases.try_hold("refresh:u") as first, leases.try_hold("refresh:u") as second:
        assert (first, second) == (True, False)
    # A holder killed with the lease: it lapses, and the next caller takes it over and is told so.
    await db.kubecrawl_locks.insert_one({"_id": "crawl:y", "token": "dead", "expires_at": utcnow() - timedelta(1)})
    async with leases.hold("crawl:y") as lease:
        assert lease.broken


def _config(max_concurrency: int = 4) -> dict[str, object]:
    from kubecrawl.core.sites import CrawlSiteSpec

    spec = {"url": "http://site.test/", "politeness": {"maxConcurrency": max_concurrency, "respectRobotsTxt": False}}
    return CrawlSiteSpec.model_validate(spec).model_dump(mode="json", by_alias=True)


async def test_a_crawl_whose_lease_holder_died_mid_step_is_repaired_by_the_next_holder(
    mongo: tuple[str, Database],
) -> None:
    url, db = mongo
    await ensure_indexes(db)
    stores = MongoDatabase(connect(url)).stores
    crawl, _, (first, second) = await stores.crawls.create(
        "default",
        "site",
        trigger="manual",
        idempotency_key=None,
        config=_config(),
        seeds=["http://site.test/", "http://site.test/2"],
    )
    # A worker settled the first page and was killed before it gave its slot back (and with the lease held).
    await stores.crawls.begin_page(crawl.id, first.page_id)
    await db.crawl_pages.update_one({"_id": first.page_id}, {"$set": {"state": CrawlPageState.DONE.value}})
    await db.kubecrawl_locks.insert_one(
        {"_id": f"crawl:{crawl.id}", "token": "dead", "expires_at": utcnow() - timedelta(seconds=1)}
    )
    assert await stores.crawls.begin_page(crawl.id, second.page_id) is not None
    result = await stores.crawls.finish_page(crawl.id, second.page_id, PageOutcome(CrawlPageState.DONE))
    assert result is not None
    assert result.completed_now
    done = await stores.crawls.get(crawl.id)
    assert done is not None
    assert (done.in_flight, done.counters.fetched, done.version) == (0, 2, 2)
    assert sorted(page.seq for page in await stores.crawls.outcomes_since(crawl.id, 0)) == [1, 2]


async def test_an_outcome_the_database_refuses_fails_only_its_page_and_the_others_of_its_batch_settle_in_order(
    mongo: tuple[str, Database],
) -> None:
    """A crawl's outcomes are written together (store/mongo/finishing.py); one that cannot be stored (here a lone
    surrogate, which BSON's UTF-8 cannot encode) fails its own page, which stays FETCHING for its message's retry."""
    url, db = mongo
    await ensure_indexes(db)
    crawls = MongoDatabase(connect(url)).stores.crawls
    seeds = [f"http://site.test/{n}" for n in range(3)]
    crawl, _, refs = await crawls.create(
        "default", "site", trigger="manual", idempotency_key=None, config=_config(), seeds=seeds
    )
    assert all(await asyncio.gather(*(crawls.begin_page(crawl.id, ref.page_id) for ref in refs)))
    outcomes = [PageOutcome(DONE, title="first"), PageOutcome(DONE, title="\ud800"), PageOutcome(DONE, title="third")]
    first, refused, third = await asyncio.gather(
        *(crawls.finish_page(crawl.id, ref.page_id, outcome) for ref, outcome in zip(refs, outcomes, strict=True)),
        return_exceptions=True,
    )
    assert isinstance(refused, InvalidValue)
    assert [type(result).__name__ for result in (first, third)] == ["FinishResult", "FinishResult"]
    stored = await crawls.get(crawl.id)
    assert stored is not None
    assert (stored.counters.fetched, stored.in_flight, stored.version) == (2, 1, 2)
    assert [(page.url, page.seq) for page in await crawls.outcomes_since(crawl.id, 0)] == [(seeds[0], 1), (seeds[2], 2)]
    pending = await crawls.pages(crawl.id, limit=10, state=CrawlPageState.FETCHING)
    assert [page.url for page in pending] == [seeds[1]]
    # Its retry, stored this time, completes the crawl.
    retried = await crawls.finish_page(crawl.id, refs[1].page_id, PageOutcome(DONE, title="second"))
    assert retried is not None
    assert retried.completed_now


async def test_two_workers_refilling_one_crawl_each_queue_other_pages_and_a_stale_copy_counts_only_its_own(
    mongo: tuple[str, Database],
) -> None:
    """Each process keeps a copy of a crawl's PENDING pages (store/mongo/frontier.py): a refill by another process
    makes it read them again, and a page queued by a writer that does not move ``frontier_version`` (a worker of
    an older version) is neither queued twice nor counted twice."""
    url, db = mongo
    await ensure_indexes(db)
    first, second = (MongoDatabase(connect(url)).stores.crawls for _ in range(2))
    seeds = [f"http://site.test/{n}" for n in range(6)]
    crawl, _, window = await first.create(
        "default", "site", trigger="manual", idempotency_key=None, config=_config(max_concurrency=2), seeds=seeds
    )
    assert [ref.url for ref in window] == seeds[:2]
    ids = {ref.url: ref.page_id for ref in window}
    ids |= {page.url: page.id for page in await first.pages(crawl.id, limit=10)}

    async def settle(crawls: MongoCrawlStore, name: str) -> FinishResult:
        assert await crawls.begin_page(crawl.id, ids[name]) is not None
        result = await crawls.finish_page(crawl.id, ids[name], PageOutcome(DONE))
        assert result is not None
        return result

    # Each refill after the other process's reads the PENDING pages again.
    assert [ref.url for ref in (await settle(second, seeds[0])).to_publish] == [seeds[2]]
    assert [ref.url for ref in (await settle(first, seeds[1])).to_publish] == [seeds[3]]
    # An older worker queues seeds[4] without moving frontier_version: the first process's copy still lists it.
    await db.crawl_pages.update_one({"_id": ids[seeds[4]]}, {"$set": {"state": CrawlPageState.QUEUED.value}})
    await db.crawls.update_one({"_id": crawl.id}, {"$inc": {"in_flight": 1, "queued": 1}})
    assert (await settle(first, seeds[3])).to_publish == []  # three in flight: no room
    assert [ref.url for ref in (await settle(first, seeds[2])).to_publish] == [seeds[5]]  # seeds[4] taken: skipped
    assert (await settle(second, seeds[4])).to_publish == []
    assert (await settle(first, seeds[5])).completed_now
    done = await first.get(crawl.id)
    assert done is not None
    assert (done.in_flight, done.counters.fetched, done.counters.queued, done.version) == (0, 6, 6, 6)


@pytest.mark.parametrize("database_url", ["mongodb"], indirect=True)
async def test_api_keys_made_by_the_cli_on_mongodb_open_the_api_until_revoked(settings: Settings) -> None:
    env = {"KUBECRAWL_DATABASE_URL": settings.database_url.get_secret_value(), "KUBECRAWL_LOG_FORMAT": "json"}
    made = await kubecrawl("keys", "create", "ci", "--scope", "read", env=env)
    assert made.code == 0, made.err
    key = made.out.strip()
    again = await kubecrawl("keys", "create", "ci", "--scope", "read", env=env)
    assert (again.code, again.err.split(":")[0]) == (1, "key_exists")
    authed = settings.model_copy(update={"auth": "api_keys", "auth_cache_seconds": 0})
    async with running_api(authed) as api:
        assert (await api.client.get("/sites")).status_code == 401
        headers = {"authorization": f"Bearer {key}"}
        assert (await api.client.get("/sites", headers=headers)).status_code == 200
        assert (
            await api.client.put("/sites/default/s", headers=headers, json={"url": "https://a.test/"})
        ).status_code == 403
        assert (await kubecrawl("keys", "revoke", "ci", env=env)).code == 0
        assert (await api.client.get("/sites", headers=headers)).status_code == 401


async def test_a_late_failure_racing_a_result_never_writes_an_older_document_over_it(
    mongo: tuple[str, Database],
) -> None:
    from kubecrawl.core.models import FetchedPage, PageStatus

    url, db = mongo
    await ensure_indexes(db)
    pages = MongoDatabase(connect(url)).stores.pages
    urls = [f"http://a.test/{i}" for i in range(20)]
    for page_url in urls:
        await pages.enqueue_if_missing(page_url, "r1")
    fetched = FetchedPage(http_status=200, final_url="http://a.test/", redirects=[], response_headers=[], cookies=[])
    await asyncio.gather(
        *(pages.complete(page_url, "r1", fetched.model_copy(update={"title": "kept"})) for page_url in urls),
        *(pages.fail(page_url, "r0", code="timeout", detail="late", permanent=False) for page_url in urls),
    )
    records = [await pages.get(page_url) for page_url in urls]
    assert {(r.status, r.title) for r in records if r is not None} == {(PageStatus.COMPLETED, "kept")}

"""Bounded shared resources: event streams per crawl and per API process, and the dead-letter queue, on the real
API, PostgreSQL and RabbitMQ."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import httpx
import uvicorn
from fastapi import FastAPI

from kubecrawl.core import metrics
from kubecrawl.core.settings import PublisherSettings, Settings
from tests.support.api import running_api
from tests.support.polling import eventually
from tests.support.servers import RabbitServer, free_port
from tests.support.sites import Site


@contextlib.asynccontextmanager
async def served(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """The app behind a real uvicorn server on loopback (httpx's ASGI transport holds a response until it ends, so
    open event streams need a real server); its lifespan is already running (``running_api``)."""
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=free_port(), lifespan="off", log_config=None, access_log=False)
    )
    serving = asyncio.create_task(server.serve())
    await eventually(lambda: asyncio.sleep(0, server.started), what="uvicorn started")
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.config.port}", timeout=30) as client:
            yield client
    finally:
        server.should_exit = True
        await serving


@contextlib.asynccontextmanager
async def subscribed(client: httpx.AsyncClient, crawl_id: str) -> AsyncIterator[httpx.Response]:
    """An open event stream whose first event arrived (so the API holds its slot)."""
    async with client.stream("GET", f"/crawls/{crawl_id}/events") as response:
        if response.status_code == 200:
            lines = response.aiter_lines()
            async with asyncio.timeout(30):
                while (await anext(lines)) != "event: progress":
                    pass
        yield response


async def running_crawl(client: httpx.AsyncClient, name: str) -> str:
    # No worker runs: the crawl stays RUNNING, so its streams stay open.
    assert (await client.put(f"/sites/default/{name}", json={"url": "https://example.org/"})).status_code == 201
    return str((await client.post(f"/sites/default/{name}/crawls", json={"trigger": "manual"})).json()["id"])


async def test_event_streams_are_capped_per_crawl_and_a_closed_one_frees_its_slot(settings: Settings) -> None:
    capped = settings.model_copy(update={"sse_max_subscribers_per_crawl": 2, "sse_max_subscribers": 3})
    async with running_api(capped) as api, served(api.app) as client:
        crawl = await running_crawl(client, "a")
        other = await running_crawl(client, "b")
        async with subscribed(client, crawl) as first, subscribed(client, crawl) as second:
            assert (first.status_code, second.status_code) == (200, 200)
            async with subscribed(client, crawl) as third:
                assert third.status_code == 429
                await third.aread()
                assert third.json()["code"] == "too_many_subscribers"
                assert third.headers["retry-after"]
            async with subscribed(client, other) as elsewhere:  # the total cap: 3
                assert elsewhere.status_code == 200
                async with subscribed(client, other) as over_total:
                    assert over_total.status_code == 429

        async def freed() -> bool:  # the server notices the closed streams at its next poll of them
            async with subscribed(client, crawl) as again:
                return again.status_code == 200

        await eventually(freed, what="the closed streams' slots back")


async def test_dead_letters_expire_so_the_dead_queue_cannot_grow_without_bound(
    settings: Settings, site: Site, rabbit: RabbitServer, vhost: str
) -> None:
    from kubecrawl.worker.runtime import run_worker

    short = settings.model_copy(update={"publisher": PublisherSettings(dead_letter_ttl_seconds=1)})
    dead_letters = metrics.WORKER_DEAD_LETTERS.labels(queue="kubecrawl.metadata", code="http_404")
    before = dead_letters._value.get()
    stop = asyncio.Event()
    worker = asyncio.create_task(run_worker(short, stop=stop))
    try:
        async with running_api(short) as api:
            for i in range(5):  # every URL answers 404: a permanent failure, dead-lettered at once
                assert (await api.client.post("/metadata", json={"url": site.url(f"/missing/{i}")})).status_code == 202

            async def published() -> bool:
                if worker.done():
                    worker.result()
                return dead_letters._value.get() - before >= 5  # each counted once the broker confirmed it

            await eventually(published, timeout=60, what="five dead letters confirmed")

            async def emptied() -> bool:  # read live (not the lagging stats): nothing left in kubecrawl.dead
                return await asyncio.to_thread(rabbit.peek, vhost, "kubecrawl.dead") == []

            await eventually(emptied, timeout=60, what="dead letters to expire")
    finally:
        stop.set()
        await asyncio.wait_for(worker, 30)

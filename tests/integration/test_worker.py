"""Worker behaviour end to end: API → RabbitMQ → worker → PostgreSQL → API, on a local site (the metadata
pipeline and a killed worker also on MongoDB: ``ON_EVERY_DATABASE``)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from typing import Any

import httpx
from aiohttp import web

from kubecrawl.core.settings import Settings
from tests.support.api import ApiHandle
from tests.support.polling import eventually
from tests.support.servers import RabbitServer
from tests.support.sites import Page, Site
from tests.support.stores import ON_EVERY_DATABASE, stored_copies

RICH_HEAD = (
    "<meta name='description' content='A page about things'>"
    "<link rel='canonical' href='/canonical'>"
    "<meta name='robots' content='noindex, nofollow'>"
    "<meta property='og:title' content='OG title'><meta property='og:title' content='second og title'>"
    "<meta name='twitter:card' content='summary'>"
)


async def wait_final(client: httpx.AsyncClient, url: str, timeout: float = 30) -> dict[str, object]:
    async def final() -> dict[str, object] | None:
        response = await client.get("/metadata", params={"url": url})
        return response.json() if response.status_code == 200 else None

    return await eventually(final, timeout=timeout, what=f"final record for {url}")


async def count_rows(settings: Settings, url: str) -> int:
    return await stored_copies(settings.database_url.get_secret_value(), page_url=url)


@ON_EVERY_DATABASE
async def test_post_then_get_returns_the_fetched_metadata(api: ApiHandle, site: Site, worker: None) -> None:
    site.pages["/page"] = Page(
        f"<html lang='de'><head><title>Hello</title>{RICH_HEAD}</head><body>hi</body></html>",
        headers={
            "Content-Type": "text/html; charset=utf-8",
            "X-Custom": "yes",
            "Set-Cookie": "sid=abc; Path=/; HttpOnly; Secure; SameSite=Lax; Max-Age=3600",
        },
    )
    site.pages["/start"] = Page(b"", status=301, headers={"Location": "/page"})
    url = site.url("/start")
    assert (await api.client.post("/metadata", json={"url": url})).status_code == 202
    record = await wait_final(api.client, url)
    assert record["status"] == "COMPLETED"
    assert record["http_status"] == 200
    assert record["final_url"] == site.url("/page")
    assert [hop["status"] for hop in record["redirects"]] == [301]  # type: ignore[index, union-attr]
    assert record["title"] == "Hello"
    assert record["description"] == "A page about things"
    assert record["canonical"] == site.url("/canonical")
    assert record["language"] == "de"
    assert record["opengraph"] == {"og:title": "OG title"}
    assert record["twitter"] == {"twitter:card": "summary"}
    assert ["X-Custom", "yes"] in record["response_headers"]  # type: ignore[operator]
    cookie = record["cookies"][0]  # type: ignore[index]
    assert cookie["name"] == "sid"
    assert cookie["http_only"] is True
    assert cookie["secure"] is True
    assert cookie["same_site"] == "Lax"
    assert cookie["expires"] is not None
    assert "<title>Hello</title>" in record["page_source"]  # type: ignore[operator]
    assert record["attempts"] == 1
    assert record["stale"] is False


@ON_EVERY_DATABASE
async def test_get_with_max_age_serves_stale_record_and_requeues_it_once(
    api: ApiHandle, site: Site, worker: None
) -> None:
    url = site.html("/aging", title="v1")
    await api.client.get("/metadata", params={"url": url})
    await wait_final(api.client, url)
    site.html("/aging", title="v2")
    stale = await api.client.get("/metadata", params={"url": url, "max_age": 0})
    assert stale.status_code == 200
    assert stale.json()["stale"] is True
    assert stale.json()["title"] == "v1"

    async def refreshed() -> bool:
        response = await api.client.get("/metadata", params={"url": url})
        return response.json().get("title") == "v2"

    await eventually(refreshed, what="refreshed title")
    assert site.hits["/aging"] == 2


async def test_always_failing_page_is_failed_permanent_after_max_attempts_and_dead_lettered(
    api: ApiHandle, site: Site, worker: None, rabbit: RabbitServer, vhost: str, settings: Settings
) -> None:
    site.pages["/flaky"] = Page("down", status=503)
    url = site.url("/flaky")
    await api.client.post("/metadata", json={"url": url})
    record = await wait_final(api.client, url, timeout=60)
    assert record["status"] == "FAILED_PERMANENT"
    assert record["attempts"] == settings.retry.max_attempts
    assert record["last_error_code"] == "http_503"
    assert site.hits["/flaky"] == settings.retry.max_attempts
    dead = await eventually(lambda: asyncio.to_thread(rabbit.dead_letters, vhost), what="dead letter")
    headers = dead[0]["properties"]["headers"]  # type: ignore[index]
    assert headers["x-kubecrawl-code"] == "http_503"
    assert "gave up after 3 attempts" in headers["x-kubecrawl-reason"]


@ON_EVERY_DATABASE
async def test_a_record_whose_message_was_lost_is_published_again_by_the_sweep_and_fetched(
    api: ApiHandle, site: Site, settings: Settings
) -> None:
    # What a retry tier expiring into a full classic queue leaves behind: a record waiting, and no message.
    url = site.url("/lost")
    site.html("/lost", title="found again")
    assert await api.app.state.pages.enqueue_if_missing(url, "lost-request")
    from kubecrawl.worker.runtime import run_worker

    stop = asyncio.Event()
    quick = settings.model_copy(update={"lost_page_seconds": 0.5, "sweep_interval_seconds": 0.5})
    task = asyncio.create_task(run_worker(quick, stop=stop))
    try:

        async def completed() -> dict[str, Any] | None:
            answer = await api.client.get("/metadata", params={"url": url})
            return answer.json() if answer.status_code == 200 else None

        record = await eventually(completed, timeout=30, what="the lost record fetched")
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
    assert (record["status"], record["title"], record["last_request_id"]) == (
        "COMPLETED",
        "found again",
        "lost-request",
    )


async def test_404_is_permanent_at_once_and_dead_lettered(
    api: ApiHandle, site: Site, worker: None, rabbit: RabbitServer, vhost: str
) -> None:
    url = site.url("/missing")
    await api.client.post("/metadata", json={"url": url})
    record = await wait_final(api.client, url)
    assert record["status"] == "FAILED_PERMANENT"
    assert record["http_status"] == 404
    assert record["attempts"] == 1
    dead = await eventually(lambda: asyncio.to_thread(rabbit.dead_letters, vhost), what="dead letter")
    assert dead[0]["properties"]["headers"]["x-kubecrawl-code"] == "http_404"  # type: ignore[index]


async def test_poison_message_is_dead_lettered_with_a_reason(
    api: ApiHandle, worker: None, rabbit: RabbitServer, vhost: str
) -> None:
    rabbit.api(
        f"/api/exchanges/{vhost}/amq.default/publish",
        method="POST",
        body={
            "properties": {"delivery_mode": 2},
            "routing_key": "kubecrawl.metadata",
            "payload": json.dumps({"schema_version": 99, "url": 5}),
            "payload_encoding": "string",
        },
    )
    dead = await eventually(lambda: asyncio.to_thread(rabbit.dead_letters, vhost), what="dead letter")
    headers = dead[0]["properties"]["headers"]  # type: ignore[index]
    assert headers["x-kubecrawl-code"] == "invalid_message"
    assert "schema_version" in headers["x-kubecrawl-reason"]
    assert headers["x-kubecrawl-source-queue"] == "kubecrawl.metadata"


def _held_page(site: Site) -> tuple[asyncio.Event, asyncio.Event]:
    """A page that answers only when released; ``entered`` is set while a fetch is in flight."""
    entered, release = asyncio.Event(), asyncio.Event()

    async def held(_: web.Request) -> web.StreamResponse:
        entered.set()
        await release.wait()
        return web.Response(text="<title>held</title>", content_type="text/html")

    site.handlers["/held"] = held
    return entered, release


async def test_worker_sigterm_mid_message_finishes_acks_once_and_exits_0(
    api: ApiHandle, site: Site, worker_process, rabbit: RabbitServer, vhost: str, settings: Settings
) -> None:
    entered, release = _held_page(site)
    proc = await asyncio.to_thread(worker_process)
    url = site.url("/held")
    await api.client.post("/metadata", json={"url": url})
    await asyncio.wait_for(entered.wait(), 30)
    proc.proc.send_signal(signal.SIGTERM)

    async def draining() -> bool:
        return "worker_draining" in proc.output()

    await eventually(draining, what="worker to start draining")
    release.set()
    code = await asyncio.to_thread(proc.proc.wait, 30)
    assert code == 0, proc.output()
    record = await wait_final(api.client, url)
    assert record["status"] == "COMPLETED"
    assert record["attempts"] == 1
    assert site.hits["/held"] == 1
    info = await asyncio.to_thread(rabbit.queue, vhost, "kubecrawl.metadata")
    assert info.get("messages", 0) == 0
    assert "worker_draining" in proc.output()
    assert await count_rows(settings, url) == 1


async def test_worker_sigterm_gives_back_what_outlasts_the_drain_timeout_and_exits_0(
    api: ApiHandle, site: Site, worker_process, rabbit: RabbitServer, vhost: str, settings: Settings
) -> None:
    """A message still running when the drain timeout ends (a slow site, a long politeness wait) goes back to the
    queue, and the process exits on its own instead of being killed at the end of the grace period."""
    entered, release = _held_page(site)
    proc = await asyncio.to_thread(worker_process, drain_timeout_seconds=1.0)
    url = site.url("/held")
    await api.client.post("/metadata", json={"url": url})
    await asyncio.wait_for(entered.wait(), 30)
    proc.proc.send_signal(signal.SIGTERM)
    code = await asyncio.to_thread(proc.proc.wait, 20)
    assert code == 0, proc.output()
    assert "worker_drain_timeout" in proc.output()

    async def given_back() -> bool:  # the management API's figures lag by its stats interval
        info = await asyncio.to_thread(rabbit.queue, vhost, "kubecrawl.metadata")
        return bool(info.get("messages_ready", 0) == 1)

    await eventually(given_back, what="the message back in its queue")
    release.set()
    await asyncio.to_thread(worker_process)
    record = await wait_final(api.client, url)
    assert record["status"] == "COMPLETED"
    assert record["attempts"] == 2  # the given-back delivery counts, as after a crash
    assert await count_rows(settings, url) == 1


@ON_EVERY_DATABASE
async def test_worker_killed_mid_message_is_redelivered_and_stored_once_with_attempts(
    api: ApiHandle, site: Site, worker_process, settings: Settings
) -> None:
    entered, release = _held_page(site)
    first = await asyncio.to_thread(worker_process)
    url = site.url("/held")
    await api.client.post("/metadata", json={"url": url})
    await asyncio.wait_for(entered.wait(), 30)
    os.kill(first.proc.pid, signal.SIGKILL)
    await asyncio.to_thread(first.proc.wait, 10)
    release.set()
    await asyncio.to_thread(worker_process)
    record = await wait_final(api.client, url)
    assert record["status"] == "COMPLETED"
    assert record["attempts"] == 2
    assert await count_rows(settings, url) == 1

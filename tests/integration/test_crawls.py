"""Site crawls end to end: API → RabbitMQ ``kubecrawl.pages`` → workers → PostgreSQL frontier, on local sites."""

from __future__ import annotations

import asyncio
import gzip
import itertools
import json
import os
import signal
from datetime import UTC, datetime, timedelta
from typing import Any

import aio_pika
import httpx
from aiohttp import web

from kubecrawl.core.settings import Settings
from kubecrawl.core.urls import url_host
from kubecrawl.store.opening import open_database
from tests.support.api import ApiHandle, running_api
from tests.support.crawling import all_pages, crawl_site, links, paths, put_site, trigger, wait_crawl
from tests.support.polling import eventually
from tests.support.servers import RabbitServer
from tests.support.sites import Page, Site
from tests.support.stores import ON_EVERY_DATABASE, stored_copies


async def crawl_with_worker(client: httpx.AsyncClient, settings: Settings, crawl_id: str) -> dict[str, Any]:
    """Start an in-process worker only now (the test prepared something first), and wait for the crawl."""
    from kubecrawl.worker.runtime import run_worker

    stop = asyncio.Event()
    task = asyncio.create_task(run_worker(settings, stop=stop))
    try:
        return await wait_crawl(client, crawl_id)
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


@ON_EVERY_DATABASE
async def test_crawl_follows_in_scope_links_to_max_depth_and_completes(
    api: ApiHandle, site: Site, worker: None
) -> None:
    site.html("/", title="home", body=links("/a", "/a#frag", "/b?x=1", "/./a", "mailto:x@example.com"))
    site.html("/a", title="a", body=links("/a/deeper", "/"))
    site.html("/b?x=1", title="b")
    site.html("/a/deeper", title="deeper", body=links("/too-deep"))
    site.html("/too-deep", title="too deep")
    done, pages = await crawl_site(api.client, "depth", {"url": site.url("/"), "scope": {"maxDepth": 2}})
    assert done["state"] == "COMPLETED"
    assert paths(site, pages) == {"/", "/a", "/b?x=1", "/a/deeper"}
    assert done["counters"]["fetched"] == 4
    assert done["counters"]["discovered"] == 4
    assert site.hits["/too-deep"] == 0
    assert site.hits["/a"] == 1  # "/a#frag" and "/./a" normalise to the same page
    assert {p["url"]: p["depth"] for p in pages}[site.url("/a/deeper")] == 2


async def test_crawl_stays_on_the_seed_host_and_honours_include_exclude(
    api: ApiHandle, site: Site, worker: None
) -> None:
    other = f"http://127.0.0.2:{site.port}"
    site.html("/", body=links("/docs/1", "/docs/2", "/docs/private/3", "/blog/1", f"{other}/docs/4"))
    for path in ("/docs/1", "/docs/2", "/docs/private/3", "/blog/1"):
        site.html(path, title=path)
    spec = {"url": site.url("/"), "scope": {"include": ["/docs/", r"/$"], "exclude": ["/private/"]}}
    done, pages = await crawl_site(api.client, "scoped", spec)
    assert done["state"] == "COMPLETED"
    assert paths(site, pages) == {"/", "/docs/1", "/docs/2"}
    assert site.hits["/blog/1"] == 0
    assert site.hits["/docs/private/3"] == 0
    assert not any(p["url"].startswith(other) for p in pages)


async def test_crawl_stops_discovering_at_max_pages(api: ApiHandle, site: Site, worker: None) -> None:
    site.html("/", body=links(*(f"/p{i}" for i in range(20))))
    for i in range(20):
        site.html(f"/p{i}", title=str(i))
    done, pages = await crawl_site(api.client, "capped", {"url": site.url("/"), "scope": {"maxPages": 5}})
    assert done["state"] == "COMPLETED"
    assert len(pages) == 5
    assert done["counters"]["discovered"] == 5
    assert sum(site.hits.values()) == 5 + 1  # five pages and robots.txt


async def test_nofollow_meta_and_header_are_recorded_and_links_not_followed(
    api: ApiHandle, site: Site, worker: None
) -> None:
    site.html("/", body=links("/meta", "/header"))
    site.html("/meta", head="<meta name='robots' content='noindex,nofollow'>", body=links("/from-meta"))
    site.html(
        "/header",
        body=links("/from-header"),
        headers={"Content-Type": "text/html", "X-Robots-Tag": "nofollow"},
    )
    site.html("/from-meta")
    site.html("/from-header")
    _, pages = await crawl_site(api.client, "nofollow", {"url": site.url("/")})
    by_path = {p["url"].removeprefix(site.base): p for p in pages}
    assert set(by_path) == {"/", "/meta", "/header"}
    assert by_path["/meta"]["noindex"] is True
    assert by_path["/meta"]["nofollow"] is True
    assert by_path["/header"]["nofollow"] is True
    assert by_path["/header"]["noindex"] is False


@ON_EVERY_DATABASE
async def test_max_concurrency_holds_across_two_worker_processes(api: ApiHandle, site: Site, worker_process) -> None:
    site.delay = 0.3
    site.html("/", body=links(*(f"/p{i}" for i in range(12))))
    for i in range(12):
        site.html(f"/p{i}")
    await asyncio.to_thread(worker_process)
    await asyncio.to_thread(worker_process)
    spec = {"url": site.url("/"), "politeness": {"maxConcurrency": 2, "respectRobotsTxt": False}}
    done, pages = await crawl_site(api.client, "window", spec)
    assert done["state"] == "COMPLETED"
    assert len(pages) == 13
    assert site.peak_in_flight == 2  # the window was used, and never exceeded


async def test_robots_disallow_is_honoured_and_counted(api: ApiHandle, site: Site, worker: None) -> None:
    site.pages["/robots.txt"] = Page("User-agent: *\nDisallow: /private\n", headers={"Content-Type": "text/plain"})
    site.html("/", body=links("/public", "/private/1", "/private/2"))
    site.html("/public")
    site.html("/private/1")
    site.html("/private/2")
    done, pages = await crawl_site(api.client, "robots", {"url": site.url("/")})
    assert done["counters"]["skipped_robots"] == 2
    assert paths(site, pages) == {"/", "/public"}
    assert paths(site, pages, "SKIPPED") == {"/private/1", "/private/2"}
    assert site.hits["/private/1"] == 0
    assert site.hits["/robots.txt"] == 1


async def test_wildcard_robots_rules_hold_end_to_end(api: ApiHandle, site: Site, worker: None) -> None:
    # RFC 9309: '*' and '$' (urllib.robotparser let both through)
    site.pages["/robots.txt"] = Page(
        "User-agent: *\nDisallow: /*?sessionid=\nDisallow: /*.pdf$\n", headers={"Content-Type": "text/plain"}
    )
    site.html("/", body=links("/cart?sessionid=1", "/manual.pdf", "/manual.pdf?page=2"))
    site.html("/cart")
    site.html("/manual.pdf")
    done, pages = await crawl_site(api.client, "wildcards", {"url": site.url("/")})
    assert done["counters"]["skipped_robots"] == 2
    assert paths(site, pages, "SKIPPED") == {"/cart?sessionid=1", "/manual.pdf"}
    assert site.hits["/cart"] == 0
    assert site.hits["/manual.pdf"] == 1  # only the one with a query string: '$' anchors the end


async def test_an_unreachable_robots_txt_disallows_the_whole_host(api: ApiHandle, site: Site, worker: None) -> None:
    async def hang_up(request: web.Request) -> web.StreamResponse:
        assert request.transport is not None
        request.transport.close()  # the connection drops before any response: robots.txt is unreachable
        return web.Response()

    site.handlers["/robots.txt"] = hang_up
    site.html("/", body=links("/a"))
    done, pages = await crawl_site(api.client, "unreachable-robots", {"url": site.url("/")})
    assert done["counters"]["skipped_robots"] == 1  # RFC 9309 section 2.3.1.4: a complete disallow
    assert paths(site, pages, "SKIPPED") == {"/"}
    assert site.hits["/"] == 0


async def test_a_robots_txt_redirect_loop_counts_as_no_robots_txt(api: ApiHandle, site: Site, worker: None) -> None:
    # RFC 9309 section 2.3.1.2: past five redirects a crawler may take robots.txt as unavailable (allow all)
    site.pages["/robots.txt"] = Page("", status=302, headers={"Location": "/robots.txt"})
    site.html("/", body=links("/a"))
    site.html("/a")
    done, pages = await crawl_site(api.client, "robots-loop", {"url": site.url("/")})
    assert done["counters"]["fetched"] == 2
    assert paths(site, pages) == {"/", "/a"}


@ON_EVERY_DATABASE
async def test_a_robots_claim_left_by_a_killed_worker_is_taken_over_and_robots_txt_still_honoured(
    api: ApiHandle, site: Site, settings: Settings
) -> None:
    site.pages["/robots.txt"] = Page("User-agent: *\nDisallow: /private\n", headers={"Content-Type": "text/plain"})
    site.html("/", body=links("/a", "/private"))
    site.html("/a")
    site.html("/private")
    await put_site(api.client, "orphan", {"url": site.url("/")})
    crawl = await trigger(api.client, "orphan")  # no worker yet: the seed waits in the queue
    database = open_database(settings.database_url.get_secret_value())
    try:  # a worker claims the host's robots.txt and is killed before it stores any result
        claimed, _ = await database.stores.crawls.hosts.claim_robots(
            crawl["id"], url_host(site.url("/")), lease=timedelta(seconds=1)
        )
    finally:
        await database.close()
    assert claimed
    done = await crawl_with_worker(api.client, settings, crawl["id"])
    pages = await all_pages(api.client, crawl["id"])
    assert (done["state"], paths(site, pages), paths(site, pages, "SKIPPED")) == (
        "COMPLETED",
        {"/", "/a"},
        {"/private"},
    )
    assert (site.hits["/robots.txt"], site.hits["/private"]) == (1, 0)


async def test_a_robots_txt_server_error_disallows_the_host_and_a_404_allows_it(
    api: ApiHandle, site: Site, worker: None
) -> None:
    # RFC 9309 section 2.3.1: 5xx is "unreachable" (a complete disallow), 4xx "unavailable" (allow all)
    site.pages["/robots.txt"] = Page("down", status=503)
    site.html("/", body=links("/a"))
    done, pages = await crawl_site(api.client, "robots-503", {"url": site.url("/")})
    assert (done["counters"]["skipped_robots"], paths(site, pages, "SKIPPED"), site.hits["/"]) == (1, {"/"}, 0)
    site.pages["/robots.txt"] = Page("gone", status=410)
    site.html("/a")
    done, pages = await crawl_site(api.client, "robots-410", {"url": site.url("/")})
    assert (done["counters"]["skipped_robots"], paths(site, pages)) == (0, {"/", "/a"})


async def test_robots_crawl_delay_spaces_requests_to_the_host(api: ApiHandle, site: Site, worker: None) -> None:
    site.pages["/robots.txt"] = Page("User-agent: *\nCrawl-delay: 1\n", headers={"Content-Type": "text/plain"})
    site.html("/", body=links("/1", "/2", "/3"))
    for path in ("/1", "/2", "/3"):
        site.html(path)
    done, _ = await crawl_site(api.client, "delay", {"url": site.url("/"), "politeness": {"maxConcurrency": 4}})
    assert done["counters"]["fetched"] == 4
    arrivals = [at for at, path in site.requests if path != "/robots.txt"]
    gaps = [b - a for a, b in itertools.pairwise(arrivals)]
    assert len(gaps) == 3
    assert min(gaps) >= 1.0, gaps  # Crawl-delay: 1, from each answer (so no slack)


@ON_EVERY_DATABASE
async def test_a_spaced_host_never_sees_two_requests_closer_than_the_delay_even_after_a_late_one(
    api: ApiHandle, site: Site, worker_process
) -> None:
    """delaySeconds with a window of 4 pages and two worker processes: the host gets one request at a time, each
    at least delaySeconds after the previous one reached it, also after a request that reached it late (held on
    the way in, as by a slow connect). Slots reserved delaySeconds apart while requests were in flight let the
    requests sent after the late one, on time for their own slots, arrive within the delay of it."""
    site.html("/", body=links(*(f"/{i}" for i in range(1, 11))))
    for i in range(1, 11):
        site.html(f"/{i}")
    site.late["/1"] = 0.5
    await asyncio.to_thread(worker_process)
    await asyncio.to_thread(worker_process)
    spec = {
        "url": site.url("/"),
        "politeness": {"maxConcurrency": 4, "delaySeconds": 0.2, "respectRobotsTxt": False},
    }
    done, _ = await crawl_site(api.client, "spaced", spec)
    assert done["counters"]["fetched"] == 11
    arrivals = sorted(at for at, _ in site.requests)
    gaps = [b - a for a, b in itertools.pairwise(arrivals)]
    assert len(gaps) == 10
    violations = [gap for gap in gaps if gap < 0.2]  # counted at the site: a shorter gap breaks the politeness
    assert violations == [], gaps
    assert site.peak_in_flight == 1


async def test_sitemap_and_gzipped_sitemap_index_seed_the_crawl(api: ApiHandle, site: Site, worker: None) -> None:
    site.pages["/robots.txt"] = Page(
        f"User-agent: *\nSitemap: {site.url('/sitemap_index.xml.gz')}\n", headers={"Content-Type": "text/plain"}
    )
    index = f"<sitemapindex><sitemap><loc>{site.url('/sitemap-pages.xml')}</loc></sitemap></sitemapindex>"
    site.pages["/sitemap_index.xml.gz"] = Page(
        gzip.compress(index.encode()), headers={"Content-Type": "application/gzip"}
    )
    # the image and video extensions name media, not pages: never crawled although on the same host
    media = (
        f"<image:image><image:loc>{site.url('/photo.jpg')}</image:loc></image:image><video:video>"
        f"<video:content_loc>{site.url('/video.mp4')}</video:content_loc>"
        f"<video:player_loc>{site.url('/player')}</video:player_loc></video:video>"
    )
    urlset = "".join(f"<url><loc>{site.url(p)}</loc>{media}</url>" for p in ("/orphan-1", "/orphan-2"))
    site.pages["/sitemap-pages.xml"] = Page(
        '<urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9"'
        ' xmlns:image="http://www.google.com/schemas/sitemap-image/1.1"'
        f' xmlns:video="http://www.google.com/schemas/sitemap-video/1.1">{urlset}</urlset>',
        headers={"Content-Type": "application/xml"},
    )
    site.html("/")
    site.html("/orphan-1")
    site.html("/orphan-2")
    site.html("/player")
    _, pages = await crawl_site(api.client, "sitemap", {"url": site.url("/"), "scope": {"sitemap": True}})
    assert paths(site, pages) == {"/", "/orphan-1", "/orphan-2"}
    assert site.hits["/photo.jpg"] == site.hits["/video.mp4"] == site.hits["/player"] == 0


async def test_concurrent_duplicate_triggers_create_one_crawl_and_enqueue_once(
    api: ApiHandle, site: Site, rabbit: RabbitServer, vhost: str
) -> None:
    site.html("/")
    await put_site(api.client, "dup", {"url": site.url("/")})
    key = "site:default/dup:cron:2026-11-26T10:00:00+00:00"
    responses = await asyncio.gather(
        *(
            api.client.post("/sites/default/dup/crawls", json={"trigger": "schedule", "idempotency_key": key})
            for _ in range(10)
        )
    )
    assert sorted(r.status_code for r in responses) == [200] * 9 + [202]
    assert len({r.json()["id"] for r in responses}) == 1
    crawls = (await api.client.get("/sites/default/dup/crawls")).json()["items"]
    assert len(crawls) == 1
    # Only the seed page, published once (no worker is running); the broker counts exactly.
    assert await queued_messages(rabbit, vhost, "kubecrawl.pages") == 1


async def test_idempotency_keys_are_per_site_so_one_site_cannot_block_anothers_schedule(
    api: ApiHandle, site: Site, rabbit: RabbitServer, vhost: str
) -> None:
    site.html("/")
    await put_site(api.client, "first", {"url": site.url("/")})
    # Allow: the scheduled trigger below starts while the manual crawl before it still runs (no worker here).
    await put_site(api.client, "second", {"url": site.url("/"), "overlapPolicy": "Allow"})
    first = await api.client.post("/sites/default/first/crawls", json={"idempotency_key": "nightly"})
    assert first.status_code == 202
    again = await api.client.post("/sites/default/first/crawls", json={"idempotency_key": "nightly"})
    assert (again.status_code, again.json()["id"]) == (200, first.json()["id"])
    other = await api.client.post("/sites/default/second/crawls", json={"idempotency_key": "nightly"})
    assert other.status_code == 202
    assert other.json()["id"] != first.json()["id"]

    # The attack of issue 12: a crawl of "first" taking "second"'s key for a scheduled minute.
    stolen = scheduled("second", 7)
    taken = await api.client.post("/sites/default/first/crawls", json={**stolen, "trigger": "manual"})
    assert taken.status_code == 202
    assert taken.json()["site"] == "default/first"
    owned = await api.client.post("/sites/default/second/crawls", json=stolen)
    assert owned.status_code == 202, owned.text  # second's own scheduled crawl still starts
    assert owned.json()["site"] == "default/second"
    assert owned.json()["idempotency_key"] == stolen["idempotency_key"]
    assert await queued_messages(rabbit, vhost, "kubecrawl.pages") == 4


def scheduled(name: str, minute: int) -> dict[str, str]:
    return {"trigger": "schedule", "idempotency_key": f"site:default/{name}:cron:2026-11-26T10:{minute:02d}:00+00:00"}


async def test_overlap_policy_forbid_answers_a_scheduled_run_with_the_active_crawl_and_starts_nothing(
    api: ApiHandle, site: Site, rabbit: RabbitServer, vhost: str
) -> None:
    site.html("/")
    await put_site(api.client, "forbid", {"url": site.url("/"), "schedule": "* * * * *", "overlapPolicy": "Forbid"})
    first = await api.client.post("/sites/default/forbid/crawls", json=scheduled("forbid", 1))
    assert first.status_code == 202  # no worker runs: it stays active
    skipped = await api.client.post("/sites/default/forbid/crawls", json=scheduled("forbid", 2))
    assert (skipped.status_code, skipped.json()["id"], skipped.json()["skipped"]) == (
        200,
        first.json()["id"],
        "crawl_overlap",
    )
    assert await queued_messages(rabbit, vhost, "kubecrawl.pages") == 1  # the first crawl's seed only
    retried = await api.client.post("/sites/default/forbid/crawls", json=scheduled("forbid", 1))
    assert (retried.status_code, retried.json()["id"]) == (200, first.json()["id"])  # its own minute: idempotent
    manual = await api.client.post("/sites/default/forbid/crawls", json={"trigger": "manual"})
    assert manual.status_code == 202  # a person's trigger is never refused
    items = (await api.client.get("/sites/default/forbid/crawls")).json()["items"]
    assert len(items) == 2


async def test_overlap_policy_replace_cancels_the_active_crawl_and_allow_runs_both(api: ApiHandle, site: Site) -> None:
    site.html("/")
    await put_site(api.client, "replace", {"url": site.url("/"), "schedule": "* * * * *", "overlapPolicy": "Replace"})
    old = (await api.client.post("/sites/default/replace/crawls", json=scheduled("replace", 1))).json()
    new = await api.client.post("/sites/default/replace/crawls", json=scheduled("replace", 2))
    assert new.status_code == 202
    states = {c["id"]: c["state"] for c in (await api.client.get("/sites/default/replace/crawls")).json()["items"]}
    assert states[old["id"]] == "CANCELLED"
    assert states[new.json()["id"]] != "CANCELLED"

    await put_site(api.client, "allow", {"url": site.url("/"), "schedule": "* * * * *", "overlapPolicy": "Allow"})
    for minute in (1, 2):
        assert (
            await api.client.post("/sites/default/allow/crawls", json=scheduled("allow", minute))
        ).status_code == 202
    items = (await api.client.get("/sites/default/allow/crawls")).json()["items"]
    assert [c["state"] for c in items].count("CANCELLED") == 0
    assert len(items) == 2


async def queued_messages(rabbit: RabbitServer, vhost: str, queue: str) -> int:
    connection = await aio_pika.connect(rabbit.url(vhost))
    async with connection:
        channel = await connection.channel()
        declared = await channel.declare_queue(queue, passive=True)
        return int(declared.declaration_result.message_count or 0)


@ON_EVERY_DATABASE
async def test_events_stream_progress_and_the_final_event_then_resume_without_gaps(
    api: ApiHandle, site: Site, worker: None
) -> None:
    site.delay = 0.1
    site.html("/", body=links(*(f"/p{i}" for i in range(5))))
    for i in range(5):
        site.html(f"/p{i}")
    await put_site(api.client, "sse", {"url": site.url("/"), "politeness": {"maxConcurrency": 1}})
    crawl = await trigger(api.client, "sse")
    # From the crawl's start (Last-Event-ID 0): a fresh subscriber gets a snapshot of the counters first, so which
    # outcomes it streams would depend on how soon after the trigger it connected.
    events, fresh = await asyncio.gather(
        read_events(api.client, crawl["id"], last_event_id=0), read_events(api.client, crawl["id"])
    )
    assert fresh[0][0] == "progress"
    assert fresh[-1][0] == "completed"
    names = [name for name, _, _ in events]
    assert names[-1] == "completed"
    assert names.count("progress") >= 2
    streamed = [p["url"] for name, _, data in events if name == "progress" for p in data["pages"]]
    assert sorted(streamed) == sorted({site.url("/"), *(site.url(f"/p{i}") for i in range(5))})

    # Resume from the second progress event: exactly the outcomes after it, then the final event.
    resume_id, resume_data = next((eid, data) for name, eid, data in events[1:] if name == "progress")
    seen = {p["url"] for name, eid, data in events if name == "progress" and eid <= resume_id for p in data["pages"]}
    resumed = await read_events(api.client, crawl["id"], last_event_id=resume_id)
    rest = [p["url"] for name, _, data in resumed if name == "progress" for p in data["pages"]]
    assert sorted(seen | set(rest)) == sorted(streamed)
    assert not seen & set(rest)
    assert resumed[-1][0] == "completed"
    del resume_data

    finished = await read_events(api.client, crawl["id"])
    assert [name for name, _, _ in finished] == ["completed"]


async def read_events(
    client: httpx.AsyncClient, crawl_id: str, *, last_event_id: int | None = None
) -> list[tuple[str, int, dict[str, Any]]]:
    headers = {"Last-Event-ID": str(last_event_id)} if last_event_id is not None else {}
    events: list[tuple[str, int, dict[str, Any]]] = []
    async with asyncio.timeout(60), client.stream("GET", f"/crawls/{crawl_id}/events", headers=headers) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        fields: dict[str, str] = {}
        async for line in response.aiter_lines():
            if line == "":
                if "event" in fields:
                    events.append((fields["event"], int(fields["id"]), json.loads(fields["data"])))
                fields = {}
                continue
            key, _, value = line.partition(": ")
            fields[key] = value
    return events


@ON_EVERY_DATABASE
async def test_worker_killed_mid_crawl_page_is_redelivered_and_every_page_stored_once(
    api: ApiHandle, site: Site, worker_process, settings: Settings
) -> None:
    entered, release = asyncio.Event(), asyncio.Event()

    async def held(_: web.Request) -> web.StreamResponse:
        entered.set()
        await release.wait()
        return web.Response(text="<title>held</title>", content_type="text/html")

    site.html("/", body=links("/held", "/a", "/b"))
    site.handlers["/held"] = held
    site.html("/a")
    site.html("/b")
    first = await asyncio.to_thread(worker_process)
    await put_site(api.client, "crash", {"url": site.url("/"), "politeness": {"respectRobotsTxt": False}})
    crawl = await trigger(api.client, "crash")
    await asyncio.wait_for(entered.wait(), 30)
    os.kill(first.proc.pid, signal.SIGKILL)
    await asyncio.to_thread(first.proc.wait, 10)
    release.set()
    await asyncio.to_thread(worker_process)
    done = await wait_crawl(api.client, crawl["id"])
    assert done["state"] == "COMPLETED"
    assert done["counters"]["fetched"] == 4
    pages = await all_pages(api.client, crawl["id"])
    assert paths(site, pages) == {"/", "/held", "/a", "/b"}
    assert {p["url"]: p["attempts"] for p in pages}[site.url("/held")] == 2
    url = settings.database_url.get_secret_value()
    for page in pages:
        assert await stored_copies(url, page_url=page["url"], crawl_id=crawl["id"]) == 1


@ON_EVERY_DATABASE
async def test_a_page_held_by_a_stopped_worker_is_fetched_by_another_after_its_lease_with_lease_expired_recorded(
    api: ApiHandle, site: Site, worker_process
) -> None:
    # A worker that is hung but connected (SIGSTOP) keeps its unacked message until RabbitMQ's consumer timeout;
    # its page's lease ends much sooner, and another worker's sweep hands the page on.
    entered, release = asyncio.Event(), asyncio.Event()
    fetches = itertools.count(1)

    async def held(_: web.Request) -> web.StreamResponse:
        fetch = next(fetches)
        if fetch == 1:
            entered.set()
            await release.wait()
        return web.Response(text=f"<title>fetch {fetch}</title>", content_type="text/html")

    site.html("/", body=links("/held"))
    site.handlers["/held"] = held
    leased = {"lease_seconds": 2.0, "sweep_interval_seconds": 0.5}
    # Prefetch 1: a stopped worker with free prefetch slots would be handed the re-published message too, and
    # only the broker's heartbeat timeout (a minute) gives that back (docs/queues.md, "Leases").
    first = await asyncio.to_thread(worker_process, prefetch_count=1, **leased)
    await put_site(api.client, "hung", {"url": site.url("/"), "politeness": {"respectRobotsTxt": False}})
    crawl = await trigger(api.client, "hung")
    await asyncio.wait_for(entered.wait(), 30)
    os.kill(first.proc.pid, signal.SIGSTOP)
    try:
        fetching = await all_pages(api.client, crawl["id"], state="FETCHING")
        assert [p["url"] for p in fetching] == [site.url("/held")]
        await asyncio.to_thread(worker_process, **leased)
        done = await wait_crawl(api.client, crawl["id"])
        assert first.proc.poll() is None  # still stopped: the other worker did it
    finally:
        release.set()
        os.kill(first.proc.pid, signal.SIGCONT)
    assert (done["state"], done["counters"]["fetched"]) == ("COMPLETED", 2)
    page = {p["url"]: p for p in await all_pages(api.client, crawl["id"])}[site.url("/held")]
    assert (page["state"], page["title"], page["attempts"]) == ("DONE", "fetch 2", 2)
    assert (page["error_code"], page["last_failure_code"]) == (None, "lease_expired")


async def test_always_failing_page_fails_after_max_attempts_is_dead_lettered_and_crawl_completes(
    api: ApiHandle, site: Site, worker: None, rabbit: RabbitServer, vhost: str, settings: Settings
) -> None:
    site.html("/", body=links("/ok", "/broken"))
    site.html("/ok")
    site.pages["/broken"] = Page("oops", status=500)
    done, pages = await crawl_site(
        api.client, "failing", {"url": site.url("/"), "politeness": {"respectRobotsTxt": False}}
    )
    assert done["state"] == "COMPLETED"
    assert done["counters"]["failed"] == 1
    assert done["counters"]["fetched"] == 2
    broken = next(p for p in pages if p["url"] == site.url("/broken"))
    assert broken["state"] == "FAILED"
    assert broken["attempts"] == settings.retry.max_attempts
    assert broken["error_code"] == "http_500"
    assert site.hits["/broken"] == settings.retry.max_attempts

    async def dead() -> list[dict[str, Any]]:
        return await asyncio.to_thread(rabbit.peek, vhost, "kubecrawl.dead", 10)

    letters = await eventually(dead, what="dead letter")
    assert letters[0]["properties"]["headers"]["x-kubecrawl-code"] == "http_500"
    assert letters[0]["properties"]["headers"]["x-kubecrawl-source-queue"] == "kubecrawl.pages"


async def test_second_crawl_counts_changed_and_unchanged_pages(api: ApiHandle, site: Site, worker: None) -> None:
    page_paths = [f"/p{i}" for i in range(5)]
    site.html("/", body=links(*page_paths))
    for path in page_paths:
        site.html(path, title="v1")
    spec = {"url": site.url("/"), "politeness": {"respectRobotsTxt": False}}
    first, _ = await crawl_site(api.client, "changes", spec)
    assert first["counters"]["changed"] == 0
    assert first["counters"]["unchanged"] == 0
    for path in page_paths[:3]:
        site.html(path, title="v2")
    second = await trigger(api.client, "changes")
    done = await wait_crawl(api.client, second["id"])
    assert done["counters"]["changed"] == 3
    assert done["counters"]["unchanged"] == 3  # the home page and two untouched pages
    changed = await all_pages(api.client, second["id"], changed="true")
    assert {p["url"].removeprefix(site.base) for p in changed} == set(page_paths[:3])


async def test_conditional_refetch_counts_304_as_unchanged_and_still_follows_the_pages_links(
    api: ApiHandle, site: Site, worker: None
) -> None:
    bodies: list[tuple[str, int]] = []

    def validated(text: str) -> Any:
        async def handler(request: web.Request) -> web.StreamResponse:
            if request.headers.get("If-None-Match") == '"v1"':
                bodies.append((request.path, 0))
                return web.Response(status=304, headers={"ETag": '"v1"'})
            bodies.append((request.path, 1))
            return web.Response(text=text, content_type="text/html", headers={"ETag": '"v1"'})

        return handler

    site.handlers["/"] = validated(f"<title>home</title>{links('/etag')}")
    site.handlers["/etag"] = validated("<title>etag</title>")
    spec = {"url": site.url("/"), "politeness": {"respectRobotsTxt": False, "maxConcurrency": 1}}
    await crawl_site(api.client, "etag", spec)
    second = await trigger(api.client, "etag")
    done = await wait_crawl(api.client, second["id"])
    assert bodies == [("/", 1), ("/etag", 1), ("/", 0), ("/etag", 0)]
    pages = await all_pages(api.client, second["id"])
    assert {p["url"]: p["http_status"] for p in pages} == {site.url("/"): 304, site.url("/etag"): 304}
    assert all(p["changed"] is False for p in pages)
    assert done["counters"]["unchanged"] == 2


async def test_cancel_stops_a_running_crawl(api: ApiHandle, site: Site, worker: None) -> None:
    site.delay = 0.2
    site.html("/", body=links(*(f"/p{i}" for i in range(30))))
    for i in range(30):
        site.html(f"/p{i}")
    await put_site(api.client, "cancel", {"url": site.url("/"), "politeness": {"maxConcurrency": 1}})
    crawl = await trigger(api.client, "cancel")

    async def running() -> bool:
        return (await api.client.get(f"/crawls/{crawl['id']}")).json()["counters"]["fetched"] >= 2

    await eventually(running, what="crawl to fetch pages")
    cancelled = await api.client.post(f"/crawls/{crawl['id']}/cancel")
    assert cancelled.json()["state"] == "CANCELLED"
    done = await wait_crawl(api.client, crawl["id"])
    assert done["state"] == "CANCELLED"
    assert sum(site.hits.values()) < 31


async def test_the_site_api_shows_the_next_scheduled_run_in_the_sites_time_zone(api: ApiHandle) -> None:
    # 09:30 in Kolkata (UTC+05:30, no daylight saving) is 04:00 UTC, within the next day
    spec = {"url": "https://example.com/", "schedule": "30 9 * * *", "timeZone": "Asia/Kolkata"}
    await put_site(api.client, "daily", spec)
    upcoming = datetime.fromisoformat((await api.client.get("/sites/default/daily")).json()["next_run_at"])
    assert (upcoming.utcoffset(), upcoming.hour, upcoming.minute) == (timedelta(0), 4, 0)
    assert timedelta(0) < upcoming - datetime.now(UTC) <= timedelta(days=1)
    await put_site(api.client, "daily", {**spec, "suspend": True})
    assert (await api.client.get("/sites/default/daily")).json()["next_run_at"] is None
    await put_site(api.client, "manual", {"url": "https://example.com/"})
    assert (await api.client.get("/sites/default/manual")).json()["next_run_at"] is None


async def test_unknown_crawl_and_site_answer_404_with_codes(api: ApiHandle) -> None:
    missing = await api.client.get("/crawls/00000000-0000-0000-0000-000000000000")
    assert missing.status_code == 404
    assert missing.json()["code"] == "crawl_not_found"
    no_site = await api.client.post("/sites/default/nope/crawls", json={"trigger": "manual"})
    assert no_site.status_code == 404
    assert no_site.json()["code"] == "site_not_found"


async def test_invalid_site_spec_answers_400_naming_the_field(api: ApiHandle) -> None:
    response = await api.client.put(
        "/sites/default/bad", json={"url": "https://example.com/", "scope": {"maxPages": -1}}
    )
    assert response.status_code == 400
    assert response.json()["code"] == "invalid_spec"
    assert "scope.maxPages" in response.json()["detail"] or "scope.max_pages" in response.json()["detail"]


async def test_page_whose_message_was_lost_is_republished_by_the_sweeper_and_the_crawl_completes(
    api: ApiHandle, site: Site, settings: Settings, rabbit: RabbitServer, vhost: str
) -> None:
    site.html("/", body=links("/a"))
    site.html("/a")
    await put_site(api.client, "lost", {"url": site.url("/"), "politeness": {"respectRobotsTxt": False}})
    crawl = await trigger(api.client, "lost")
    assert await queued_messages(rabbit, vhost, "kubecrawl.pages") == 1
    await asyncio.to_thread(rabbit.api, f"/api/queues/{vhost}/kubecrawl.pages/contents", method="DELETE")
    assert await queued_messages(rabbit, vhost, "kubecrawl.pages") == 0  # the seed's message is gone

    quick = settings.model_copy(update={"lost_page_seconds": 1.0, "sweep_interval_seconds": 0.5})
    done = await crawl_with_worker(api.client, quick, crawl["id"])
    assert done["state"] == "COMPLETED"
    assert done["counters"]["fetched"] == 2
    assert site.hits["/"] == 1


async def test_api_restarted_mid_crawl_leaves_the_crawl_unaffected(
    settings: Settings, site: Site, worker: None
) -> None:
    site.delay = 0.1
    site.html("/", body=links(*(f"/p{i}" for i in range(8))))
    for i in range(8):
        site.html(f"/p{i}")
    async with running_api(settings) as first:
        await put_site(first.client, "restart", {"url": site.url("/"), "politeness": {"maxConcurrency": 1}})
        crawl = await trigger(first.client, "restart")

        async def started() -> bool:
            return (await first.client.get(f"/crawls/{crawl['id']}")).json()["counters"]["fetched"] >= 2

        await eventually(started, what="crawl to make progress")
    async with running_api(settings) as second:
        done = await wait_crawl(second.client, crawl["id"])
    assert done["state"] == "COMPLETED"
    assert done["counters"]["fetched"] == 9
    assert all(site.hits[f"/p{i}"] == 1 for i in range(8))


async def test_retry_after_on_429_pauses_the_host_before_the_next_request(
    api: ApiHandle, site: Site, worker: None
) -> None:
    answered: list[int] = []

    async def limited(_: web.Request) -> web.StreamResponse:
        if not answered:
            answered.append(429)
            return web.Response(status=429, headers={"Retry-After": "2"})
        answered.append(200)
        return web.Response(text="<title>ok</title>", content_type="text/html")

    site.html("/", body=links("/limited"))
    site.handlers["/limited"] = limited
    spec = {"url": site.url("/"), "politeness": {"respectRobotsTxt": False, "maxConcurrency": 1}}
    done, pages = await crawl_site(api.client, "retry-after", spec)
    assert done["state"] == "COMPLETED"
    assert answered == [429, 200]
    limited_at = [at for at, path in site.requests if path == "/limited"]
    assert limited_at[1] - limited_at[0] >= 1.9  # the host was paused for Retry-After, not just the message
    assert next(p for p in pages if p["url"] == site.url("/limited"))["attempts"] == 2


async def test_the_sites_fetch_timeout_bounds_each_fetch_of_its_crawls(
    api: ApiHandle, site: Site, worker: None, settings: Settings
) -> None:
    async def slow(_: web.Request) -> web.StreamResponse:
        await asyncio.sleep(3)  # longer than the site's 1 s timeout, shorter than the worker's default 15 s
        return web.Response(text="<title>slow</title>", content_type="text/html")

    site.html("/", body=links("/slow"))
    site.handlers["/slow"] = slow
    spec = {"url": site.url("/"), "politeness": {"respectRobotsTxt": False}, "fetch": {"timeoutSeconds": 1}}
    done, pages = await crawl_site(api.client, "timeout", spec)
    assert done["state"] == "COMPLETED"
    slow_page = next(p for p in pages if p["url"] == site.url("/slow"))
    assert slow_page["state"] == "FAILED"
    assert slow_page["error_code"] == "timeout"
    assert slow_page["attempts"] == settings.retry.max_attempts

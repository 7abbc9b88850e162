"""The fetcher against real local sites: the SSRF guard, body caps, encodings, redirects, errors and cookies.

Most tests drive ``kubecrawl.fetch.fetching.Fetcher`` directly (the same object a worker holds); the guard is
also checked end to end through the API, RabbitMQ, a worker and PostgreSQL. Sites live on loopback, so every
test opens the guard explicitly: ``OPEN`` lifts it, ``GUARDED`` is the production default, and ``INTRANET``
opens exactly 127.0.0.2 — the "allowed host" that tries to redirect to a private address.
"""

from __future__ import annotations

import asyncio
import gzip
import ipaddress
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web

from kubecrawl.core.errors import BlockedTarget, FetchPermanent, FetchTransient
from kubecrawl.core.settings import FetchSettings, Settings
from kubecrawl.core.urls import TargetPolicy
from kubecrawl.fetch.fetching import Fetcher, FetchResult
from kubecrawl.fetch.retrying import response_error
from tests.support.api import ApiHandle
from tests.support.guarded import GUARDED, INTRANET, OPEN, final_record
from tests.support.polling import eventually
from tests.support.servers import RabbitServer, free_port
from tests.support.sites import Page, Site

# Generous: the machine has two cores shared with other test runs; no test waits this long when it passes.
SETTINGS = FetchSettings(timeout_seconds=30)
MiB = 1024 * 1024


async def fetch(url: str, *, policy: TargetPolicy = OPEN, settings: FetchSettings = SETTINGS) -> FetchResult:
    async with Fetcher(settings, policy) as fetcher:
        return await fetcher.fetch(url)


def _resolves_to_loopback_only(name: str) -> bool:
    try:
        infos = socket.getaddrinfo(name, None, type=socket.SOCK_STREAM)
    except OSError:
        return False
    return bool(infos) and all(ipaddress.ip_address(info[4][0]).is_loopback for info in infos)


@pytest.fixture
def loopback_name(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A host NAME (not an IP literal, not ``localhost``) that resolves to loopback.

    Most machines have one in /etc/hosts (the host name, ``localhost.localdomain``, ``ip6-localhost``); only
    the resolver can catch those, which is the point. Where none exists the condition is created explicitly:
    a made-up name answered with 127.0.0.1 by ``getaddrinfo``, the function aiohttp's resolver calls.
    """
    candidates = (socket.gethostname(), "localhost.localdomain", "ip6-localhost", "ip6-loopback")
    for name in candidates:
        if "." not in name and name.endswith("localhost"):
            continue
        try:
            GUARDED.check_literal(f"http://{name}/")
        except BlockedTarget:
            continue  # refused without resolving; useless for a resolver test
        if _resolves_to_loopback_only(name):
            yield name
            return
    fake = "loopback.kubecrawl.test"
    real = socket.getaddrinfo

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        return real("127.0.0.1" if host == fake else host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    yield fake


# --- SSRF guard -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("host", ["127.0.0.1", "10.0.0.1", "169.254.169.254", "[::1]"])
async def test_guard_refuses_private_loopback_and_metadata_addresses(site: Site, host: str) -> None:
    site.html("/", title="private")
    with pytest.raises(BlockedTarget) as info:
        await fetch(f"http://{host}:{site.port}/", policy=GUARDED)
    assert info.value.code == "blocked_target"
    assert site.hits.total() == 0


async def test_guard_refuses_a_host_name_that_resolves_to_loopback(site: Site, loopback_name: str) -> None:
    site.html("/", title="private")
    with pytest.raises(BlockedTarget) as info:
        await fetch(f"http://{loopback_name}:{site.port}/", policy=GUARDED)
    assert "resolves to" in info.value.detail
    assert site.hits.total() == 0


async def test_host_name_that_resolves_to_loopback_is_fetched_when_the_guard_is_off(
    site: Site, loopback_name: str
) -> None:
    site.html("/", title="reachable")
    result = await fetch(f"http://{loopback_name}:{site.port}/", policy=OPEN)
    assert result.status_code == 200


async def test_allowed_private_network_is_fetched_with_the_guard_on(allowed_site: Site) -> None:
    url = allowed_site.html("/", title="intranet")
    result = await fetch(url, policy=INTRANET)
    assert result.status_code == 200
    assert b"intranet" in result.body


async def test_guard_refuses_a_redirect_from_an_allowed_host_to_a_private_address(
    site: Site, allowed_site: Site
) -> None:
    site.html("/secret", title="secret")
    allowed_site.pages["/go"] = Page(b"", status=302, headers={"Location": site.url("/secret")})
    with pytest.raises(BlockedTarget):
        await fetch(allowed_site.url("/go"), policy=INTRANET)
    assert allowed_site.hits["/go"] == 1
    assert site.hits.total() == 0


async def test_guard_refuses_a_redirect_from_an_allowed_host_to_a_name_resolving_to_loopback(
    site: Site, allowed_site: Site, loopback_name: str
) -> None:
    site.html("/secret", title="secret")
    target = f"http://{loopback_name}:{site.port}/secret"
    allowed_site.pages["/go"] = Page(b"", status=307, headers={"Location": target})
    with pytest.raises(BlockedTarget):
        await fetch(allowed_site.url("/go"), policy=INTRANET)
    assert site.hits.total() == 0


async def test_worker_fails_permanently_and_dead_letters_a_redirect_to_a_private_address(
    api: ApiHandle,
    site: Site,
    allowed_site: Site,
    guarded_settings: Settings,
    guarded_worker: asyncio.Task[None],
    rabbit: RabbitServer,
    vhost: str,
) -> None:
    api.app.state.settings = guarded_settings
    site.html("/secret", title="secret")
    allowed_site.pages["/go"] = Page(b"", status=302, headers={"Location": site.url("/secret")})
    url = allowed_site.url("/go")
    assert (await api.client.post("/metadata", json={"url": url})).status_code == 202

    record = await final_record(api.client, url, guarded_worker)
    assert record["status"] == "FAILED_PERMANENT"
    assert record["last_error_code"] == "blocked_target"
    assert record["attempts"] == 1
    assert site.hits.total() == 0
    dead = await eventually(lambda: asyncio.to_thread(rabbit.dead_letters, vhost), what="dead letter")
    headers = dead[0]["properties"]["headers"]  # type: ignore[index]
    assert headers["x-kubecrawl-code"] == "blocked_target"
    assert headers["x-kubecrawl-source-queue"] == "kubecrawl.metadata"


async def test_worker_fails_permanently_on_a_host_name_resolving_to_loopback(
    api: ApiHandle,
    site: Site,
    guarded_settings: Settings,
    guarded_worker: asyncio.Task[None],
    loopback_name: str,
) -> None:
    # The API checks IP literals only (no DNS on the request path); the worker's resolver catches the name.
    api.app.state.settings = guarded_settings
    site.html("/", title="private")
    url = f"http://{loopback_name}:{site.port}/"
    assert (await api.client.post("/metadata", json={"url": url})).status_code == 202

    record = await final_record(api.client, url, guarded_worker)
    assert record["status"] == "FAILED_PERMANENT"
    assert record["last_error_code"] == "blocked_target"
    assert site.hits.total() == 0


# --- bodies ----------------------------------------------------------------------------------------------------


@dataclass
class Stream:
    """A handler that streams ``total`` bytes and records how many it managed to hand to the socket."""

    total: int
    written: int = 0
    finished: asyncio.Event = field(default_factory=asyncio.Event)

    async def __call__(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/html; charset=utf-8"})
        response.content_length = self.total
        await response.prepare(request)
        chunk = b"<p>" + b"x" * (64 * 1024 - 3)
        try:
            while self.written < self.total:
                await response.write(chunk)
                self.written += len(chunk)
        except ConnectionError:
            pass  # the client hung up: what the truncation test wants
        finally:
            self.finished.set()
        return response


async def test_body_larger_than_max_body_bytes_is_truncated_at_the_cap_without_downloading_the_rest(
    site: Site,
) -> None:
    stream = Stream(total=64 * MiB)
    site.handlers["/huge"] = stream
    settings = FetchSettings(timeout_seconds=30, max_body_bytes=1 * MiB)

    result = await fetch(site.url("/huge"), settings=settings)

    assert result.truncated is True
    assert result.body_bytes == 1 * MiB
    assert result.content_length == 64 * MiB  # as announced, not as read
    await asyncio.wait_for(stream.finished.wait(), 30)
    # The fetcher hung up: the server got no further than the cap plus the kernel's socket buffers.
    assert stream.written < 32 * MiB, f"server wrote {stream.written} bytes"


async def test_body_of_exactly_max_body_bytes_counts_as_truncated(site: Site) -> None:
    site.pages["/exact"] = Page(b"x" * 1024, headers={"Content-Type": "text/plain"})
    result = await fetch(site.url("/exact"), settings=FetchSettings(max_body_bytes=1024))
    assert result.body_bytes == 1024
    assert result.truncated is True


async def test_body_below_max_body_bytes_is_complete_and_not_truncated(site: Site) -> None:
    site.pages["/small"] = Page(b"x" * 1000, headers={"Content-Type": "text/plain"})
    result = await fetch(site.url("/small"), settings=FetchSettings(max_body_bytes=1024))
    assert result.body == b"x" * 1000
    assert result.truncated is False


async def test_gzip_encoded_body_is_decoded(site: Site) -> None:
    html = b"<html><head><title>zipped</title></head><body>" + b"hello " * 2000 + b"</body></html>"
    compressed = gzip.compress(html)
    site.pages["/gz"] = Page(
        compressed, headers={"Content-Type": "text/html; charset=utf-8", "Content-Encoding": "gzip"}
    )
    result = await fetch(site.url("/gz"))
    assert result.body == html
    assert result.truncated is False
    assert result.content_length == len(compressed)


async def test_gzip_body_is_capped_after_decoding(site: Site) -> None:
    bomb = gzip.compress(b"\0" * (64 * MiB), compresslevel=9)  # ~64 KiB on the wire
    site.pages["/bomb"] = Page(bomb, headers={"Content-Type": "text/html", "Content-Encoding": "gzip"})
    result = await fetch(site.url("/bomb"), settings=FetchSettings(timeout_seconds=30, max_body_bytes=1 * MiB))
    assert result.truncated is True
    assert result.body_bytes == 1 * MiB


async def test_fetch_reports_status_headers_and_timings(site: Site) -> None:
    site.pages["/h"] = Page("<title>t</title>", headers={"Content-Type": "text/html", "X-Thing": "1"})
    result = await fetch(site.url("/h"))
    assert result.status_code == 200
    assert ("X-Thing", "1") in result.headers
    assert result.content_type == "text/html"
    assert {"ttfb_ms", "download_ms", "total_ms"} <= result.timings.keys()


# --- redirects -------------------------------------------------------------------------------------------------


async def test_every_redirect_hop_is_recorded_with_relative_locations_resolved(site: Site) -> None:
    site.pages["/a"] = Page(b"", status=301, headers={"Location": "/b"})
    site.pages["/b"] = Page(b"", status=302, headers={"Location": "c"})
    site.pages["/c"] = Page(b"", status=307, headers={"Location": site.url("/final")})
    site.html("/final", title="done")
    result = await fetch(site.url("/a"))
    assert result.final_url == site.url("/final")
    assert [(hop.url, hop.status, hop.location) for hop in result.redirects] == [
        (site.url("/a"), 301, site.url("/b")),
        (site.url("/b"), 302, site.url("/c")),
        (site.url("/c"), 307, site.url("/final")),
    ]


async def test_more_redirects_than_max_redirects_fail_with_too_many_redirects(site: Site) -> None:
    for n in range(6):
        site.pages[f"/r{n}"] = Page(b"", status=302, headers={"Location": f"/r{n + 1}"})
    site.html("/r6", title="end")
    with pytest.raises(FetchPermanent) as info:
        await fetch(site.url("/r0"), settings=FetchSettings(max_redirects=3))
    assert info.value.code == "too_many_redirects"
    assert [site.hits[f"/r{n}"] for n in range(6)] == [1, 1, 1, 1, 0, 0]


async def test_redirect_loop_fails_with_too_many_redirects_after_a_bounded_number_of_requests(site: Site) -> None:
    site.pages["/ping"] = Page(b"", status=302, headers={"Location": "/pong"})
    site.pages["/pong"] = Page(b"", status=302, headers={"Location": "/ping"})
    with pytest.raises(FetchPermanent) as info:
        await fetch(site.url("/ping"), settings=FetchSettings(max_redirects=5))
    assert info.value.code == "too_many_redirects"
    assert site.hits["/ping"] + site.hits["/pong"] == 6  # the first request plus five redirects


async def test_redirect_without_location_is_permanent(site: Site) -> None:
    site.pages["/nowhere"] = Page(b"", status=302, headers={})
    with pytest.raises(FetchPermanent) as info:
        await fetch(site.url("/nowhere"))
    assert info.value.code == "redirect_without_location"


# --- errors ----------------------------------------------------------------------------------------------------


async def test_429_with_retry_after_is_a_transient_error_carrying_the_delay(site: Site) -> None:
    site.pages["/busy"] = Page("slow down", status=429, headers={"Retry-After": "7", "Content-Type": "text/plain"})
    result = await fetch(site.url("/busy"))
    error = response_error(result.status_code, dict(result.headers))
    assert isinstance(error, FetchTransient)
    assert error.code == "http_429"
    assert error.retry_after == 7.0


async def test_connection_refused_is_a_transient_connect_error() -> None:
    port = free_port()  # bound then closed: nothing listens there
    with pytest.raises(FetchTransient) as info:
        await fetch(f"http://127.0.0.1:{port}/")
    assert info.value.code == "connect_error"


async def test_server_closing_the_connection_mid_response_is_a_transient_error(site: Site) -> None:
    async def hang_up(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/html"})
        response.content_length = 100_000
        await response.prepare(request)
        await response.write(b"<html><title>partial</title>" + b"x" * 1000)
        assert request.transport is not None
        request.transport.close()
        return response

    site.handlers["/hang-up"] = hang_up
    with pytest.raises(FetchTransient) as info:
        await fetch(site.url("/hang-up"))
    assert info.value.code == "connection_error"


async def test_server_closing_the_connection_before_answering_is_a_transient_error(site: Site) -> None:
    async def drop(request: web.Request) -> web.StreamResponse:
        assert request.transport is not None
        request.transport.close()
        return web.Response()

    site.handlers["/drop"] = drop
    with pytest.raises(FetchTransient) as info:
        await fetch(site.url("/drop"))
    assert info.value.code == "connection_error"


async def test_response_slower_than_timeout_seconds_is_a_transient_timeout(site: Site) -> None:
    release = asyncio.Event()

    async def stall(_: web.Request) -> web.StreamResponse:
        await release.wait()  # answers only after the test is over
        return web.Response(text="too late")

    site.handlers["/stall"] = stall
    try:
        with pytest.raises(FetchTransient) as info:
            await fetch(site.url("/stall"), settings=FetchSettings(timeout_seconds=1))
    finally:
        release.set()
    assert info.value.code == "timeout"


async def test_body_stalling_after_the_headers_is_a_transient_timeout(site: Site) -> None:
    release = asyncio.Event()

    async def trickle(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/html"})
        response.content_length = 10_000
        await response.prepare(request)
        await response.write(b"<html>")
        await release.wait()
        return response

    site.handlers["/trickle"] = trickle
    try:
        with pytest.raises(FetchTransient) as info:
            await fetch(site.url("/trickle"), settings=FetchSettings(timeout_seconds=1))
    finally:
        release.set()
    assert info.value.code == "timeout"


# --- cookies ---------------------------------------------------------------------------------------------------


def _echo_cookies(seen: list[str]) -> Any:
    async def echo(request: web.Request) -> web.StreamResponse:
        seen.append(request.headers.get("Cookie", ""))
        return web.Response(text="<title>landed</title>", content_type="text/html")

    return echo


async def test_cookie_set_on_a_redirect_hop_is_sent_to_the_next_hop_and_reported(site: Site) -> None:
    seen: list[str] = []
    site.pages["/login"] = Page(
        b"",
        status=302,
        headers={"Location": "/home", "Set-Cookie": "sid=s3cr3t; Path=/; HttpOnly; SameSite=Lax; Max-Age=600"},
    )
    site.handlers["/home"] = _echo_cookies(seen)

    result = await fetch(site.url("/login"))

    assert seen == ["sid=s3cr3t"]
    [cookie] = result.cookies
    assert (cookie.name, cookie.value, cookie.path, cookie.max_age) == ("sid", "s3cr3t", "/", 600)
    assert cookie.http_only is True
    assert cookie.same_site == "Lax"
    assert cookie.secure is False
    assert cookie.expires is not None
    assert cookie.set_by == site.url("/login")


async def test_cookie_is_not_sent_to_a_different_host_on_redirect(site: Site, allowed_site: Site) -> None:
    seen: list[str] = []
    site.pages["/login"] = Page(
        b"", status=302, headers={"Location": allowed_site.url("/home"), "Set-Cookie": "sid=s3cr3t; Path=/"}
    )
    allowed_site.handlers["/home"] = _echo_cookies(seen)
    await fetch(site.url("/login"))
    assert seen == [""]


async def test_cookies_never_leak_between_two_fetches(site: Site) -> None:
    seen: list[str] = []
    site.pages["/set"] = Page(
        "<title>set</title>", headers={"Content-Type": "text/html", "Set-Cookie": "sid=1; Path=/"}
    )
    site.handlers["/check"] = _echo_cookies(seen)
    async with Fetcher(SETTINGS, OPEN) as fetcher:
        first = await fetcher.fetch(site.url("/set"))
        second = await fetcher.fetch(site.url("/check"))
    assert [cookie.name for cookie in first.cookies] == ["sid"]
    assert seen == [""]
    assert second.cookies == []

"""Fetching through an egress proxy (``FetchSettings.proxy_url``) with a real one, tinyproxy on loopback.

The site lives on 127.0.0.2, the only address ``INTRANET`` opens; the proxy listens on 127.0.0.1, which the guard
blocks: a fetch that works through it shows the proxy itself is not judged, one refused before the proxy logs
anything shows every target still is.
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from pydantic import SecretStr

from kubecrawl.core.errors import BlockedTarget
from kubecrawl.core.settings import FetchSettings
from kubecrawl.fetch.fetching import Fetcher
from tests.support.guarded import INTRANET, OPEN
from tests.support.httpproxy import TinyProxy
from tests.support.sites import Site


@pytest.fixture
def proxy(tmp_path: Path) -> Iterator[TinyProxy]:
    server = TinyProxy(tmp_path / "proxy").start()
    yield server
    server.stop()


@pytest.fixture
async def intranet_site() -> AsyncIterator[Site]:
    site = Site("127.0.0.2")
    seen: list[str] = []

    async def echo_via(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Via", ""))
        return web.Response(
            text=f"<title>via {request.headers.get('Via', 'nothing')}</title>", content_type="text/html"
        )

    site.handlers["/page"] = echo_via
    await site.start()
    yield site
    await site.stop()


def through(proxy: TinyProxy) -> FetchSettings:
    return FetchSettings(timeout_seconds=30, proxy_url=SecretStr(proxy.url))


async def test_fetches_go_through_the_configured_proxy(proxy: TinyProxy, intranet_site: Site) -> None:
    async with Fetcher(through(proxy), INTRANET) as fetcher:
        result = await fetcher.fetch(intranet_site.url("/page"))
    assert result.status_code == 200
    assert b"tinyproxy" in result.body  # the Via header the proxy added
    assert proxy.requests() == [f"GET {intranet_site.url('/page')} HTTP/1.1"]


async def test_the_guard_refuses_a_blocked_target_before_the_proxy_sees_it(
    proxy: TinyProxy, intranet_site: Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A made-up name that resolves to loopback (on this machine only): the proxy could not even resolve it, so
    # only the fetcher's own resolution, judged by the guard, can refuse it.
    real = socket.getaddrinfo

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        return real("127.0.0.1" if host == "loopback.kubecrawl.test" else host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    blocked = intranet_site.url("/page").replace("127.0.0.2", "127.0.0.1")
    async with Fetcher(through(proxy), INTRANET) as fetcher:
        with pytest.raises(BlockedTarget):
            await fetcher.fetch(blocked)
        with pytest.raises(BlockedTarget):
            await fetcher.fetch(f"http://loopback.kubecrawl.test:{intranet_site.port}/page")
    assert proxy.requests() == []


async def test_a_redirect_to_a_blocked_target_is_refused_through_the_proxy(
    proxy: TinyProxy, intranet_site: Site
) -> None:
    async def to_loopback(_: web.Request) -> web.Response:
        raise web.HTTPFound(f"http://127.0.0.1:{intranet_site.port}/page")

    intranet_site.handlers["/away"] = to_loopback
    async with Fetcher(through(proxy), INTRANET) as fetcher:
        with pytest.raises(BlockedTarget):
            await fetcher.fetch(intranet_site.url("/away"))
    assert proxy.requests() == [f"GET {intranet_site.url('/away')} HTTP/1.1"]


async def test_proxy_variables_in_the_environment_are_ignored(
    proxy: TinyProxy, intranet_site: Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY"):
        monkeypatch.setenv(name, proxy.url)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    async with Fetcher(FetchSettings(timeout_seconds=30), OPEN) as fetcher:
        result = await fetcher.fetch(intranet_site.url("/page"))
    assert b"via nothing" in result.body
    assert proxy.requests() == []


def test_only_an_http_proxy_url_is_accepted() -> None:
    with pytest.raises(ValueError, match="proxy_url"):
        FetchSettings(proxy_url=SecretStr("socks5://127.0.0.1:1080"))

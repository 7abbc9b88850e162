"""A local web site for tests, on 127.0.0.1 (or another loopback address): static pages plus programmable behaviour.

Counts requests per path and the peak number of concurrent requests, so tests can assert on what a crawler
actually did to the site.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from aiohttp import web

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class Page:
    body: bytes | str
    status: int = 200
    headers: dict[str, str] = field(default_factory=lambda: {"Content-Type": "text/html; charset=utf-8"})


class Site:
    def __init__(self, host: str = "127.0.0.1") -> None:
        # Any loopback address works on Linux (127.0.0.0/8); a second one (127.0.0.2) lets SSRF tests open
        # exactly one address with TargetPolicy.allowed_networks while 127.0.0.1 stays blocked.
        self.host = host
        self.pages: dict[str, Page] = {}
        self.handlers: dict[str, Handler] = {}
        self.hits: Counter[str] = Counter()
        # (monotonic arrival time, path) of every request, for politeness assertions
        self.requests: list[tuple[float, str]] = []
        self.in_flight = 0
        self.peak_in_flight = 0
        self.delay = 0.0
        self.port = 0
        self._runner: web.AppRunner | None = None

    @property
    def base(self) -> str:
        return f"http://{self.host}:{self.port}"

    def url(self, path: str) -> str:
        return self.base + path

    def html(self, path: str, *, title: str = "", body: str = "", head: str = "", **kw: object) -> str:
        self.pages[path] = Page(
            f"<!doctype html><html lang='en'><head><title>{title}</title>{head}</head><body>{body}</body></html>",
            **kw,  # type: ignore[arg-type]
        )
        return self.url(path)

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        path = request.path_qs if request.path_qs in self.pages or request.path_qs in self.handlers else request.path
        self.hits[path] += 1
        self.requests.append((time.monotonic(), path))
        self.in_flight += 1
        self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
        try:
            if self.delay:
                await asyncio.sleep(self.delay)
            if path in self.handlers:
                return await self.handlers[path](request)
            page = self.pages.get(path)
            if page is None:
                return web.Response(status=404, text="not found")
            return web.Response(status=page.status, body=page.body, headers=page.headers)
        finally:
            self.in_flight -= 1

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._dispatch)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, 0)
        await site.start()
        server = site._server
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

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
        # path → seconds its requests reach the site after they were sent (held on the way in, as by a slow
        # connect): their arrival is recorded after it
        self.late: dict[str, float] = {}
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
        if path in self.late:
            await asyncio.sleep(self.late[path])
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


class ThreadedSite:
    """A static site served from a thread (``http.server``), for module-scoped fixtures that outlive a test's loop:
    Pods on the node fetch it through the bridge address. Every request is logged as (client address, path); paths
    starting with a ``slow`` prefix are answered after that many seconds (pages that keep a worker busy), paths
    starting with a ``failing`` prefix with that status code."""

    def __init__(
        self,
        host: str,
        pages: dict[str, str],
        *,
        slow: dict[str, float] | None = None,
        failing: dict[str, int] | None = None,
    ) -> None:
        import http.server
        import threading
        import time

        self.pages = pages
        self.requests: list[tuple[str, str]] = []
        self.answered: list[tuple[str, str]] = []
        site, delays, codes = self, dict(slow or {}), dict(failing or {})

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                site.requests.append((self.client_address[0], self.path))
                delay = next((seconds for prefix, seconds in delays.items() if self.path.startswith(prefix)), 0.0)
                time.sleep(delay)
                body = site.pages.get(self.path)
                code = next((c for prefix, c in codes.items() if self.path.startswith(prefix)), None)
                if code is not None:
                    body = None
                self.send_response(code or (200 if body is not None else 404))
                payload = (body if body is not None else "not found").encode()
                self.send_header("Content-Type", "text/html; charset=utf-8" if body is not None else "text/plain")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)
                site.answered.append((self.client_address[0], self.path))

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002 (the stdlib's signature)
                pass

        self._server = http.server.ThreadingHTTPServer((host, 0), Handler)
        self.host, self.port = host, int(self._server.server_address[1])
        self._thread = threading.Thread(target=self._server.serve_forever, name=f"site-{self.port}", daemon=True)
        self._thread.start()

    @property
    def base(self) -> str:
        return f"http://{self.host}:{self.port}"

    def in_flight(self) -> list[tuple[str, str]]:
        """Requests received and not answered yet (client address, path)."""
        pending = list(self.requests)
        for done in list(self.answered):
            pending.remove(done)
        return pending

    def fetched(self, path: str) -> list[str]:
        """Client addresses that fetched ``path``, one per request."""
        return [client for client, requested in self.requests if requested == path]

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def linked_pages(count: int) -> dict[str, str]:
    """``/`` links to ``/p/1`` … ``/p/{count-1}``: a one-level site of ``count`` pages."""
    pages = {
        f"/p/{i}": f"<html><head><title>Page {i}</title></head><body>page {i}</body></html>" for i in range(1, count)
    }
    links = "".join(f'<a href="/p/{i}">{i}</a>' for i in range(1, count))
    pages["/"] = f"<html><head><title>Home</title></head><body>{links}</body></html>"
    return pages

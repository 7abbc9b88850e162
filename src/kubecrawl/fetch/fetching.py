"""The HTTP fetcher: one GET with every redirect hop, headers, cookies, a capped body and timings.

httpx is the API; the transport is aiohttp's (``httpx-aiohttp``): measured on this machine against a local
nginx with 16 requests in flight, httpx's default transport managed about 450 pages/s and the aiohttp one about
2,200 (issue 2). Redirects are followed here, hop by hop, rather than by the client, so that every hop is
recorded and checked against the private-network policy before anything is sent to it.

Private-network (SSRF) guard, unless ``allow_private``; three checks, each enough on its own for what it sees:
- every hop's URL is normalised (IPv4 numbers written as dotted quads, userinfo refused) and an IP-literal host
  in a blocked range is refused before connecting;
- host names are resolved by ``GuardedResolver``, the resolver the connection itself uses, which refuses a
  host if ANY of its addresses is blocked — so a DNS answer cannot change between the check and the connect
  (DNS rebinding), and a redirect to a private address is refused like a direct request;
- ``GuardedConnector`` checks the peer address of the socket each request is about to be sent on (new or
  pooled), so whatever the HTTP library makes of a host (aiohttp before 3.14.1 connected ``http://2130706433/``
  to 127.0.0.1 without asking the resolver), nothing is sent to an address the policy refuses.

Through a proxy (``FetchSettings.proxy_url``, never the environment): every connection goes to the proxy, whose
address the operator chose and which is therefore not judged by the guard; each hop's target is judged instead
before anything is sent: IP literals as above, host names resolved here by ``GuardedResolver`` (every address must
pass). The proxy resolves the name again when it connects, so a DNS answer that changes in between (rebinding)
is the proxy's to refuse: give it an egress policy of its own (docs/security.md).

Bodies are decoded here, not by httpx: its gzip decoder inflates each 16 KiB read whole (a 16 KiB bomb is
16 MiB), while ``decoding.BoundedDecoder`` never produces more than the body cap still allows. The guard's resolver
and connector are ``guarding.py``, ``Set-Cookie`` parsing ``cookies.py``.

Errors leave as ``kubecrawl.core.errors``: network failures are ``FetchTransient`` (``dns_failure``,
``connect_error``, ``connection_error``, ``timeout``), malformed responses are ``FetchPermanent``
(``invalid_response``, ``too_many_redirects``, ``redirect_without_location``), refused targets
``BlockedTarget``, bad URLs ``InvalidUrl``. HTTP statuses are results here; ``retrying.response_error``
decides what a status means.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import ssl
import time
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self
from urllib.parse import urljoin

import aiohttp
import httpx
from aiohttp.abc import AbstractResolver
from httpx_aiohttp import AiohttpTransport

from kubecrawl.core.errors import FetchPermanent, FetchTransient, InvalidUrl, KubecrawlError
from kubecrawl.core.settings import FetchSettings
from kubecrawl.core.urls import TargetPolicy, normalise_url
from kubecrawl.fetch.cookies import Cookie, parse_set_cookie
from kubecrawl.fetch.decoding import BoundedDecoder
from kubecrawl.fetch.guarding import GuardedConnector, GuardedResolver

_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
# Idle keep-alive connections are dropped after this long; sites close theirs after 5-75 s.
_KEEPALIVE_SECONDS = 30.0
# aiohttp caches DNS answers this long (its default); the guard checked them when they were cached.
_DNS_CACHE_SECONDS = 10


@dataclass(frozen=True, slots=True)
class RedirectHop:
    url: str
    status: int
    location: str


@dataclass(slots=True)
class FetchResult:
    url: str
    final_url: str
    status_code: int
    headers: list[tuple[str, str]]
    body: bytes
    content_type: str | None
    content_length: int | None
    truncated: bool
    redirects: list[RedirectHop] = field(default_factory=list)
    cookies: list[Cookie] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def body_bytes(self) -> int:
        return len(self.body)


def _network_error(exc: Exception) -> KubecrawlError:
    """Map an httpx/aiohttp error to ours (httpx-aiohttp keeps the aiohttp error as ``__cause__``)."""
    cause = exc.__cause__ if isinstance(exc, httpx.HTTPError) and exc.__cause__ is not None else exc
    detail = f"{type(cause).__name__}: {cause}"
    # Order matters: aiohttp's DNS error is a connector error, and its timeouts are connection errors.
    if isinstance(cause, aiohttp.ClientConnectorDNSError):
        error: KubecrawlError = FetchTransient(f"DNS lookup failed: {detail}", code="dns_failure")
    elif isinstance(cause, (TimeoutError, aiohttp.ServerTimeoutError, httpx.TimeoutException)):
        error = FetchTransient(f"timed out: {detail}", code="timeout")
    elif isinstance(cause, aiohttp.ClientConnectorError):
        error = FetchTransient(f"could not connect: {detail}", code="connect_error")
    elif isinstance(cause, (aiohttp.ClientResponseError, httpx.DecodingError)):
        error = FetchPermanent(f"invalid HTTP response: {detail}", code="invalid_response")
    elif isinstance(cause, (httpx.UnsupportedProtocol, httpx.InvalidURL, aiohttp.InvalidURL)):
        error = InvalidUrl(detail)
    else:
        error = FetchTransient(f"connection failed: {detail}", code="connection_error")
    return error


class Fetcher:
    """One per process: a pooled client shared by every concurrent fetch (``async with Fetcher(...)``)."""

    def __init__(self, settings: FetchSettings, policy: TargetPolicy, resolver: AbstractResolver | None = None) -> None:
        """``resolver`` answers DNS questions (default: aiohttp's, ``getaddrinfo``); the guard checks its answers."""
        self._settings = settings
        self._policy = policy
        self._resolver = resolver
        self._transport: AiohttpTransport | None = None
        self._proxy = httpx.Proxy(settings.proxy_url.get_secret_value()) if settings.proxy_url else None
        # Through a proxy the connector only ever reaches the proxy: targets are judged before each hop instead.
        self._target_guard = (
            GuardedResolver(policy, resolver) if self._proxy is not None and not policy.allow_private else None
        )
        self._timeout = httpx.Timeout(settings.timeout_seconds, connect=settings.connect_timeout_seconds).as_dict()
        self._headers = {
            "User-Agent": settings.user_agent,
            "Accept": "text/html,application/xhtml+xml,*/*;q=0.8",
            "Accept-Encoding": "gzip, deflate",
        }
        # Encoded once: a request copies an httpx.Headers as is, but encodes a dict's every name and value.
        self._default_headers = httpx.Headers(self._headers)

    def _session(self) -> aiohttp.ClientSession:
        options: dict[str, Any] = {
            "limit": self._settings.max_connections,
            "keepalive_timeout": _KEEPALIVE_SECONDS,
            "ttl_dns_cache": _DNS_CACHE_SECONDS,
        }
        if self._policy.allow_private or self._proxy is not None:
            connector = aiohttp.TCPConnector(resolver=self._resolver, **options)
        else:
            resolver = GuardedResolver(self._policy, self._resolver)
            connector = GuardedConnector(self._policy, resolver=resolver, **options)
        return aiohttp.ClientSession(connector=connector, trust_env=False)

    async def __aenter__(self) -> Self:
        # httpx requests and responses, sent straight through the transport: redirects, cookies and timeouts are
        # handled here per fetch, so httpx.AsyncClient's layers (its cookie jar, which must stay empty anyway so
        # no fetch's cookies reach another, header merging, redirect and auth hooks) only cost time: a fifth
        # of a crawled page's CPU (bench/crawl_vs_scrapy.py).
        # The transport loads a CA bundle into an SSL context of its own (25-50 ms before the first request,
        # docs/crawls.md "Start-up") for a client it would build itself. Ours comes from ``_session``, whose
        # connector verifies with aiohttp's default context, so the transport's is never used: an empty one
        # (it would still verify, against no CA) costs nothing.
        unused = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        self._transport = AiohttpTransport(client=self._session, proxy=self._proxy, verify=unused)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._transport is not None:
            await self._transport.aclose()
            self._transport = None
        if self._target_guard is not None:
            await self._target_guard.close()

    async def fetch(
        self,
        url: str,
        *,
        headers: dict[str, str] | None = None,
        timeout_seconds: float | None = None,
        max_body_bytes: int | None = None,
    ) -> FetchResult:
        """GET ``url`` following redirects. The timeout bounds the whole fetch, every hop included; it and the
        body cap default to the process settings, and a crawl's ``spec.fetch`` overrides them per call."""
        if self._transport is None:
            raise RuntimeError("Fetcher used outside its 'async with' block")
        timeout = timeout_seconds or self._settings.timeout_seconds
        # A crawl's spec.fetch.maxBodyBytes may lower the cap, never raise it past the process's ceiling.
        limit = min(max_body_bytes or self._settings.max_body_bytes, self._settings.max_body_bytes_ceiling)
        started = time.perf_counter()
        try:
            async with asyncio.timeout(timeout):
                request_headers = httpx.Headers(self._headers | headers) if headers else self._default_headers
                result = await self._follow(self._transport, url, request_headers, started, limit)
        except TimeoutError as exc:
            raise FetchTransient(f"fetch took longer than {timeout}s", code="timeout") from exc
        result.timings["total_ms"] = round((time.perf_counter() - started) * 1000, 3)
        return result

    async def _judge_target(self, url: str) -> None:
        """Through a proxy: resolve the target's host name here and refuse it if any address is blocked."""
        assert self._target_guard is not None
        host = httpx.URL(url).host
        try:
            ipaddress.ip_address(host)
        except ValueError:
            pass
        else:
            return  # an IP literal: check_literal judged it
        try:
            await self._target_guard.resolve(host, 0, socket.AF_UNSPEC)
        except OSError as exc:
            raise FetchTransient(f"could not resolve {host}: {exc}", code="dns_failure") from exc

    async def _follow(
        self, transport: AiohttpTransport, url: str, headers: httpx.Headers, started: float, limit: int
    ) -> FetchResult:
        jar: httpx.Cookies | None = None  # made at the first Set-Cookie: most fetches see none
        hops: list[RedirectHop] = []
        cookies: list[Cookie] = []
        current = url
        for _ in range(self._settings.max_redirects + 1):
            current = normalise_url(current)
            self._policy.check_literal(current)
            if self._target_guard is not None:
                await self._judge_target(current)
            request = httpx.Request("GET", current, headers=headers, extensions={"timeout": self._timeout})
            if jar:  # cookies set by an earlier hop of this fetch
                jar.set_cookie_header(request)
            try:
                response = await transport.handle_async_request(request)
                response.request = request
            except httpx.HTTPError as exc:
                raise _network_error(exc) from exc
            except aiohttp.ClientError as exc:
                raise _network_error(exc) from exc
            try:
                sent, read = _decode_headers(response.headers)
                if b"set-cookie" in read:  # the jar's parsing is costly; most pages set none
                    jar = jar if jar is not None else httpx.Cookies()
                    jar.extract_cookies(response)
                    cookies.extend(
                        cookie
                        for value in read[b"set-cookie"]
                        if (cookie := parse_set_cookie(value, current)) is not None
                    )
                if response.status_code in _REDIRECT_STATUSES:
                    location = _header(read, b"location")
                    if not location:
                        raise FetchPermanent(
                            f"HTTP {response.status_code} without a Location header", code="redirect_without_location"
                        )
                    target = urljoin(current, location.strip())
                    hops.append(RedirectHop(current, response.status_code, target))
                    current = target
                    continue
                first_byte = time.perf_counter()
                body, truncated = await _read_capped(response, _header(read, b"content-encoding"), limit)
            finally:
                await response.aclose()
            return FetchResult(
                url=url,
                final_url=current,
                status_code=response.status_code,
                headers=sent,
                body=body,
                content_type=_header(read, b"content-type"),
                content_length=_content_length(_header(read, b"content-length")),
                truncated=truncated,
                redirects=hops,
                cookies=cookies,
                timings={
                    "ttfb_ms": round((first_byte - started) * 1000, 3),
                    "download_ms": round((time.perf_counter() - first_byte) * 1000, 3),
                },
            )
        raise FetchPermanent(f"more than {self._settings.max_redirects} redirects", code="too_many_redirects")


# The response headers _follow reads; the others are only reported.
_READ_HEADERS = frozenset({b"set-cookie", b"location", b"content-type", b"content-length", b"content-encoding"})


def _decode_headers(headers: httpx.Headers) -> tuple[list[tuple[str, str]], dict[bytes, list[str]]]:
    """Every header as sent (original case and order, repeats kept), and the values of the ones ``_follow`` reads
    by lower-cased name, in one pass: each ``httpx.Headers`` look-up scans and decodes every header again.
    Decoded as httpx decodes them: ASCII, else (the whole set) UTF-8, else ISO-8859-1."""
    raw = headers.raw
    try:
        return _decoded(raw, "ascii")  # nearly always; httpx's own check would decode every header once more
    except UnicodeDecodeError:
        return _decoded(raw, headers.encoding)


def _decoded(raw: list[tuple[bytes, bytes]], encoding: str) -> tuple[list[tuple[str, str]], dict[bytes, list[str]]]:
    sent: list[tuple[str, str]] = []
    read: dict[bytes, list[str]] = {}
    for name, value in raw:
        text = value.decode(encoding)
        sent.append((name.decode(encoding), text))
        key = name.lower()
        if key in _READ_HEADERS:
            read.setdefault(key, []).append(text)
    return sent, read


def _header(read: dict[bytes, list[str]], name: bytes) -> str | None:
    """A header's value as ``httpx.Headers.get`` gives it: repeats joined by ``", "``, ``None`` when absent."""
    values = read.get(name)
    return ", ".join(values) if values else None


def _content_length(value: str | None) -> int | None:
    if value is None or not value.strip().isdigit():
        return None
    return int(value.strip())


async def _read_capped(response: httpx.Response, content_encoding: str | None, limit: int) -> tuple[bytes, bool]:
    """Read at most ``limit`` bytes (decoded); the rest is never downloaded, nor inflated."""
    decoder = BoundedDecoder(content_encoding)
    chunks: list[bytes] = []
    size = 0
    try:
        async for raw in response.aiter_raw():
            # One byte more than the cap tells "exactly the limit" from "more than the limit" when it is cheap.
            chunk = decoder.decode(raw, limit - size + 1)
            chunks.append(chunk)
            size += len(chunk)
            if size >= limit:
                # Stop here: a body of exactly the limit counts as truncated, since finding out whether
                # more follows would mean reading it.
                return b"".join(chunks)[:limit], True
    except httpx.HTTPError as exc:
        raise _network_error(exc) from exc
    except aiohttp.ClientError as exc:
        raise _network_error(exc) from exc
    return b"".join(chunks), False

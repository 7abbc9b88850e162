"""Bounded input: every attack of issue 12 that sent too much, or something the code did not expect, replayed
against the real API (a `kubecrawl api` process where memory is the question), a worker, PostgreSQL and RabbitMQ.

Memory is read from the kernel (``VmHWM``, the process's peak resident set), never timed.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import tracemalloc
import zlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from kubecrawl.api.enqueuing import MetadataEnqueuer
from kubecrawl.core import metrics
from kubecrawl.core.errors import InvalidValue
from kubecrawl.core.settings import FetchSettings, Settings
from kubecrawl.fetch.fetching import Fetcher
from kubecrawl.store.database import create_engine
from kubecrawl.store.opening import sql_stores
from tests.support.api import ApiHandle
from tests.support.apiprocess import ApiProcess
from tests.support.crawling import crawl_site, links, paths
from tests.support.environment import env_for
from tests.support.guarded import OPEN
from tests.support.sites import Page, Site

MiB = 1024 * 1024


# --- request bodies, against a real `kubecrawl api` process ------------------------------------------------------


@pytest.fixture
async def api_process(settings: Settings, tmp_path: Path) -> AsyncIterator[ApiProcess]:
    process = ApiProcess(env_for(settings), tmp_path / "api.log")
    await process.wait_ready()
    yield process
    process.close()


async def send_raw(port: int, head: bytes, body_chunks: Iterator[bytes]) -> tuple[bytes | None, int]:
    """Send a request head, then body chunks until the server answers or hangs up.

    Returns the answer's head (``None`` when the server reset the connection first: a server that closes with
    unread data resets it, and the reset may discard its answer) and how many body bytes the client got out.
    """
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    sent = 0

    async def write() -> None:
        nonlocal sent
        writer.write(head)
        with contextlib.suppress(ConnectionError):
            for chunk in body_chunks:
                writer.write(chunk)
                await writer.drain()
                sent += len(chunk)

    sending = asyncio.create_task(write())
    try:
        answer: bytes | None = await reader.readuntil(b"\r\n\r\n")
    except (ConnectionError, asyncio.IncompleteReadError):
        answer = None
    finally:
        sending.cancel()
        with contextlib.suppress(asyncio.CancelledError, ConnectionError):
            await sending
        writer.close()
    return answer, sent


def chunked(total: int, size: int = MiB) -> Iterator[bytes]:
    block = b"x" * size
    for _ in range(total // size):
        yield b"%x\r\n" % size + block + b"\r\n"
    yield b"0\r\n\r\n"


@pytest.mark.parametrize("path", ["/metadata", "/sites/default/big"])
async def test_a_300_mib_content_length_is_answered_413_before_any_body_is_sent(
    api_process: ApiProcess, path: str
) -> None:
    method = "PUT" if path.startswith("/sites") else "POST"
    head = f"{method} {path} HTTP/1.1\r\nHost: api\r\nContent-Type: application/json\r\nContent-Length: {300 * MiB}\r\n\r\n"
    answer, _ = await send_raw(api_process.port, head.encode(), iter(()))
    assert answer is not None
    assert answer.startswith(b"HTTP/1.1 413"), answer


@pytest.mark.parametrize("path", ["/metadata", "/sites/default/big"])
async def test_a_300_mib_chunked_body_is_refused_as_it_comes_and_never_held_in_memory(
    api_process: ApiProcess, path: str
) -> None:
    method = "PUT" if path.startswith("/sites") else "POST"
    head = (
        f"{method} {path} HTTP/1.1\r\nHost: api\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    before = api_process.peak_rss_mib()
    answer, sent = await send_raw(api_process.port, head.encode(), chunked(300 * MiB))
    if answer is not None:
        assert answer.startswith(b"HTTP/1.1 413"), answer
    # The server stopped taking the body soon after the limit: what the client got out is the limit plus socket
    # buffers (a few MiB), not the 300 MiB the server would have read to hold the body whole.
    assert sent < 32 * MiB
    # And the process's peak resident set grew by far less than the body (read whole, it reached about 1 GB).
    assert api_process.peak_rss_mib() - before < 32
    async with httpx.AsyncClient(base_url=api_process.url) as client:  # the API still serves
        ok = await client.post("/metadata", json={"url": "https://example.org/after"})
    assert ok.status_code == 202


async def test_a_chunked_body_over_the_limit_answers_413_with_its_code(api: ApiHandle) -> None:
    async def body() -> AsyncIterator[bytes]:
        yield b'{"url": "https://example.org/", "p": "'
        for _ in range(80):
            yield b"x" * 1024
        yield b'"}'

    for method, path in (("POST", "/metadata"), ("PUT", "/sites/default/s")):
        response = await api.client.request(method, path, content=body(), headers={"content-type": "application/json"})
        assert response.status_code == 413
        assert response.json()["code"] == "body_too_large"


async def test_a_body_just_under_the_limit_is_read_and_one_just_over_is_413(api: ApiHandle) -> None:
    limit = 64 * 1024
    body = '{"url": "https://example.org/"}'
    padding = " " * (limit - len(body))  # JSON whitespace: the body stays one known field (unknown ones are 400)
    under = await api.client.post(
        "/metadata", content=body[:-1] + padding + "}", headers={"content-type": "application/json"}
    )
    assert under.status_code == 202
    over = await api.client.post(
        "/metadata", content=body[:-1] + padding + " }", headers={"content-type": "application/json"}
    )
    assert over.status_code == 413
    assert over.json()["code"] == "body_too_large"


# --- parameters ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "code"),
    [
        ("GET", "/crawls/{id}/events", {"headers": {"Last-Event-ID": b"\xb2"}}, "invalid_last_event_id"),
        ("GET", "/crawls/{id}/events", {"headers": {"Last-Event-ID": "1" * 30}}, "invalid_last_event_id"),
        ("GET", "/crawls/{id}/events", {"headers": {"Last-Event-ID": "-1"}}, "invalid_last_event_id"),
        ("GET", "/crawls/{id}/pages", {"params": {"cursor": "²"}}, "invalid_cursor"),
        ("GET", "/crawls/{id}/pages", {"params": {"cursor": "9" * 30}}, "invalid_cursor"),
        ("GET", "/metadata", {"params": {"url": "https://example.org/", "max_age": "999999999999"}}, "invalid_request"),
        ("GET", "/metadata", {"params": {"url": "https://example.org/", "max_age": "²"}}, "invalid_request"),
        ("GET", "/crawls/a%00b", {}, "invalid_request"),
        ("GET", "/crawls/" + "a" * 100, {}, "invalid_request"),
    ],
)
async def test_bad_numbers_and_ids_answer_400_never_500(
    api: ApiHandle, method: str, path: str, kwargs: dict[str, object], code: str
) -> None:
    await api.client.put("/sites/default/s", json={"url": "https://example.org/"})
    crawl = (await api.client.post("/sites/default/s/crawls", json={"trigger": "manual"})).json()
    response = await api.client.request(method, path.replace("{id}", crawl["id"]), **kwargs)  # type: ignore[arg-type]
    assert response.status_code == 400, response.text
    assert response.json()["code"] == code


@pytest.mark.parametrize(
    ("url", "code"),
    [
        ("https://example.org/a\x00b", "invalid_url"),
        ("https://example.org/" + "a" * 6000, "url_too_long"),
        ("https://example.org/a\x1bb", "invalid_url"),
    ],
)
async def test_urls_with_nul_control_characters_or_over_the_limit_answer_400(
    api: ApiHandle, url: str, code: str
) -> None:
    response = await api.client.post("/metadata", json={"url": url})
    assert response.status_code == 400
    assert response.json()["code"] == code


async def test_a_nul_byte_in_a_site_spec_answers_400_not_database_unavailable(api: ApiHandle) -> None:
    response = await api.client.put(
        "/sites/default/nul", json={"url": "https://example.org/", "fetch": {"userAgent": "bot\u0000"}}
    )
    assert response.status_code == 400
    assert response.json()["code"] == "invalid_value"
    assert (await api.client.put("/sites/default/ok", json={"url": "https://example.org/"})).status_code == 201


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("include", ["(?<=a)b"]),  # lookbehind: not RE2
        ("include", ["x"] * 51),
        ("exclude", ["a" * 1025]),
        ("allowedHosts", ["h"] * 101),
    ],
)
async def test_scope_lists_and_patterns_are_bounded_and_re2(api: ApiHandle, field: str, value: list[str]) -> None:
    response = await api.client.put("/sites/default/s", json={"url": "https://example.org/", "scope": {field: value}})
    assert response.status_code == 400
    assert response.json()["code"] == "invalid_spec"


# --- one bad value in a batch ----------------------------------------------------------------------------------


async def test_a_nul_byte_in_a_batch_fails_only_its_own_request(api: ApiHandle, settings: Settings) -> None:
    # The API refuses NUL bytes before the database; this drives the batch writer itself with one, on the real
    # PostgreSQL and RabbitMQ, as any value the database refuses would reach it.
    engine = create_engine(settings.database_url.get_secret_value())
    try:
        pages = sql_stores(engine).pages
        enqueuer = MetadataEnqueuer(pages, api.publisher)
        urls = [f"https://example.org/{i}" for i in range(8)]
        bad = "https://example.org/nul\x00"
        results = await asyncio.gather(
            *(enqueuer.enqueue(url, f"r{i}") for i, url in enumerate([*urls[:4], bad, *urls[4:]])),
            return_exceptions=True,
        )
        assert [type(r).__name__ for r in results] == ["NoneType"] * 4 + ["InvalidValue"] + ["NoneType"] * 4
        assert isinstance(results[4], InvalidValue)
        for url in urls:
            record = await pages.get(url)
            assert record is not None
            assert record.status.value == "QUEUED"
    finally:
        await engine.dispose()


# --- links, patterns and bodies in the worker -----------------------------------------------------------------


async def test_an_over_long_link_is_skipped_and_counted_and_the_page_completes(
    api: ApiHandle, site: Site, worker: None
) -> None:
    long_link = "/" + "l" * 4000
    site.html("/", body=links("/a", long_link))
    site.html("/a", title="a")
    before = metrics.CRAWL_LINKS_SKIPPED.labels(reason="url_too_long")._value.get()
    crawl, pages = await crawl_site(api.client, "long", {"url": site.url("/")})
    assert crawl["state"] == "COMPLETED"
    assert paths(site, pages) == {"/", "/a"}
    assert site.hits[long_link] == 0
    assert metrics.CRAWL_LINKS_SKIPPED.labels(reason="url_too_long")._value.get() > before


async def test_a_catastrophic_scope_pattern_matches_in_linear_time(api: ApiHandle, site: Site, worker: None) -> None:
    # (a+)+$ against 40 a's and a '!': Python's re explores 2^40 paths (the crawl would never finish, this test
    # would hit its timeout); RE2 answers at once.
    site.html("/", body=links("/" + "a" * 40 + "!", "/b", "/b/aaaa"))
    site.html("/" + "a" * 40 + "!", title="not excluded: it does not end in a's")
    site.html("/b", title="b")
    crawl, pages = await crawl_site(api.client, "redos", {"url": site.url("/"), "scope": {"exclude": ["(a+)+$"]}})
    assert crawl["state"] == "COMPLETED"
    assert paths(site, pages) == {"/", "/b", "/" + "a" * 40 + "!"}


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "gzip, gzip"])
async def test_a_compression_bomb_is_inflated_no_further_than_the_body_cap(site: Site, encoding: str) -> None:
    body = b"\0" * (64 * MiB)
    for coding in [c.strip() for c in encoding.split(",")]:
        body = gzip.compress(body, compresslevel=9) if coding == "gzip" else zlib.compress(body, 9)
    site.pages["/bomb"] = Page(body, headers={"Content-Type": "text/html", "Content-Encoding": encoding})
    tracemalloc.start()
    try:
        async with Fetcher(FetchSettings(timeout_seconds=30, max_body_bytes=MiB), OPEN) as fetcher:
            result = await fetcher.fetch(site.url("/bomb"))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert result.truncated
    assert len(result.body) == MiB
    # Inflating one 16 KiB read whole produced 16 MiB at once (issue 12); bounded steps stay near the cap.
    assert peak < 4 * MiB


async def test_a_spec_max_body_bytes_above_the_ceiling_is_held_to_the_ceiling(site: Site) -> None:
    site.pages["/big"] = Page(b"x" * (3 * MiB), headers={"Content-Type": "text/html"})
    settings = FetchSettings(timeout_seconds=30, max_body_bytes=MiB, max_body_bytes_ceiling=2 * MiB)
    async with Fetcher(settings, OPEN) as fetcher:
        result = await fetcher.fetch(site.url("/big"), max_body_bytes=64 * MiB)
    assert result.truncated
    assert len(result.body) == 2 * MiB

"""``GET /crawls/{id}/events`` without servers: which outcomes each event carries, and how soon it is sent.

The endpoint is driven directly (its ``StreamingResponse`` body iterated) over a fake ``CrawlStore`` whose crawl
changes between the endpoint's reads, as it does when workers finish pages while a stream polls.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any, ClassVar

import pytest

from kubecrawl.api.routes import crawls as crawl_routes
from kubecrawl.api.serving import Lifecycle
from kubecrawl.core.models import Crawl, CrawlCounters, CrawlPage, CrawlPageState, CrawlState


def crawl(version: int, state: CrawlState = CrawlState.RUNNING) -> Crawl:
    return Crawl(
        id="c1",
        site="default/s",
        state=state,
        trigger="manual",
        idempotency_key=None,
        counters=CrawlCounters(fetched=version),
        in_flight=1,
        version=version,
        created_at=datetime.now(UTC),
    )


def page(seq: int) -> CrawlPage:
    return CrawlPage(id=seq, url=f"https://example.com/{seq}", depth=1, state=CrawlPageState.DONE, attempts=1, seq=seq)


class FakeCrawls:
    """A crawl read as ``reads`` in turn (the last one stays); the outcomes are the pages up to ``finished``."""

    def __init__(self, reads: list[Crawl]) -> None:
        self.reads = reads
        self.finished = 0  # pages finished so far: what outcomes_since can see
        self.on_read: Any = None

    async def get(self, crawl_id: str) -> Crawl | None:
        current = self.reads.pop(0) if len(self.reads) > 1 else self.reads[0]
        if self.on_read is not None:
            self.on_read(current)
        return current

    async def outcomes_since(self, crawl_id: str, seq: int, *, limit: int = 500) -> list[CrawlPage]:
        return [page(n) for n in range(seq + 1, self.finished + 1)][:limit]


class Connected:
    """The request as the endpoint reads it: connected, on an app with room for subscribers, no identity."""

    app = SimpleNamespace(
        state=SimpleNamespace(subscribers=crawl_routes.Subscribers(per_crawl=16, total=256), lifecycle=Lifecycle())
    )
    scope: ClassVar[dict[str, Any]] = {}  # no identity: authentication is off

    async def is_disconnected(self) -> bool:
        return False


def parse(chunks: list[str]) -> list[tuple[str, int, dict[str, Any]]]:
    events = []
    for chunk in chunks:
        fields = dict(line.split(": ", 1) for line in chunk.strip().splitlines() if not line.startswith(":"))
        if "event" in fields:
            events.append((fields["event"], int(fields["id"]), json.loads(fields["data"])))
    return events


async def collect(
    store: FakeCrawls, last_event_id: str | None, now: Callable[[], float] = lambda: 0.0
) -> list[tuple[float, str]]:
    """Every chunk of the stream with the time ``now`` says it arrived (a fake clock where the test needs one)."""
    response = await crawl_routes.crawl_events("c1", Connected(), store, last_event_id)  # type: ignore[arg-type]
    async with asyncio.timeout(10):
        return [
            (now(), chunk if isinstance(chunk, str) else bytes(chunk).decode())
            async for chunk in response.body_iterator
        ]


async def test_pages_finished_after_the_crawl_was_read_are_streamed_once_in_the_event_that_covers_them() -> None:
    # Read 1 (before the stream): version 1. Read 2 (first poll): version 2, but pages 3 and 4 finish right after
    # it, before the endpoint asks for the outcomes. Read 3: version 4 and COMPLETED.
    store = FakeCrawls([crawl(1), crawl(2), crawl(4, CrawlState.COMPLETED)])
    store.finished = 1

    def finish_more(current: Crawl) -> None:
        if current.version == 2:
            store.finished = 4  # committed right after this read, before outcomes_since

    store.on_read = finish_more
    chunks = await collect(store, last_event_id="0")
    events = parse([chunk for _, chunk in chunks])
    streamed = [p["seq"] for name, _, data in events if name == "progress" for p in data["pages"]]
    assert streamed == [1, 2, 3, 4]
    for name, event_id, data in events:
        if name == "progress":  # an event's id covers exactly the outcomes it and the earlier ones carried
            assert all(p["seq"] <= event_id for p in data["pages"])
    assert events[-1][0] == "completed"


async def test_a_page_outcome_reaches_the_stream_within_one_second(monkeypatch: pytest.MonkeyPatch) -> None:
    """On a fake clock: the stream's only pauses are its sleeps, so a page's delay is the time slept between its
    finishing and the event that carries it, whatever the machine's load."""
    clock = [0.0]
    finished_at: list[float] = []
    store = FakeCrawls([crawl(0)])
    real_sleep = asyncio.sleep

    async def fake_sleep(seconds: float) -> None:
        clock[0] += seconds
        await real_sleep(0)

    def finish_after_a_while(current: Crawl) -> None:
        if clock[0] >= 3 and not finished_at:  # polled a crawl with nothing new for a while; finished after a read
            store.finished = 1
            store.reads = [crawl(1, CrawlState.COMPLETED)]
            finished_at.append(clock[0])

    store.on_read = finish_after_a_while
    monkeypatch.setattr(crawl_routes.asyncio, "sleep", fake_sleep)
    chunks = await collect(store, last_event_id=None, now=lambda: clock[0])
    [(arrived, _)] = [(at, chunk) for at, chunk in chunks if '"seq":1' in chunk]
    assert arrived - finished_at[0] < 1.0
    assert parse([chunk for _, chunk in chunks])[-1][0] == "completed"


async def test_a_finished_crawl_sends_only_its_final_event() -> None:
    store = FakeCrawls([crawl(3, CrawlState.COMPLETED)])
    store.finished = 3
    events = parse([chunk for _, chunk in await collect(store, last_event_id=None)])
    assert [(name, event_id) for name, event_id, _ in events] == [("completed", 3)]


async def test_resuming_after_an_event_id_sends_only_the_later_outcomes_then_the_final_event() -> None:
    store = FakeCrawls([crawl(5, CrawlState.COMPLETED)])
    store.finished = 5
    events = parse([chunk for _, chunk in await collect(store, last_event_id="3")])
    assert [p["seq"] for name, _, data in events if name == "progress" for p in data["pages"]] == [4, 5]
    assert events[-1][:2] == ("completed", 5)

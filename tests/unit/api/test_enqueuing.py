"""The POST /metadata pipeline without servers: what is batched together, and what each request is answered."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import pytest

from kubecrawl.api.enqueuing import MetadataEnqueuer
from kubecrawl.broker.base import Outgoing, PublisherState
from kubecrawl.core.errors import PublishRejected, StoreUnavailable, TransientError

Request = tuple[str, str]


class FakeWriter:
    def __init__(self, pages: FakePages) -> None:
        self.pages = pages
        self.closed = False

    async def record(self, batch: Sequence[Request]) -> None:
        self.pages.recorded.append(list(batch))
        if self.pages.gate is not None:
            await self.pages.gate.wait()
        if self.pages.record_error is not None:
            self.closed = True
            raise self.pages.record_error

    async def close(self) -> None:
        self.closed = True
        if self.pages.on_close is not None:
            await self.pages.on_close()


class FakePages:
    def __init__(self) -> None:
        self.recorded: list[list[Request]] = []
        self.released: list[list[Request]] = []
        self.writers: list[FakeWriter] = []
        self.gate: asyncio.Event | None = None
        self.record_error: Exception | None = None
        self.release_error: Exception | None = None
        self.on_close: Callable[[], Awaitable[None]] | None = None

    async def request_writer(self) -> FakeWriter:
        writer = FakeWriter(self)
        self.writers.append(writer)
        return writer

    async def release_requests(self, batch: Sequence[Request]) -> None:
        self.released.append(list(batch))
        if self.release_error is not None:
            raise self.release_error


class FakeBatchPublisher:
    """Confirms everything, unless ``refuse`` says otherwise for a message id."""

    state = PublisherState.READY

    def __init__(self, refuse: Callable[[str], TransientError | None] = lambda _: None) -> None:
        self.batches: list[list[str]] = []
        self.refuse = refuse

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def publish(self, routing_key: str, body: bytes, *, message_id: str, **_: Any) -> None:
        raise AssertionError("a batch publisher is sent batches")

    async def publish_batch(
        self, routing_key: str, messages: Sequence[Outgoing], *, on_confirmed: Callable[[int], None] | None = None
    ) -> list[TransientError | None]:
        assert routing_key == "kubecrawl.metadata"
        self.batches.append([m.message_id for m in messages])
        outcomes = [self.refuse(m.message_id) for m in messages]
        for index, outcome in enumerate(outcomes):
            if outcome is None and on_confirmed is not None:
                on_confirmed(index)
        return outcomes


class FakeSinglePublisher:
    """A publisher without batches, like the embedded default's in-process broker."""

    state = PublisherState.READY

    def __init__(self) -> None:
        self.published: list[str] = []

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def publish(
        self,
        routing_key: str,
        body: bytes,
        *,
        message_id: str,
        headers: Mapping[str, Any] | None = None,
        log_context: Mapping[str, Any] | None = None,
    ) -> None:
        if message_id == "full":
            raise PublishRejected("queue is full")
        self.published.append(message_id)


def enqueuer(pages: FakePages, publisher: object) -> MetadataEnqueuer:
    return MetadataEnqueuer(pages, publisher)  # type: ignore[arg-type]


async def test_concurrent_requests_are_recorded_by_one_write_and_published_by_one_batch() -> None:
    pages, publisher = FakePages(), FakeBatchPublisher()
    pipeline = enqueuer(pages, publisher)
    await asyncio.gather(*(pipeline.enqueue(f"https://e.x/{i}", f"r{i}") for i in range(40)))
    assert pages.recorded == [[(f"https://e.x/{i}", f"r{i}") for i in range(40)]]
    assert publisher.batches == [[f"r{i}" for i in range(40)]]
    assert pages.released == []


async def test_a_lone_request_goes_alone_and_the_writer_is_returned_when_idle() -> None:
    pages, publisher = FakePages(), FakeBatchPublisher()
    pipeline = enqueuer(pages, publisher)
    await pipeline.enqueue("https://e.x/a", "ra")
    await pipeline.enqueue("https://e.x/b", "rb")
    assert pages.recorded == [[("https://e.x/a", "ra")], [("https://e.x/b", "rb")]]
    assert all(writer.closed for writer in pages.writers)


async def test_requests_arriving_during_a_write_form_the_next_batch_on_the_same_writer() -> None:
    pages, publisher = FakePages(), FakeBatchPublisher()
    pages.gate = asyncio.Event()
    pipeline = enqueuer(pages, publisher)
    first = asyncio.ensure_future(pipeline.enqueue("https://e.x/first", "r0"))
    while not pages.recorded:
        await asyncio.sleep(0)
    later = [asyncio.ensure_future(pipeline.enqueue(f"https://e.x/{i}", f"r{i}")) for i in range(1, 4)]
    await asyncio.sleep(0)
    assert len(pages.recorded) == 1
    pages.gate.set()
    await asyncio.gather(first, *later)
    assert pages.recorded == [[("https://e.x/first", "r0")], [(f"https://e.x/{i}", f"r{i}") for i in range(1, 4)]]
    assert len(pages.writers) == 1


async def test_a_request_arriving_while_the_idle_writer_is_being_closed_is_still_recorded() -> None:
    pages, publisher = FakePages(), FakeBatchPublisher()
    pipeline = enqueuer(pages, publisher)
    late: list[asyncio.Future[None]] = []

    async def closing() -> None:  # returning the connection to the pool takes an event-loop turn
        if not late:
            late.append(asyncio.ensure_future(pipeline.enqueue("https://e.x/late", "late")))
        await asyncio.sleep(0)

    pages.on_close = closing
    await pipeline.enqueue("https://e.x/first", "first")
    await asyncio.wait_for(late[0], timeout=5)
    assert pages.recorded == [[("https://e.x/first", "first")], [("https://e.x/late", "late")]]


async def test_batches_are_capped_at_max_batch() -> None:
    pages, publisher = FakePages(), FakeBatchPublisher()
    pipeline = MetadataEnqueuer(pages, publisher, max_batch=4)  # type: ignore[arg-type]
    await asyncio.gather(*(pipeline.enqueue(f"https://e.x/{i}", f"r{i}") for i in range(10)))
    assert [len(batch) for batch in pages.recorded] == [4, 4, 2]


async def test_a_failed_write_fails_every_request_of_the_batch_and_publishes_nothing() -> None:
    pages, publisher = FakePages(), FakeBatchPublisher()
    pages.record_error = StoreUnavailable("recording failed: ConnectionResetError")
    pipeline = enqueuer(pages, publisher)
    results = await asyncio.gather(
        *(pipeline.enqueue(f"https://e.x/{i}", f"r{i}") for i in range(5)), return_exceptions=True
    )
    assert all(isinstance(result, StoreUnavailable) for result in results)
    assert {result.code for result in results if isinstance(result, StoreUnavailable)} == {"database_unavailable"}
    assert len({id(result) for result in results}) == 5  # one exception per request, never a shared instance
    assert all(isinstance(result, BaseException) and result.__cause__ is pages.record_error for result in results)
    assert publisher.batches == []
    # the next batch gets a new writer and goes through
    pages.record_error = None
    await pipeline.enqueue("https://e.x/after", "after")
    assert publisher.batches == [["after"]]
    assert len(pages.writers) == 2


async def test_refused_messages_fail_their_requests_only_and_their_rows_are_released_together() -> None:
    pages = FakePages()
    publisher = FakeBatchPublisher(refuse=lambda rid: PublishRejected("queue full") if rid in {"r1", "r3"} else None)
    pipeline = enqueuer(pages, publisher)
    results = await asyncio.gather(
        *(pipeline.enqueue(f"https://e.x/{i}", f"r{i}") for i in range(5)), return_exceptions=True
    )
    assert [type(result).__name__ for result in results] == [
        "NoneType",
        "PublishRejected",
        "NoneType",
        "PublishRejected",
        "NoneType",
    ]
    assert pages.released == [[("https://e.x/1", "r1"), ("https://e.x/3", "r3")]]


async def test_a_failed_release_still_answers_the_publish_error() -> None:
    pages = FakePages()
    pages.release_error = OSError("database gone")
    publisher = FakeBatchPublisher(refuse=lambda _: PublishRejected("queue full"))
    pipeline = enqueuer(pages, publisher)
    with pytest.raises(PublishRejected):
        await pipeline.enqueue("https://e.x/a", "ra")


async def test_an_unexpected_error_answers_every_request_with_a_runtime_error_chained_to_it() -> None:
    pages = FakePages()
    bug = ValueError("a bug")

    def refuse(_: str) -> TransientError | None:
        raise bug

    pipeline = enqueuer(pages, FakeBatchPublisher(refuse=refuse))
    results = await asyncio.gather(pipeline.enqueue("https://e.x/a", "a"), return_exceptions=True)
    assert isinstance(results[0], RuntimeError)
    assert results[0].__cause__ is bug


async def test_a_request_cancelled_before_its_write_is_left_out() -> None:
    pages, publisher = FakePages(), FakeBatchPublisher()
    pipeline = enqueuer(pages, publisher)
    kept = asyncio.ensure_future(pipeline.enqueue("https://e.x/kept", "kept"))
    dropped = asyncio.ensure_future(pipeline.enqueue("https://e.x/dropped", "dropped"))
    await asyncio.sleep(0)  # both wait; the recorder has not run yet
    dropped.cancel()
    await kept
    with pytest.raises(asyncio.CancelledError):
        await dropped
    assert pages.recorded == [[("https://e.x/kept", "kept")]]
    assert publisher.batches == [["kept"]]


async def test_a_publisher_without_batches_publishes_one_message_after_the_other() -> None:
    pages, publisher = FakePages(), FakeSinglePublisher()
    pipeline = enqueuer(pages, publisher)
    results = await asyncio.gather(
        pipeline.enqueue("https://e.x/a", "ra"),
        pipeline.enqueue("https://e.x/full", "full"),
        pipeline.enqueue("https://e.x/b", "rb"),
        return_exceptions=True,
    )
    assert results[0] is None
    assert isinstance(results[1], PublishRejected)
    assert results[2] is None
    assert publisher.published == ["ra", "rb"]
    assert pages.released == [[("https://e.x/full", "full")]]

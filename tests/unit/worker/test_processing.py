"""The metadata pipeline's settling without servers: what is acked, retried, requeued or dead-lettered, and why."""

from __future__ import annotations

import pytest
from sqlalchemy.exc import TimeoutError as PoolTimeout

from kubecrawl.core.contracts import MetadataTask
from kubecrawl.core.errors import FetchTransient, PublisherNotReady
from kubecrawl.core.settings import RetrySettings
from kubecrawl.store.contract import AttemptStart
from kubecrawl.worker import settling
from kubecrawl.worker.processing import MetadataPipeline
from tests.support.fakes import FakeDelivery, FakeFetcher, FakePages, FakePublisher

URL = "https://example.com/page"


def metadata_delivery(body: bytes | None = None) -> FakeDelivery:
    task = MetadataTask(url=URL, request_id="r1").model_dump_json().encode()
    return FakeDelivery(body if body is not None else task, queue="kubecrawl.metadata", message_id="r1")


def pipeline(pages: FakePages, publisher: FakePublisher, fetcher: FakeFetcher | None = None) -> MetadataPipeline:
    return MetadataPipeline(
        pages=pages,  # type: ignore[arg-type]
        fetcher=fetcher or FakeFetcher(AssertionError("must not fetch")),  # type: ignore[arg-type]
        publisher=publisher,
        retry=RetrySettings(max_attempts=3, base_delay_seconds=1, max_delay_seconds=1),
    )


async def test_a_database_pool_timeout_retries_through_a_delay_tier_without_counting_an_attempt() -> None:
    delivery, publisher = metadata_delivery(), FakePublisher()
    await pipeline(FakePages(PoolTimeout("QueuePool limit reached")), publisher).handle(delivery)
    [(queue, headers)] = publisher.published
    assert queue.startswith("kubecrawl.metadata.retry.")
    assert (headers["x-kubecrawl-code"], headers["x-kubecrawl-attempt"]) == ("database_unavailable", 0)
    assert delivery.settled == ["ack"]


async def test_a_message_that_exceeded_its_attempts_is_failed_and_dead_lettered_with_the_reason_unfetched() -> None:
    delivery, publisher, pages = metadata_delivery(), FakePublisher(), FakePages(AttemptStart(4, already_done=False))
    await pipeline(pages, publisher).handle(delivery)
    assert [(f["code"], f["permanent"]) for f in pages.failed] == [("max_attempts_exceeded", True)]
    [(queue, headers)] = publisher.published
    assert queue == "kubecrawl.dead"
    assert headers["x-kubecrawl-code"] == "max_attempts_exceeded"
    assert "gave up after 3 attempts" in headers["x-kubecrawl-reason"]
    assert headers["x-kubecrawl-source-queue"] == "kubecrawl.metadata"
    assert delivery.settled == ["ack"]


async def test_a_redelivered_message_whose_result_is_stored_is_acked_without_fetching() -> None:
    delivery, publisher = metadata_delivery(), FakePublisher()
    await pipeline(FakePages(AttemptStart(0, already_done=True)), publisher).handle(delivery)
    assert publisher.published == []
    assert delivery.settled == ["ack"]


async def test_a_transient_failure_retries_with_its_attempt_and_the_last_attempt_dead_letters() -> None:
    transient = FetchTransient("connection refused", code="connect_error")
    first, publisher, pages = metadata_delivery(), FakePublisher(), FakePages(AttemptStart(1, already_done=False))
    await pipeline(pages, publisher, FakeFetcher(transient)).handle(first)
    last, dead_pages = metadata_delivery(), FakePages(AttemptStart(3, already_done=False))
    await pipeline(dead_pages, publisher, FakeFetcher(transient)).handle(last)
    (retry_queue, retry_headers), (dead_queue, dead_headers) = publisher.published
    assert retry_queue.startswith("kubecrawl.metadata.retry.")
    assert (retry_headers["x-kubecrawl-code"], retry_headers["x-kubecrawl-attempt"]) == ("connect_error", 1)
    assert [f["permanent"] for f in pages.failed] == [False]
    assert dead_queue == "kubecrawl.dead"
    assert "gave up after 3 attempts" in dead_headers["x-kubecrawl-reason"]
    assert [f["permanent"] for f in dead_pages.failed] == [True]
    assert first.settled == last.settled == ["ack"]


async def test_a_poison_message_is_dead_lettered_as_invalid_message() -> None:
    delivery, publisher = metadata_delivery(b'{"schema_version": 2, "url": "x"}'), FakePublisher()
    await pipeline(FakePages(AssertionError("must not start")), publisher).handle(delivery)
    [(queue, headers)] = publisher.published
    assert (queue, headers["x-kubecrawl-code"]) == ("kubecrawl.dead", "invalid_message")
    assert delivery.settled == ["ack"]


async def test_a_dead_letter_that_cannot_be_published_is_rejected_to_the_queues_dead_letter_exchange() -> None:
    delivery = metadata_delivery(b"not json")
    await pipeline(FakePages(AssertionError("must not start")), FakePublisher(PublisherNotReady())).handle(delivery)
    assert delivery.settled == ["reject"]


async def test_an_unexpected_error_puts_the_message_back_after_a_pause(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(settling, "_REQUEUE_PAUSE_SECONDS", 0)
    delivery, publisher = metadata_delivery(), FakePublisher()
    fetcher = FakeFetcher(RuntimeError("extractor bug"))
    await pipeline(FakePages(AttemptStart(1, already_done=False)), publisher, fetcher).handle(delivery)
    assert fetcher.calls == 1
    assert publisher.published == []
    assert delivery.settled == ["requeue"]

"""The publisher's shutdown with confirms in flight, against the real broker (docs/queues.md, "Shutdown"): every
publish under way when ``close()`` is called ends with an outcome (confirmed, or a failure the caller sees), none
hangs, and every message reported confirmed is in the queue.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import aio_pika
import pytest
from structlog.testing import capture_logs

from kubecrawl.broker.base import PublisherState
from kubecrawl.broker.publishing import Outgoing, RabbitPublisher
from kubecrawl.core.errors import TransientError
from kubecrawl.core.settings import PublisherSettings
from tests.support.polling import eventually
from tests.support.servers import RabbitServer

QUEUE = "kubecrawl.metadata"
BATCHES, PER_BATCH = 8, 100  # 800 messages: inside the queue's 1,000


async def _publisher(rabbit: RabbitServer, vhost: str, **settings: float) -> RabbitPublisher:
    publisher = RabbitPublisher(
        rabbit.url(vhost), PublisherSettings(**settings), metadata_max_length=1000, pages_max_length=10
    )
    await publisher.start()
    return publisher


async def _depth(rabbit: RabbitServer, vhost: str) -> int:
    """The queue's message count as the broker knows it now (a passive declare; the management API's lags)."""
    connection = await aio_pika.connect(rabbit.url(vhost))
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(QUEUE, passive=True)
        count = queue.declaration_result.message_count
        assert count is not None
        return count


def _publishes(
    publisher: RabbitPublisher, first_confirm: asyncio.Event
) -> list[asyncio.Task[list[TransientError | None]]]:
    def confirmed(_: int) -> None:
        first_confirm.set()

    return [
        asyncio.ensure_future(
            publisher.publish_batch(
                QUEUE,
                [Outgoing(b'{"n": %d}' % (b * PER_BATCH + i), f"s{b}-{i}") for i in range(PER_BATCH)],
                on_confirmed=confirmed,
            )
        )
        for b in range(BATCHES)
    ]


async def test_close_waits_for_the_confirms_in_flight_and_every_confirmed_message_is_queued(
    rabbit: RabbitServer, vhost: str
) -> None:
    publisher = await _publisher(rabbit, vhost, shutdown_timeout_seconds=30)
    first_confirm = asyncio.Event()
    tasks = _publishes(publisher, first_confirm)
    await first_confirm.wait()  # confirms are arriving: the rest are in flight
    assert not all(task.done() for task in tasks)
    with capture_logs() as logs:
        await publisher.close()
    assert all(task.done() for task in tasks)  # close returned only after every publish had its outcome
    outcomes = [outcome for task in tasks for outcome in task.result()]
    assert outcomes == [None] * (BATCHES * PER_BATCH)
    assert await _depth(rabbit, vhost) == BATCHES * PER_BATCH
    assert publisher.state is PublisherState.CLOSED
    (shutdown,) = [entry for entry in logs if entry["event"] == "publisher_shutdown"]
    assert shutdown["waited_for"] > 0


@pytest.fixture
def publishing_blocked(rabbit: RabbitServer) -> Iterator[None]:
    """A memory alarm: the broker stops reading from publishing connections, so no confirm can arrive."""
    rabbit.ctl("set_vm_memory_high_watermark", "0")
    yield
    rabbit.ctl("set_vm_memory_high_watermark", "0.4")


async def test_close_past_its_timeout_fails_each_unconfirmed_publish_and_nothing_hangs(
    rabbit: RabbitServer, vhost: str, publishing_blocked: None
) -> None:
    publisher = await _publisher(rabbit, vhost, shutdown_timeout_seconds=0.5, confirm_timeout_seconds=300)
    never = asyncio.Event()
    tasks = _publishes(publisher, never)
    await eventually(lambda: publisher.in_flight == BATCHES * PER_BATCH, what="every batch sent")
    # A deadline against a hang, not a measurement: the confirm timeout (300 s) is far beyond it.
    async with asyncio.timeout(60):
        with capture_logs() as logs:
            await publisher.close()
        outcomes = [outcome for result in await asyncio.gather(*tasks) for outcome in result]
    assert not never.is_set()
    assert len(outcomes) == BATCHES * PER_BATCH
    assert all(isinstance(outcome, TransientError) for outcome in outcomes), {type(o) for o in outcomes}
    assert {outcome.code for outcome in outcomes if outcome is not None} == {"connection_lost"}
    assert publisher.state is PublisherState.CLOSED
    assert [entry["in_flight"] for entry in logs if entry["event"] == "publisher_shutdown_timeout"] == [
        BATCHES * PER_BATCH
    ]

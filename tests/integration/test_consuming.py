"""Publishes and acks of one event-loop turn share a socket write (FrameWriter) and each keeps its own outcome."""

from __future__ import annotations

import asyncio

from kubecrawl.broker.base import Delivery
from kubecrawl.broker.consuming import RabbitConsumer
from kubecrawl.broker.publishing import RabbitPublisher
from kubecrawl.broker.topology import METADATA_QUEUE
from kubecrawl.core.errors import PublishRejected
from kubecrawl.core.settings import PublisherSettings
from tests.support.polling import eventually
from tests.support.servers import RabbitServer


def _queued(rabbit: RabbitServer, vhost: str, count: int) -> list[bytes]:
    return [m["payload"].encode() for m in rabbit.peek(vhost, METADATA_QUEUE, count)]


async def test_publishes_of_one_turn_are_confirmed_each_and_an_unroutable_one_alone_is_refused(
    rabbit: RabbitServer, vhost: str
) -> None:
    publisher = RabbitPublisher(rabbit.url(vhost), PublisherSettings(), metadata_max_length=1000, pages_max_length=10)
    await publisher.start()
    try:
        routes = [METADATA_QUEUE] * 30
        routes[7] = "kubecrawl.no-such-queue"  # a basic.return is matched to its publish by delivery tag
        outcomes = await asyncio.gather(
            *(publisher.publish(route, b'{"n": %d}' % i, message_id=f"m{i}") for i, route in enumerate(routes)),
            return_exceptions=True,
        )
        assert [type(outcome) for outcome in outcomes] == [type(None)] * 7 + [PublishRejected] + [type(None)] * 22
        assert _queued(rabbit, vhost, 100) == [b'{"n": %d}' % i for i in range(30) if i != 7]
    finally:
        await publisher.close()


async def publisher_and_consumer(url: str, *, prefetch_count: int, name: str) -> tuple[RabbitPublisher, RabbitConsumer]:
    """A started publisher and a consumer of ``prefetch_count`` on one vhost (small queue bounds)."""
    publisher = RabbitPublisher(url, PublisherSettings(), metadata_max_length=1000, pages_max_length=10)
    await publisher.start()
    consumer = RabbitConsumer(
        url,
        PublisherSettings(),
        prefetch_count=prefetch_count,
        metadata_max_length=1000,
        pages_max_length=10,
        connection_name=name,
    )
    return publisher, consumer


async def test_acks_of_handlers_resumed_together_all_reach_the_broker(rabbit: RabbitServer, vhost: str) -> None:
    publisher, consumer = await publisher_and_consumer(rabbit.url(vhost), prefetch_count=20, name="test-consumer")
    count = 40
    received: list[bytes] = []
    batch_full = asyncio.Event()

    async def handle(delivery: Delivery) -> None:
        received.append(delivery.body)
        if len(received) % 20 == 0:
            batch_full.set()
        await batch_full.wait()  # every handler of a prefetch window resumes in the same turn, then acks
        batch_full.clear()
        await delivery.ack()

    try:
        for i in range(count):
            await publisher.publish(METADATA_QUEUE, b'{"n": %d}' % i, message_id=f"a{i}")
        await consumer.start({METADATA_QUEUE: handle})
        await eventually(lambda: len(received) >= count, interval=0.05, what=f"{count} messages handled")
        await consumer.drain(timeout_seconds=30)
    finally:
        await consumer.close()
        await publisher.close()
    assert sorted(received) == sorted(b'{"n": %d}' % i for i in range(count))
    # An ack that did not reach the broker would have put its message back when the consumer's channel closed.
    assert _queued(rabbit, vhost, 100) == []


async def test_the_consumer_takes_at_most_prefetch_count_unacked_messages(rabbit: RabbitServer, vhost: str) -> None:
    publisher, consumer = await publisher_and_consumer(rabbit.url(vhost), prefetch_count=3, name="test-prefetch")
    received: list[bytes] = []
    release = asyncio.Event()

    async def handle(delivery: Delivery) -> None:
        received.append(delivery.body)
        await release.wait()
        await delivery.ack()

    def consumers() -> list[dict[str, object]]:
        listed = rabbit.api(f"/api/consumers/{vhost}")
        assert isinstance(listed, list)
        return [c for c in listed if c["queue"]["name"] == METADATA_QUEUE]

    try:
        for i in range(10):
            await publisher.publish(METADATA_QUEUE, b'{"n": %d}' % i, message_id=f"p{i}")
        await consumer.start({METADATA_QUEUE: handle})
        await eventually(lambda: len(received) >= 3, interval=0.05, what="a prefetch window handled")
        await eventually(lambda: asyncio.to_thread(consumers), interval=0.05, what="the consumer registered")
        [registered] = await asyncio.to_thread(consumers)
        assert registered["prefetch_count"] == 3
        assert registered["ack_required"] is True
        assert len(received) == 3  # the other seven wait in the queue until these are acked
        release.set()
        await eventually(lambda: len(received) >= 10, interval=0.05, what="every message handled")
        await consumer.drain(timeout_seconds=30)
    finally:
        release.set()
        await consumer.close()
        await publisher.close()
    assert _queued(rabbit, vhost, 100) == []


async def test_a_connected_consumer_takes_nothing_until_it_starts_consuming(rabbit: RabbitServer, vhost: str) -> None:
    publisher, consumer = await publisher_and_consumer(rabbit.url(vhost), prefetch_count=5, name="test-connect")
    received: list[bytes] = []

    async def handle(delivery: Delivery) -> None:
        received.append(delivery.body)
        await delivery.ack()

    try:
        await consumer.connect()  # the worker does this while it reaches the database (worker/runtime.py)
        await publisher.publish(METADATA_QUEUE, b'{"n": 1}', message_id="c1")
        assert not consumer.consuming  # not ready: no handler consumes yet
        assert _queued(rabbit, vhost, 10) == [b'{"n": 1}']
        await consumer.start({METADATA_QUEUE: handle})
        assert consumer.consuming
        await eventually(lambda: received == [b'{"n": 1}'], interval=0.05, what="the message handled")
        await consumer.drain(timeout_seconds=30)
    finally:
        await consumer.close()
        await publisher.close()

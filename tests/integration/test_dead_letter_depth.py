"""kubecrawl_dead_letter_messages (kubecrawl.operator.pool.deadletters) against a real RabbitMQ."""

from __future__ import annotations

import uuid

import aio_pika
from prometheus_client import REGISTRY

from kubecrawl.broker.topology import DEAD_LETTER_QUEUE, declare_topology
from kubecrawl.operator.pool import deadletters
from kubecrawl.operator.pool.probing import AmqpDepth, BrokerProbe
from kubecrawl.operator.settings import OperatorSettings
from tests.support.servers import RabbitServer


def exported(queue: str) -> float | None:
    return REGISTRY.get_sample_value("kubecrawl_dead_letter_messages", {"queue": queue})


async def test_the_dead_letter_queues_depth_is_exported_and_dropped_when_unreadable(rabbit: RabbitServer) -> None:
    # The operator's default names the queue the broker code declares.
    assert OperatorSettings().dead_letter_queue == DEAD_LETTER_QUEUE
    url = rabbit.add_vhost("dead_" + uuid.uuid4().hex[:8])
    connection = await aio_pika.connect(url)
    probe = BrokerProbe(AmqpDepth(url, timeout=5), None)
    try:
        channel = await connection.channel()
        await declare_topology(channel, metadata_max_length=1000, pages_max_length=1000)
        for _ in range(3):
            await channel.default_exchange.publish(aio_pika.Message(b"{}"), routing_key=DEAD_LETTER_QUEUE)
        assert await deadletters.read_once(probe, DEAD_LETTER_QUEUE) == 3
        assert exported(DEAD_LETTER_QUEUE) == 3
        # A queue that cannot be read: no stale value left behind.
        missing = "kubecrawl.missing." + uuid.uuid4().hex[:6]
        assert await deadletters.read_once(probe, missing) is None
        assert exported(missing) is None
        await channel.queue_delete(DEAD_LETTER_QUEUE)
        assert await deadletters.read_once(probe, DEAD_LETTER_QUEUE) is None
        assert exported(DEAD_LETTER_QUEUE) is None
    finally:
        await probe.close()
        await connection.close()

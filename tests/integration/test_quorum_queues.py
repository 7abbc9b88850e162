"""``KUBECRAWL_QUEUE_TYPE=quorum`` (docs/queues.md, "Queue type") on the real broker: the work queues and their
retry tiers are quorum queues with a delivery limit, a retry whose work queue is full waits in its tier instead
of being dropped (at-least-once dead-lettering; a classic tier drops it), and a worker serves requests as on
classic queues."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aio_pika
import httpx
import pytest

from kubecrawl.broker.topology import METADATA_QUEUE, QUORUM_DELIVERY_LIMIT, declare_topology, retry_queue_name
from kubecrawl.core.settings import Settings
from tests.support.api import running_api
from tests.support.polling import eventually
from tests.support.servers import RabbitServer
from tests.support.sites import Site

TIER = retry_queue_name(METADATA_QUEUE, 1)


@pytest.fixture
async def channel(rabbit: RabbitServer, vhost: str) -> AsyncIterator[aio_pika.abc.AbstractChannel]:
    connection = await aio_pika.connect(rabbit.url(vhost))
    async with connection:
        yield await connection.channel(publisher_confirms=True)


async def _depth(channel: aio_pika.abc.AbstractChannel, name: str) -> int:
    declared = await channel.declare_queue(name, passive=True)
    count = declared.declaration_result.message_count
    assert count is not None
    return count


async def _full_work_queue_and_an_expired_retry(channel: aio_pika.abc.AbstractChannel, queue_type: str) -> None:
    """A work queue of one message, full, and a message in its 1 s retry tier whose TTL then runs out."""
    await declare_topology(channel, metadata_max_length=1, pages_max_length=1, queue_type=queue_type)
    await channel.default_exchange.publish(aio_pika.Message(b'{"first": 1}'), routing_key=METADATA_QUEUE)
    await channel.default_exchange.publish(aio_pika.Message(b'{"retry": 1}'), routing_key=TIER)


async def test_quorum_queues_are_declared_with_a_delivery_limit(rabbit: RabbitServer, vhost: str) -> None:
    async with await aio_pika.connect(rabbit.url(vhost)) as connection:
        await declare_topology(
            await connection.channel(), metadata_max_length=10, pages_max_length=10, queue_type="quorum"
        )
    work, tier, dead = (rabbit.queue(vhost, name) for name in (METADATA_QUEUE, TIER, "kubecrawl.dead"))
    assert (work["type"], tier["type"], dead["type"]) == ("quorum", "quorum", "classic")
    assert work["arguments"]["x-delivery-limit"] == QUORUM_DELIVERY_LIMIT
    assert work["arguments"]["x-dead-letter-strategy"] == "at-least-once"


async def test_a_quorum_retry_tier_keeps_its_message_while_the_work_queue_is_full(
    channel: aio_pika.abc.AbstractChannel,
) -> None:
    await _full_work_queue_and_an_expired_retry(channel, "quorum")
    work = await channel.declare_queue(METADATA_QUEUE, passive=True)
    # The tier's message has expired (1 s) and cannot move: it waits, until the work queue has room.
    first = await eventually(lambda: work.get(fail=False), timeout=30, what="the work queue's first message")
    assert first.body == b'{"first": 1}'
    await first.ack()
    moved = await eventually(lambda: work.get(fail=False), timeout=30, what="the retry, moved into the work queue")
    assert moved.body == b'{"retry": 1}'
    await moved.ack()


async def test_a_classic_retry_tier_drops_its_message_when_the_work_queue_is_full(
    channel: aio_pika.abc.AbstractChannel,
) -> None:
    """What quorum queues fix, shown on classic ones (the caveat in docs/queues.md)."""
    await _full_work_queue_and_an_expired_retry(channel, "classic")

    async def tier_emptied() -> bool:
        return await _depth(channel, TIER) == 0

    await eventually(tier_emptied, timeout=30, what="the tier's message expired")
    assert await _depth(channel, METADATA_QUEUE) == 1  # the retry went nowhere


async def test_a_worker_serves_metadata_requests_on_quorum_queues(settings: Settings, worker_quorum: None) -> None:
    del worker_quorum
    site = Site()
    site.html("/", title="on quorum")
    await site.start()
    try:
        async with running_api(settings.model_copy(update={"queue_type": "quorum"})) as api:
            url = site.url("/")
            assert (await api.client.post("/metadata", json={"url": url})).status_code == 202

            async def done() -> httpx.Response | None:
                answer = await api.client.get("/metadata", params={"url": url})
                return answer if answer.status_code == 200 else None

            record = (await eventually(done, timeout=60, what="the record fetched")).json()
            assert record["title"] == "on quorum"
    finally:
        await site.stop()


@pytest.fixture
async def worker_quorum(settings: Settings) -> AsyncIterator[None]:
    from kubecrawl.worker.runtime import run_worker

    stop = asyncio.Event()
    task = asyncio.create_task(run_worker(settings.model_copy(update={"queue_type": "quorum"}), stop=stop))
    yield
    stop.set()
    await asyncio.wait_for(task, 30)

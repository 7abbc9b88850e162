"""The in-process broker as a ``Consumer``: draining lets the running handlers finish and takes nothing new."""

from __future__ import annotations

import asyncio

from kubecrawl.broker.base import Delivery
from kubecrawl.broker.memory import MemoryBroker
from kubecrawl.broker.topology import METADATA_QUEUE, PAGES_QUEUE
from tests.support.polling import eventually


async def started(concurrency: int) -> MemoryBroker:
    broker = MemoryBroker(max_lengths={METADATA_QUEUE: 10, PAGES_QUEUE: 10}, concurrency=concurrency)
    await broker.start()
    return broker


async def test_drain_waits_for_the_running_handlers_and_leaves_the_rest_queued() -> None:
    broker, release, handled = await started(concurrency=2), asyncio.Event(), []

    async def handle(delivery: Delivery) -> None:
        await release.wait()
        handled.append(delivery.message_id)
        await delivery.ack()

    for n in range(3):
        await broker.publish(METADATA_QUEUE, b"{}", message_id=f"m{n}")
    await broker.consumer.start({METADATA_QUEUE: handle})
    await eventually(lambda: broker.depth(METADATA_QUEUE) == 1, what="two messages taken")
    draining = asyncio.ensure_future(broker.consumer.drain(timeout_seconds=30))
    await asyncio.sleep(0)  # drain has stopped the idle workers; the two busy ones are waiting on ``release``
    release.set()
    await draining
    assert sorted(handled) == ["m0", "m1"]
    assert [d.message_id for d in broker.take(METADATA_QUEUE)] == ["m2"]
    await broker.close()


async def test_a_handler_still_running_at_the_drain_deadline_is_cancelled_and_its_message_put_back() -> None:
    broker = await started(concurrency=1)
    entered = asyncio.Event()

    async def hang(delivery: Delivery) -> None:
        entered.set()
        await asyncio.Event().wait()

    await broker.publish(METADATA_QUEUE, b"{}", message_id="stuck")
    await broker.consumer.start({METADATA_QUEUE: hang})
    await entered.wait()
    await broker.consumer.drain(timeout_seconds=0)
    [back] = broker.take(METADATA_QUEUE)
    assert (back.message_id, back.redelivered) == ("stuck", True)
    await broker.close()

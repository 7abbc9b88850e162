"""FrameWriter and RabbitDelivery's ack without a broker: frames of one loop turn share a write, in order."""

from __future__ import annotations

import asyncio
from typing import Any, cast

import aio_pika.abc
import aio_pika.exceptions
import aiormq
import pytest
from aiormq.abc import ChannelFrame
from pamqp.commands import Basic

from kubecrawl.broker.consuming import RabbitConsumer, RabbitDelivery
from kubecrawl.broker.framing import FrameWriter
from kubecrawl.core.settings import PublisherSettings


class FakeChannel:
    """What FrameWriter and the ack use of an aiormq channel."""

    def __init__(self, number: int = 3, queue_size: int = 10) -> None:
        self.number = number
        self.is_closed = False
        self.write_queue: asyncio.Queue[Any] = asyncio.Queue(maxsize=queue_size)

    def taken(self) -> bytes:
        """What aiormq's writer would write for the next queue item."""
        return cast("bytes", self.write_queue.get_nowait().payload)


class FakeMessage:
    def __init__(self, channel: FakeChannel, delivery_tag: int) -> None:
        self.channel = channel
        self.delivery_tag = delivery_tag
        self.rejected: list[bool] = []

    async def reject(self, requeue: bool = False) -> None:
        self.rejected.append(requeue)


def _writer(channel: FakeChannel) -> FrameWriter:
    return FrameWriter(cast("aiormq.Channel", channel))


def _consumer() -> RabbitConsumer:
    return RabbitConsumer(
        "amqp://unused",
        PublisherSettings(),
        prefetch_count=4,
        metadata_max_length=10,
        pages_max_length=10,
        connection_name="test",
    )


def _delivery(message: FakeMessage, consumer: RabbitConsumer) -> RabbitDelivery:
    return RabbitDelivery("kubecrawl.pages", cast("aio_pika.abc.AbstractIncomingMessage", message), consumer)


async def test_writes_while_the_last_item_waits_join_it_and_later_ones_start_the_next() -> None:
    channel = FakeChannel()
    writer = _writer(channel)
    await writer.write(b"a")
    await writer.write(b"b")
    assert channel.write_queue.qsize() == 1
    assert channel.taken() == b"ab"
    await writer.write(b"c")  # the writer took the first item: a new one, behind it
    await writer.write(b"d")
    assert channel.write_queue.qsize() == 1
    assert channel.taken() == b"cd"


async def test_frames_of_a_channel_that_closed_before_the_writer_took_them_are_dropped() -> None:
    channel = FakeChannel()
    writer = _writer(channel)
    await writer.write(b"ack")
    channel.is_closed = True
    assert channel.taken() == b""


async def test_a_write_that_waits_for_a_full_queue_lands_even_if_its_caller_is_cancelled() -> None:
    channel = FakeChannel(queue_size=1)
    channel.write_queue.put_nowait(ChannelFrame(payload=b"other", should_close=False))
    writer = _writer(channel)
    blocked = asyncio.ensure_future(writer.write(b"first"))
    await asyncio.sleep(0)
    await writer.write(b"second")  # joins the item that waits for room
    blocked.cancel()
    await asyncio.sleep(0)
    assert channel.write_queue.get_nowait().payload == b"other"
    await asyncio.sleep(0)  # the shielded put goes on
    assert channel.taken() == b"firstsecond"


async def test_ack_queues_the_same_frame_as_aiormq_and_acks_of_one_turn_share_a_write() -> None:
    channel = FakeChannel(number=5)
    consumer = _consumer()
    await asyncio.gather(*(_delivery(FakeMessage(channel, tag), consumer).ack() for tag in (7, 8, 9)))
    expected = b"".join(
        ChannelFrame.marshall(channel_number=5, frames=[Basic.Ack(delivery_tag=tag)]).payload for tag in (7, 8, 9)
    )
    assert channel.taken() == expected
    assert channel.write_queue.empty()


async def test_a_delivery_settles_once() -> None:
    channel = FakeChannel()
    consumer = _consumer()
    acked = _delivery(FakeMessage(channel, 1), consumer)
    await acked.ack()
    with pytest.raises(aio_pika.exceptions.MessageProcessError):
        await acked.ack()
    with pytest.raises(aio_pika.exceptions.MessageProcessError):
        await acked.reject()
    message = FakeMessage(channel, 2)
    rejected = _delivery(message, consumer)
    await rejected.reject(requeue=True)
    assert message.rejected == [True]
    with pytest.raises(aio_pika.exceptions.MessageProcessError):
        await rejected.ack()


async def test_a_reopened_channel_gets_its_own_writer() -> None:
    consumer = _consumer()
    first, second = FakeChannel(), FakeChannel()
    writer = consumer.writer(cast("aiormq.abc.AbstractChannel", first))
    assert consumer.writer(cast("aiormq.abc.AbstractChannel", first)) is writer
    assert consumer.writer(cast("aiormq.abc.AbstractChannel", second)).channel is cast("aiormq.Channel", second)

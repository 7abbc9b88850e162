"""AMQP frames written by hand: the broker's deliberate fast path (docs/architecture.md).

``FrameWriter`` puts the frames one event-loop turn writes on a channel (the consumer's acks, the publisher's
batches) into ONE item of aiormq's write queue, so they reach the socket in one write. ``send_batch`` builds a
batch's basic.publish, content header and body frames as aiormq's ``basic_publish`` would, registers their
confirms, and hands them to the writer; ``BatchConfirms`` follows the confirms of one batch. What this costs and
saves is measured by bench/publish.py and bench/crawl_vs_scrapy.py; every outcome is covered by the integration
tests (tests/integration/test_consuming.py, test_broker_outage.py).
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Callable, Sequence
from typing import Any

import aio_pika
import aiormq
from aiormq.abc import ChannelFrame
from pamqp.body import ContentBody  # pamqp: aiormq's AMQP codec
from pamqp.header import ContentHeader

from kubecrawl.broker.base import Outgoing


class _Write:
    """An item of a connection's write queue whose bytes are fixed only when aiormq's writer takes them.

    Duck-types ``aiormq.abc.ChannelFrame``: the writer reads ``payload`` once, right before it writes it.
    """

    __slots__ = ("channel", "parts")
    should_close = False
    should_drain = False

    def __init__(self, channel: aiormq.Channel, payload: bytes) -> None:
        self.channel = channel
        self.parts: list[bytes] | None = [payload]

    @property
    def payload(self) -> bytes:
        parts, self.parts = self.parts, None
        # Frames for a channel that closed meanwhile are dropped, not written: RabbitMQ answers them with a
        # connection error (or a channel error for an unknown delivery tag if the number was reopened).
        return b"" if parts is None or self.channel.is_closed else b"".join(parts)

    def drain(self) -> None:
        pass


class FrameWriter:
    """Writes frames to one aiormq channel: the consumer's acks, the publisher's publishes.

    aiormq's writer makes one socket write, one syscall, per item of the connection's write queue. Frames
    written while this writer's last item still waits in the queue join that item, so the acks or publishes
    of the handlers one group commit resumed (store/batching.py) go out in one write: 4,000 writes became 800
    for 2,000 crawl pages. Order is kept: the writer takes the items in order, and a new item is only started
    once the writer took the last one.
    """

    def __init__(self, channel: aiormq.Channel) -> None:
        self.channel = channel
        self._waiting: _Write | None = None

    async def write(self, payload: bytes) -> None:
        waiting = self._waiting
        if waiting is not None and waiting.parts is not None:
            waiting.parts.append(payload)
            return
        waiting = self._waiting = _Write(self.channel, payload)
        try:
            self.channel.write_queue.put_nowait(waiting)
        except asyncio.QueueFull:
            # Shielded: the frames must reach the queue even if this caller is cancelled; a publish's delivery
            # tags are counted already, and other callers' frames may have joined them meanwhile.
            await asyncio.shield(self.channel.write_queue.put(waiting))


def publish_frames(routing_key: str, messages: Sequence[Outgoing], max_body_frame: int) -> list[Any]:
    """basic.publish + content header + body frame(s) per message, as aiormq's basic_publish builds them."""
    method = aiormq.spec.Basic.Publish(exchange="", routing_key=routing_key, mandatory=True)
    frames: list[Any] = []
    for message in messages:
        properties = aiormq.spec.Basic.Properties(
            content_type="application/json",
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT.value,
            headers=dict(message.headers) if message.headers else {},
            message_id=message.message_id,
            priority=0,
            expiration=message.expiration,
        )
        frames.append(method)
        frames.append(ContentHeader(properties=properties, body_size=len(message.body)))
        body = message.body
        frames.extend(ContentBody(body[i : i + max_body_frame]) for i in range(0, len(body), max_body_frame))
    return frames


async def send_batch(
    writer: FrameWriter, routing_key: str, messages: Sequence[Outgoing]
) -> list[tuple[int, asyncio.Future[Any]]]:
    """Queue the messages' frames as ONE write and register their confirms; returns (delivery tag, confirm).

    What ``aiormq.Channel.basic_publish`` does per message, once per batch, at a third of its CPU per message
    (bench/publish.py); the frames of the batches of one loop turn reach the socket in one write (FrameWriter).
    It uses aiormq's channel internals (the lock, delivery tags, the confirmation and message-id maps) as
    basic_publish does; aiormq is pinned to 7.x in pyproject.toml and every outcome (ack, nack, return, lost
    channel, timeout) is covered by the integration tests.
    """
    channel = writer.channel
    payload = ChannelFrame.marshall(
        channel.number, publish_frames(routing_key, messages, channel.max_content_size)
    ).payload
    sent: list[tuple[int, asyncio.Future[Any]]] = []
    async with channel.lock:  # raises ChannelInvalidStateError once the channel closed
        # Registered before the frames can be written (FrameWriter queues them even if this caller is cancelled
        # while the queue is full), in frame order: the broker numbers a channel's messages as they arrive.
        for message in messages:
            channel.delivery_tag += 1
            confirmation = channel.create_future()  # rejected by aiormq if the channel closes
            channel.confirmations[channel.delivery_tag] = confirmation
            channel.message_id_delivery_tag[message.message_id] = channel.delivery_tag
            sent.append((channel.delivery_tag, confirmation))
        await writer.write(payload)
    return sent


class BatchConfirms:
    """The confirms of one batch: ``confirmed(index, latency)`` as each one arrives, one future for all."""

    def __init__(self, sent: list[tuple[int, asyncio.Future[Any]]], confirmed: Callable[[int, float], None]) -> None:
        self.sent = sent
        self._started = time.perf_counter()
        self._outstanding = len(sent)
        self._confirmed = confirmed
        self.all_done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        for index, (_, confirmation) in enumerate(sent):
            confirmation.add_done_callback(functools.partial(self._arrived, index))

    def _arrived(self, index: int, confirmation: asyncio.Future[Any]) -> None:
        if not confirmation.cancelled() and confirmation.exception() is None:
            self._confirmed(index, time.perf_counter() - self._started)
        self._outstanding -= 1
        if self._outstanding == 0 and not self.all_done.done():
            self.all_done.set_result(None)

"""The RabbitMQ consumer used by workers: manual ack, bounded prefetch, drain on shutdown.

The consumer only delivers; settling (ack, retry, dead-letter) is decided by the worker pipeline, which acks
after its database write. On SIGTERM the runtime calls ``drain()``: basic.cancel on every queue, then wait for
the handlers already running; unsettled prefetched messages go back to the queue when the channel closes.
Acks, one per message, go out through ``FrameWriter`` (the publisher's too): those of one loop turn in one write.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, cast

import aio_pika
import aio_pika.abc
import aio_pika.exceptions
import aiormq
import aiormq.abc
import aiormq.exceptions
from pamqp.commands import Basic
from pamqp.frame import marshal

from kubecrawl.broker.base import Consumer, Delivery, Handler
from kubecrawl.broker.connecting import CONNECT_TIMEOUT_SECONDS, close_quietly
from kubecrawl.broker.framing import FrameWriter
from kubecrawl.broker.topology import declare_topology
from kubecrawl.core.backoff import retry_with_backoff
from kubecrawl.core.errors import ConnectionLost
from kubecrawl.core.logging import get_logger
from kubecrawl.core.settings import PublisherSettings

log = get_logger(__name__)


class RabbitDelivery:
    """Adapts an aio-pika message to ``Delivery``."""

    __slots__ = ("_consumer", "_message", "_queue", "_settled")

    def __init__(self, queue: str, message: aio_pika.abc.AbstractIncomingMessage, consumer: RabbitConsumer) -> None:
        self._queue = queue
        self._message = message
        self._consumer = consumer
        self._settled = False

    @property
    def queue(self) -> str:
        return self._queue

    @property
    def body(self) -> bytes:
        return self._message.body

    @property
    def headers(self) -> Mapping[str, Any]:
        return self._message.headers or {}

    @property
    def redelivered(self) -> bool:
        return bool(self._message.redelivered)

    @property
    def message_id(self) -> str | None:
        return self._message.message_id

    async def ack(self) -> None:
        """basic.ack of this delivery alone (never ``multiple``), through the consumer's ``FrameWriter``.

        Unlike aio-pika's ack it does not wait until the frame reached the socket: nothing follows from that
        (an ack in the socket buffer is lost with the connection all the same, and the message comes back), and
        the wait cost every message a future and a trip through the event loop.
        """
        if self._settled:
            raise aio_pika.exceptions.MessageProcessError("Message already processed", self._message)
        channel = self._message.channel  # raises ChannelInvalidStateError once the channel closed
        tag = self._message.delivery_tag
        self._settled = True
        if tag is not None:
            await self._consumer.writer(channel).write(marshal(Basic.Ack(delivery_tag=tag), channel.number))

    async def reject(self, *, requeue: bool = False) -> None:
        if self._settled:
            raise aio_pika.exceptions.MessageProcessError("Message already processed", self._message)
        self._settled = True
        await self._message.reject(requeue=requeue)


class RabbitConsumer:
    """Consumes the given queues on one connection with ``prefetch_count`` unacked messages at most."""

    def __init__(
        self,
        url: str,
        backoff: PublisherSettings,
        *,
        prefetch_count: int,
        metadata_max_length: int,
        pages_max_length: int,
        connection_name: str,
        queue_type: str = "classic",
    ) -> None:
        self._url = url
        self._backoff = backoff
        self._prefetch = prefetch_count
        self._queue_args: dict[str, Any] = {
            "metadata_max_length": metadata_max_length,
            "pages_max_length": pages_max_length,
            "queue_type": queue_type,
        }
        self._connection_name = connection_name
        self._connection: aio_pika.abc.AbstractConnection | None = None
        self._channel: aio_pika.abc.AbstractChannel | None = None
        self._queues: dict[str, aio_pika.abc.AbstractQueue] = {}  # declared by connect(), by name
        self._consumers: list[tuple[aio_pika.abc.AbstractQueue, str]] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._draining = False
        self._writer: FrameWriter | None = None

    @property
    def consuming(self) -> bool:
        """Connected, channel open, consumers registered, not draining (the worker's readiness)."""
        connection, channel = self._connection, self._channel
        return bool(
            connection is not None
            and connection.connected.is_set()
            and channel is not None
            and not channel.is_closed
            and self._consumers
            and not self._draining
        )

    def writer(self, channel: aiormq.abc.AbstractChannel) -> FrameWriter:
        """The frame writer of the channel a delivery came on (a new one after the robust connection reopened)."""
        writer = self._writer
        if writer is None or writer.channel is not channel:
            writer = self._writer = FrameWriter(cast("aiormq.Channel", channel))
        return writer

    async def _connect(self) -> aio_pika.abc.AbstractConnection:
        def attempting(attempt: int, delay: float) -> None:
            log.info("rmq_connect_attempt", attempt=attempt, next_delay_s=delay, role="consumer")

        def failed(attempt: int, exc: BaseException, _delay: float) -> None:
            log.warning("rmq_connect_failed", attempt=attempt, error=repr(exc), role="consumer")

        async def connect() -> aio_pika.abc.AbstractRobustConnection:
            # Robust: after a broker restart the consumer re-opens its channel, QoS and consumers itself.
            return await aio_pika.connect_robust(
                self._url,
                timeout=CONNECT_TIMEOUT_SECONDS,
                client_properties={"connection_name": self._connection_name},
            )

        errors = (aiormq.exceptions.AMQPConnectionError, OSError, TimeoutError)
        try:
            connected = await retry_with_backoff(
                connect, self._backoff.connect_backoff(), retry_on=errors, on_attempt=attempting, on_failure=failed
            )
        except errors:
            connected = None
        if connected is None:
            raise ConnectionLost(
                f"could not connect to RabbitMQ after {self._backoff.max_connection_attempts} attempts"
            )
        return connected[0]

    async def connect(self) -> None:
        """Connect with backoff, open the channel with its QoS and declare the queues, without consuming yet: the
        worker does it while it reaches the database and the publisher connects (``worker/runtime.py``), and starts
        consuming once its handlers exist. After ``max_connection_attempts`` failures raise ``ConnectionLost``; on
        any failure (or cancellation) what was opened is closed."""
        if self._queues:
            return
        connection = await self._connect()
        try:
            channel = await connection.channel()
            await channel.set_qos(prefetch_count=self._prefetch)
            queues = await declare_topology(channel, **self._queue_args)
        except BaseException:
            await close_quietly(None, connection)
            raise
        self._connection, self._channel, self._queues = connection, channel, queues

    async def start(self, handlers: Mapping[str, Handler]) -> None:
        """Consume each queue in ``handlers``, connecting first unless ``connect()`` did."""
        await self.connect()
        for name, handler in handlers.items():
            queue = self._queues[name]
            tag = await queue.consume(self._callback(name, handler), no_ack=False)
            self._consumers.append((queue, tag))

    def _callback(self, queue: str, handler: Handler) -> Any:
        async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            if self._draining:
                return  # the channel closes after drain; the broker redelivers it to another worker
            task = asyncio.current_task()
            if task is not None:
                self._tasks.add(task)
            try:
                await handler(RabbitDelivery(queue, message, self))
            finally:
                if task is not None:
                    self._tasks.discard(task)

        return on_message

    async def drain(self, timeout_seconds: float) -> None:
        """Stop consuming, wait up to ``timeout_seconds`` for the messages in flight, then cancel the rest.

        A cancelled handler never acks: its message goes back to the queue when the channel closes (redelivered,
        its attempt counted, as after a crash)."""
        self._draining = True
        for queue, tag in self._consumers:
            with contextlib.suppress(Exception):
                await queue.cancel(tag)
        self._consumers.clear()
        deadline = asyncio.get_running_loop().time() + timeout_seconds
        while self._tasks:
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                break
            await asyncio.wait(list(self._tasks), timeout=remaining)
        unfinished = list(self._tasks)
        if unfinished:
            log.warning("worker_drain_timeout", given_back=len(unfinished), timeout_s=timeout_seconds)
            for task in unfinished:
                task.cancel()
            await asyncio.gather(*unfinished, return_exceptions=True)

    async def close(self) -> None:
        await close_quietly(self._channel, self._connection)
        self._channel = self._connection = None
        self._queues = {}


if TYPE_CHECKING:  # mypy proves the RabbitMQ consumer implements broker/base.py's interfaces

    def _implements(consumer: RabbitConsumer, delivery: RabbitDelivery) -> tuple[Consumer, Delivery]:
        return consumer, delivery

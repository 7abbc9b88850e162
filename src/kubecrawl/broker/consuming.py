"""The RabbitMQ consumer used by workers: manual ack, bounded prefetch, drain on shutdown.

The consumer only delivers; settling (ack, retry, dead-letter) is decided by the worker pipeline, which acks
after its database write. On SIGTERM the runtime calls ``drain()``: basic.cancel on every queue, then wait for
the handlers already running; unsettled prefetched messages go back to the queue when the channel closes.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping
from typing import Any

import aio_pika
import aio_pika.abc
import aiormq.exceptions

from kubecrawl.broker.backoff import backoff_delays
from kubecrawl.broker.base import Handler
from kubecrawl.broker.topology import declare_topology
from kubecrawl.core.errors import ConnectionLost
from kubecrawl.core.logging import get_logger
from kubecrawl.core.settings import PublisherSettings

log = get_logger(__name__)
_CONNECT_TIMEOUT_SECONDS = 10.0


class RabbitDelivery:
    """Adapts an aio-pika message to ``Delivery``."""

    __slots__ = ("_message", "_queue")

    def __init__(self, queue: str, message: aio_pika.abc.AbstractIncomingMessage) -> None:
        self._queue = queue
        self._message = message

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
        await self._message.ack()

    async def reject(self, *, requeue: bool = False) -> None:
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
    ) -> None:
        self._url = url
        self._backoff = backoff
        self._prefetch = prefetch_count
        self._queue_args = {"metadata_max_length": metadata_max_length, "pages_max_length": pages_max_length}
        self._connection_name = connection_name
        self._connection: aio_pika.abc.AbstractConnection | None = None
        self._channel: aio_pika.abc.AbstractChannel | None = None
        self._consumers: list[tuple[aio_pika.abc.AbstractQueue, str]] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._draining = False

    async def _connect(self) -> aio_pika.abc.AbstractConnection:
        delays = backoff_delays(
            self._backoff.initial_backoff_seconds,
            self._backoff.backoff_multiplier,
            self._backoff.max_backoff_seconds,
        )
        for attempt in range(1, self._backoff.max_connection_attempts + 1):
            delay = next(delays)
            log.info("rmq_connect_attempt", attempt=attempt, next_delay_s=delay, role="consumer")
            try:
                # Robust: after a broker restart the consumer re-opens its channel, QoS and consumers itself.
                return await aio_pika.connect_robust(
                    self._url,
                    timeout=_CONNECT_TIMEOUT_SECONDS,
                    client_properties={"connection_name": self._connection_name},
                )
            except (aiormq.exceptions.AMQPConnectionError, OSError, TimeoutError) as exc:
                log.warning("rmq_connect_failed", attempt=attempt, error=repr(exc), role="consumer")
                if attempt < self._backoff.max_connection_attempts:
                    await asyncio.sleep(delay)
        raise ConnectionLost(f"could not connect to RabbitMQ after {self._backoff.max_connection_attempts} attempts")

    async def start(self, handlers: Mapping[str, Handler]) -> None:
        self._connection = await self._connect()
        self._channel = await self._connection.channel()
        await self._channel.set_qos(prefetch_count=self._prefetch)
        queues = await declare_topology(self._channel, **self._queue_args)
        for name, handler in handlers.items():
            queue = queues[name]
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
                await handler(RabbitDelivery(queue, message))
            finally:
                if task is not None:
                    self._tasks.discard(task)

        return on_message

    async def drain(self) -> None:
        self._draining = True
        for queue, tag in self._consumers:
            with contextlib.suppress(Exception):
                await queue.cancel(tag)
        self._consumers.clear()
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def close(self) -> None:
        if self._channel is not None:
            with contextlib.suppress(Exception):
                await self._channel.close()
        if self._connection is not None:
            with contextlib.suppress(Exception):
                await self._connection.close()
        self._channel = self._connection = None

"""What the API and the worker need from a broker, independent of RabbitMQ.

Two implementations: ``publishing.RabbitPublisher`` + ``consuming.RabbitConsumer`` (production) and
``memory.MemoryBroker`` + its ``MemoryConsumer`` (the embedded default). The worker pipeline only sees ``Delivery``.
Each implementation module ends with a ``TYPE_CHECKING`` block that assigns its classes to these Protocols, so
mypy (strict) fails the build the day an implementation and its interface part.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol


class PublisherState(StrEnum):
    DISCONNECTED = "DISCONNECTED"
    CONNECTING = "CONNECTING"
    CONNECTED = "CONNECTED"
    CHANNEL_OPEN = "CHANNEL_OPEN"
    CONFIRM_ENABLED = "CONFIRM_ENABLED"
    QUEUE_DECLARED = "QUEUE_DECLARED"
    READY = "READY"
    RECONNECTING = "RECONNECTING"
    CLOSING = "CLOSING"
    CLOSED = "CLOSED"


class Publisher(Protocol):
    @property
    def state(self) -> PublisherState: ...

    async def start(self) -> None: ...

    async def publish(
        self,
        routing_key: str,
        body: bytes,
        *,
        message_id: str,
        headers: Mapping[str, Any] | None = None,
        log_context: Mapping[str, Any] | None = None,
    ) -> None:
        """Publish persistently and return once the broker confirmed it; raise a ``TransientError`` if not."""
        ...

    async def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One message for a publisher's ``publish_batch`` (``broker/tasks.py``): persistent, JSON, routed by the batch's
    routing key. Here, not beside ``RabbitPublisher``, so that building messages never imports aio-pika."""

    body: bytes
    message_id: str
    headers: Mapping[str, Any] | None = None
    # Fields of the message's log lines (request_id, url, crawl_id): never label values of a metric.
    log_context: Mapping[str, Any] | None = None
    # Per-message TTL in milliseconds, as AMQP's ``expiration`` property (dead letters: PublisherSettings).
    expiration: str | None = None


class Delivery(Protocol):
    """One received message; settle it exactly once."""

    @property
    def queue(self) -> str: ...

    @property
    def body(self) -> bytes: ...

    @property
    def headers(self) -> Mapping[str, Any]: ...

    @property
    def redelivered(self) -> bool: ...

    @property
    def message_id(self) -> str | None: ...

    async def ack(self) -> None: ...

    async def reject(self, *, requeue: bool = False) -> None:
        """Reject: back to the queue, or (``requeue=False``) to the queue's dead-letter exchange."""
        ...


Handler = Callable[[Delivery], Awaitable[None]]


class Consumer(Protocol):
    async def start(self, handlers: Mapping[str, Handler]) -> None:
        """Start consuming each queue in ``handlers``; returns once consumption has begun."""
        ...

    async def drain(self, timeout_seconds: float) -> None:
        """Stop taking new messages and wait up to ``timeout_seconds`` for every in-flight handler to return; a
        handler still running then is cancelled (its message goes back to its queue unsettled)."""
        ...

    async def close(self) -> None: ...

"""An in-process broker for the embedded default: the same ``Publisher`` and ``Consumer`` interfaces, no server.

Queues are bounded like RabbitMQ's (``reject-publish``: a full queue refuses with ``queue_rejected``); retry
tiers deliver back to their work queue after the tier's delay; dead letters are kept in memory for inspection.
Messages live only as long as the process: that is the embedded default's trade-off, documented in README.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from kubecrawl.broker.base import Consumer, Delivery, Handler, Publisher, PublisherState
from kubecrawl.broker.topology import DEAD_LETTER_QUEUE, RETRY_TIERS_SECONDS, WORK_QUEUES, retry_queue_name
from kubecrawl.core.errors import PublisherNotReady, PublishRejected
from kubecrawl.core.logging import get_logger

log = get_logger(__name__)


@dataclass(slots=True)
class MemoryDelivery:
    queue: str
    body: bytes
    headers: Mapping[str, Any]
    message_id: str | None
    broker: MemoryBroker
    redelivered: bool = False
    settled: bool = field(default=False)

    async def ack(self) -> None:
        self.settled = True

    async def reject(self, *, requeue: bool = False) -> None:
        self.settled = True
        if requeue:
            self.broker.requeue(self)
        else:
            self.broker.dead.append(self)


class MemoryBroker:
    """Publisher and consumer over ``asyncio.Queue``s, with RabbitMQ's bounds and retry tiers."""

    def __init__(self, *, max_lengths: Mapping[str, int], concurrency: int) -> None:
        self._queues = {name: asyncio.Queue[MemoryDelivery](maxsize=max_lengths[name]) for name in WORK_QUEUES}
        self._delays = {
            retry_queue_name(name, tier): (name, float(tier)) for name in WORK_QUEUES for tier in RETRY_TIERS_SECONDS
        }
        self._concurrency = concurrency
        self._state = PublisherState.DISCONNECTED
        self._workers: list[asyncio.Task[None]] = []
        self._in_flight: set[asyncio.Task[None]] = set()
        self._timers: set[asyncio.TimerHandle] = set()
        self._draining = False
        self.dead: list[MemoryDelivery] = []

    @property
    def state(self) -> PublisherState:
        return self._state

    async def start(self) -> None:
        self._state = PublisherState.READY

    def depth(self, queue: str) -> int:
        return self._queues[queue].qsize()

    def take(self, queue: str) -> list[MemoryDelivery]:
        """Take every message waiting in ``queue`` without delivering it (inspection, like ``dead``)."""
        taken: list[MemoryDelivery] = []
        while not self._queues[queue].empty():
            taken.append(self._queues[queue].get_nowait())
        return taken

    async def publish(
        self,
        routing_key: str,
        body: bytes,
        *,
        message_id: str,
        headers: Mapping[str, Any] | None = None,
        log_context: Mapping[str, Any] | None = None,
    ) -> None:
        if self._state is not PublisherState.READY:
            raise PublisherNotReady(f"in-process broker is {self._state}")
        delivery = MemoryDelivery(routing_key, body, dict(headers or {}), message_id, self)
        if routing_key == DEAD_LETTER_QUEUE:
            self.dead.append(delivery)
            return
        if routing_key in self._delays:
            target, delay = self._delays[routing_key]
            delivery.queue = target
            handle = asyncio.get_running_loop().call_later(delay, self._deliver_later, delivery)
            self._timers.add(handle)
            return
        try:
            self._queues[routing_key].put_nowait(delivery)
        except asyncio.QueueFull as exc:
            raise PublishRejected(f"queue {routing_key} is full") from exc
        del log_context

    def _deliver_later(self, delivery: MemoryDelivery) -> None:
        with contextlib.suppress(asyncio.QueueFull):
            self._queues[delivery.queue].put_nowait(delivery)
            return
        self.dead.append(delivery)  # overflow on a retry: RabbitMQ would dead-letter it too

    def requeue(self, delivery: MemoryDelivery) -> None:
        delivery.redelivered = True
        delivery.settled = False
        self._deliver_later(delivery)

    async def start_consuming(self, handlers: Mapping[str, Handler]) -> None:
        for name, handler in handlers.items():
            for _ in range(self._concurrency):
                self._workers.append(asyncio.create_task(self._consume(name, handler)))

    async def _consume(self, queue: str, handler: Handler) -> None:
        while not self._draining:
            delivery = await self._queues[queue].get()
            task = asyncio.current_task()
            assert task is not None
            self._in_flight.add(task)
            try:
                await handler(delivery)
            except Exception:
                log.exception("memory_handler_failed", queue=queue)
            finally:
                self._in_flight.discard(task)
                # A handler that did not settle (it forgot, or ``drain`` cancelled it): RabbitMQ would redeliver.
                if not delivery.settled:
                    self.requeue(delivery)

    async def drain(self, timeout_seconds: float) -> None:
        """Stop taking messages; wait up to ``timeout_seconds`` for the handlers running, then cancel the rest.

        A handler cancelled here never settles: its message is put back, as RabbitMQ redelivers an unacked one."""
        idle = [worker for worker in self._workers if worker not in self._in_flight]
        busy = [worker for worker in self._workers if worker in self._in_flight]
        self._draining = True
        for worker in idle:
            worker.cancel()
        if busy:
            await asyncio.wait(busy, timeout=timeout_seconds)
        for worker in busy:
            worker.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)
        self._workers.clear()

    async def close(self) -> None:
        self._state = PublisherState.CLOSED
        for handle in self._timers:
            handle.cancel()
        for worker in self._workers:
            worker.cancel()
        for worker in self._workers:
            with contextlib.suppress(asyncio.CancelledError):
                await worker
        self._workers.clear()

    @property
    def consumer(self) -> MemoryConsumer:
        """This broker's ``Consumer`` side (``start`` takes the handlers; the broker's own ``start`` opens it)."""
        return MemoryConsumer(self)


class MemoryConsumer:
    """A ``MemoryBroker`` seen as a ``Consumer``, as ``RabbitConsumer`` is RabbitMQ's."""

    def __init__(self, broker: MemoryBroker) -> None:
        self._broker = broker

    async def start(self, handlers: Mapping[str, Handler]) -> None:
        await self._broker.start_consuming(handlers)

    async def drain(self, timeout_seconds: float) -> None:
        await self._broker.drain(timeout_seconds)

    async def close(self) -> None:
        await self._broker.close()


if TYPE_CHECKING:  # mypy proves the in-process broker implements broker/base.py's interfaces

    def _implements(broker: MemoryBroker, delivery: MemoryDelivery) -> tuple[Publisher, Consumer, Delivery]:
        return broker, broker.consumer, delivery

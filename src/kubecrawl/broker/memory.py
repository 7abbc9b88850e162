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
from typing import Any

from kubecrawl.broker.base import Handler, PublisherState
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
        self.dead: list[MemoryDelivery] = []

    @property
    def state(self) -> PublisherState:
        return self._state

    async def start(self) -> None:
        self._state = PublisherState.READY

    def depth(self, queue: str) -> int:
        return self._queues[queue].qsize()

    def drain(self, queue: str) -> list[MemoryDelivery]:
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
        while True:
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
            if not delivery.settled:  # a handler that forgot to settle: RabbitMQ would redeliver on close
                self.requeue(delivery)

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

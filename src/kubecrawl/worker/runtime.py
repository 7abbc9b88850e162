"""Worker process: connect (with backoff), consume, and drain on SIGTERM.

SIGTERM/SIGINT: stop consuming (basic.cancel), let in-flight messages finish and settle for at most
``KUBECRAWL_DRAIN_TIMEOUT_SECONDS`` (the rest go back to the queue unacked), close the channel, the publisher and
the database, exit 0. The chart derives terminationGracePeriodSeconds from the fetch settings and the drain
timeout from that, so the process ends on its own before a SIGKILL.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
from datetime import timedelta

from kubecrawl.broker.consuming import RabbitConsumer
from kubecrawl.broker.publishing import RabbitPublisher
from kubecrawl.core.logging import get_logger
from kubecrawl.core.settings import Settings
from kubecrawl.fetch.fetching import Fetcher
from kubecrawl.store.connection import DatabaseConnection
from kubecrawl.store.opening import open_database
from kubecrawl.worker.pipelines import queue_handlers
from kubecrawl.worker.probes import WorkerProbes
from kubecrawl.worker.sweeping import sweep_forever

log = get_logger(__name__)


async def _reach_all(connection: DatabaseConnection, publisher: RabbitPublisher, consumer: RabbitConsumer) -> None:
    """Reach the database and RabbitMQ's two connections (the publisher's, the consumer's with its channel and
    queues) at once, each with its own backoff: the worker is ready when the slowest answers instead of after all
    three set-ups in turn (bench/startup.py). When the database and RabbitMQ both fail, the database's failure is
    the one raised (exit 3), as when they were reached one after the other; a database failure stops the broker's
    attempts, and a failure of one RabbitMQ connection the other's."""
    broker = asyncio.create_task(_reach_broker(publisher, consumer), name="broker-connect")
    try:
        await connection.connect()
    except BaseException:
        await _cancelled(broker)
        raise
    await broker


async def _reach_broker(publisher: RabbitPublisher, consumer: RabbitConsumer) -> None:
    consuming = asyncio.create_task(consumer.connect(), name="consumer-connect")
    publishing = asyncio.create_task(publisher.start(), name="publisher-start")
    try:
        done, _ = await asyncio.wait((consuming, publishing), return_when=asyncio.FIRST_EXCEPTION)
        for task in done:
            task.result()  # the first failure, raised
    except BaseException:
        await _cancelled(consuming)
        await _cancelled(publishing)
        raise


async def _cancelled(task: asyncio.Task[None]) -> None:
    """Cancel ``task`` and wait for it to end, whatever it raises (it cleans up what it opened)."""
    task.cancel()
    with contextlib.suppress(BaseException):
        await task


async def run_worker(settings: Settings, *, metrics_port: int | None = None, stop: asyncio.Event | None = None) -> None:
    """Run until SIGTERM/SIGINT (or until ``stop`` is set, for callers that own the signals)."""
    name = settings.pod_name or socket.gethostname()
    database = open_database(
        settings.database_url.get_secret_value(), pool_size=settings.db_pool_size, lease=settings.lease()
    )
    stores = database.stores
    rabbit_url = settings.rabbitmq_url.get_secret_value()
    publisher = RabbitPublisher.from_settings(settings, connection_name=f"{name}-publisher")
    consumer = RabbitConsumer(
        rabbit_url,
        settings.publisher,
        prefetch_count=settings.prefetch_count,
        connection_name=name,
        metadata_max_length=settings.metadata_queue_max_length,
        pages_max_length=settings.pages_queue_max_length,
        queue_type=settings.queue_type,
    )
    # /metrics and the probes answer from the start: alive (not ready) while the database and broker back off.
    connection = DatabaseConnection(
        database.ping, backoff=settings.db_backoff(), check_interval=settings.db_check_interval_seconds
    )
    probes = WorkerProbes(consumer, publisher, connection)
    if metrics_port:
        await probes.start(metrics_port)
    try:
        await _reach_all(connection, publisher, consumer)
    except BaseException:
        await consumer.close()
        await publisher.close()
        await connection.close()
        await probes.close()
        await database.close()
        raise
    if stop is None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
    try:
        async with Fetcher(settings.fetch, settings.target_policy()) as fetcher:
            await consumer.start(queue_handlers(settings, stores, fetcher, publisher))
            sweeper = asyncio.create_task(
                sweep_forever(
                    stores.crawls,
                    stores.pages,
                    publisher,
                    lost_after=timedelta(seconds=settings.lost_page_seconds),
                    interval_seconds=settings.sweep_interval_seconds,
                )
            )
            log.info(
                "worker_started",
                connection_name=name,
                prefetch=settings.prefetch_count,
                lease_s=settings.lease().total_seconds(),
            )
            await stop.wait()
            log.info("worker_draining")
            sweeper.cancel()
            await consumer.drain(settings.drain_timeout_seconds)
    finally:
        await consumer.close()
        await publisher.close()
        await probes.close()
        await connection.close()
        await database.close()
        log.info("worker_stopped")

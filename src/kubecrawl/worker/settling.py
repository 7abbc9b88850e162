"""Settling a delivery: ack, retry later through a delay tier, or dead-letter with a reason.

``settle_failure`` is the one failure path of both pipelines (metadata and crawl pages): a transient error with
attempts left is recorded as retryable and retried through a delay tier; anything else (a permanent error, or the
last attempt) is recorded as final and dead-lettered. Each pipeline says only how its store records a failure.

Always after the database write. A retry or dead letter is published (with confirm) before the original is
acked, so a crash in between duplicates a message rather than losing it; processing is idempotent.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from prometheus_client import Counter, Gauge

from kubecrawl.broker.base import Delivery, Publisher
from kubecrawl.broker.topology import (
    ATTEMPT_HEADER,
    CODE_HEADER,
    DEAD_LETTER_QUEUE,
    REASON_HEADER,
    SOURCE_HEADER,
    retry_queue_name,
    retry_tier,
)
from kubecrawl.core import metrics
from kubecrawl.core.errors import KubecrawlError, PermanentError, TransientError
from kubecrawl.core.logging import get_logger
from kubecrawl.core.settings import RetrySettings
from kubecrawl.fetch.retrying import retry_delay

log = get_logger(__name__)
# Header values are bounded: RabbitMQ frames and log lines should not carry whole error pages.
_MAX_REASON = 1000
# A database outage is retried through the shortest useful delay tier without spending an attempt.
_DB_RETRY_DELAY_SECONDS = 5.0
# After an unexpected error the message goes back to the queue; wait first so a bug is not a hot loop.
_REQUEUE_PAUSE_SECONDS = 1.0
# Labelled metric children of every message, by queue (and outcome): ``labels()`` costs three times the update.
_in_flight: dict[str, Gauge] = {}
_handled: dict[tuple[str, str], Counter] = {}


async def handle_guarded(delivery: Delivery, handle: Callable[[Delivery], Awaitable[str]]) -> None:
    """The worker's outer edge: count the message in flight, run ``handle`` (which settles it and names the
    outcome), and if it raises anyway — a bug, or a database outage mid-way — put the message back."""
    queue = delivery.queue
    in_flight = _in_flight.get(queue)
    if in_flight is None:
        in_flight = _in_flight[queue] = metrics.WORKER_IN_FLIGHT.labels(queue=queue)
    in_flight.inc()
    try:
        outcome = await handle(delivery)
    except Exception:
        log.exception("message_handling_failed", queue=delivery.queue)
        outcome = "requeued"
        await asyncio.sleep(_REQUEUE_PAUSE_SECONDS)
        await delivery.reject(requeue=True)
    finally:
        in_flight.dec()
    handled = _handled.get((queue, outcome))
    if handled is None:
        handled = _handled[queue, outcome] = metrics.WORKER_MESSAGES.labels(queue=queue, outcome=outcome)
    handled.inc()


async def retry_later(publisher: Publisher, delivery: Delivery, *, attempt: int, delay: float, code: str) -> None:
    tier = retry_tier(delay)
    headers = dict(delivery.headers)
    headers[ATTEMPT_HEADER] = attempt
    headers[CODE_HEADER] = code
    await publisher.publish(
        retry_queue_name(delivery.queue, tier),
        delivery.body,
        message_id=delivery.message_id or "",
        headers=headers,
    )
    await delivery.ack()
    metrics.WORKER_RETRIES.labels(queue=delivery.queue, code=code).inc()
    log.info("message_retry_scheduled", attempt=attempt, delay_s=tier, code=code)


async def retry_database_unavailable(
    publisher: Publisher, delivery: Delivery, exc: BaseException, **log_context: object
) -> str:
    """The database refused the first write of a message (a broken connection, a refused statement, a pool busy
    for pool_timeout): retry it later, counted as ``database_unavailable`` (the alert's signal), attempt kept."""
    log.warning("database_unavailable", error=repr(exc), **log_context)
    await retry_later(publisher, delivery, attempt=0, delay=_DB_RETRY_DELAY_SECONDS, code="database_unavailable")
    return "retried"


async def dead_letter(publisher: Publisher, delivery: Delivery, *, code: str, reason: str) -> None:
    """Publish to ``kubecrawl.dead`` with the reason, then ack; if that cannot be published, reject the
    original so the queue's own dead-letter exchange takes it (with RabbitMQ's x-death, without our reason)."""
    headers = dict(delivery.headers)
    headers.update({CODE_HEADER: code, REASON_HEADER: reason[:_MAX_REASON], SOURCE_HEADER: delivery.queue})
    try:
        await publisher.publish(DEAD_LETTER_QUEUE, delivery.body, message_id=delivery.message_id or "", headers=headers)
    except TransientError as exc:
        log.warning("dead_letter_publish_failed", code=code, error=exc.code)
        await delivery.reject()
    else:
        await delivery.ack()
    metrics.WORKER_DEAD_LETTERS.labels(queue=delivery.queue, code=code).inc()
    log.warning("message_dead_lettered", code=code, reason=reason[:_MAX_REASON])


class FailureRecorder(Protocol):
    """How a pipeline's store records a failed attempt: retryable (``permanent=False``) or final."""

    async def __call__(self, reason: str, *, permanent: bool) -> None: ...


@dataclass(frozen=True, slots=True)
class Failure:
    """What ``settle_failure`` did: ``outcome`` is ``retried`` (after ``delay`` seconds) or ``dead_lettered``;
    ``reason`` is what was recorded and sent (the error's detail, plus the attempts given up after)."""

    outcome: str
    reason: str
    delay: float | None = None


async def settle_failure(
    publisher: Publisher,
    delivery: Delivery,
    exc: KubecrawlError,
    *,
    attempts: int,
    retry: RetrySettings,
    record: FailureRecorder,
) -> Failure:
    """Record the failure (``record(reason, permanent=…)``, the store's write) and then settle the delivery: retry
    it later while a transient error has attempts left, dead-letter it otherwise."""
    retryable = isinstance(exc, TransientError) and not isinstance(exc, PermanentError)
    if retryable and attempts < retry.max_attempts:
        assert isinstance(exc, TransientError)
        await record(exc.detail, permanent=False)
        delay = retry_delay(attempts, retry, exc.retry_after)
        await retry_later(publisher, delivery, attempt=attempts, delay=delay, code=exc.code)
        return Failure("retried", exc.detail, delay)
    reason = exc.detail if not retryable else f"{exc.detail} (gave up after {attempts} attempts)"
    await record(reason, permanent=True)
    await dead_letter(publisher, delivery, code=exc.code, reason=reason)
    return Failure("dead_lettered", reason)

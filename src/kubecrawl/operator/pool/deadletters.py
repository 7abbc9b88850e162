"""The dead-letter queue's depth as ``kubecrawl_dead_letter_messages``, read by the operator.

Why the operator: it already holds the broker connection the pools read depths with, and it is one process per
release, so the series has one value per queue (several API or worker replicas would each report theirs). The
queue is read by passive declare, like a pool's, every ``dead_letter_poll_seconds``; while it cannot be read the
series is removed rather than left at a stale value.
"""

from __future__ import annotations

import asyncio
import contextlib

from kubecrawl.core import metrics
from kubecrawl.core.logging import get_logger
from kubecrawl.operator.pool.probing import BrokerProbe, MetricsUnavailable

log = get_logger(__name__)


async def read_once(probe: BrokerProbe, queue: str) -> int | None:
    """Set the gauge from one read; the depth, or None when the queue could not be read."""
    try:
        depth = await probe.depth(queue)
    except MetricsUnavailable as exc:
        with contextlib.suppress(KeyError):
            metrics.DEAD_LETTER_MESSAGES.remove(queue)
        log.debug("dead_letter_depth_unavailable", queue=queue, error=exc.detail)
        return None
    metrics.DEAD_LETTER_MESSAGES.labels(queue).set(depth.ready)
    return depth.ready


async def watch(probe: BrokerProbe, queue: str, interval: float) -> None:
    """Read ``queue``'s depth every ``interval`` seconds, until cancelled."""
    while True:
        await read_once(probe, queue)
        await asyncio.sleep(interval)

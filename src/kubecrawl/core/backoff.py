"""Exponential backoff with jitter, and the one connect-with-backoff loop the RabbitMQ consumer, the publisher
(start-up and its background reconnect) and the database (start-up) all use.

The schedule is 1 s, ×2, capped at 30 s, 10 attempts by default (``core.settings.PublisherSettings``; the
database uses the same numbers with ``KUBECRAWL_DB_CONNECT_ATTEMPTS``). Jitter only ever shortens a wait, by up to
``jitter`` of it, so the schedule above stays the upper bound (and the 30 s cap holds), while the workers and API
replicas that lost one broker or database together do not all come back on the same second.

The loop logs nothing itself: each caller keeps its own event names (``rmq_connect_attempt``,
``rmq_reconnect_failed``, ``db_connect_failed``, …) through the ``on_*`` callbacks.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")

# Up to 10 % shorter: at the 30 s cap, reconnects spread over 3 s.
DEFAULT_JITTER = 0.1


def backoff_delays(initial: float, multiplier: float, maximum: float) -> Iterator[float]:
    """Yield ``initial, initial*m, initial*m², …`` capped at ``maximum``, forever (no jitter)."""
    delay = initial
    while True:
        yield min(delay, maximum)
        delay = min(delay * multiplier, maximum)


@dataclass(frozen=True, slots=True)
class Backoff:
    """How often and how long to wait between attempts; ``attempts=None`` retries until told to stop."""

    initial: float = 1.0
    multiplier: float = 2.0
    maximum: float = 30.0
    attempts: int | None = 10
    # Each wait is drawn from [delay × (1 − jitter), delay].
    jitter: float = DEFAULT_JITTER

    def delays(self, uniform: Callable[[float, float], float] = random.uniform) -> Iterator[float]:
        for delay in backoff_delays(self.initial, self.multiplier, self.maximum):
            yield uniform(delay * (1.0 - self.jitter), delay) if self.jitter else delay


async def retry_with_backoff(
    attempt: Callable[[], Awaitable[T]],
    backoff: Backoff,
    *,
    retry_on: type[BaseException] | tuple[type[BaseException], ...],
    on_attempt: Callable[[int, float], None] | None = None,
    on_failure: Callable[[int, BaseException, float], None] | None = None,
    keep_going: Callable[[], bool] | None = None,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> tuple[T, int] | None:
    """Call ``attempt`` until it returns: ``(its result, the attempt number)``.

    ``on_attempt(number, delay)`` runs before each call, ``on_failure(number, error, delay)`` after each failure
    matching ``retry_on`` (anything else propagates at once); ``delay`` is the wait that follows that failure.
    After ``backoff.attempts`` failures the last error is raised, without a final wait. ``keep_going`` is asked
    before every attempt; when it says no, the loop ends and returns ``None``.
    """
    delays = backoff.delays()
    number = 0
    while keep_going is None or keep_going():
        number += 1
        delay = next(delays)
        if on_attempt is not None:
            on_attempt(number, delay)
        try:
            result = await attempt()
        except retry_on as exc:
            if on_failure is not None:
                on_failure(number, exc, delay)
            if backoff.attempts is not None and number >= backoff.attempts:
                raise
            await sleep(delay)
        else:
            return result, number
    return None

"""Exponential backoff for (re)connecting to RabbitMQ and the database: 1 s, ×2, capped at 30 s by default."""

from __future__ import annotations

from collections.abc import Iterator


def backoff_delays(initial: float, multiplier: float, maximum: float) -> Iterator[float]:
    """Yield ``initial, initial*m, initial*m², …`` capped at ``maximum``, forever."""
    delay = initial
    while True:
        yield min(delay, maximum)
        delay = min(delay * multiplier, maximum)

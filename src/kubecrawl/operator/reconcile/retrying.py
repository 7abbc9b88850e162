"""How long kopf waits before re-running a handler whose last attempt failed transiently."""

from __future__ import annotations

# 5 s, 10 s, 20 s … capped at 5 minutes: quick while the API is restarting, quiet during a long outage.
FIRST_DELAY_SECONDS = 5.0
MAX_DELAY_SECONDS = 300.0


def handler_retry_delay(retry: int) -> float:
    """Delay after the ``retry``-th failed attempt (kopf counts from 0)."""
    return min(MAX_DELAY_SECONDS, FIRST_DELAY_SECONDS * (1 << max(0, min(retry, 16))))

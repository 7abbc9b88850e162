"""When to retry (pure): which responses are worth retrying, and after how long.

Retryable: 408, 425, 429 and 5xx (``Retry-After`` honoured), plus the network errors the fetcher raises as
``FetchTransient`` (DNS failure, connection refused/reset, timeouts). Any other 4xx is permanent at once, and so
are blocked targets and malformed responses. Delays grow exponentially with jitter (the "equal jitter" of the
AWS architecture blog's "exponential backoff and jitter"), so many workers retrying one failing site do not
stampede it.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

from kubecrawl.core.errors import FetchPermanent, FetchTransient, KubecrawlError
from kubecrawl.core.settings import RetrySettings

_RETRYABLE_4XX = frozenset({408, 425, 429})
# RFC 9110 §15: status codes are 100-599; aiohttp's parser accepts any three digits.
_MIN_STATUS, _MAX_STATUS = 100, 599
# A server asking for more than a day is not asking for a retry.
MAX_RETRY_AFTER_SECONDS = 86_400.0


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: delta-seconds or an HTTP-date; ``None`` if unusable."""
    if not value:
        return None
    value = value.strip()
    # ASCII digits only (RFC 9110 delay-seconds): str.isdigit() also accepts '²' and '١', which float() refuses.
    if value.isascii() and value.isdigit():
        return min(float(value), MAX_RETRY_AFTER_SECONDS)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    seconds = (when - (now or datetime.now(UTC))).total_seconds()
    return min(max(seconds, 0.0), MAX_RETRY_AFTER_SECONDS)


def response_error(status: int, headers: Mapping[str, str]) -> KubecrawlError | None:
    """The error a response status means for a page fetch, or ``None`` when it is a result to store.

    2xx and 3xx (a redirect the fetcher did not follow, 304) are results; so is nothing else.
    """
    if not _MIN_STATUS <= status <= _MAX_STATUS:
        return FetchPermanent(f"HTTP status {status} is outside 100-599", code="invalid_response")
    if status < 400:
        return None
    retry_after = next((value for name, value in headers.items() if name.lower() == "retry-after"), None)
    if status >= 500 or status in _RETRYABLE_4XX:
        return FetchTransient(
            f"HTTP {status} from the server",
            code=f"http_{status}",
            retry_after=parse_retry_after(retry_after),
        )
    return FetchPermanent(f"HTTP {status} from the server", code=f"http_{status}")


def retry_delay(
    attempts: int,
    retry: RetrySettings,
    retry_after: float | None = None,
    *,
    rng: random.Random | None = None,
) -> float:
    """Delay before attempt ``attempts + 1``: ``base × 2^(attempts-1)`` capped, jittered in [½, 1]×.

    ``Retry-After`` is a floor (the server said "not before"), still capped by ``max_delay_seconds`` so a
    message never parks for longer than the operator allowed.
    """
    exponent = max(attempts - 1, 0)
    ceiling = min(retry.base_delay_seconds * (2**exponent), retry.max_delay_seconds)
    # Half-jitter keeps the exponential shape (tests and operators can reason about it) while spreading herds.
    delay = ceiling * (0.5 + 0.5 * (rng or random).random())
    if retry_after is not None:
        delay = max(delay, retry_after)
    return float(min(delay, retry.max_delay_seconds))

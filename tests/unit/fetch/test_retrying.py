"""Retry policy: which statuses retry, how Retry-After is read, how delays grow."""

from __future__ import annotations

import random
from datetime import UTC, datetime

import pytest

from kubecrawl.core.errors import FetchPermanent, FetchTransient
from kubecrawl.core.settings import RetrySettings
from kubecrawl.fetch.retrying import MAX_RETRY_AFTER_SECONDS, parse_retry_after, response_error, retry_delay

NOW = datetime(2015, 10, 21, 7, 28, 0, tzinfo=UTC)
RETRY = RetrySettings(max_attempts=5, base_delay_seconds=2.0, max_delay_seconds=300.0)


# --- statuses -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [200, 201, 204, 206, 301, 302, 304, 399])
def test_success_and_unfollowed_redirect_statuses_are_results(status: int) -> None:
    assert response_error(status, {}) is None


@pytest.mark.parametrize("status", [408, 425, 429, 500, 501, 502, 503, 504, 520, 599])
def test_timeout_too_early_throttling_and_5xx_statuses_are_retryable(status: int) -> None:
    error = response_error(status, {})
    assert isinstance(error, FetchTransient)
    assert error.code == f"http_{status}"


@pytest.mark.parametrize("status", [400, 401, 403, 404, 405, 406, 409, 410, 414, 418, 426, 451, 499])
def test_other_4xx_statuses_are_permanent(status: int) -> None:
    error = response_error(status, {})
    assert isinstance(error, FetchPermanent)
    assert error.code == f"http_{status}"


@pytest.mark.parametrize("status", [0, 99, 600, 999])
def test_statuses_outside_100_to_599_are_invalid_responses(status: int) -> None:
    error = response_error(status, {})
    assert isinstance(error, FetchPermanent)
    assert error.code == "invalid_response"


def test_retry_after_header_is_carried_on_the_transient_error_whatever_its_case() -> None:
    error = response_error(429, {"RETRY-AFTER": "7"})
    assert isinstance(error, FetchTransient)
    assert error.retry_after == 7.0


def test_missing_retry_after_leaves_retry_after_unset() -> None:
    error = response_error(503, {"Content-Type": "text/html"})
    assert isinstance(error, FetchTransient)
    assert error.retry_after is None


# --- Retry-After --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("0", 0.0),
        ("120", 120.0),
        (" 5 ", 5.0),
        ("007", 7.0),
        ("99999999", MAX_RETRY_AFTER_SECONDS),
    ],
)
def test_retry_after_delta_seconds_are_read_and_capped_at_a_day(value: str, expected: float) -> None:
    assert parse_retry_after(value, now=NOW) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("Wed, 21 Oct 2015 07:30:00 GMT", 120.0),  # IMF-fixdate
        ("Wednesday, 21-Oct-15 07:29:00 GMT", 60.0),  # obsolete RFC 850
        ("Wed Oct 21 07:28:30 2015", 30.0),  # obsolete asctime, no zone: GMT
        ("Wed, 21 Oct 2015 07:27:00 GMT", 0.0),  # in the past: retry now
        ("Wed, 21 Oct 2016 07:28:00 GMT", MAX_RETRY_AFTER_SECONDS),
    ],
)
def test_retry_after_http_dates_become_seconds_from_now(value: str, expected: float) -> None:
    assert parse_retry_after(value, now=NOW) == pytest.approx(expected)


@pytest.mark.parametrize("value", [None, "", "   ", "soon", "-5", "1.5", "1e3", "²", "١٢", "Wed, 99 Foo 2015"])
def test_unusable_retry_after_values_give_none(value: str | None) -> None:
    assert parse_retry_after(value, now=NOW) is None


# --- delays -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("attempts", "ceiling"),
    [(0, 2.0), (1, 2.0), (2, 4.0), (3, 8.0), (4, 16.0), (5, 32.0), (8, 256.0), (9, 300.0), (30, 300.0)],
)
def test_retry_delay_grows_exponentially_up_to_the_cap_with_jitter_in_half_to_full(
    attempts: int, ceiling: float
) -> None:
    rng = random.Random(42)
    delays = [retry_delay(attempts, RETRY, rng=rng) for _ in range(200)]
    assert all(ceiling / 2 <= delay <= ceiling for delay in delays)
    # jitter actually spreads the herd: the draws cover most of the allowed band
    assert max(delays) - min(delays) > ceiling * 0.4


def test_retry_delay_is_reproducible_with_a_seeded_random() -> None:
    first = [retry_delay(n, RETRY, rng=random.Random(7)) for n in range(1, 8)]
    second = [retry_delay(n, RETRY, rng=random.Random(7)) for n in range(1, 8)]
    assert first == second


def test_retry_delay_median_doubles_per_attempt_below_the_cap() -> None:
    rng = random.Random(3)

    def median(attempts: int) -> float:
        draws = sorted(retry_delay(attempts, RETRY, rng=rng) for _ in range(401))
        return draws[200]

    assert median(3) / median(2) == pytest.approx(2.0, rel=0.1)
    assert median(5) / median(4) == pytest.approx(2.0, rel=0.1)


def test_retry_after_is_a_floor_above_the_jittered_delay() -> None:
    assert retry_delay(1, RETRY, retry_after=45.0, rng=random.Random(1)) == 45.0


def test_retry_after_shorter_than_the_backoff_does_not_shorten_it() -> None:
    delay = retry_delay(6, RETRY, retry_after=1.0, rng=random.Random(1))
    assert 32.0 <= delay <= 64.0


def test_retry_after_longer_than_the_maximum_is_capped_by_the_maximum() -> None:
    assert retry_delay(1, RETRY, retry_after=3600.0, rng=random.Random(1)) == RETRY.max_delay_seconds


def test_retry_after_zero_keeps_the_normal_backoff() -> None:
    delay = retry_delay(2, RETRY, retry_after=0.0, rng=random.Random(1))
    assert 2.0 <= delay <= 4.0

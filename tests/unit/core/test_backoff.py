"""The one connect-with-backoff loop (kubecrawl.core.backoff): its schedule, its jitter and its attempt rules."""

from __future__ import annotations

import itertools

import pytest

from kubecrawl.core.backoff import Backoff, retry_with_backoff
from kubecrawl.core.settings import PublisherSettings

SEED = [1, 2, 4, 8, 16, 30, 30, 30, 30, 30]


class Refused(Exception):
    pass


def test_without_jitter_the_delays_are_the_seed_schedule() -> None:
    assert list(itertools.islice(Backoff(jitter=0).delays(), 10)) == SEED


def test_jitter_only_ever_shortens_a_wait_by_at_most_its_fraction() -> None:
    delays = list(itertools.islice(Backoff(jitter=0.1).delays(), 200))
    seed = itertools.chain(SEED, itertools.repeat(30))
    for delay, bound in zip(delays, seed, strict=False):
        assert bound * 0.9 <= delay <= bound
    assert len(set(delays[10:])) > 1  # at the cap the waits still differ


def test_the_publisher_settings_give_the_seed_schedule_with_jitter_by_default() -> None:
    backoff = PublisherSettings().connect_backoff()
    assert (backoff.initial, backoff.multiplier, backoff.maximum, backoff.attempts) == (1.0, 2.0, 30.0, 10)
    assert 0 < backoff.jitter < 1


async def test_the_last_error_is_raised_after_the_attempts_without_a_final_wait() -> None:
    slept: list[float] = []
    seen: list[tuple[str, int, float]] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    async def refuse() -> None:
        raise Refused

    with pytest.raises(Refused):
        await retry_with_backoff(
            refuse,
            Backoff(attempts=3, jitter=0),
            retry_on=Refused,
            on_attempt=lambda n, d: seen.append(("attempt", n, d)),
            on_failure=lambda n, _exc, d: seen.append(("failed", n, d)),
            sleep=sleep,
        )
    assert slept == [1, 2]
    expected = [("attempt", 1, 1), ("failed", 1, 1), ("attempt", 2, 2), ("failed", 2, 2)]
    assert seen == [*expected, ("attempt", 3, 4), ("failed", 3, 4)]


async def test_success_returns_the_result_and_its_attempt_number() -> None:
    calls = iter([Refused(), Refused(), "connected"])

    async def flaky() -> str:
        outcome = next(calls)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    async def sleep(_seconds: float) -> None:
        return None

    assert await retry_with_backoff(flaky, Backoff(jitter=0), retry_on=Refused, sleep=sleep) == ("connected", 3)


async def test_other_errors_propagate_at_once() -> None:
    async def broken() -> None:
        raise KeyError("a bug")

    with pytest.raises(KeyError):
        await retry_with_backoff(broken, Backoff(jitter=0), retry_on=Refused)


async def test_keep_going_ends_an_unlimited_loop_before_the_next_attempt() -> None:
    attempts: list[int] = []
    stop_after = 4

    async def refuse() -> None:
        attempts.append(len(attempts) + 1)
        raise Refused

    async def sleep(_seconds: float) -> None:
        return None

    result = await retry_with_backoff(
        refuse,
        Backoff(attempts=None, jitter=0),
        retry_on=Refused,
        keep_going=lambda: len(attempts) < stop_after,
        sleep=sleep,
    )
    assert result is None
    assert attempts == [1, 2, 3, 4]

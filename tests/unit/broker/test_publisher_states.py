"""The publisher's state machine without a broker: legal paths pass, anything else is refused."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Awaitable, Callable

import pytest

from kubecrawl.broker.base import PublisherState as S
from kubecrawl.broker.publishing import TRANSITIONS, InvalidTransition, RabbitPublisher, check_transition
from kubecrawl.core.backoff import backoff_delays
from kubecrawl.core.errors import ConnectionLost, PublisherNotReady
from kubecrawl.core.settings import PublisherSettings

HAPPY_PATH = [S.DISCONNECTED, S.CONNECTING, S.CONNECTED, S.CHANNEL_OPEN, S.CONFIRM_ENABLED, S.QUEUE_DECLARED, S.READY]


def test_start_up_path_is_legal_step_by_step() -> None:
    for current, new in itertools.pairwise(HAPPY_PATH):
        check_transition(current, new)


def test_lost_connection_goes_through_reconnecting_back_to_ready() -> None:
    for current, new in [(S.READY, S.RECONNECTING), (S.RECONNECTING, S.CONNECTING), (S.CONNECTING, S.RECONNECTING)]:
        check_transition(current, new)


@pytest.mark.parametrize(
    ("current", "new"),
    [
        (S.DISCONNECTED, S.READY),
        (S.CONNECTING, S.READY),
        (S.CLOSED, S.CONNECTING),
        (S.READY, S.CONNECTING),
        (S.CLOSING, S.READY),
    ],
)
def test_skipping_states_is_refused(current: S, new: S) -> None:
    with pytest.raises(InvalidTransition):
        check_transition(current, new)


def test_every_state_can_reach_closed_except_closed_itself() -> None:
    for state in S:
        if state in (S.CLOSING, S.CLOSED):
            continue
        assert S.CLOSING in TRANSITIONS[state] or state is S.DISCONNECTED
    assert TRANSITIONS[S.CLOSED] == frozenset()


def test_backoff_doubles_from_one_second_and_caps_at_thirty() -> None:
    delays = backoff_delays(1.0, 2.0, 30.0)
    assert [next(delays) for _ in range(8)] == [1, 2, 4, 8, 16, 30, 30, 30]


# The seed's schedule without jitter, so the waits can be compared exactly (core/backoff.py tests the jitter).
NO_JITTER = PublisherSettings(backoff_jitter=0)


def _unreachable(sleep: Callable[[float], Awaitable[None]]) -> RabbitPublisher:
    """A publisher whose broker never answers (nothing listens on port 1), with its backoff sleeps replaced."""
    return RabbitPublisher(
        "amqp://guest:guest@127.0.0.1:1/", NO_JITTER, metadata_max_length=10, pages_max_length=10, sleep=sleep
    )


async def test_start_fails_fast_after_max_attempts_with_the_seed_backoff() -> None:
    slept: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        slept.append(seconds)

    publisher = _unreachable(sleep=fake_sleep)
    with pytest.raises(ConnectionLost):
        await publisher.start()
    assert slept == [1, 2, 4, 8, 16, 30, 30, 30, 30]  # 10 attempts, 9 waits
    assert publisher.state is S.DISCONNECTED


async def test_close_during_start_up_backoff_ends_start_with_connection_lost_and_state_closed() -> None:
    """A shutdown (SIGTERM) while start() still waits between attempts: start() gives up at once with a clear
    error instead of a state-machine error, and the publisher stays CLOSED."""
    sleeping, closed = asyncio.Event(), asyncio.Event()

    async def backoff_until_closed(seconds: float) -> None:  # the wait between attempts ends after close()
        sleeping.set()
        await closed.wait()

    publisher = _unreachable(sleep=backoff_until_closed)
    start = asyncio.create_task(publisher.start())
    await sleeping.wait()
    await publisher.close()
    closed.set()
    with pytest.raises(ConnectionLost, match="closed while connecting"):
        await start
    assert publisher.state is S.CLOSED


async def test_publish_before_ready_fails_at_once_with_publisher_not_ready() -> None:
    publisher = RabbitPublisher("amqp://x/", PublisherSettings(), metadata_max_length=1, pages_max_length=1)
    with pytest.raises(PublisherNotReady):
        await publisher.publish("kubecrawl.metadata", b"{}", message_id="m")


async def test_reconnect_loop_survives_an_unexpected_error_and_gets_back_to_ready() -> None:
    slept: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        slept.append(seconds)

    publisher = RabbitPublisher("amqp://x/", NO_JITTER, metadata_max_length=1, pages_max_length=1, sleep=fake_sleep)
    opened: list[S] = []

    async def flaky_open(*, failure_state: S) -> None:
        opened.append(publisher.state)
        if len(opened) == 1:
            # What aiormq raises when the connection closes while the channel opens: not a connection error class.
            publisher._set_state(failure_state)
            raise RuntimeError("<Connection: amqp://x/> closed")
        for state in HAPPY_PATH[2:]:
            publisher._set_state(state)

    publisher._open = flaky_open  # type: ignore[method-assign]
    publisher._state = S.READY  # as if started; the connection is then lost
    publisher._lost()
    assert publisher.state is S.RECONNECTING
    assert publisher._reconnect_task is not None
    await asyncio.wait_for(publisher._reconnect_task, 5)
    assert opened == [S.CONNECTING, S.CONNECTING]
    assert slept == [1]
    assert publisher.state is S.READY

"""Poll with a deadline instead of sleeping: the one polling helper of the tests.

``eventually`` is for async tests (they must keep the event loop, and the local sites on it, running);
``eventually_sync`` is its twin for fixtures and helpers that start servers from synchronous code. Both share
``_Poll``: one deadline, one interval, one rule for which exceptions mean "not yet" (``AssertionError`` by default;
a server probe passes ``retry_on=(Exception,)`` since "connection refused" only means "not up yet").
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")

# For probes of servers and clusters: any error (connection refused, a 503, a kubectl failure) means "not up yet".
ANY_ERROR: tuple[type[BaseException], ...] = (Exception,)


class PollTimeout(AssertionError, TimeoutError):
    """The deadline passed: a failed assertion for tests, a ``TimeoutError`` for code that starts servers."""


class _Poll:
    """One deadline and the last thing a probe answered (its value, or the exception that meant "not yet")."""

    def __init__(self, timeout: float, what: str) -> None:
        self.deadline = time.monotonic() + timeout
        self.timeout = timeout
        self.what = what
        self.last: object = None

    def done(self, value: object) -> bool:
        self.last = value
        if value and not isinstance(value, BaseException):
            return True
        if time.monotonic() > self.deadline:
            raise PollTimeout(f"timed out after {self.timeout}s waiting for {self.what}; last: {self.last!r}")
        return False


async def eventually(
    probe: Callable[[], Awaitable[T] | T],
    *,
    timeout: float = 30,
    interval: float = 0.1,
    what: str = "condition",
    retry_on: tuple[type[BaseException], ...] = (AssertionError,),
) -> T:
    """Call (and await, if it is a coroutine function) ``probe`` until it returns something truthy; fail with the
    last value after ``timeout``. An exception in ``retry_on`` means "not yet"; any other ends the wait at once."""
    poll = _Poll(timeout, what)
    while True:
        value: object
        try:
            value = probe()
            if inspect.isawaitable(value):
                value = await value
        except retry_on as exc:
            value = exc
        if poll.done(value):
            return value  # type: ignore[return-value]
        await asyncio.sleep(interval)


def eventually_sync(
    probe: Callable[[], T],
    *,
    timeout: float = 30,
    interval: float = 0.1,
    what: str = "condition",
    retry_on: tuple[type[BaseException], ...] = (AssertionError,),
) -> T:
    """``eventually`` for synchronous callers: the same deadline and the same rule, with a blocking pause."""
    poll = _Poll(timeout, what)
    while True:
        value: object
        try:
            value = probe()
        except retry_on as exc:
            value = exc
        if poll.done(value):
            return value  # type: ignore[return-value]
        time.sleep(interval)

"""The database connection state machine: DISCONNECTED → CONNECTING → CONNECTED, what readiness reads.

```
DISCONNECTED → CONNECTING → CONNECTED        start-up (``connect``: at most ``attempts`` tries, then fail fast)
CONNECTED → DISCONNECTED → CONNECTING → …    a watch ping failed: reconnect with backoff, without an attempt limit
```

The database handle (``store/opening.py``: SQL's engine pool or MongoDB's client) holds the actual connections;
this machine holds the *state* of the database as this process sees it, from the handle's ``ping`` (``SELECT 1``,
MongoDB's ``ping`` command) at start-up and then every ``KUBECRAWL_DB_CHECK_INTERVAL_SECONDS`` (5 s).
The API's and the worker's ``/health/ready`` read it instead of pinging on every probe, so readiness answers at
once and a flapping database is reported the same way to every probe. Waits between tries come from
``core/backoff.py`` (1 s ×2 to 30 s, jittered, so processes that lost the database together do not all come back
on the same second). Logged:
``db_connect_attempt``, ``db_connect_failed``, ``db_connected``, ``db_disconnected``; the gauge
``kubecrawl_database_state{state}`` is 1 for the current state, beside ``kubecrawl_publisher_state``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import enum
from collections.abc import Awaitable, Callable

from kubecrawl.core import metrics
from kubecrawl.core.backoff import Backoff, retry_with_backoff
from kubecrawl.core.errors import StoreUnavailable
from kubecrawl.core.logging import get_logger

log = get_logger(__name__)


class DatabaseState(enum.StrEnum):
    DISCONNECTED = "DISCONNECTED"
    CONNECTING = "CONNECTING"
    CONNECTED = "CONNECTED"


TRANSITIONS: dict[DatabaseState, frozenset[DatabaseState]] = {
    DatabaseState.DISCONNECTED: frozenset({DatabaseState.CONNECTING}),
    DatabaseState.CONNECTING: frozenset({DatabaseState.CONNECTED, DatabaseState.DISCONNECTED}),
    DatabaseState.CONNECTED: frozenset({DatabaseState.DISCONNECTED}),
}


class DatabaseConnection:
    """One process's view of its database; ``connect`` once, ``close`` at shutdown. ``ping``: the database handle's
    (``Database.ping``), ``StoreUnavailable`` unless it answers, so SQL and MongoDB are watched alike."""

    def __init__(
        self,
        ping: Callable[[], Awaitable[None]],
        *,
        backoff: Backoff,
        check_interval: float,
    ) -> None:
        self._ping = ping
        self._backoff = backoff
        self._check_interval = check_interval
        self._watch: asyncio.Task[None] | None = None
        self.state = DatabaseState.DISCONNECTED
        self.last_error: str | None = None
        self._export()

    @property
    def connected(self) -> bool:
        return self.state is DatabaseState.CONNECTED

    def _move(self, new: DatabaseState) -> None:
        if new not in TRANSITIONS[self.state]:
            msg = f"illegal database state transition {self.state} -> {new}"
            raise RuntimeError(msg)
        log.debug("db_state_changed", old=self.state.value, new=new.value)
        self.state = new
        self._export()

    def _export(self) -> None:
        metrics.set_state(metrics.DATABASE_STATE, DatabaseState, self.state)

    async def _try(self) -> None:
        self._move(DatabaseState.CONNECTING)
        try:
            await self._ping()
        except StoreUnavailable as exc:
            self.last_error = exc.detail
            self._move(DatabaseState.DISCONNECTED)
            raise
        self.last_error = None
        self._move(DatabaseState.CONNECTED)

    async def _reach(self, backoff: Backoff) -> None:
        def attempt(number: int, delay: float) -> None:
            log.info("db_connect_attempt", attempt=number, next_delay_s=delay)

        def failed(number: int, exc: BaseException, delay: float) -> None:
            detail = exc.detail if isinstance(exc, StoreUnavailable) else repr(exc)
            log.warning("db_connect_failed", attempt=number, error=detail, next_delay_s=delay)

        reached = await retry_with_backoff(
            self._try, backoff, retry_on=StoreUnavailable, on_attempt=attempt, on_failure=failed
        )
        if reached is not None:
            log.info("db_connected", attempt=reached[1])

    async def connect(self) -> None:
        """Start-up: reach the database within the backoff's attempts (``StoreUnavailable`` after the last), then
        watch it in the background."""
        await self._reach(self._backoff)
        self._watch = asyncio.create_task(self._watch_forever(), name="database-watch")

    async def _watch_forever(self) -> None:
        unlimited = dataclasses.replace(self._backoff, attempts=None)
        while True:
            await asyncio.sleep(self._check_interval)
            try:
                await self._ping()
            except StoreUnavailable as exc:
                self.last_error = exc.detail
                self._move(DatabaseState.DISCONNECTED)
                log.warning("db_disconnected", error=exc.detail)
                await self._reach(unlimited)

    async def close(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch
            self._watch = None

"""A spaced host's turns (``delaySeconds``, Crawl-delay): one request at a time, the next ``spacing`` after the last
one's answer, across every worker (``HostStore.reserve_slot``/``release_slot``).

Spacing from the answer is what holds at the host whatever the worker's timing: the next request leaves after the
previous answer came back, so it arrives at least ``spacing`` after the previous one arrived, even if that one was
late for its slot (a busy event loop, a slow connect). Reserving slots ``spacing`` apart while earlier requests
were still in flight let such a late request and the next one, on time, arrive closer (bench/many_hosts.py saw
91.5 ms at 100 ms).

In one process the pages of a host wait on a lock, in arrival order, so only the one at the head asks the store;
a host held by another worker is asked again every half spacing (a turn that ends in one window of ``spacing``
is seen within it: no turn is lost to the polling), and at least every 50 ms apart.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import datetime, timedelta

from kubecrawl.core.clock import utcnow
from kubecrawl.store.contract import HostStore

_MIN_POLL_SECONDS = 0.05


class HostTurns:
    def __init__(self, hosts: HostStore) -> None:
        self._hosts = hosts
        # (crawl, host) → its lock and how many pages of this process hold or wait for it
        self._locks: dict[tuple[str, str], tuple[asyncio.Lock, list[int]]] = {}

    @contextlib.asynccontextmanager
    async def turn(
        self, crawl_id: str, host: str, spacing: float, *, hold: timedelta, paused_until: datetime | None = None
    ) -> AsyncIterator[None]:
        """Wait for the host's turn and hold it for the body (one request); then the host rests ``spacing`` from
        the end of the body. ``hold`` bounds the turn if this worker dies or hangs (the fetch timeout and a
        margin). With no spacing there are no turns: only a Retry-After pause (``paused_until``, as the page's
        start read it) is waited for."""
        if spacing <= 0:
            if paused_until is not None and (wait := (paused_until - utcnow()).total_seconds()) > 0:
                await asyncio.sleep(wait)
            yield
            return
        key = (crawl_id, host)
        lock, users = self._locks.setdefault(key, (asyncio.Lock(), [0]))
        users[0] += 1
        try:
            async with lock:
                while True:  # another worker's turn holds the host: ask again
                    turn = await self._hosts.reserve_slot(crawl_id, host, hold=hold)
                    if turn is not None:
                        break
                    await asyncio.sleep(max(spacing / 2, _MIN_POLL_SECONDS))
                try:
                    if turn.wait > 0:
                        await asyncio.sleep(turn.wait)
                    yield
                finally:
                    await self._hosts.release_slot(crawl_id, host, turn, spacing)
        finally:
            users[0] -= 1
            if not users[0]:
                del self._locks[key]

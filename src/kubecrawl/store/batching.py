"""Group commit: calls for one key that arrive while that key's previous batch is being written go, together,
into the next batch (one transaction for all of them).

There is no timer and no batch size to tune: with one call at a time every batch holds one call and waits one
turn of the event loop; under load a batch holds whatever arrived during that turn or the previous transaction,
so the number of transactions per call falls as load rises. The crawl frontier uses it per crawl
(``store/crawls.py``), which turns the per-page transactions that serialise on the crawl's row lock into one per
batch.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable, Sequence
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
T = TypeVar("T")
R = TypeVar("R")


class GroupCommit(Generic[K, T, R]):
    """``await submit(key, item)`` → this item's result from ``write(key, items)`` (one result per item, in order).

    If ``write`` raises, every call of that batch raises the same error (its transaction rolled back as a whole).
    A caller that is cancelled while it waits does not cancel the batch: its item is written all the same.
    """

    def __init__(self, write: Callable[[K, Sequence[T]], Awaitable[Sequence[R]]]) -> None:
        self._write = write
        self._waiting: dict[K, list[tuple[T, asyncio.Future[R]]]] = {}
        self._writers: dict[K, asyncio.Task[None]] = {}

    async def submit(self, key: K, item: T) -> R:
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(key, []).append((item, future))
        if key not in self._writers:
            self._writers[key] = asyncio.create_task(self._drain(key))
        return await asyncio.shield(future)

    async def _drain(self, key: K) -> None:
        try:
            # One more loop turn before the first batch, so the calls made by the next poll's callbacks (the
            # responses that arrived meanwhile) join it. Without it a write that never suspends (the embedded
            # default's inline SQLite) took only the calls of the turn that started the writer: on the bench's
            # 2,000-page crawl 5 pages per transaction instead of 12, and 0.25 ms more CPU per page (docs/crawls.md).
            await asyncio.sleep(0)
            while batch := self._waiting.pop(key, None):
                try:
                    results = await self._write(key, [item for item, _ in batch])
                except Exception as exc:  # handed to every caller of the batch, which re-raise it
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(exc)
                    continue
                for (_, future), result in zip(batch, results, strict=True):
                    if not future.done():
                        future.set_result(result)
        finally:
            # No await between the last pop and here: an item submitted now starts a new writer.
            del self._writers[key]

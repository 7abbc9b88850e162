"""Group commit: calls for one key that arrive while that key's previous batch is being written go, together,
into the next batch (one transaction for all of them).

There is no timer and no batch size to tune: with one call at a time every batch holds one call and waits one
turn of the event loop; under load a batch holds whatever arrived during that turn or the previous transaction,
so the number of transactions per call falls as load rises.

Keys can share batches: ``part_of`` maps a key to its group, and a batch holds the calls of every key of the
group. The crawl frontier batches every crawl together (``store/crawls.py``): with many small crawls (one per
host) a batch per crawl held one page, so each page paid a transaction of its own (docs/scaling.md, "Many
hosts"). A batch of several keys fails as a whole, so ``split_on`` names the errors that blame one key's values
(a value the database refuses, a deadlock): such a batch is written again one key at a time, and only the guilty
key's calls fail.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable, Sequence
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
T = TypeVar("T")
R = TypeVar("R")


def _never(_exc: BaseException) -> bool:
    return False


class GroupCommit(Generic[K, T, R]):
    """``await submit(key, item)`` → this item's result from ``write(group, items)`` (one result per item, in
    order; ``group`` is ``part_of(key)``, the key itself by default, or the key alone when a batch is split).

    If ``write`` raises, every call of that batch raises the same error (its transaction rolled back as a whole),
    unless ``split_on(error)`` and the batch holds several keys: then each key's calls are written again on their
    own, and fail or succeed with them. An item does not carry its key to ``write``: a write of several keys
    needs items that say which key they belong to. A caller that is cancelled while it waits does not cancel the
    batch: its item is written all the same.
    """

    def __init__(
        self,
        write: Callable[[K, Sequence[T]], Awaitable[Sequence[R]]],
        *,
        part_of: Callable[[K], K] | None = None,
        split_on: Callable[[BaseException], bool] = _never,
    ) -> None:
        self._write = write
        self._part_of = part_of
        self._split_on = split_on
        self._waiting: dict[K, list[tuple[K, T, asyncio.Future[R]]]] = {}
        self._writers: dict[K, asyncio.Task[None]] = {}

    async def submit(self, key: K, item: T) -> R:
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        group = key if self._part_of is None else self._part_of(key)
        self._waiting.setdefault(group, []).append((key, item, future))
        if group not in self._writers:
            self._writers[group] = asyncio.create_task(self._drain(group))
        return await asyncio.shield(future)

    async def _drain(self, group: K) -> None:
        try:
            # One more loop turn before the first batch, so the calls made by the next poll's callbacks (the
            # responses that arrived meanwhile) join it. Without it a write that never suspends (the embedded
            # default's inline SQLite) took only the calls of the turn that started the writer: on the bench's
            # 2,000-page crawl 5 pages per transaction instead of 12, and 0.25 ms more CPU per page (docs/crawls.md).
            await asyncio.sleep(0)
            while batch := self._waiting.pop(group, None):
                try:
                    await self._settle(group, batch)
                except Exception as exc:
                    if not self._split_on(exc) or len({key for key, _, _ in batch}) == 1:
                        _fail(batch, exc)
                        continue
                    for key, calls in _by_key(batch).items():
                        try:
                            await self._settle(key, calls)
                        except Exception as key_exc:  # handed to the key's callers, which re-raise it
                            _fail(calls, key_exc)
        finally:
            # No await between the last pop and here: an item submitted now starts a new writer.
            del self._writers[group]

    async def _settle(self, group: K, batch: Sequence[tuple[K, T, asyncio.Future[R]]]) -> None:
        results = await self._write(group, [item for _, item, _ in batch])
        for (_, _, future), result in zip(batch, results, strict=True):
            if not future.done():
                future.set_result(result)


def _fail(batch: Sequence[tuple[object, object, asyncio.Future[R]]], exc: Exception) -> None:
    """Hand the error to every caller of the batch, which re-raise it."""
    for _, _, future in batch:
        if not future.done():
            future.set_exception(exc)


def _by_key(batch: Sequence[tuple[K, T, asyncio.Future[R]]]) -> dict[K, list[tuple[K, T, asyncio.Future[R]]]]:
    """The calls of a batch by key, keys in order of their first call."""
    calls: dict[K, list[tuple[K, T, asyncio.Future[R]]]] = {}
    for call in batch:
        calls.setdefault(call[0], []).append(call)
    return calls

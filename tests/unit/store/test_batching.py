"""GroupCommit: what arrives during a write goes into the next write, results reach their callers in order."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from kubecrawl.store.batching import GroupCommit


class Recorder:
    def __init__(self) -> None:
        self.batches: list[tuple[str, list[int]]] = []
        self.release = asyncio.Event()
        self.fail_next = False

    async def write(self, key: str, items: Sequence[int]) -> list[int]:
        self.batches.append((key, list(items)))
        await self.release.wait()
        if self.fail_next:
            self.fail_next = False
            raise RuntimeError("transaction rolled back")
        return [item * 10 for item in items]


async def test_calls_arriving_during_a_write_share_the_next_write() -> None:
    recorder = Recorder()
    group = GroupCommit[str, int, int](recorder.write)
    first = asyncio.create_task(group.submit("crawl", 1))
    while not recorder.batches:  # the first write starts with one item and blocks
        await asyncio.sleep(0)
    later = [asyncio.create_task(group.submit("crawl", n)) for n in (2, 3, 4)]
    await asyncio.sleep(0)
    recorder.release.set()
    assert await first == 10
    assert [await task for task in later] == [20, 30, 40]
    assert recorder.batches == [("crawl", [1]), ("crawl", [2, 3, 4])]


async def test_keys_are_batched_separately() -> None:
    recorder = Recorder()
    recorder.release.set()
    group = GroupCommit[str, int, int](recorder.write)
    results = await asyncio.gather(group.submit("a", 1), group.submit("b", 2), group.submit("a", 3))
    assert results == [10, 20, 30]
    assert sorted(recorder.batches) == [("a", [1, 3]), ("b", [2])]


async def test_a_failed_write_fails_every_call_of_its_batch_and_the_next_batch_still_runs() -> None:
    recorder = Recorder()
    group = GroupCommit[str, int, int](recorder.write)
    recorder.fail_next = True
    batch = [asyncio.create_task(group.submit("crawl", n)) for n in (1, 2)]
    await asyncio.sleep(0)
    recorder.release.set()
    for task in batch:
        with pytest.raises(RuntimeError, match="rolled back"):
            await task
    assert await group.submit("crawl", 5) == 50


async def test_a_cancelled_caller_does_not_cancel_the_write_of_its_batch() -> None:
    recorder = Recorder()
    group = GroupCommit[str, int, int](recorder.write)
    cancelled = asyncio.create_task(group.submit("crawl", 1))
    other = asyncio.create_task(group.submit("crawl", 2))
    await asyncio.sleep(0)
    cancelled.cancel()
    recorder.release.set()
    assert await other == 20
    assert recorder.batches == [("crawl", [1, 2])]
    with pytest.raises(asyncio.CancelledError):
        await cancelled


async def test_calls_made_in_the_loop_turn_after_the_first_join_its_batch_when_the_write_never_suspends() -> None:
    batches: list[list[int]] = []

    async def write(_key: str, items: Sequence[int]) -> list[int]:  # inline SQLite: returns without suspending
        batches.append(list(items))
        return [item * 10 for item in items]

    group = GroupCommit[str, int, int](write)
    first = asyncio.create_task(group.submit("crawl", 1))
    await asyncio.sleep(0)  # the first call starts the writer
    second = asyncio.create_task(group.submit("crawl", 2))  # a call of the next turn (a response read meanwhile)
    assert [await first, await second] == [10, 20]
    assert batches == [[1, 2]]


def _one_group(_key: str) -> str:
    return "all"


def _refused(exc: BaseException) -> bool:
    return isinstance(exc, ValueError)


async def test_keys_of_one_group_share_a_batch() -> None:
    batches: list[tuple[str, list[tuple[str, int]]]] = []

    async def write(group: str, items: Sequence[tuple[str, int]]) -> list[int]:
        batches.append((group, list(items)))
        return [n * 10 for _, n in items]

    group = GroupCommit[str, tuple[str, int], int](write, part_of=_one_group)
    results = await asyncio.gather(
        group.submit("a", ("a", 1)), group.submit("b", ("b", 2)), group.submit("a", ("a", 3))
    )
    assert results == [10, 20, 30]
    assert batches == [("all", [("a", 1), ("b", 2), ("a", 3)])]


async def test_a_batch_failing_with_an_error_it_splits_on_is_written_again_per_key_and_only_the_guilty_key_fails() -> (
    None
):
    batches: list[tuple[str, list[tuple[str, int]]]] = []

    async def write(group: str, items: Sequence[tuple[str, int]]) -> list[int]:
        batches.append((group, list(items)))
        if any(key == "bad" for key, _ in items):
            raise ValueError("a value refused")
        return [n * 10 for _, n in items]

    group = GroupCommit[str, tuple[str, int], int](write, part_of=_one_group, split_on=_refused)
    calls = [("good", 1), ("bad", 2), ("other", 3), ("good", 4)]
    results = await asyncio.gather(*(group.submit(key, (key, n)) for key, n in calls), return_exceptions=True)
    assert results[0] == 10
    assert isinstance(results[1], ValueError)
    assert results[2:] == [30, 40]
    # The whole batch once, then each key's calls on their own, keys in the order of their first call.
    assert batches == [
        ("all", calls),
        ("good", [("good", 1), ("good", 4)]),
        ("bad", [("bad", 2)]),
        ("other", [("other", 3)]),
    ]


async def test_a_batch_failing_with_an_error_it_does_not_split_on_fails_every_key() -> None:
    async def write(_group: str, _items: Sequence[tuple[str, int]]) -> list[int]:
        raise RuntimeError("the database is down")

    group = GroupCommit[str, tuple[str, int], int](write, part_of=_one_group, split_on=_refused)
    results = await asyncio.gather(group.submit("a", ("a", 1)), group.submit("b", ("b", 2)), return_exceptions=True)
    assert all(isinstance(result, RuntimeError) for result in results)

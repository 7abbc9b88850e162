"""PoolSupervisor: one polling task per pool in the index, ended when the pool leaves it (no finalizer needed).

The index is a plain dict shaped like kopf's (key → store of snapshots); the scaler records its polls.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import pytest

from kubecrawl.operator.pool.scaler import PoolRef
from kubecrawl.operator.pool.supervising import PoolSupervisor, pool_snapshot
from tests.support.polling import eventually

A = PoolRef("ns", "a")
B = PoolRef("ns", "b")


class RecordingScaler:
    def __init__(self, ref: PoolRef, item: Mapping[str, Any], *, block: asyncio.Event | None = None) -> None:
        self.status = dict(item["status"])  # as PoolScaler does
        self.ref = ref
        self.uid = item["uid"]
        self.interval = 0.01
        self.polls: list[tuple[dict[str, Any], int | None]] = []
        self.polled = asyncio.Event()
        self.forgotten = False
        self.block = block

    async def poll(self, raw_spec: Mapping[str, Any], generation: int | None) -> None:
        self.polls.append((dict(raw_spec), generation))
        self.polled.set()
        if self.block is not None:
            await self.block.wait()

    def forget(self) -> None:
        self.forgotten = True


class Harness:
    def __init__(self, *, block: asyncio.Event | None = None, stop_timeout: float = 5.0) -> None:
        self.index: dict[PoolRef, list[dict[str, Any]]] = {}
        self.scalers: list[RecordingScaler] = []
        self.block = block
        self.supervisor = PoolSupervisor(self.index, self.make, stop_timeout=stop_timeout)

    def make(self, ref: PoolRef, item: Mapping[str, Any]) -> RecordingScaler:
        scaler = RecordingScaler(ref, item, block=self.block)
        self.scalers.append(scaler)
        return scaler

    def put(self, ref: PoolRef, uid: str, spec: dict[str, Any], generation: int = 1) -> None:
        body = {"spec": spec}  # a new pool has no status yet
        self.index[ref] = [pool_snapshot(ref.namespace, ref.name, uid, generation, body)]
        self.supervisor.wake()

    def drop(self, ref: PoolRef) -> None:
        del self.index[ref]
        self.supervisor.wake()

    def scaler(self, ref: PoolRef, uid: str) -> RecordingScaler:
        return next(s for s in self.scalers if s.ref == ref and s.uid == uid)


async def test_each_pool_in_the_index_gets_its_own_task_polling_its_current_spec() -> None:
    h = Harness()
    h.put(A, "u1", {"maxReplicas": 3})
    h.put(B, "u2", {"maxReplicas": 5})
    runner = asyncio.create_task(h.supervisor.run())
    await eventually(lambda: len(h.scalers) == 2 and all(s.polls for s in h.scalers), timeout=5, interval=0.005)
    assert h.supervisor.serving == {A, B}

    h.put(A, "u1", {"maxReplicas": 7}, generation=2)  # a spec change: same task, the next poll sees it
    await eventually(lambda: h.scaler(A, "u1").polls[-1] == ({"maxReplicas": 7}, 2), timeout=5, interval=0.005)
    assert len(h.scalers) == 2

    await h.supervisor.stop()
    await runner
    assert all(s.forgotten for s in h.scalers)


async def test_a_deleted_pool_stops_being_polled_and_its_metrics_are_dropped() -> None:
    h = Harness()
    h.put(A, "u1", {})
    h.put(B, "u2", {})
    runner = asyncio.create_task(h.supervisor.run())
    await eventually(lambda: len(h.scalers) == 2, timeout=5, interval=0.005)
    h.drop(A)
    await eventually(lambda: h.scaler(A, "u1").forgotten, timeout=5, interval=0.005)
    polls = len(h.scaler(A, "u1").polls)
    before = len(h.scaler(B, "u2").polls)
    await eventually(lambda: len(h.scaler(B, "u2").polls) > before + 3, timeout=5, interval=0.005)  # B goes on
    assert len(h.scaler(A, "u1").polls) == polls
    assert h.supervisor.serving == {B}
    await h.supervisor.stop()
    await runner


async def test_a_pool_recreated_under_the_same_name_starts_afresh() -> None:
    h = Harness()
    h.put(A, "u1", {})
    runner = asyncio.create_task(h.supervisor.run())
    await eventually(lambda: bool(h.scalers) and h.scalers[0].polls, timeout=5, interval=0.005)
    h.put(A, "u2", {})  # deleted and created again between two syncs: a new uid
    await eventually(lambda: any(s.uid == "u2" and s.polls for s in h.scalers), timeout=5, interval=0.005)
    assert h.scaler(A, "u1").forgotten
    await h.supervisor.stop()
    await runner


async def test_stop_lets_a_poll_finish_then_cancels_what_overruns() -> None:
    block = asyncio.Event()
    h = Harness(block=block, stop_timeout=0.2)
    h.put(A, "u1", {})
    runner = asyncio.create_task(h.supervisor.run())
    await eventually(lambda: bool(h.scalers) and h.scalers[0].polled.is_set(), timeout=5, interval=0.005)
    await h.supervisor.stop()  # the poll never ends by itself: cancelled after the timeout
    await runner
    assert h.scaler(A, "u1").forgotten
    assert h.supervisor.serving == set()


@pytest.mark.parametrize("error", [RuntimeError("bug")])
async def test_a_crashing_poll_does_not_end_the_pool_task(error: Exception) -> None:
    h = Harness()
    h.put(A, "u1", {})
    calls = 0

    async def failing(raw_spec: Mapping[str, Any], generation: int | None) -> None:
        nonlocal calls
        calls += 1
        raise error

    runner = asyncio.create_task(h.supervisor.run())
    await eventually(lambda: bool(h.scalers), timeout=5, interval=0.005)
    h.scalers[0].poll = failing  # type: ignore[method-assign]
    await eventually(lambda: calls >= 3, timeout=5, interval=0.005)
    assert h.supervisor.serving == {A}
    await h.supervisor.stop()
    await runner
